"""Pooling as forward/backward pairs on images (N, C, H, W), as in cs231n: max pooling (its cache
holds each window's argmax), average pooling and global average pooling.

Output sizes follow the floor rule of :func:`fnet.layers.conv.output_size`. The windows are
sliced from channel-last images (a transpose on each side, as the convolution does): strided
slices along the minor axis of NCHW arrays run 2-3x slower on XLA:CPU than along H and W of
NHWC ones (benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fnet import _checks
from fnet.layers.conv import as_images, from_nhwc, output_size, pair, to_nhwc


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PoolCache:
    """Cache of the pooling layers.

    Fields:
      argmax: max pooling: integer array (N, C, H', W'), the position ``k = di * pool_width + dj``
        in each window (row-major) of the element that gave the maximum (int8 for windows of up
        to 127 elements, a quarter of int32's memory; int32 otherwise); None for average pooling.
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
        return self.shape[:2] + output_size("PoolCache", self.shape, self.window, self.stride)


def _pool_setup(fn, x, pool_height, pool_width, stride):
    """Check pooling arguments; return x and its :class:`PoolCache` without the argmax."""
    x = as_images(fn, x)
    window = (_checks.integer(fn, "pool_height", pool_height, minimum=1),
              _checks.integer(fn, "pool_width", pool_width, minimum=1))
    stride = pair(fn, "stride", stride)
    output_size(fn, x.shape, window, stride, what="pooling window (pool_height x pool_width)")
    return x, PoolCache(None, tuple(x.shape), window, stride)


def _window_slices(x, cache: PoolCache):
    """The pooling windows' elements of channel-last images ``x`` (N, H, W, C) as (N, H', W', C)
    strided slices, in row-major window order (element (di, dj) at position di * pool_width + dj);
    no copy of x is stacked."""
    (ph, pw), (sh, sw), (ho, wo) = cache.window, cache.stride, cache.out_shape[2:]
    return [x[:, di:di + sh * (ho - 1) + 1:sh, dj:dj + sw * (wo - 1) + 1:sw, :] for di in range(ph) for dj in range(pw)]


def _tiles(cache: PoolCache) -> bool:
    """True when the windows tile x exactly (stride = window, no rows/columns left over)."""
    return cache.stride == cache.window and all(o * k == n for o, k, n in zip(cache.out_shape[2:], cache.window,
                                                                               cache.shape[2:]))


def _windows_transpose(parts, cache: PoolCache):
    """Adjoint of :func:`_window_slices`: add ``parts[k]`` (each channel-last, (N, H', W', C)) back
    to the positions of x it was sliced from; where windows overlap, contributions add up.
    Returns dx in the API's layout, (N, C, H, W)."""
    (ph, pw), (sh, sw), (ho, wo) = cache.window, cache.stride, cache.out_shape[2:]
    n, c, h, w = cache.shape
    if _tiles(cache):
        # Windows that tile x: interleave the parts with one reshape (the common 2x2/stride-2 case).
        g = jnp.stack(parts, axis=3).reshape(n, ho, wo, ph, pw, c)
        return from_nhwc(g.transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c))
    zero = jnp.zeros((), parts[0].dtype)
    # The adjoint of the strided slice x[di : ... : sh] is a zero pad: low di, s - 1 zeros between
    # entries, the rest high. Under jit the pads and adds fuse into one loop, with no scatter.
    dx = None
    for k, part in enumerate(parts):
        di, dj = divmod(k, pw)
        placed = jax.lax.pad(part, zero, [
            (0, 0, 0), (di, h - di - sh * (ho - 1) - 1, sh - 1), (dj, w - dj - sw * (wo - 1) - 1, sw - 1),
            (0, 0, 0)])
        dx = placed if dx is None else dx + placed
    return from_nhwc(dx)


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
    parts = _window_slices(to_nhwc(x), cache)
    # The argmax is a reduction over the stacked window elements (jnp.argmax: the first maximum
    # on ties, the first NaN if any, as the docstring says), which XLA computes and stores in the
    # forward. An elementwise tournament would be cheap enough for XLA to recompute inside the
    # backward from x, keeping x (typically the ReLU output before the pooling) alive until then
    # where the small argmax would do, and the backward could not write dx over it
    # (benchmarks/README.md). The output is the winning element itself, selected (not a
    # jnp.max): JAX's autodiff of this forward then also sends a tie's gradient to the first
    # maximum, as the backward does, so grad="autodiff" runs match grad="manual" ones.
    size = len(parts)
    argmax = jnp.argmax(jnp.stack(parts, axis=-1), axis=-1).astype(jnp.int8 if size <= 127 else jnp.int32)
    best = parts[0]
    for k, v in enumerate(parts[1:], 1):
        best = jnp.where(argmax == k, v, best)
    best, argmax = from_nhwc(best), from_nhwc(argmax)
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
    argmax, dout = to_nhwc(cache.argmax), to_nhwc(dout)
    parts = [jnp.where(argmax == k, dout, zero) for k in range(cache.window[0] * cache.window[1])]
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
    return _windows_transpose([to_nhwc(dout) / size] * size, cache)


def global_avg_pool_forward(x):
    """Global average pooling: the mean of each channel over the image,
    ``out[n, c] = mean_{h, w} x[n, c, h, w]``.

    Args:
      x: images, shape (N, C, H, W).

    Returns:
      out: shape (N, C); cache: a :class:`PoolCache` with x's shape, an (H, W) window and stride,
      and no arrays (its ``out_shape`` is (N, C, 1, 1), the output before squeezing).
    """
    x = as_images("global_avg_pool_forward", x)
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

