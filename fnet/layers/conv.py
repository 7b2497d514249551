"""Convolution as a forward/backward pair: images (N, C, H, W), filters (F, C, HH, WW), as in
cs231n; and the window geometry that pooling (:mod:`fnet.layers.pool`) and the modules share.

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
# the convolution, the pooling layers and the modules of fnet.modules alike.
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


def to_nhwc(x):
    """Images (N, C, H, W) as channel-last (N, H, W, C)."""
    return jnp.transpose(x, (0, 2, 3, 1))


def from_nhwc(x):
    """Channel-last images (N, H, W, C) as (N, C, H, W)."""
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
    xn = to_nhwc(x)
    if any(hazard):
        xn = jnp.pad(xn, ((0, 0), (explicit[0], explicit[0]), (explicit[1], explicit[1]), (0, 0)))
    out = jax.lax.conv_general_dilated(xn, jnp.transpose(W, (2, 3, 1, 0)), stride,
                                       [(p - e, p - e) for p, e in zip(pad, explicit)],
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return from_nhwc(out) + b[:, None, None], ConvCache(x, W, stride, pad)


def conv_backward(dout, cache):
    """Backward pass of :func:`conv_forward`, itself two convolutions (stride s, pad p, per axis)::

        dxpad[n, c, y, z] = sum_{f, i, j, di, dj : s*i + di = y, s*j + dj = z} dout[n, f, i, j] * W[f, c, di, dj]
        dx = dxpad without its padding
        dW[f, c, di, dj] = sum_{n, i, j} dout[n, f, i, j] * xpad[n, c, s*i + di, s*j + dj]
        db[f] = sum_{n, i, j} dout[n, f, i, j]

    dx is a full correlation of ``dout`` dilated by the stride with the spatially flipped filters,
    their in/out channels swapped; dW is a matmul of ``dout`` with the im2col matrix of ``xpad``,
    a chunk of the batch at a time. Rows/columns that no window reached (the floor rule) get
    dx = 0.

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
    dx = from_nhwc(jax.lax.conv_general_dilated(
        to_nhwc(dout), jnp.transpose(W[:, :, ::-1, ::-1], (2, 3, 0, 1)), (1, 1),
        [(lo, hi + h) for (lo, hi), h in zip(padding, hazard)],
        lhs_dilation=stride, dimension_numbers=("NHWC", "HWIO", "NHWC")))
    if any(hazard):
        dx = dx[:, :, :x.shape[2], :x.shape[3]]
    dW = _filter_gradient(to_nhwc(dout), to_nhwc(x), kernel, stride, pad)
    return dx, jnp.transpose(dW, (0, 3, 1, 2)), jnp.sum(dout, axis=(0, 2, 3))


def _chunk_images(n, per_image, dout_size) -> int:
    """Images per chunk of :func:`_filter_gradient`: the largest divisor of the batch ``n`` whose
    im2col columns (``per_image`` elements an image) take at most a quarter of ``dout_size``
    elements; 1 where even one image's columns take more."""
    return max([d for d in range(1, n + 1) if n % d == 0 and 4 * d * per_image <= dout_size] or [1])


def _filter_gradient(dout, x, kernel, stride, pad):
    """conv_backward's dW, channel-last: dout (N, H', W', F), x (N, H, W, C) -> dW (F, HH, WW, C).

    dW[f, di, dj, c] = sum_{n, i, j} dout[n, i, j, f] xpad[n, s*i + di, s*j + dj, c] is ONE matmul
    of dout as (N H' W', F) with the im2col matrix of xpad, (N H' W', HH WW C) (Deep Learning
    from Scratch's; rows past the last window are in no column: the floor rule), contracting
    over the N H' W' rows. The whole im2col matrix is HH*WW copies of x, more than the rest of
    the backward keeps; so the batch is split into the fewest equal chunks whose columns take at
    most a quarter of dout's memory (at least one image a chunk), and a loop adds up the chunks'
    products. One matmul per chunk, rather than one per filter offset, keeps each product wide
    (a single image channel, C = 1, makes an offset's product a matrix-vector one), and matmuls
    rather than XLA:CPU's convolution for this contraction, which is slow inside a scanned epoch
    (benchmarks/README.md).
    """
    (n, ho, wo, f), c = dout.shape, x.shape[3]
    (kh, kw), (sh, sw) = kernel, stride
    m = _chunk_images(n, ho * wo * kh * kw * c, dout.size)

    def chunk(i, dW):
        # each chunk pads its own images: a padded copy of the whole x would be one more
        # activation-sized buffer, which XLA may compute early and keep
        xc = jnp.pad(jax.lax.dynamic_slice_in_dim(x, i * m, m), ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
        cols = jnp.stack([xc[:, di:di + sh * (ho - 1) + 1:sh, dj:dj + sw * (wo - 1) + 1:sw, :]
                          for di in range(kh) for dj in range(kw)], axis=3)
        dc = jax.lax.dynamic_slice_in_dim(dout, i * m, m).reshape(m * ho * wo, f)
        return dW + jax.lax.dot_general(dc, cols.reshape(m * ho * wo, kh * kw * c), (((0,), (0,)), ((), ())),
                                        preferred_element_type=acc)

    # the chunks' sum in at least float32: a bfloat16 running sum would round once per chunk
    acc = jnp.promote_types(dout.dtype, jnp.float32)
    dW = jax.lax.fori_loop(0, n // m, chunk, jnp.zeros((f, kh * kw * c), acc))
    return dW.reshape(f, kh, kw, c).astype(dout.dtype)
