"""Normalization modules: batch norm (per feature, or per channel of images), layer norm, group
norm (:mod:`fnet.layers.norm`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnet import _checks
from fnet import layers
from fnet.modules.base import Module, Static, image_shape, one_shape, shape_error


class BatchNormState(NamedTuple):
    """State of :func:`batchnorm`."""

    mean: jax.Array
    """Running mean, shape (D,) (per feature) or (C,) (per channel of images); starts at 0."""
    var: jax.Array
    """Running (biased) variance, same shape; starts at 1."""


def _check_rank(name: str, input_shape, ranks: tuple, expected: str) -> tuple:
    input_shape = one_shape(name, input_shape)
    if len(input_shape) not in ranks:
        raise shape_error(name, input_shape, expected)
    return input_shape


def batchnorm(*, momentum: float = 0.9, eps: float = 1e-5) -> Module:
    """Batch normalization with running statistics in ``state`` (a :class:`BatchNormState`).

    Input (N, D): statistics per feature over the batch (:func:`fnet.layers.batchnorm_forward`).
    Input (N, C, H, W): per channel over (N, H, W) (:func:`fnet.layers.spatial_batchnorm_forward`).
    Params ``{"gamma": ones, "beta": zeros}`` of shape (D,) or (C,). Train mode normalizes with
    the batch statistics and updates the running ones (``running = momentum * running + (1 -
    momentum) * batch``); eval mode uses the running statistics and leaves them unchanged.
    """
    def init(key, input_shape):
        del key
        input_shape = _check_rank("batchnorm", input_shape, (2, 4), "(N, D) or (N, C, H, W)")
        d = input_shape[1]
        params = {"gamma": jnp.ones((d,)), "beta": jnp.zeros((d,))}
        return params, BatchNormState(jnp.zeros((d,)), jnp.ones((d,))), input_shape

    def forward(params, state, x, *, train, key=None):
        del key
        fwd = layers.batchnorm_forward if x.ndim == 2 else layers.spatial_batchnorm_forward
        y, (mean, var), cache = fwd(x, params["gamma"], params["beta"], (state.mean, state.var), train=train,
                                    momentum=momentum, eps=eps)
        return y, BatchNormState(mean, var), cache

    def backward(params, cache, dy):
        del params
        bwd = layers.batchnorm_backward if dy.ndim == 2 else layers.spatial_batchnorm_backward
        dx, dgamma, dbeta = bwd(dy, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}

    return Module(init, forward, backward, "batchnorm", f"momentum {momentum}, eps {eps}")


def layernorm(*, eps: float = 1e-5) -> Module:
    """Layer normalization over the last axis: input (N, D), or (N, ..., D) such as a transformer's
    (N, T, E), each vector of D features normalized with its own statistics, the same in train
    and eval (:func:`fnet.layers.layernorm_forward` on the rows of x reshaped to (-1, D)).
    Params ``{"gamma", "beta"}`` (D,)."""
    def init(key, input_shape):
        del key
        input_shape = one_shape("layernorm", input_shape)
        if len(input_shape) < 2:
            raise shape_error("layernorm", input_shape, "(N, D) or (N, ..., D)")
        d = input_shape[-1]
        return {"gamma": jnp.ones((d,)), "beta": jnp.zeros((d,))}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.layernorm_forward(x.reshape(-1, x.shape[-1]), params["gamma"], params["beta"], eps=eps)
        return y.reshape(x.shape), state, (cache, Static(x.shape))

    def backward(params, cache, dy):
        del params
        cache, shape = cache
        dx, dgamma, dbeta = layers.layernorm_backward(dy.reshape(-1, dy.shape[-1]), cache)
        return dx.reshape(shape.value), {"gamma": dgamma, "beta": dbeta}

    return Module(init, forward, backward, "layernorm", f"eps {eps}")


def groupnorm(groups: int, *, eps: float = 1e-5) -> Module:
    """Spatial group normalization of images (cs231n; :func:`fnet.layers.spatial_groupnorm_forward`):
    statistics per sample and per group of C/groups channels over (C/groups, H, W), the same in
    train and eval. Params ``{"gamma": ones, "beta": zeros}`` of shape (C,)."""
    fn = "groupnorm"
    groups = _checks.integer(fn, "groups", groups, minimum=1)

    def init(key, input_shape):
        del key
        input_shape = image_shape(fn, input_shape)
        c = input_shape[1]
        if c % groups:
            raise ValueError(f"{fn}: {groups} groups do not divide the {c} channels of input shape {input_shape}")
        return {"gamma": jnp.ones((c,)), "beta": jnp.zeros((c,))}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.spatial_groupnorm_forward(x, params["gamma"], params["beta"], groups, eps=eps)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dy, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}

    return Module(init, forward, backward, fn, f"{groups} groups, eps {eps}")
