"""Affine layer and activations as forward/backward pairs: affine, relu, leaky_relu, sigmoid,
tanh, softmax, identity, and :data:`ACTIVATIONS` (name -> pair). Conventions: :mod:`fnet.layers`.
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

