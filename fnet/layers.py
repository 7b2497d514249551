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
- Batch norm: ``running = momentum * running + (1 - momentum) * batch_stat`` with momentum 0.9
  (cs231n's; PyTorch's ``momentum=0.1`` means the same thing as fnet's 0.9), eps 1e-5, and the
  *biased* batch variance (divide by N) for both normalization and the running variance
  (PyTorch stores the unbiased one).
- Dropout: ``rate`` is the probability of DROPPING a unit (PyTorch/optax convention, unlike
  stax's keep-probability); inverted dropout scales kept units by ``1 / (1 - rate)`` at train
  time so that eval mode is the identity.
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
    out = jnp.where(x > 0, x, jnp.zeros((), x.dtype))
    return out, out


def relu_backward(dout, cache):
    """Backward pass of :func:`relu_forward`: ``dx = dout * (x > 0)``; the derivative at 0 is 0."""
    out = cache
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


def _norm_backward(dout, cache: NormCache):
    # Gradient of out = gamma * xhat + beta, xhat = (x - mean(x)) / sqrt(var(x) + eps), where the
    # statistics run over `axis` (K elements). Differentiating through mean and var gives
    #   dx = inv_std / K * (K * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).
    xhat, gamma, inv_std, axis = cache.xhat, cache.gamma, cache.inv_std, cache.axis
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
    return _norm_backward(dout, cache)


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
    return _norm_backward(dout, cache)


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
    return dout if mask is None else dout * mask


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
    return out * (dout - jnp.sum(dout * out, axis=-1, keepdims=True))


#: The activation layers by name: ``name -> (forward, backward)``.
ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
}
