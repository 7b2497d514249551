"""Normalization layers as forward/backward pairs: batch norm and layer norm of (N, D) features,
spatial batch norm and spatial group norm of (N, C, H, W) images. Conventions (momentum, eps, the
biased variance): :mod:`fnet.layers`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fnet import _checks
from fnet.layers.conv import as_images

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
    if axis == 0:  # gamma is constant along the batch axis: the sums are gamma * dbeta, gamma * dgamma
        sum_dxhat, sum_dxhat_xhat = gamma * dbeta, gamma * dgamma
    else:
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
    x = as_images(fn, x)
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
    x = as_images(fn, x)
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
