"""Convolution and pooling modules: images (N, C, H, W), filters (F, C, HH, WW), as in cs231n
(:mod:`fnet.layers.conv`, whose geometry helpers compute the output shapes in ``init``)."""

from __future__ import annotations

import jax.numpy as jnp

from fnet import _checks
from fnet import init as initializers
from fnet import layers
from fnet.layers.conv import output_size, pair
from fnet.modules.base import Module, image_shape


def conv2d(filters: int, kernel_size, *, stride=1, pad=0, init="he") -> Module:
    """2-D convolution (cross-correlation) of images (:func:`fnet.layers.conv_forward`)::

        y[n, f, i, j] = b[f] + sum_{c, di, dj} W[f, c, di, dj] * xpad[n, c, s_h*i + di, s_w*j + dj]
        H' = 1 + (H + 2 * pad_h - HH) // stride_h        (the floor rule), W' likewise

    Input (N, C, H, W), output (N, filters, H', W'). ``kernel_size``, ``stride`` and ``pad`` are
    ints or (h, w) pairs. Params ``{"W": (filters, C, HH, WW), "b": (filters,)}``; W from
    ``init`` with the fan-in of a filter, ``C * HH * WW`` (:func:`fnet.init.fan_in`), b zeros.
    """
    fn = "conv2d"
    filters = _checks.integer(fn, "filters", filters, minimum=1)
    kernel = pair(fn, "kernel_size", kernel_size)
    stride = pair(fn, "stride", stride)
    pad = pair(fn, "pad", pad, minimum=0)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = image_shape(fn, input_shape)
        out_hw = output_size(fn, input_shape, kernel, stride, pad, "kernel")
        shape = (filters, input_shape[1], *kernel)
        params = {"W": w_init(key, shape, jnp.float32), "b": jnp.zeros((filters,), jnp.float32)}
        return params, {}, (input_shape[0], filters, *out_hw)

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.conv_forward(x, params["W"], params["b"], stride=stride, pad=pad)
        return y, state, cache

    def backward(params, cache, dy):
        del params  # the cache holds W
        dx, dW, db = layers.conv_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    info = f"{filters} filters {kernel[0]}x{kernel[1]}, stride {_show_pair(stride)}, pad {_show_pair(pad)}"
    return Module(init_fn, forward, backward, "conv2d", info)


def _show_pair(hw) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _pool(kind: str, forward_fn, backward_fn, pool_size, stride) -> Module:
    fn = f"{kind}_pool"
    window = pair(fn, "pool_size", pool_size)
    stride = window if stride is None else pair(fn, "stride", stride)

    def init(key, input_shape):
        del key
        input_shape = image_shape(fn, input_shape)
        out_hw = output_size(fn, input_shape, window, stride, what="pooling window")
        return {}, {}, (*input_shape[:2], *out_hw)

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        y, cache = forward_fn(x, pool_height=window[0], pool_width=window[1], stride=stride)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        return backward_fn(dy, cache), {}

    return Module(init, forward, backward, fn, f"{window[0]}x{window[1]}, stride {_show_pair(stride)}")


def max_pool(pool_size=2, *, stride=None) -> Module:
    """Max pooling of images (:func:`fnet.layers.max_pool_forward`): each ``pool_size`` window
    (an int or an (h, w) pair) gives its maximum; ``stride`` defaults to the window (no overlap).
    On ties the gradient goes to the first maximum in row-major order. No parameters."""
    return _pool("max", layers.max_pool_forward, layers.max_pool_backward, pool_size, stride)


def avg_pool(pool_size=2, *, stride=None) -> Module:
    """Average pooling of images (:func:`fnet.layers.avg_pool_forward`); ``stride`` defaults to
    the window. No parameters."""
    return _pool("avg", layers.avg_pool_forward, layers.avg_pool_backward, pool_size, stride)


def global_avg_pool() -> Module:
    """The mean of each channel over the image: (N, C, H, W) -> (N, C)
    (:func:`fnet.layers.global_avg_pool_forward`). No parameters."""

    def init(key, input_shape):
        del key
        input_shape = image_shape("global_avg_pool", input_shape)
        return {}, {}, tuple(input_shape[:2])

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        y, cache = layers.global_avg_pool_forward(x)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        return layers.global_avg_pool_backward(dy, cache), {}

    return Module(init, forward, backward, "global_avg_pool")
