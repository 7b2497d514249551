"""Layers as pure forward/backward pairs (cs231n's convention).

Every layer is two pure, jit-able functions::

    out, cache = X_forward(x, ...)
    dx, ... = X_backward(dout, cache)

``cache`` holds what the backward pass needs and nothing else; it is a pytree, so it can be
carried through ``jit``/``scan``. None of the backward functions uses JAX's autodiff: each one is
the hand-derived gradient, checked against ``jax.vjp`` and float64 finite differences in
``tests/test_layers.py`` and by ``fnet gradcheck``.

Conventions (documented once here, tested in the test suite):

- ReLU's derivative at exactly 0 is 0 (``dx = dout * (x > 0)``), as in cs231n and ``jax.nn.relu``.
  Leaky ReLU's derivative at 0 is ``alpha``.
- NaN propagates through every layer, as in ``jax.nn`` (``relu(NaN) = NaN``): a NaN input or
  weight is never hidden behind finite scores.
- Every ``*_backward`` checks that ``dout`` has the forward output's shape (a ValueError naming
  the function and both shapes), since broadcasting a wrong shape would give wrong gradients.
- Batch norm: ``running = momentum * running + (1 - momentum) * batch_stat`` with momentum 0.9
  (cs231n's; PyTorch's ``momentum=0.1`` means the same thing as fnet's 0.9), eps 1e-5, and the
  *biased* batch variance (divide by N) for both normalization and the running variance
  (PyTorch stores the unbiased one).
- Dropout: ``rate`` is the probability of DROPPING a unit (PyTorch/optax convention, unlike
  stax's keep-probability); inverted dropout scales kept units by ``1 / (1 - rate)`` at train
  time so that eval mode is the identity.
- Convolution and pooling: images are (N, C, H, W) and filters (F, C, HH, WW), as in cs231n.
  Output sizes follow the floor rule ``H' = 1 + (H + 2 * pad - HH) // stride`` (PyTorch's and
  lax's): rows/columns past the last whole window are ignored and get zero gradient. On ties, max
  pooling's gradient goes to the FIRST maximum of the window in row-major order (an argmax's).
- Spatial batch norm takes per-channel statistics over (N, H, W) (not per pixel, as DLFS's
  flattening gives); spatial group norm per sample and group over (C/G, H, W). Both have
  per-channel gamma and beta of shape (C,).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from fnet import _checks

# --------------------------------------------------------------------------------------------
# Affine
# --------------------------------------------------------------------------------------------


def affine_forward(x, W, b):
    """Fully connected layer ``out = x_flat @ W + b``.

    Args:
      x: array of shape (N, d1, ..., dk); each sample is flattened to D = d1 * ... * dk.
      W: array of shape (D, M).
      b: array of shape (M,).

    Returns:
      out: array of shape (N, M).
      cache: ``(x, W)``.
    """
    fn = "affine_forward"
    x = _checks.float_array(fn, "x", x, min_ndim=2)
    W = _checks.float_array(fn, "W", W, ndim=2)
    b = _checks.float_array(fn, "b", b, ndim=1)
    d = math.prod(x.shape[1:])
    if d != W.shape[0]:
        raise ValueError(
            f"{fn}: x has shape {tuple(x.shape)} (D = {d} features per sample) but W has shape "
            f"{tuple(W.shape)}; W.shape[0] must equal D"
        )
    if b.shape != (W.shape[1],):
        raise ValueError(f"{fn}: b has shape {tuple(b.shape)} but W has shape {tuple(W.shape)}; b must have shape ({W.shape[1]},)")
    out = x.reshape(x.shape[0], d) @ W + b
    return out, (x, W)


def affine_backward(dout, cache):
    """Backward pass of :func:`affine_forward`.

    ``dx = dout @ W.T`` (reshaped to x's shape), ``dW = x_flat.T @ dout``, ``db = sum_n dout``.

    Args:
      dout: array of shape (N, M), upstream gradient.
      cache: ``(x, W)`` from the forward pass.

    Returns:
      dx: array of shape (N, d1, ..., dk); dW: (D, M); db: (M,).
    """
    x, W = cache
    _checks.upstream("affine_backward", dout, (x.shape[0], W.shape[1]))
    x2 = x.reshape(x.shape[0], W.shape[0])
    dx = (dout @ W.T).reshape(x.shape)
    dW = x2.T @ dout
    db = jnp.sum(dout, axis=0)
    return dx, dW, db


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


def relu_forward(x):
    """ReLU ``out = max(x, 0)``.

    Args:
      x: array of any shape.

    Returns:
      out: array of x's shape; cache: ``out`` (``out > 0`` exactly where ``x > 0``, and the next
      layer keeps ``out`` anyway, so caching it costs no extra memory).
    """
    x = _checks.float_array("relu_forward", "x", x)
    # jax.nn.relu keeps NaN (a where(x > 0, x, 0) would map it to 0), and its autodiff
    # derivative at exactly 0 is 0, as here (jnp.maximum's would be 1/2).
    out = jax.nn.relu(x)
    return out, out


def relu_backward(dout, cache):
    """Backward pass of :func:`relu_forward`: ``dx = dout * (x > 0)``; the derivative at 0 is 0."""
    out = cache
    _checks.upstream("relu_backward", dout, out.shape)
    return jnp.where(out > 0, dout, jnp.zeros((), dout.dtype))


#: Leaky ReLU's default slope for negative inputs (used by the layer, fnet.mlp and custom_vjp).
LEAKY_RELU_ALPHA = 0.01


def leaky_relu_forward(x, alpha=LEAKY_RELU_ALPHA):
    """Leaky ReLU ``out = x if x > 0 else alpha * x``.

    Args:
      x: array of any shape.
      alpha: slope for negative inputs (default 0.01), a float or a scalar array.

    Returns:
      out: array of x's shape; cache: ``(x, alpha)``.
    """
    x = _checks.float_array("leaky_relu_forward", "x", x)
    out = jnp.where(x > 0, x, alpha * x)
    return out, (x, alpha)


def leaky_relu_backward(dout, cache):
    """Backward pass of :func:`leaky_relu_forward`: ``dx = dout`` where x > 0 else ``alpha * dout``
    (so the derivative at exactly 0 is ``alpha``)."""
    x, alpha = cache
    _checks.upstream("leaky_relu_backward", dout, x.shape)
    return jnp.where(x > 0, dout, alpha * dout)


def sigmoid_forward(x):
    """Logistic sigmoid ``out = 1 / (1 + exp(-x))``, computed without overflow for large |x|.

    Args:
      x: array of any shape.

    Returns:
      out: array of x's shape; cache: ``out``.
    """
    x = _checks.float_array("sigmoid_forward", "x", x)
    out = jax.nn.sigmoid(x)
    return out, out


def sigmoid_backward(dout, cache):
    """Backward pass of :func:`sigmoid_forward`: ``dx = dout * out * (1 - out)``."""
    out = cache
    _checks.upstream("sigmoid_backward", dout, out.shape)
    return dout * out * (1 - out)


def tanh_forward(x):
    """Hyperbolic tangent ``out = tanh(x)``.

    Args:
      x: array of any shape.

    Returns:
      out: array of x's shape; cache: ``out``.
    """
    x = _checks.float_array("tanh_forward", "x", x)
    out = jnp.tanh(x)
    return out, out


def tanh_backward(dout, cache):
    """Backward pass of :func:`tanh_forward`: ``dx = dout * (1 - out**2)``."""
    out = cache
    _checks.upstream("tanh_backward", dout, out.shape)
    return dout * (1 - out * out)


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NormCache:
    """Cache of batch norm and layer norm.

    Fields:
      xhat: normalized input, shape (N, D).
      gamma: scale, shape (D,).
      inv_std: ``1 / sqrt(var + eps)``; shape (D,) for batch norm, (N, 1) for layer norm.
      axis: the axis the statistics were taken over (0: batch norm in train mode, 1: layer
        norm), or None when fixed statistics were used (batch norm in eval mode), in which case
        the normalization is a per-feature affine map and ``dx = dxhat * inv_std``.
    """

    xhat: jax.Array
    gamma: jax.Array
    inv_std: jax.Array
    axis: int | None = dataclasses.field(metadata=dict(static=True))


def _normalize(x, mean, var, gamma, beta, eps, axis):
    inv_std = jax.lax.rsqrt(var + eps)
    xhat = (x - mean) * inv_std
    return gamma * xhat + beta, NormCache(xhat, gamma, inv_std, axis)


def _norm_backward(fn, dout, cache: NormCache):
    # Gradient of out = gamma * xhat + beta, xhat = (x - mean(x)) / sqrt(var(x) + eps), where the
    # statistics run over `axis` (K elements). Differentiating through mean and var gives
    #   dx = inv_std / K * (K * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).
    xhat, gamma, inv_std, axis = cache.xhat, cache.gamma, cache.inv_std, cache.axis
    _checks.upstream(fn, dout, xhat.shape)
    dgamma = jnp.sum(dout * xhat, axis=0)
    dbeta = jnp.sum(dout, axis=0)
    dxhat = dout * gamma
    if axis is None:
        return dxhat * inv_std, dgamma, dbeta
    k = xhat.shape[axis]
    sum_dxhat = jnp.sum(dxhat, axis=axis, keepdims=True)
    sum_dxhat_xhat = jnp.sum(dxhat * xhat, axis=axis, keepdims=True)
    dx = (inv_std / k) * (k * dxhat - sum_dxhat - xhat * sum_dxhat_xhat)
    return dx, dgamma, dbeta


def _check_norm_args(fn, x, gamma, beta):
    x = _checks.float_array(fn, "x", x, ndim=2)
    d = x.shape[1]
    for name, v in (("gamma", gamma), ("beta", beta)):
        _checks.float_array(fn, name, v, ndim=1)
        if v.shape != (d,):
            raise ValueError(f"{fn}: {name} has shape {tuple(v.shape)} but x has shape {tuple(x.shape)}; {name} must have shape ({d},)")
    return x


def batchnorm_forward(x, gamma, beta, running, *, train=True, momentum=0.9, eps=1e-5):
    """Batch normalization over the batch axis.

    Train mode normalizes with the batch statistics and updates the running statistics::

        mean = mean_n x,  var = mean_n (x - mean)**2           (biased, divide by N)
        out = gamma * (x - mean) / sqrt(var + eps) + beta
        running_mean <- momentum * running_mean + (1 - momentum) * mean
        running_var  <- momentum * running_var  + (1 - momentum) * var

    Eval mode uses ``running_mean``/``running_var`` instead and returns them unchanged.
    Nothing is mutated: the new running statistics are returned.

    Args:
      x: array of shape (N, D).
      gamma, beta: arrays of shape (D,).
      running: pair ``(running_mean, running_var)`` of arrays of shape (D,).
      train: True for batch statistics (a Python bool: it selects the program).
      momentum: running-average momentum (default 0.9; PyTorch's 0.1 means the same).
      eps: added to the variance (default 1e-5).

    Returns:
      out: array of shape (N, D); running: the updated pair; cache: a :class:`NormCache`.
    """
    fn = "batchnorm_forward"
    x = _check_norm_args(fn, x, gamma, beta)
    running_mean, running_var = running
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        if _checks.shape_of(v) != (x.shape[1],):
            raise ValueError(f"{fn}: {name} has shape {_checks.shape_of(v)} but x has shape {tuple(x.shape)}; it must have shape ({x.shape[1]},)")
    if not train:
        out, cache = _normalize(x, running_mean, running_var, gamma, beta, eps, None)
        return out, (running_mean, running_var), cache
    mean = jnp.mean(x, axis=0)
    var = jnp.mean(jnp.square(x - mean), axis=0)
    out, cache = _normalize(x, mean, var, gamma, beta, eps, 0)
    new_mean = momentum * running_mean + (1 - momentum) * mean
    new_var = momentum * running_var + (1 - momentum) * var
    return out, (new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)), cache


def batchnorm_backward(dout, cache):
    """Backward pass of :func:`batchnorm_forward`.

    Train mode (statistics over the N samples)::

        dx = inv_std / N * (N * dxhat - sum_n dxhat - xhat * sum_n (dxhat * xhat)),  dxhat = dout * gamma

    Eval mode: ``dx = dout * gamma * inv_std``. Both: ``dgamma = sum_n dout * xhat``,
    ``dbeta = sum_n dout``.

    Args:
      dout: array of shape (N, D).
      cache: the :class:`NormCache` from the forward pass.

    Returns:
      dx: (N, D); dgamma: (D,); dbeta: (D,).
    """
    return _norm_backward("batchnorm_backward", dout, cache)


def layernorm_forward(x, gamma, beta, *, eps=1e-5):
    """Layer normalization: per-sample statistics over the D features, same in train and eval::

        mean_n = mean_d x[n],  var_n = mean_d (x[n] - mean_n)**2
        out = gamma * (x - mean_n) / sqrt(var_n + eps) + beta

    Args:
      x: array of shape (N, D).
      gamma, beta: arrays of shape (D,).
      eps: added to the variance (default 1e-5).

    Returns:
      out: array of shape (N, D); cache: a :class:`NormCache`.
    """
    x = _check_norm_args("layernorm_forward", x, gamma, beta)
    mean = jnp.mean(x, axis=1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=1, keepdims=True)
    return _normalize(x, mean, var, gamma, beta, eps, 1)


def layernorm_backward(dout, cache):
    """Backward pass of :func:`layernorm_forward`: the batch-norm formula along the feature axis::

        dx = inv_std / D * (D * dxhat - sum_d dxhat - xhat * sum_d (dxhat * xhat))

    Returns:
      dx: (N, D); dgamma: (D,); dbeta: (D,).
    """
    return _norm_backward("layernorm_backward", dout, cache)


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------


def dropout_forward(x, rate, key, *, train=True):
    """Inverted dropout.

    ``rate`` is the probability of DROPPING each unit. In train mode::

        mask = (u >= rate) / (1 - rate),  u ~ Uniform[0, 1) drawn from ``key``
        out = x * mask

    so that ``E[out] = x`` and eval mode (``train=False``) is the identity. ``rate = 0`` keeps
    every unit (the identity, bit for bit).

    Args:
      x: array of any shape.
      rate: drop probability in [0, 1), a float or a scalar array (may be traced, e.g. vmapped).
      key: a PRNG key (ignored, and may be None, in eval mode).
      train: a Python bool.

    Returns:
      out: array of x's shape; cache: the scaled mask (None in eval mode).
    """
    fn = "dropout_forward"
    x = _checks.float_array(fn, "x", x)
    _checks.rate(fn, "rate", rate)
    if not train:
        return x, None
    if key is None:
        raise ValueError(f"{fn}: key is None; train-mode dropout needs a PRNG key")
    u = jax.random.uniform(key, x.shape, dtype=x.dtype)
    mask = jnp.where(u >= rate, 1 / (1 - jnp.asarray(rate, x.dtype)), jnp.zeros((), x.dtype))
    return x * mask, mask


def dropout_backward(dout, cache):
    """Backward pass of :func:`dropout_forward`: ``dx = dout * mask`` (``dout`` in eval mode)."""
    mask = cache
    if mask is None:
        return dout
    _checks.upstream("dropout_backward", dout, mask.shape)
    return dout * mask


# --------------------------------------------------------------------------------------------
# Softmax
# --------------------------------------------------------------------------------------------


def softmax_forward(x):
    """Numerically stable softmax over the last axis:
    ``out = exp(x - max(x)) / sum(exp(x - max(x)))``.

    Args:
      x: array of shape (..., C).

    Returns:
      out: array of x's shape, rows summing to 1; cache: ``out``.
    """
    x = _checks.float_array("softmax_forward", "x", x, min_ndim=1)
    z = x - jnp.max(x, axis=-1, keepdims=True)
    e = jnp.exp(z)
    out = e / jnp.sum(e, axis=-1, keepdims=True)
    return out, out


def softmax_backward(dout, cache):
    """Backward pass of :func:`softmax_forward` (the softmax Jacobian-vector product):
    ``dx = out * (dout - sum(dout * out, axis=-1))``."""
    out = cache
    _checks.upstream("softmax_backward", dout, out.shape)
    return out * (dout - jnp.sum(dout * out, axis=-1, keepdims=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IdentityCache:
    """Cache of :func:`identity_forward`: the output's shape (static; no array is kept)."""

    shape: tuple = dataclasses.field(metadata=dict(static=True))


def identity_forward(x):
    """The identity ``out = x`` (a linear "activation"; the skip branch of a residual block).

    Args:
      x: array of any shape.

    Returns:
      out: x itself; cache: x's shape (static), for the backward's shape check.
    """
    x = _checks.float_array("identity_forward", "x", x)
    return x, IdentityCache(tuple(x.shape))


def identity_backward(dout, cache: IdentityCache):
    """Backward pass of :func:`identity_forward`: ``dx = dout``."""
    _checks.upstream("identity_backward", dout, cache.shape)
    return dout


#: The activation layers by name: ``name -> (forward, backward)``.
ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "identity": (identity_forward, identity_backward),
}


# --------------------------------------------------------------------------------------------
# Convolution and pooling: images (N, C, H, W), filters (F, C, HH, WW)
# --------------------------------------------------------------------------------------------
#
# Output sizes follow the floor rule of PyTorch and lax, H' = 1 + (H + 2 * pad_h - HH) // stride_h:
# when the stride does not tile the padded input, its last rows/columns that do not fill a window
# are ignored and get a zero gradient. cs231n assumes the division is exact; fnet does not.


def _pair(fn, name, value, *, minimum):
    """``value``, an int or an (h, w) pair of ints, each >= ``minimum``, as an (h, w) tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {value!r}")
        return tuple(_checks.integer(fn, f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))
    value = _checks.integer(fn, name, value, minimum=minimum)
    return value, value


def _image(fn, x):
    """``x`` as a floating (N, C, H, W) batch, or an error that says how to load images."""
    x = _checks.float_array(fn, "x", x)
    if len(_checks.shape_of(x)) != 4:
        raise ValueError(f"{fn}: x has shape {_checks.shape_of(x)} but images need shape (N, C, H, W); "
                         "for an image data set, load the data with fnet.data.load(name, flatten=False)")
    return x


def _output_size(fn, x, window, stride, pad, what):
    """(H', W') with ``H' = 1 + (H + 2 * pad_h - window_h) // stride_h``; raise when the window
    is larger than the padded input."""
    padded = tuple(n + 2 * p for n, p in zip(x.shape[2:], pad))
    if window[0] > padded[0] or window[1] > padded[1]:
        size = f"{padded[0]}x{padded[1]}"
        where = f"padded input ({size} with pad {pad})" if any(pad) else f"input ({size})"
        raise ValueError(f"{fn}: the {window[0]}x{window[1]} {what} is larger than the {where}; "
                         f"x has shape {_checks.shape_of(x)}")
    return tuple(1 + (n - k) // s for n, k, s in zip(padded, window, stride))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ConvCache:
    """Cache of :func:`conv_forward`.

    Fields:
      x: the input, shape (N, C, H, W), unpadded (the backward's convolution pads it again).
      W: the filters, shape (F, C, HH, WW).
      stride: (stride_h, stride_w), static.
      pad: (pad_h, pad_w), static.
    """

    x: jax.Array
    W: jax.Array
    stride: tuple = dataclasses.field(metadata=dict(static=True))
    pad: tuple = dataclasses.field(metadata=dict(static=True))


# Layout: the API is NCHW/OIHW (cs231n's), but the computations run channel-last: x as NHWC,
# filters as HWIO, with a transpose on each side (the forward and dx are convolutions; dW is a
# matmul with the patches, see conv_backward). Outside a loop XLA:CPU
# is as fast either way (it rearranges convolutions itself), but INSIDE a while loop (a scanned
# epoch) it keeps an NCHW convolution in a slow path: measured on 2 cores (jax 0.10.2; jax issue
# #12868), (64, 32, 14, 14) images, 64 3x3 filters, per call alone / per loop iteration:
#   NCHW:            forward 12.0 / 116.3 ms, dx 10.3 / 75.9 ms, dW 21.3 / 148.7 ms
#   channel-last:    forward  8.0 /   4.6 ms, dx 11.9 /  9.8 ms, dW 22.4 /  20.1 ms
# so a scanned CNN epoch runs 3-4x faster this way, and dW as matmuls 2.7x faster again
# (benchmarks/conv_layout.py compares the layouts outside loops, where the choice barely matters).


def _to_nhwc(x):
    return jnp.transpose(x, (0, 2, 3, 1))


def _from_nhwc(x):
    return jnp.transpose(x, (0, 3, 1, 2))


def conv_forward(x, W, b, *, stride=1, pad=0):
    """Convolution (cross-correlation, as in every deep-learning library) of images with filters.

    ::

        xpad = x zero-padded by pad_h rows and pad_w columns on each side
        out[n, f, i, j] = b[f] + sum_{c, di, dj} W[f, c, di, dj] * xpad[n, c, stride_h * i + di, stride_w * j + dj]
        H' = 1 + (H + 2 * pad_h - HH) // stride_h,   W' = 1 + (W + 2 * pad_w - WW) // stride_w

    Floor rule: when the stride does not tile the padded input, its last rows/columns that no
    window reaches are ignored (and get a zero gradient), as in PyTorch and ``lax``.

    Args:
      x: images, shape (N, C, H, W).
      W: filters, shape (F, C, HH, WW).
      b: biases, shape (F,).
      stride: an int or a pair (stride_h, stride_w) of positive ints.
      pad: an int or a pair (pad_h, pad_w) of non-negative ints (zero padding).

    Returns:
      out: shape (N, F, H', W'); cache: a :class:`ConvCache` (x, W, stride, pad).
    """
    fn = "conv_forward"
    x = _image(fn, x)
    W = _checks.float_array(fn, "W", W)
    if len(_checks.shape_of(W)) != 4:
        raise ValueError(f"{fn}: W has shape {_checks.shape_of(W)} but filters need shape (F, C, HH, WW)")
    b = _checks.float_array(fn, "b", b)
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"{fn}: x has shape {tuple(x.shape)} ({x.shape[1]} channels) but W has shape "
                         f"{tuple(W.shape)} ({W.shape[1]} channels); W.shape[1] must equal x.shape[1]")
    if _checks.shape_of(b) != (W.shape[0],):
        raise ValueError(f"{fn}: b has shape {_checks.shape_of(b)} but W has shape {tuple(W.shape)}; "
                         f"b must have shape ({W.shape[0]},)")
    stride = _pair(fn, "stride", stride, minimum=1)
    pad = _pair(fn, "pad", pad, minimum=0)
    _output_size(fn, x, W.shape[2:], stride, pad, f"kernel of W (shape {tuple(W.shape)})")
    dtype = jnp.result_type(x, W)  # lax's convolution needs one dtype; promote as x @ W would
    x, W = x.astype(dtype), W.astype(dtype)
    out = jax.lax.conv_general_dilated(_to_nhwc(x), jnp.transpose(W, (2, 3, 1, 0)), stride, [(p, p) for p in pad],
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return _from_nhwc(out) + b[:, None, None], ConvCache(x, W, stride, pad)


def conv_backward(dout, cache):
    """Backward pass of :func:`conv_forward`, itself two convolutions (stride s, pad p, per axis)::

        dxpad[n, c, y, z] = sum_{f, i, j, di, dj : s*i + di = y, s*j + dj = z} dout[n, f, i, j] * W[f, c, di, dj]
        dx = dxpad without its padding
        dW[f, c, di, dj] = sum_{n, i, j} dout[n, f, i, j] * xpad[n, c, s*i + di, s*j + dj]
        db[f] = sum_{n, i, j} dout[n, f, i, j]

    dx is a full correlation of ``dout`` dilated by the stride with the spatially flipped filters,
    their in/out channels swapped; dW is, per filter offset, the product of ``dout`` with the
    matching strided slice of ``xpad`` (im2col, one column block at a time). Rows/columns that no window reached (the floor rule) get dx = 0.

    Args:
      dout: upstream gradient, shape (N, F, H', W').
      cache: the :class:`ConvCache` from the forward pass.

    Returns:
      dx: (N, C, H, W); dW: (F, C, HH, WW); db: (F,).
    """
    x, W, stride, pad = cache.x, cache.W, cache.stride, cache.pad
    kernel = W.shape[2:]
    out_hw = tuple(1 + (n + 2 * p - k) // s for n, p, k, s in zip(x.shape[2:], pad, kernel, stride))
    _checks.upstream("conv_backward", dout, (x.shape[0], W.shape[0], *out_hw))
    dtype = jnp.result_type(dout, x)
    dout, x, W = dout.astype(dtype), x.astype(dtype), W.astype(dtype)
    # rest: padded rows/columns past the last window (floor rule), per axis.
    rest = [(n + 2 * p - k) % s for n, p, k, s in zip(x.shape[2:], pad, kernel, stride)]
    # dx (per axis, stride s, pad p, kernel k): with D = dout dilated by s (s - 1 zeros between
    # entries, s*(H'-1) + 1 long), dxpad[y] = sum_di D[y - di] W[di], a full convolution: a
    # correlation of D padded by k - 1 on each side with the flipped W, contracting over f (W as
    # an (in=F, out=C) kernel: "IOHW"). That gives s*(H'-1) + k = H + 2p - rest rows: pad `rest`
    # more at the end (rows no window reached get 0), then crop p on each side to go from xpad
    # to x. Net padding (k - 1 - p, k - 1 - p + rest); negative padding crops.
    dx = _from_nhwc(jax.lax.conv_general_dilated(
        _to_nhwc(dout), jnp.transpose(W[:, :, ::-1, ::-1], (2, 3, 0, 1)), (1, 1),
        [(k - 1 - p, k - 1 - p + r) for k, p, r in zip(kernel, pad, rest)],
        lhs_dilation=stride, dimension_numbers=("NHWC", "HWIO", "NHWC")))
    # dW[f, c, di, dj] = sum_{n, i, j} dout[n, f, i, j] xpad[n, c, s*i + di, s*j + dj]: for each
    # filter offset (di, dj), one matmul of dout as (F, N H' W') with the strided slice
    # xpad[:, s*i + di, s*j + dj] as (N H' W', C) (Deep Learning from Scratch's im2col, one
    # column block at a time; rows past the last window are in no slice: the floor rule). The
    # offsets run in a loop, so that one slice exists at a time: all of them at once (im2col's
    # HH*WW copies of x) raised a CNN epoch's peak memory 1.9x for a 25% gain. XLA:CPU's own
    # convolution for this contraction (x's batch axis as its feature axis) runs 2.7x slower
    # inside a scanned epoch: (64, 32, 14, 14) images, 64 3x3 filters, 20.3 vs 7.5 ms per
    # iteration (jax 0.10.2, 2 cores).
    n, (ho, wo), (kh, kw), (sh, sw) = x.shape[0], out_hw, kernel, stride
    xpad = jnp.pad(_to_nhwc(x), ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
    d2t = _to_nhwc(dout).reshape(n * ho * wo, -1).T

    def offset(k):  # dW[:, :, di, dj] for k = di * kw + dj, from one slice at a time
        start = (0, k // kw, k % kw, 0)
        patch = jax.lax.dynamic_slice(xpad, start, (n, sh * (ho - 1) + 1, sw * (wo - 1) + 1, x.shape[1]))
        return d2t @ patch[:, ::sh, ::sw, :].reshape(n * ho * wo, -1)

    dW = jnp.moveaxis(jax.lax.map(offset, jnp.arange(kh * kw)), 0, -1).reshape(W.shape)
    db = jnp.sum(dout, axis=(0, 2, 3))
    return dx, dW, db


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PoolCache:
    """Cache of the pooling layers.

    Fields:
      argmax: max pooling: int32 array (N, C, H', W'), the position ``k = di * pool_width + dj``
        in each window (row-major) of the element that gave the maximum; None for average pooling.
      shape: x's shape (N, C, H, W), static.
      window: (pool_height, pool_width), static.
      stride: (stride_h, stride_w), static.
    """

    argmax: jax.Array | None
    shape: tuple = dataclasses.field(metadata=dict(static=True))
    window: tuple = dataclasses.field(metadata=dict(static=True))
    stride: tuple = dataclasses.field(metadata=dict(static=True))

    @property
    def out_shape(self):
        """The pooled output's shape (N, C, H', W')."""
        return self.shape[:2] + tuple(1 + (n - k) // s for n, k, s in zip(self.shape[2:], self.window, self.stride))


def _pool_setup(fn, x, pool_height, pool_width, stride):
    """Check pooling arguments; return x and its :class:`PoolCache` without the argmax."""
    x = _image(fn, x)
    window = (_checks.integer(fn, "pool_height", pool_height, minimum=1),
              _checks.integer(fn, "pool_width", pool_width, minimum=1))
    stride = _pair(fn, "stride", stride, minimum=1)
    _output_size(fn, x, window, stride, (0, 0), "pooling window (pool_height x pool_width)")
    return x, PoolCache(None, tuple(x.shape), window, stride)


def _window_slices(x, cache: PoolCache):
    """The pooling windows' elements as (N, C, H', W') strided slices of x, in row-major window
    order (element (di, dj) at position di * pool_width + dj); no copy of x is stacked."""
    (ph, pw), (sh, sw), (ho, wo) = cache.window, cache.stride, cache.out_shape[2:]
    return [x[:, :, di:di + sh * (ho - 1) + 1:sh, dj:dj + sw * (wo - 1) + 1:sw] for di in range(ph) for dj in range(pw)]


def _tiles(cache: PoolCache) -> bool:
    """True when the windows tile x exactly (stride = window, no rows/columns left over)."""
    return cache.stride == cache.window and all(o * k == n for o, k, n in zip(cache.out_shape[2:], cache.window,
                                                                               cache.shape[2:]))


def _windows_transpose(parts, cache: PoolCache):
    """Adjoint of :func:`_window_slices`: add ``parts[k]`` (each (N, C, H', W')) back to the
    positions of x (N, C, H, W) it was sliced from; where windows overlap, contributions add up."""
    (ph, pw), (sh, sw), (ho, wo) = cache.window, cache.stride, cache.out_shape[2:]
    n, c, h, w = cache.shape
    if _tiles(cache):
        # Windows that tile x: interleave the parts with one reshape (the common 2x2/stride-2 case).
        g = jnp.stack(parts, axis=-1).reshape(n, c, ho, wo, ph, pw)
        return g.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)
    zero = jnp.zeros((), parts[0].dtype)
    # The adjoint of the strided slice x[di : ... : sh] is a zero pad: low di, s - 1 zeros between
    # entries, the rest high. Under jit the pads and adds fuse into one loop, with no scatter.
    dx = None
    for k, part in enumerate(parts):
        di, dj = divmod(k, pw)
        placed = jax.lax.pad(part, zero, [
            (0, 0, 0), (0, 0, 0),
            (di, h - di - sh * (ho - 1) - 1, sh - 1), (dj, w - dj - sw * (wo - 1) - 1, sw - 1)])
        dx = placed if dx is None else dx + placed
    return dx


def max_pool_forward(x, *, pool_height, pool_width, stride):
    """Max pooling over pool_height x pool_width windows (no padding)::

        out[n, c, i, j] = max_{di < pool_height, dj < pool_width} x[n, c, stride_h * i + di, stride_w * j + dj]
        H' = 1 + (H - pool_height) // stride_h,   W' = 1 + (W - pool_width) // stride_w

    Windows may overlap (stride < pool). Floor rule: rows/columns past the last whole window are
    ignored (zero gradient). Ties: the gradient goes to the FIRST maximum of the window in
    row-major order (an argmax's, as in PyTorch and Deep Learning from Scratch). A NaN in a window
    gives a NaN output (and takes the gradient).

    Args:
      x: images, shape (N, C, H, W).
      pool_height, pool_width: window size, positive ints.
      stride: an int or a pair (stride_h, stride_w) of positive ints.

    Returns:
      out: shape (N, C, H', W'); cache: a :class:`PoolCache` holding the argmax of each window.
    """
    x, cache = _pool_setup("max_pool_forward", x, pool_height, pool_width, stride)
    # A running tournament over the window's elements in row-major order: a later element wins
    # only if it is strictly larger (so ties go to the first), or if it is NaN and the best so far
    # is not (a NaN counts as the maximum, as in argmax). Elementwise selects on strided slices
    # fuse into one loop over the output. The output is the winning element itself, selected (not
    # a jnp.max): JAX's autodiff of this forward then also sends a tie's gradient to the first
    # maximum, as the backward does, so grad="autodiff" runs match grad="manual" ones.
    parts = _window_slices(x, cache)
    best, argmax = parts[0], jnp.zeros(parts[0].shape, jnp.int32)
    for k, v in enumerate(parts[1:], 1):
        wins = (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))
        best, argmax = jnp.where(wins, v, best), jnp.where(wins, k, argmax)
    return best, dataclasses.replace(cache, argmax=argmax)


def max_pool_backward(dout, cache):
    """Backward pass of :func:`max_pool_forward`: each window's ``dout`` goes to the element that
    gave its maximum (the first one on ties); where windows overlap, gradients add up::

        dx[n, c, stride_h * i + di, stride_w * j + dj] += dout[n, c, i, j]   for (di, dj) = argmax of window (i, j)

    Args:
      dout: upstream gradient, shape (N, C, H', W').
      cache: the :class:`PoolCache` from the forward pass.

    Returns:
      dx: shape (N, C, H, W).
    """
    _checks.upstream("max_pool_backward", dout, cache.out_shape)
    zero = jnp.zeros((), dout.dtype)
    parts = [jnp.where(cache.argmax == k, dout, zero) for k in range(cache.window[0] * cache.window[1])]
    return _windows_transpose(parts, cache)


def avg_pool_forward(x, *, pool_height, pool_width, stride):
    """Average pooling over pool_height x pool_width windows (no padding)::

        out[n, c, i, j] = mean_{di < pool_height, dj < pool_width} x[n, c, stride_h * i + di, stride_w * j + dj]
        H' = 1 + (H - pool_height) // stride_h,   W' = 1 + (W - pool_width) // stride_w

    Windows may overlap; the floor rule applies as in :func:`max_pool_forward`.

    Args:
      x: images, shape (N, C, H, W).
      pool_height, pool_width: window size, positive ints.
      stride: an int or a pair (stride_h, stride_w) of positive ints.

    Returns:
      out: shape (N, C, H', W'); cache: a :class:`PoolCache` (shapes only, no arrays).
    """
    x, cache = _pool_setup("avg_pool_forward", x, pool_height, pool_width, stride)
    size = cache.window[0] * cache.window[1]
    # A Python 0 as the init: JAX then lowers to its reduce_window_sum, which autodiff (the
    # reference of the tests) can differentiate.
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 1, *cache.window), (1, 1, *cache.stride),
                                  "VALID")
    return total / size, cache


def avg_pool_backward(dout, cache):
    """Backward pass of :func:`avg_pool_forward`: every element of window (i, j) gets
    ``dout[n, c, i, j] / (pool_height * pool_width)``; where windows overlap, gradients add up.

    Args:
      dout: upstream gradient, shape (N, C, H', W').
      cache: the :class:`PoolCache` from the forward pass.

    Returns:
      dx: shape (N, C, H, W).
    """
    _checks.upstream("avg_pool_backward", dout, cache.out_shape)
    size = cache.window[0] * cache.window[1]
    return _windows_transpose([dout / size] * size, cache)


def global_avg_pool_forward(x):
    """Global average pooling: the mean of each channel over the image,
    ``out[n, c] = mean_{h, w} x[n, c, h, w]``.

    Args:
      x: images, shape (N, C, H, W).

    Returns:
      out: shape (N, C); cache: a :class:`PoolCache` with x's shape, an (H, W) window and stride,
      and no arrays (its ``out_shape`` is (N, C, 1, 1), the output before squeezing).
    """
    x = _image("global_avg_pool_forward", x)
    hw = tuple(x.shape[2:])
    return jnp.mean(x, axis=(2, 3)), PoolCache(None, tuple(x.shape), hw, hw)


def global_avg_pool_backward(dout, cache):
    """Backward pass of :func:`global_avg_pool_forward`: ``dx[n, c, h, w] = dout[n, c] / (H * W)``.

    Args:
      dout: upstream gradient, shape (N, C).
      cache: the :class:`PoolCache` from the forward pass.

    Returns:
      dx: shape (N, C, H, W).
    """
    _checks.upstream("global_avg_pool_backward", dout, cache.shape[:2])
    h, w = cache.shape[2:]
    return jnp.broadcast_to(dout[:, :, None, None] / (h * w), cache.shape)


# --------------------------------------------------------------------------------------------
# Spatial normalization: images (N, C, H, W), per-channel gamma and beta (C,)
# --------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpatialNormCache:
    """Cache of spatial batch norm and spatial group norm.

    Fields:
      norm: the :class:`NormCache` of the normalization on the reshaped input (see each layer).
      shape: x's shape (N, C, H, W), static.
    """

    norm: NormCache
    shape: tuple = dataclasses.field(metadata=dict(static=True))


def _check_channel_params(fn, x, **params):
    """Check that each named parameter is a floating array of shape (C,), x being (N, C, H, W)."""
    for name, v in params.items():
        _checks.float_array(fn, name, v)
        if _checks.shape_of(v) != (x.shape[1],):
            raise ValueError(f"{fn}: {name} has shape {_checks.shape_of(v)} but x has shape {tuple(x.shape)}; "
                             f"{name} must have shape ({x.shape[1]},), one value per channel")


def spatial_batchnorm_forward(x, gamma, beta, running, *, train=True, momentum=0.9, eps=1e-5):
    """Spatial batch normalization: :func:`batchnorm_forward` with per-CHANNEL statistics over
    (N, H, W), every pixel of every image a sample of its channel::

        mean[c] = mean_{n, h, w} x[n, c, h, w],  var[c] = mean_{n, h, w} (x[n, c, h, w] - mean[c])**2
        out[n, c, h, w] = gamma[c] * (x[n, c, h, w] - mean[c]) / sqrt(var[c] + eps) + beta[c]

    Deep Learning from Scratch's BatchNormalization flattens images to (N, C*H*W) instead, which
    gives per-PIXEL statistics. Running statistics, momentum, eps and the eval mode are batch
    norm's (see the module docstring).

    Args:
      x: images, shape (N, C, H, W).
      gamma, beta: shape (C,).
      running: pair ``(running_mean, running_var)`` of shape (C,).
      train, momentum, eps: as in :func:`batchnorm_forward`.

    Returns:
      out: shape (N, C, H, W); running: the updated pair; cache: a :class:`SpatialNormCache`
      whose ``norm`` is batch norm's cache of the (N*H*W, C) input.
    """
    fn = "spatial_batchnorm_forward"
    x = _image(fn, x)
    _check_channel_params(fn, x, gamma=gamma, beta=beta, running_mean=running[0], running_var=running[1])
    n, c, h, w = x.shape
    # (N, C, H, W) -> (N*H*W, C): batch norm's samples are then the pixels, its features the channels.
    out, running, norm = batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, running,
                                           train=train, momentum=momentum, eps=eps)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), running, SpatialNormCache(norm, tuple(x.shape))


def spatial_batchnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_batchnorm_forward`: :func:`batchnorm_backward` on the
    (N*H*W, C) reshape.

    Args:
      dout: upstream gradient, shape (N, C, H, W).
      cache: the :class:`SpatialNormCache` from the forward pass.

    Returns:
      dx: (N, C, H, W); dgamma: (C,); dbeta: (C,).
    """
    _checks.upstream("spatial_batchnorm_backward", dout, cache.shape)
    n, c, h, w = cache.shape
    dx, dgamma, dbeta = batchnorm_backward(dout.transpose(0, 2, 3, 1).reshape(-1, c), cache.norm)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_groupnorm_forward(x, gamma, beta, G, *, eps=1e-5):
    """Spatial group normalization: statistics per sample and per group of C/G consecutive
    channels, over the group's (C/G, H, W) elements; the same in train and eval::

        mean[n, g] = mean of x[n, g*C/G : (g+1)*C/G, :, :],  var[n, g] = their (biased) variance
        out[n, c, h, w] = gamma[c] * (x[n, c, h, w] - mean[n, g(c)]) / sqrt(var[n, g(c)] + eps) + beta[c]

    G = 1 is layer norm over (C, H, W); G = C is instance norm.

    Args:
      x: images, shape (N, C, H, W).
      gamma, beta: shape (C,), one value per channel.
      G: number of groups, a positive int dividing C.
      eps: added to the variance (default 1e-5).

    Returns:
      out: shape (N, C, H, W); cache: a :class:`SpatialNormCache` whose ``norm`` is the
      :class:`NormCache` of the (N, G, K) reshape, K = C/G * H * W, with gamma broadcast to (G, K).
    """
    fn = "spatial_groupnorm_forward"
    x = _image(fn, x)
    _check_channel_params(fn, x, gamma=gamma, beta=beta)
    n, c, h, w = x.shape
    G = _checks.integer(fn, "G", G, minimum=1)
    if c % G:
        raise ValueError(f"{fn}: G = {G} does not divide the {c} channels of x (shape {tuple(x.shape)}); "
                         "G must divide C")
    # (N, C, H, W) -> (N, G, K): a group's elements on one axis, so _normalize and _norm_backward
    # run along axis 2 as layer norm's run along axis 1. Per-channel gamma/beta become (G, K).
    xg = x.reshape(n, G, -1)
    mean = jnp.mean(xg, axis=2, keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=2, keepdims=True)

    def per_element(v):  # (C,) -> (G, K): channel g * C/G + j's value on its H * W elements
        return jnp.broadcast_to(v.reshape(G, c // G, 1), (G, c // G, h * w)).reshape(G, -1)

    out, norm = _normalize(xg, mean, var, per_element(gamma), per_element(beta), eps, 2)
    return out.reshape(x.shape), SpatialNormCache(norm, tuple(x.shape))


def spatial_groupnorm_backward(dout, cache):
    """Backward pass of :func:`spatial_groupnorm_forward`: the batch-norm formula along each
    group's K = C/G * H * W elements, ``dxhat = dout * gamma``::

        dx = inv_std / K * (K * dxhat - sum_group dxhat - xhat * sum_group (dxhat * xhat))
        dgamma[c] = sum_{n, h, w} dout * xhat,   dbeta[c] = sum_{n, h, w} dout

    Args:
      dout: upstream gradient, shape (N, C, H, W).
      cache: the :class:`SpatialNormCache` from the forward pass.

    Returns:
      dx: (N, C, H, W); dgamma: (C,); dbeta: (C,).
    """
    fn = "spatial_groupnorm_backward"
    _checks.upstream(fn, dout, cache.shape)
    n, c, h, w = cache.shape
    dx, dgamma, dbeta = _norm_backward(fn, dout.reshape(cache.norm.xhat.shape), cache.norm)
    # _norm_backward sums dgamma and dbeta over N only, per (group, element): sum each channel's pixels.
    return dx.reshape(cache.shape), dgamma.reshape(c, h * w).sum(axis=1), dbeta.reshape(c, h * w).sum(axis=1)
