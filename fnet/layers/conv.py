"""Convolution and pooling as forward/backward pairs: images (N, C, H, W), filters (F, C, HH, WW),
as in cs231n.

Output sizes follow the floor rule of PyTorch and lax, ``H' = 1 + (H + 2 * pad_h - HH) // stride_h``:
when the stride does not tile the padded input, its last rows/columns that do not fill a window
are ignored and get a zero gradient. cs231n assumes the division is exact; fnet does not.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fnet import _checks


# --------------------------------------------------------------------------------------------
# Geometry: the one place that checks kernel/stride/pad arguments and computes output sizes, for
# the layers here and the modules of fnet.modules alike.
# --------------------------------------------------------------------------------------------


def pair(fn: str, name: str, value, *, minimum: int = 1) -> tuple[int, int]:
    """A kernel size, stride or padding: an int or an (h, w) pair of ints (Python or NumPy), each
    >= ``minimum``, as an (h, w) tuple of Python ints.

    Raises:
      TypeError: an element is not an integer (e.g. a float or a bool).
      ValueError: a pair of the wrong length, or an element below ``minimum``; the message names
        ``fn`` and ``name`` (``name[i]`` for the i-th element of a pair).
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {value!r}")
        return tuple(_checks.integer(fn, f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))
    value = _checks.integer(fn, name, value, minimum=minimum)
    return value, value


def output_size(fn: str, shape, window, stride, pad=(0, 0), what: str = "window") -> tuple[int, int]:
    """The output size (H', W') of a ``window`` (HH, WW) sliding with ``stride`` over images of
    ``shape`` (N, C, H, W) (N may be None) zero-padded by ``pad`` on each side, by the floor rule::

        H' = 1 + (H + 2 * pad_h - HH) // stride_h,   W' = 1 + (W + 2 * pad_w - WW) // stride_w

    Args:
      fn: the calling function's name, for the error message.
      shape: the images' shape (N, C, H, W).
      window, stride, pad: (h, w) pairs of ints (see :func:`pair`).
      what: the window in words for the message, e.g. "kernel" or "pooling window".

    Raises:
      ValueError: the window is larger than the padded input (no output position exists).
    """
    padded = tuple(n + 2 * p for n, p in zip(shape[2:], pad))
    if window[0] > padded[0] or window[1] > padded[1]:
        size = f"{padded[0]}x{padded[1]}"
        where = f"padded input ({size} with pad {tuple(pad)})" if any(pad) else f"input ({size})"
        raise ValueError(f"{fn}: the {window[0]}x{window[1]} {what} is larger than the {where}; "
                         f"x has shape {tuple(shape)}")
    return tuple(1 + (n - k) // s for n, k, s in zip(padded, window, stride))


def as_images(fn, x):
    """``x`` as a floating (N, C, H, W) batch, or an error that says how to load images."""
    x = _checks.float_array(fn, "x", x)
    if len(_checks.shape_of(x)) != 4:
        raise ValueError(f"{fn}: x has shape {_checks.shape_of(x)} but images need shape (N, C, H, W); "
                         "for an image data set, load the data with fnet.data.load(name, flatten=False)")
    return x


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------


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


# Layout: the API is NCHW/OIHW (cs231n's), but the computations run channel-last (x as NHWC,
# filters as HWIO, a transpose on each side), because inside a while loop (a scanned epoch) XLA:CPU
# keeps NCHW convolutions on a slow path (jax#12868); the measurements are in benchmarks/README.md.


def _to_nhwc(x):
    return jnp.transpose(x, (0, 2, 3, 1))


def _from_nhwc(x):
    return jnp.transpose(x, (0, 3, 1, 2))


def _dx_padding(size, kernel, stride, pad, out_size) -> list[tuple[int, int]]:
    """Per axis (h, w), the padding (low, high) of the convolution that gives dx (conv_backward's,
    and JAX's autodiff of conv_forward builds the same): images of spatial ``size`` (H, W), a
    ``kernel`` (k) with ``stride`` (s) and ``pad`` (p), output of spatial ``out_size`` (H', W').

    Per axis, with D = dout dilated by s (s - 1 zeros between entries, s*(H'-1) + 1 long),
    dxpad[y] = sum_di D[y - di] W[di]: a full convolution, i.e. a correlation of D padded by k - 1
    on each side with the flipped W. That gives s*(H'-1) + k = H + 2p - rest rows, where rest
    counts the padded rows past the last window (the floor rule): pad ``rest`` more at the end
    (rows no window reached get 0), then crop p on each side to go from xpad to x. Net padding
    ``(k - 1 - p, k - 1 - p + rest)``; a negative padding crops.
    """
    rests = [n + 2 * p - k - s * (o - 1) for n, p, k, s, o in zip(size, pad, kernel, stride, out_size)]
    return [(k - 1 - p, k - 1 - p + r) for k, p, r in zip(kernel, pad, rests)]


def _swap_hazard(kernel, stride, padding) -> tuple[bool, ...]:
    """Per axis: whether dx's convolution (window k, lhs dilation = the stride s, window stride 1,
    ``padding`` from :func:`_dx_padding`) has the form that makes XLA's algebraic simplifier abort
    the process (jaxlib 0.10.2: "Window dimensions do not match RHS shape").

    When a convolution's kernel is larger than its input (over the axes it does not keep), the
    simplifier swaps the two operands. It keeps the window of an axis it takes for a "group" axis
    (lhs dilation = window size, window stride = window size - 1, no padding, no window dilation
    or reversal) unchanged, although the swapped kernel there is as long as dout: unless dout has
    the window's length, the new convolution is invalid. With window stride 1 that axis has
    k = s = 2 and padding (0, 0), i.e. p = 1 over an even size. The abort also needs the other
    axis's window longer than dout there (e.g. a kernel spanning the whole padded width); this
    test looks at one axis only, so it does not depend on that cost rule.
    """
    return tuple(k == s == 2 and lohi == (0, 0) for k, s, lohi in zip(kernel, stride, padding))


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
    x = as_images(fn, x)
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
    stride = pair(fn, "stride", stride)
    pad = pair(fn, "pad", pad, minimum=0)
    kernel = tuple(W.shape[2:])
    out_hw = output_size(fn, x.shape, kernel, stride, pad, f"kernel of W (shape {tuple(W.shape)})")
    dtype = jnp.result_type(x, W)  # lax's convolution needs one dtype; promote as x @ W would
    x, W = x.astype(dtype), W.astype(dtype)
    # On an axis where dx's convolution would take the form that aborts XLA (_swap_hazard), x is
    # padded by jnp.pad rather than by the convolution: JAX's autodiff of this forward
    # (grad="autodiff", gradcheck) then pads dx's convolution by k - 1 = 1 there, and transposes
    # the jnp.pad into a crop. Same output.
    hazard = _swap_hazard(kernel, stride, _dx_padding(x.shape[2:], kernel, stride, pad, out_hw))
    explicit = [p if h else 0 for p, h in zip(pad, hazard)]
    xn = _to_nhwc(x)
    if any(hazard):
        xn = jnp.pad(xn, ((0, 0), (explicit[0], explicit[0]), (explicit[1], explicit[1]), (0, 0)))
    out = jax.lax.conv_general_dilated(xn, jnp.transpose(W, (2, 3, 1, 0)), stride,
                                       [(p - e, p - e) for p, e in zip(pad, explicit)],
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
    out_hw = output_size("conv_backward", x.shape, kernel, stride, pad)
    _checks.upstream("conv_backward", dout, (x.shape[0], W.shape[0], *out_hw))
    dtype = jnp.result_type(dout, x)
    dout, x, W = dout.astype(dtype), x.astype(dtype), W.astype(dtype)
    # dx: the full correlation of dout dilated by the stride with the flipped filters, contracting
    # over f (W as an (in=F, out=C) kernel), padded as _dx_padding derives. Where that padding has
    # the form that aborts XLA (_swap_hazard), one more zero row/column at the end breaks the
    # form; the extra output row/column is cropped off.
    padding = _dx_padding(x.shape[2:], kernel, stride, pad, out_hw)
    hazard = _swap_hazard(kernel, stride, padding)
    dx = _from_nhwc(jax.lax.conv_general_dilated(
        _to_nhwc(dout), jnp.transpose(W[:, :, ::-1, ::-1], (2, 3, 0, 1)), (1, 1),
        [(lo, hi + h) for (lo, hi), h in zip(padding, hazard)],
        lhs_dilation=stride, dimension_numbers=("NHWC", "HWIO", "NHWC")))
    if any(hazard):
        dx = dx[:, :, :x.shape[2], :x.shape[3]]
    # dW[f, c, di, dj] = sum_{n, i, j} dout[n, f, i, j] xpad[n, c, s*i + di, s*j + dj]: for each
    # filter offset (di, dj), one matmul of dout as (F, N H' W') with the strided slice
    # xpad[:, s*i + di, s*j + dj] as (N H' W', C) (Deep Learning from Scratch's im2col, one
    # column block at a time; rows past the last window are in no slice: the floor rule). The
    # offsets run in a loop, so that one slice exists at a time (all of them at once, im2col's
    # HH*WW copies of x, cost far more memory than they save time), and as matmuls rather than
    # XLA:CPU's convolution for this contraction, which is slow inside a scanned epoch
    # (benchmarks/README.md).
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


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------


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

