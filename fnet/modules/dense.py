"""Dense layers, activations and flatten as modules (:func:`fnet.layers.affine_forward` and the
activation pairs of :mod:`fnet.layers.dense`)."""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

from fnet import _checks
from fnet import init as initializers
from fnet import layers
from fnet.modules.base import Module, Static, one_shape, shape_error


# --------------------------------------------------------------------------------------------
# Elementwise layers


def elementwise(name: str, forward: Callable, backward: Callable, *, info: str = "", **options) -> Module:
    """A parameter-free, stateless, shape-preserving module from a layer pair
    ``out, cache = forward(x, **options)`` / ``dx = backward(dout, cache)`` (stax's
    ``elementwise``). ``options`` (e.g. leaky ReLU's ``alpha``) are bound now, once."""

    def init(key, input_shape):
        del key
        return {}, {}, one_shape(name, input_shape)

    def fwd(params, state, x, *, train, key=None):
        del params, train, key  # elementwise: no parameters, same in train and eval, no randomness
        y, cache = forward(x, **options)
        return y, state, cache

    def bwd(params, cache, dy):
        del params
        return backward(dy, cache), {}

    return Module(init, fwd, bwd, name, info)


def relu() -> Module:
    """``y = max(x, 0)``; the derivative at 0 is 0 (:func:`fnet.layers.relu_forward`)."""
    return elementwise("relu", layers.relu_forward, layers.relu_backward)


def leaky_relu(alpha: float = layers.LEAKY_RELU_ALPHA) -> Module:
    """``y = x if x > 0 else alpha * x`` (:func:`fnet.layers.leaky_relu_forward`); ``alpha`` may
    be a traced scalar (built inside a traced function)."""
    return elementwise("leaky_relu", layers.leaky_relu_forward, layers.leaky_relu_backward, alpha=alpha,
                       info=f"alpha {alpha}" if isinstance(alpha, (int, float)) else "")


def sigmoid() -> Module:
    """``y = 1 / (1 + exp(-x))`` (:func:`fnet.layers.sigmoid_forward`)."""
    return elementwise("sigmoid", layers.sigmoid_forward, layers.sigmoid_backward)


def tanh() -> Module:
    """``y = tanh(x)`` (:func:`fnet.layers.tanh_forward`)."""
    return elementwise("tanh", layers.tanh_forward, layers.tanh_backward)


def identity() -> Module:
    """``y = x``, ``dx = dy``: the linear "activation", and the skip branch of a residual."""
    return elementwise("identity", layers.identity_forward, layers.identity_backward)


def softmax() -> Module:
    """Softmax over the last axis (:func:`fnet.layers.softmax_forward`). For training with
    cross-entropy, end the network with scores instead: the loss applies the softmax itself."""
    return elementwise("softmax", layers.softmax_forward, layers.softmax_backward)


#: Activation modules by name (as ``fnet.mlp(activation=...)`` accepts them).
ACTIVATIONS = {"relu": relu, "leaky_relu": leaky_relu, "sigmoid": sigmoid, "tanh": tanh, "identity": identity}


# --------------------------------------------------------------------------------------------
# Dense layers and flatten


def dense(units: int, *, init="he") -> Module:
    """Fully connected layer ``y = x_flat @ W + b`` (:func:`fnet.layers.affine_forward`).

    Input (N, d1, ..., dk) is flattened to (N, D), D = d1 * ... * dk; output (N, units).
    Params ``{"W": (D, units), "b": (units,)}``: W from ``init`` ("he" (default), "xavier",
    "normal" (std 0.01), "zeros", a float std, or ``(key, shape, dtype) -> array``), b zeros.
    """
    units = _checks.integer("dense", "units", units, minimum=1)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = one_shape("dense", input_shape)
        if len(input_shape) < 2:
            raise shape_error("dense", input_shape, "(N, D) or (N, d1, ..., dk)")
        d = math.prod(input_shape[1:])
        params = {"W": w_init(key, (d, units), jnp.float32), "b": jnp.zeros((units,), jnp.float32)}
        return params, {}, (input_shape[0], units)

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.affine_forward(x, params["W"], params["b"])
        return y, state, cache

    def backward(params, cache, dy):
        del params  # the cache holds W (a reference, no copy)
        dx, dW, db = layers.affine_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    return Module(init_fn, forward, backward, "dense", f"{units} units, init {init if not callable(init) else 'custom'}")


def flatten() -> Module:
    """Reshape (N, d1, ..., dk) to (N, d1 * ... * dk), e.g. between convolutions and dense layers."""

    def init(key, input_shape):
        del key
        input_shape = one_shape("flatten", input_shape)
        if len(input_shape) < 2:
            raise shape_error("flatten", input_shape, "(N, d1, ..., dk)")
        return {}, {}, (input_shape[0], math.prod(input_shape[1:]))

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        return x.reshape(x.shape[0], -1), state, Static(tuple(x.shape[1:]))

    def backward(params, cache, dy):
        del params
        return dy.reshape(dy.shape[0], *cache.value), {}

    return Module(init, forward, backward, "flatten")
