"""fnet.layers' image layers (convolution, pooling, spatial batch and group norm): forward and
backward against slow NumPy loop references (cs231n's ``*_naive``) on random shapes, strides and
paddings; every backward against jax.vjp and central differences; the floor rule, max pooling's
tie rule, NaN propagation, what the caches hold, the argument checks, and the shapes whose
gradient convolutions XLA:CPU aborted on."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layer_checks import AUTODIFF_TOL, NUMERICAL_TOL, manual_and_vjp, rnd
from hypothesis import given, settings
from hypothesis import strategies as st

from fnet import custom_vjp, layers
from fnet.gradcheck import NUMERICAL_FLOOR, numerical_gradient, rel_error
from fnet.layers import conv


def _distinct(rng, shape):
    """Values at least 4 / size apart (>> the finite-difference step): no ties in any window."""
    size = int(np.prod(shape))
    return jnp.asarray((rng.permutation(size) * 4.0 / size - 2.0).reshape(shape), jnp.float64)


def _hw(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


POOLS = {"max": (layers.max_pool_forward, layers.max_pool_backward),
         "avg": (layers.avg_pool_forward, layers.avg_pool_backward)}


# --------------------------------------------------------------------------------------------
# Slow, obviously-correct references (NumPy loops over output positions)
# --------------------------------------------------------------------------------------------


def conv_naive(x, w, b, dout, stride, pad):
    """(out, dx, dW, db) of a convolution, one output position at a time."""
    x, w, b, dout = map(np.asarray, (x, w, b, dout))
    (sh, sw), (ph, pw) = _hw(stride), _hw(pad)
    _, _, h, wd = x.shape
    hh, ww = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = 1 + (h + 2 * ph - hh) // sh, 1 + (wd + 2 * pw - ww) // sw
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(ho):
        for j in range(wo):
            win = np.s_[:, :, i * sh:i * sh + hh, j * sw:j * sw + ww]
            out[:, :, i, j] = np.einsum("ncyz,fcyz->nf", xp[win], w) + b
            dxp[win] += np.einsum("nf,fcyz->ncyz", dout[:, :, i, j], w)
            dw += np.einsum("nf,ncyz->fcyz", dout[:, :, i, j], xp[win])
    return out, dxp[:, :, ph:ph + h, pw:pw + wd], dw, dout.sum(axis=(0, 2, 3))


def pool_naive(kind, x, dout, window, stride):
    """(out, dx) of max ("max") or average ("avg") pooling, one window at a time. Max: the first
    maximum in row-major order (np.argmax of the flattened window) gets the gradient."""
    x, dout = np.asarray(x), np.asarray(dout)
    (ph, pw), (sh, sw) = window, _hw(stride)
    n, c, h, w = x.shape
    ho, wo = 1 + (h - ph) // sh, 1 + (w - pw) // sw
    out, dx = np.zeros((n, c, ho, wo)), np.zeros_like(x)
    for a in range(n):
        for d in range(c):
            for i in range(ho):
                for j in range(wo):
                    win = np.s_[a, d, i * sh:i * sh + ph, j * sw:j * sw + pw]
                    if kind == "max":
                        k = np.argmax(x[win])
                        out[a, d, i, j] = x[win].flat[k]
                        dx[a, d, i * sh + k // pw, j * sw + k % pw] += dout[a, d, i, j]
                    else:
                        out[a, d, i, j] = x[win].mean()
                        dx[win] += dout[a, d, i, j] / (ph * pw)
    return out, dx


def groupnorm_naive(x, gamma, beta, G, eps=1e-5):
    x = np.asarray(x)
    n, c, h, w = x.shape
    xg = x.reshape(n, G, -1)
    xhat = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    return np.asarray(gamma)[:, None, None] * xhat + np.asarray(beta)[:, None, None]


# --------------------------------------------------------------------------------------------
# Forward and backward against the loop references, on random shapes (hypothesis)
# --------------------------------------------------------------------------------------------

# Each example compiles a new program (a convolution's ~0.15 s here): few examples, small shapes.
EXAMPLES = settings(max_examples=5, deadline=None)
seeds = st.integers(0, 2**31 - 1)
strides = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))


def _checked(forward, backward, inputs, rng):
    """Run forward + manual backward + vjp under jit (a compile per shape is cheaper than eager
    dispatch of every op); assert manual == vjp; return (out, manual grads, dout) as NumPy."""
    out_shape = jax.eval_shape(lambda *a: forward(*a)[0], *inputs).shape
    dout = rnd(rng, out_shape)
    out, manual, auto = jax.jit(lambda a, g: manual_and_vjp(forward, backward, a, g))(tuple(inputs), dout)
    assert rel_error(manual, auto) < AUTODIFF_TOL
    return np.asarray(out), [np.asarray(m) for m in manual], np.asarray(dout)


@st.composite
def _conv_axis(draw):
    """(size, kernel, stride, pad) of one spatial axis: a random kernel; a kernel spanning the
    whole padded input (one window, partly over padding); or kernel = stride = 2 with pad 1 over
    an even size. With the last two on different axes, dx's convolution is one that XLA:CPU's
    simplifier aborts on unless conv_forward/conv_backward avoid it (regression test below)."""
    kind = draw(st.sampled_from(["random", "spanning", "k2_s2_p1"]))
    if kind == "k2_s2_p1":
        return draw(st.sampled_from([2, 4, 6])), 2, 2, 1
    size, pad = draw(st.integers(1, 7)), draw(st.integers(0, 2))
    kernel = size + 2 * pad if kind == "spanning" else draw(st.integers(1, min(5, size + 2 * pad)))
    return size, kernel, draw(st.integers(1, 3)), pad


def _int_or_pair(h, w):
    return h if h == w else (h, w)


@st.composite
def conv_cases(draw):
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    (h, hh, sh, ph), (w, ww, sw, pw) = draw(_conv_axis()), draw(_conv_axis())
    return (n, c, h, w), (f, c, hh, ww), _int_or_pair(sh, sw), _int_or_pair(ph, pw), draw(seeds)


@EXAMPLES
@given(case=conv_cases())
def test_conv_matches_naive_loops_and_vjp(case):
    # the reference is the NumPy loops; jax.vjp of conv_forward (its autodiff) is checked against
    # them too, as conv_forward keeps that autodiff clear of the convolutions XLA aborts on
    x_shape, w_shape, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    inputs = (rnd(rng, x_shape), rnd(rng, w_shape), rnd(rng, w_shape[:1]))
    out, (dx, dw, db), dout = _checked(lambda x, w, b: layers.conv_forward(x, w, b, stride=stride, pad=pad),
                                       layers.conv_backward, inputs, rng)
    for got, want in zip((out, dx, dw, db), conv_naive(*inputs, dout, stride, pad)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("filters, per_chunk", [(2, 1), (12, 2), (36, 6)])
def test_filter_gradient_adds_up_its_batch_chunks(filters, per_chunk):
    # dW is summed over chunks of the batch; 6 images of 6x6, 3x3 kernel, pad 1: an image's
    # columns are 36 * 9 elements, dout is 6 * 36 * F, so F = 2, 12, 36 give chunks of 1, 2 and
    # all 6 images
    x_shape, w_shape = (6, 1, 6, 6), (filters, 1, 3, 3)
    assert conv._chunk_images(6, 36 * 9, 6 * 36 * filters) == per_chunk
    rng = np.random.default_rng(filters)
    inputs = (rnd(rng, x_shape), rnd(rng, w_shape), rnd(rng, w_shape[:1]))
    out, (dx, dw, db), dout = _checked(lambda x, w, b: layers.conv_forward(x, w, b, pad=1), layers.conv_backward,
                                       inputs, rng)
    np.testing.assert_allclose(dw, conv_naive(*inputs, dout, 1, 1)[2], rtol=1e-10, atol=1e-12)


@st.composite
def pool_cases(draw):
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    window = (draw(st.integers(1, min(4, h))), draw(st.integers(1, min(4, w))))
    return (n, c, h, w), window, draw(strides), draw(st.sampled_from(["max", "avg"])), draw(seeds)


@EXAMPLES
@given(case=pool_cases())
def test_pooling_matches_naive_loops_and_vjp(case):
    # strides below, equal to and above the window: overlapping, tiling and gapped windows,
    # and sizes that the stride does not tile (floor rule)
    shape, (ph, pw), stride, kind, seed = case
    rng = np.random.default_rng(seed)
    forward, backward = POOLS[kind]
    x = _distinct(rng, shape)
    out, (dx,), dout = _checked(lambda x: forward(x, pool_height=ph, pool_width=pw, stride=stride), backward, (x,), rng)
    want_out, want_dx = pool_naive(kind, x, dout, (ph, pw), stride)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-14)


def test_filter_gradient_of_bfloat16_sums_its_chunks_in_float32():
    # 64 images of 6x6, 2 filters of 3x3: 32 chunks of 2 images. With positive data every
    # partial sum grows, so a bfloat16 running sum would round 32 times (relative errors of up to
    # eps/2 each, all one way); summed in float32, dW is the float64 sum of the bfloat16 inputs'
    # products rounded once to bfloat16 (eps/2), plus float32's own rounding (negligible here)
    assert conv._chunk_images(64, 36 * 9, 64 * 36 * 2) == 2
    rng = np.random.default_rng(5)
    x, w, dout = rng.random((64, 1, 6, 6)), rng.random((2, 1, 3, 3)), rng.random((64, 2, 6, 6))
    x, w, dout = (jnp.asarray(a, jnp.bfloat16) for a in (x, w, dout))
    dw = layers.conv_backward(dout, layers.conv_forward(x, w, jnp.zeros(2, jnp.bfloat16), pad=1)[1])[1]
    assert dw.dtype == jnp.bfloat16
    exact = conv_naive(*(np.asarray(a, np.float64) for a in (x, w, np.zeros(2), dout)), 1, 1)[2]
    np.testing.assert_allclose(np.asarray(dw, np.float64), exact, rtol=float(jnp.finfo(jnp.bfloat16).eps), atol=0)


def test_max_pool_over_windows_too_large_for_a_one_byte_argmax():
    # a 12 x 11 window has 132 elements: its argmax is stored as int32, and positions past 127
    # must still get their gradient
    rng = np.random.default_rng(0)
    x = _distinct(rng, (2, 2, 13, 12))
    out, (dx,), dout = _checked(lambda x: layers.max_pool_forward(x, pool_height=12, pool_width=11, stride=1),
                                layers.max_pool_backward, (x,), rng)
    want_out, want_dx = pool_naive("max", x, dout, (12, 11), 1)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-14)


@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 2), c_per_group=st.integers(1, 3), groups=st.integers(1, 3), h=st.integers(1, 4),
       w=st.integers(1, 4), seed=seeds)
def test_spatial_groupnorm_matches_reference_and_vjp(n, c_per_group, groups, h, w, seed):
    # C/G * H >= 2: a statistic over a single element normalizes it to 0 whatever x is. (Spatial
    # batch norm is batchnorm_forward/_backward on a reshape: the fixed cases below check it.)
    c, h = c_per_group * groups, max(h, 3 - c_per_group)
    rng = np.random.default_rng(seed)
    x, gamma, beta = rnd(rng, (n, c, h, w), 3.0, 1.0), rnd(rng, (c,)), rnd(rng, (c,))
    out, _, _ = _checked(lambda x, g, b: layers.spatial_groupnorm_forward(x, g, b, groups),
                         layers.spatial_groupnorm_backward, (x, gamma, beta), rng)
    np.testing.assert_allclose(out, groupnorm_naive(x, gamma, beta, groups), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Every backward against jax.vjp and central differences (tiny fixed shapes)
# --------------------------------------------------------------------------------------------

RUNNING = (jnp.array([0.3, -0.2, 0.1, 0.0]), jnp.array([1.5, 0.7, 2.0, 1.0]))


def _spatial_bn(x, gamma, beta):
    out, _, cache = layers.spatial_batchnorm_forward(x, gamma, beta, RUNNING)
    return out, cache


def _pool(forward, ph, pw, stride):
    return lambda x: forward(x, pool_height=ph, pool_width=pw, stride=stride)


def _conv(stride, pad):
    return lambda x, W, b: layers.conv_forward(x, W, b, stride=stride, pad=pad)


# name -> (forward(*inputs) -> (out, cache), backward, make_inputs(rng)). Few cases, since each adds
# ~0.4 s of compilation; the common ones (stride 1, tiling 2x2 pools) are in the random shapes above.
CASES = {
    # rows: 8 padded, kernel 3, stride 2: the last row unused (floor rule); columns: pad 2 > kernel
    # width - 1 (dx's convolution crops), 9 padded, stride 3: the last column unused
    "conv_stride_2x3_pad_1x2": (_conv((2, 3), (1, 2)), layers.conv_backward,
                                lambda r: (rnd(r, (2, 2, 6, 5)), rnd(r, (3, 2, 3, 2)), rnd(r, (3,)))),
    "max_pool_3x3_stride1_overlapping": (_pool(layers.max_pool_forward, 3, 3, 1), layers.max_pool_backward,
                                         lambda r: (_distinct(r, (2, 2, 5, 5)),)),
    "avg_pool_3x2_stride_1x2": (_pool(layers.avg_pool_forward, 3, 2, (1, 2)), layers.avg_pool_backward,
                                lambda r: (rnd(r, (2, 2, 4, 5)),)),  # overlapping rows, floor rule in columns
    "global_avg_pool": (layers.global_avg_pool_forward, layers.global_avg_pool_backward,
                        lambda r: (rnd(r, (2, 3, 3, 4)),)),
    "spatial_batchnorm_train": (_spatial_bn, layers.spatial_batchnorm_backward,
                                lambda r: (rnd(r, (3, 4, 2, 3), 3.0, 2.0), rnd(r, (4,)), rnd(r, (4,)))),
    "spatial_groupnorm_G2": (lambda x, g, b: layers.spatial_groupnorm_forward(x, g, b, 2),
                             layers.spatial_groupnorm_backward,
                             lambda r: (rnd(r, (2, 4, 2, 3), 2.0, -1.0), rnd(r, (4,)), rnd(r, (4,)))),
}


@pytest.fixture(scope="module")
def case_grads():
    """({case: (manual, jax.vjp, central differences)}, {case: inputs}): one jit program for all
    cases, a single compile (central differences run as one vmapped batch of forwards)."""
    inputs, douts = {}, {}
    for name, (forward, _, make) in CASES.items():
        rng = np.random.default_rng(0)
        inputs[name] = make(rng)
        douts[name] = rnd(rng, jax.eval_shape(lambda a: forward(*a)[0], inputs[name]).shape)

    def all_grads(inputs, douts):
        grads = {}
        for name, (forward, backward, _) in CASES.items():
            _, manual, auto = manual_and_vjp(forward, backward, inputs[name], douts[name])
            numeric = numerical_gradient(lambda a: jnp.sum(forward(*a)[0] * douts[name]), inputs[name])
            grads[name] = (manual, auto, numeric)
        return grads

    return jax.jit(all_grads)(inputs, douts), inputs


@pytest.mark.parametrize("name", list(CASES))
def test_backward_matches_vjp_and_finite_differences(name, case_grads):
    grads, inputs = case_grads
    manual, auto, numeric = grads[name]
    chex.assert_trees_all_equal_shapes_and_dtypes(tuple(manual), inputs[name])
    assert rel_error(manual, auto) < AUTODIFF_TOL
    assert rel_error(manual, numeric, floor=NUMERICAL_FLOOR) < NUMERICAL_TOL


class JitEagerTest(chex.TestCase):
    """A conv -> max pool stack, forward and backward, the same with and without jit; with jit the
    caches cross the jit boundary (their static fields survive)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_conv_pool_stack(self):
        rng = np.random.default_rng(5)
        x, w, b = rnd(rng, (2, 2, 6, 6)), rnd(rng, (3, 2, 3, 3)), rnd(rng, (3,))
        dp = rnd(rng, (2, 3, 3, 3))

        @self.variant
        def forward(x, w, b):
            h, conv_cache = layers.conv_forward(x, w, b, stride=1, pad=(1, 1))
            p, pool_cache = layers.max_pool_forward(h, pool_height=2, pool_width=2, stride=2)
            return (h, p), (conv_cache, pool_cache)

        @self.variant
        def backward(dp, caches):
            conv_cache, pool_cache = caches
            return layers.conv_backward(layers.max_pool_backward(dp, pool_cache), conv_cache)

        (h, p), caches = forward(x, w, b)
        dx, dw, db = backward(dp, caches)
        want_h = conv_naive(x, w, b, np.zeros((2, 3, 6, 6)), 1, 1)[0]
        np.testing.assert_allclose(h, want_h, rtol=1e-12, atol=1e-12)
        want_p, dh = pool_naive("max", h, dp, (2, 2), 2)
        np.testing.assert_allclose(p, want_p, rtol=1e-12)
        _, want_dx, want_dw, want_db = conv_naive(x, w, b, dh, 1, 1)
        for got, want in ((dx, want_dx), (dw, want_dw), (db, want_db)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Conventions: floor rule, ties, NaN, caches, dtypes (each test one jit program: one compile)
# --------------------------------------------------------------------------------------------


def _pool_forward_backward(kind, x, **pool):
    """(out, dx) of max or average pooling, with dout = ones."""
    forward, backward = POOLS[kind]
    out, cache = forward(x, **pool)
    return out, backward(jnp.ones_like(out), cache)


def test_floor_rule_ignores_rows_and_columns_past_the_last_window():
    rng = np.random.default_rng(1)
    # conv: H = 6, kernel 3, stride 2 -> H' = 1 + 3 // 2 = 2 (row 5 unused); W = 8 -> W' = 3 (column 7 unused)
    x, w, b = rnd(rng, (1, 2, 6, 8)), rnd(rng, (2, 2, 3, 3)), rnd(rng, (2,))
    xp = _distinct(rng, (1, 1, 5, 5))  # pooling: window 2, stride 2 -> 2x2, the last row and column unused

    @jax.jit
    def run(x, w, b, xp):
        out, cache = layers.conv_forward(x, w, b, stride=2)
        cropped, _ = layers.conv_forward(x[:, :, :5, :7], w, b, stride=2)
        dx, _, _ = layers.conv_backward(jnp.ones_like(out), cache)
        lax_out = jax.lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        pools = [_pool_forward_backward(kind, xp, pool_height=2, pool_width=2, stride=2) for kind in ("max", "avg")]
        return out, cropped, dx, lax_out + b[:, None, None], pools

    out, cropped, dx, lax_out, pools = run(x, w, b, xp)
    chex.assert_shape(out, (1, 2, 2, 3))
    np.testing.assert_allclose(out, cropped, rtol=1e-14)  # the ignored row and column change nothing
    np.testing.assert_allclose(out, lax_out, rtol=1e-12)  # lax's own convolution sizes it so (as PyTorch)
    dx = np.asarray(dx)
    assert np.all(dx[:, :, 5, :] == 0) and np.all(dx[:, :, :, 7] == 0)
    assert np.all(dx[:, :, :5, :7].any(axis=(0, 1)))
    for out, dx in pools:
        chex.assert_shape(out, (1, 1, 2, 2))
        dx = np.asarray(dx)
        assert np.all(dx[..., 4, :] == 0) and np.all(dx[..., :, 4] == 0)
        np.testing.assert_allclose(dx.sum(), 4.0)


# (x shape, W shape, stride, pad): on one axis kernel = stride = 2 with pad 1 over an even size,
# on the other a kernel longer than the output there. The convolution giving dx (lhs-dilated
# by 2, window 2, no padding on the first axis), as fnet wrote it and as JAX's autodiff of a
# plain lax convolution still writes it, made XLA:CPU abort the whole process while compiling
# (algebraic_simplifier.cc: "Window dimensions do not match RHS shape").
SWAP_ABORT_SHAPES = [
    ((1, 2, 6, 1), (1, 2, 2, 3), (2, 1), 1),  # the kernel spans the whole padded width
    ((1, 2, 1, 6), (1, 2, 3, 2), (1, 2), 1),  # the same, axes exchanged
    ((2, 3, 6, 3), (2, 3, 2, 3), 2, 1),  # kernel 3 over 2 output columns
    ((2, 2, 4, 4), (3, 2, 2, 2), 2, 1),  # the pattern on both axes (never aborted; fixed alike)
]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", SWAP_ABORT_SHAPES)
def test_conv_gradients_compile_where_xla_aborted(x_shape, w_shape, stride, pad):
    rng = np.random.default_rng(7)
    x, w, b = rnd(rng, x_shape), rnd(rng, w_shape), rnd(rng, w_shape[:1])
    forward = functools.partial(layers.conv_forward, stride=stride, pad=pad)
    dout = rnd(rng, jax.eval_shape(lambda: forward(x, w, b)[0]).shape)
    conv = custom_vjp.manual_vjp(layers.conv_forward, layers.conv_backward)

    @jax.jit
    def grads(x, w, b, dout):
        out, manual, auto = manual_and_vjp(forward, layers.conv_backward, (x, w, b), dout)
        bridged = jax.vjp(lambda *a: conv(*a, stride=stride, pad=pad), x, w, b)[1](dout)
        return out, manual, auto, bridged

    out, *all_grads = grads(x, w, b, dout)
    want_out, *want = conv_naive(x, w, b, dout, stride, pad)
    np.testing.assert_allclose(out, want_out, rtol=1e-10, atol=1e-12)
    for got in all_grads:  # manual, jax.vjp of conv_forward, and jax.vjp through manual_vjp
        for g, ref in zip(got, want):
            np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


def test_max_pool_ties_go_to_the_first_maximum_in_row_major_order():
    peak = np.zeros((3, 3))
    peak[1, 1] = 5.0
    cases = [  # (x, window, stride, dx)
        # a window of equal values: its first element gets the whole gradient
        (np.full((2, 2), 3.0), 2, 2, [[1, 0], [0, 0]]),
        # two maxima, at (0, 2) and (1, 0): (0, 2) comes first in row-major order
        (np.array([[0, 1, 7], [7, 2, 3], [4, 5, 6]]), 3, 1, [[0, 0, 1], [0, 0, 0], [0, 0, 0]]),
        # overlapping 2x2 windows (stride 1) over equal values: each window's top-left element
        (np.ones((4, 4)), 2, 1, np.pad(np.ones((3, 3)), ((0, 1), (0, 1)))),
        # overlapping windows that share their maximum: their gradients add up
        (peak, 2, 1, 4 * (peak > 0)),
    ]
    xs = [jnp.asarray(x, jnp.float64)[None, None] for x, *_ in cases]
    dxs = jax.jit(lambda xs: [_pool_forward_backward("max", x, pool_height=k, pool_width=k, stride=s)[1]
                              for x, (_, k, s, _) in zip(xs, cases)])(xs)
    for x, dx, (_, k, s, want) in zip(xs, dxs, cases):
        np.testing.assert_array_equal(dx[0, 0], want)
        ones = np.ones((1, 1) + (1 + (x.shape[2] - k) // s,) * 2)
        np.testing.assert_array_equal(dx, pool_naive("max", x, ones, (k, k), s)[1])  # np.argmax's rule too


def test_nan_in_x_gives_nan_outputs_never_hidden():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    x[0, 1, 2, 3] = np.nan
    w_nan = w.copy()
    w_nan[1, 0, 0, 0] = np.nan
    x, w, w_nan, b = jnp.asarray(x), jnp.asarray(w), jnp.asarray(w_nan), rnd(rng, (3,))

    @jax.jit
    def run(x, w, b, w_nan):
        pool = dict(pool_height=2, pool_width=2, stride=2)
        return dict(
            conv=layers.conv_forward(x, w, b, pad=1)[0],
            lax_conv=jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)],
                                                  dimension_numbers=("NCHW", "OIHW", "NCHW")),
            nan_weight=layers.conv_forward(jnp.nan_to_num(x), w_nan, b, pad=1)[0],
            max_pool=_pool_forward_backward("max", x, **pool),
            avg_pool=_pool_forward_backward("avg", x, **pool)[0],
            lax_max=jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"),
            global_avg=layers.global_avg_pool_forward(x)[0],
        )

    r = jax.tree_util.tree_map(np.asarray, run(x, w, b, w_nan))
    np.testing.assert_array_equal(np.isnan(r["conv"]), np.isnan(r["lax_conv"]))
    assert np.isnan(r["conv"][0, :, 1:4, 2:5]).all() and np.isnan(r["conv"]).sum() == 3 * 9  # windows over the NaN
    assert np.isnan(r["nan_weight"][0, 1]).any() and not np.isnan(r["nan_weight"][0, [0, 2]]).any()
    max_out, max_dx = r["max_pool"]
    np.testing.assert_array_equal(np.isnan(max_out), np.isnan(r["lax_max"]))
    assert np.isnan(max_out[0, 1, 1, 1]) and np.isnan(max_out).sum() == 1
    # the gradient of the window goes to the NaN, the window's "maximum" (as jnp.argmax picks it)
    assert max_dx[0, 1, 2, 3] == 1 and max_dx[0, 1, 2:4, 2:4].sum() == 1
    assert np.isnan(r["avg_pool"][0, 1, 1, 1]) and np.isnan(r["avg_pool"]).sum() == 1
    assert np.isnan(r["global_avg"][0, 1]) and not np.isnan(r["global_avg"][0, 0])


def test_caches_hold_only_what_backward_needs():
    # shapes only: jax.eval_shape traces without compiling
    x, w, b = jnp.ones((2, 3, 6, 6)), jnp.ones((4, 3, 3, 3)), jnp.zeros(4)
    _, cache = jax.eval_shape(lambda x: layers.conv_forward(x, w, b, stride=(2, 1), pad=1), x)
    assert (cache.stride, cache.pad) == ((2, 1), (1, 1))
    assert [leaf.shape for leaf in jax.tree_util.tree_leaves(cache)] == [x.shape, w.shape]  # x and W, no padded copy
    _, cache = jax.eval_shape(lambda x: layers.max_pool_forward(x, pool_height=2, pool_width=3, stride=(2, 1)), x)
    (argmax,) = jax.tree_util.tree_leaves(cache)  # a one-byte index per window, not a copy of x
    assert argmax.dtype == jnp.int8 and argmax.shape == (2, 3, 3, 4)
    assert (cache.window, cache.stride) == ((2, 3), (2, 1))
    big = jax.ShapeDtypeStruct((1, 1, 16, 16), jnp.float32)  # a 128-element window needs more than int8
    _, cache = jax.eval_shape(lambda x: layers.max_pool_forward(x, pool_height=16, pool_width=8, stride=1), big)
    assert cache.argmax.dtype == jnp.int32 and cache.argmax.shape == (1, 1, 1, 9)
    for forward in (lambda x: layers.avg_pool_forward(x, pool_height=2, pool_width=2, stride=2),
                    layers.global_avg_pool_forward):
        assert jax.tree_util.tree_leaves(jax.eval_shape(forward, x)[1]) == []


def test_stride_and_pad_take_an_int_or_a_pair():
    x, w, b = jnp.ones((1, 2, 7, 6)), jnp.ones((2, 2, 3, 2)), jnp.zeros(2)
    out, cache = jax.eval_shape(lambda x: layers.conv_forward(x, w, b, stride=(2, 3), pad=(1, 0)), x)
    assert out.shape == (1, 2, 1 + (7 + 2 - 3) // 2, 1 + (6 - 2) // 3)
    assert (cache.stride, cache.pad) == ((2, 3), (1, 0))
    _, cache = jax.eval_shape(lambda x: layers.conv_forward(x, w, b, stride=np.int64(2), pad=[1, 1]), x)
    assert (cache.stride, cache.pad) == ((2, 2), (1, 1)) and type(cache.stride[0]) is int


@settings(deadline=None, max_examples=60)
@given(hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), window=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       stride=st.tuples(st.integers(1, 4), st.integers(1, 4)), pad=st.tuples(st.integers(0, 2), st.integers(0, 2)))
def test_output_size_is_lax_s_floor_rule_or_a_named_error(hw, window, stride, pad):
    shape = (None, 3, *hw)
    if any(k > n + 2 * p for k, n, p in zip(window, hw, pad)):
        with pytest.raises(ValueError, match=r"f: the \d+x\d+ kernel is larger than the (padded )?input"):
            conv.output_size("f", shape, window, stride, pad, "kernel")
        return
    want = jax.lax.conv_general_shape_tuple((1, 3, *hw), (1, 3, *window), stride, [(p, p) for p in pad],
                                            ("NCHW", "OIHW", "NCHW"))[2:]
    assert conv.output_size("f", shape, window, stride, pad) == tuple(int(n) for n in want)
    if not any(pad):
        assert conv.output_size("f", shape, window, stride) == jax.lax.reduce_window_shape_tuple(
            (1, 3, *hw), (1, 1, *window), (1, 1, *stride), [(0, 0)] * 4)[2:]


def test_integer_arguments_take_numpy_integers_as_python_ints():
    pool = dict(pool_height=np.int64(2), pool_width=np.int32(3), stride=(np.uint8(1), np.int64(2)))
    out, cache = jax.eval_shape(lambda x: layers.max_pool_forward(x, **pool), X)
    assert out.shape == jax.eval_shape(lambda x: layers.max_pool_forward(x, pool_height=2, pool_width=3,
                                                                         stride=(1, 2)), X)[0].shape
    assert all(type(d) is int for d in (*cache.window, *cache.stride))
    _, cache = jax.eval_shape(lambda x: layers.conv_forward(x, W, B, stride=np.int32(2), pad=(np.int64(1), 0)), X)
    assert (cache.stride, cache.pad) == ((2, 2), (1, 0)) and all(type(d) is int for d in (*cache.stride, *cache.pad))
    gamma, beta = jnp.ones(3), jnp.zeros(3)
    chex.assert_trees_all_equal(layers.spatial_groupnorm_forward(X, gamma, beta, np.int64(3))[0],
                                layers.spatial_groupnorm_forward(X, gamma, beta, 3)[0])


def test_mixed_float_dtypes_are_promoted():
    x, w, b = jnp.ones((1, 1, 4, 4), jnp.float32), jnp.ones((2, 1, 3, 3)), jnp.zeros(2)
    out, cache = jax.eval_shape(lambda x: layers.conv_forward(x, w, b), x)
    assert out.dtype == jnp.float64
    dx, dw, db = jax.eval_shape(layers.conv_backward, jax.ShapeDtypeStruct(out.shape, jnp.float32), cache)
    assert dx.dtype == dw.dtype == db.dtype == jnp.float64


def test_spatial_norms_statistics_per_channel_and_per_group():
    rng = np.random.default_rng(6)
    x = rng.normal(loc=[[[2.0]], [[-1.0]], [[5.0]], [[0.0]]], scale=3.0, size=(8, 4, 3, 3))
    gamma, beta = rnd(rng, (4,)), rnd(rng, (4,))
    ones, zeros = jnp.ones(4), jnp.zeros(4)

    @jax.jit
    def run(x, gamma, beta):
        out, running, _ = layers.spatial_batchnorm_forward(x, ones, zeros, (zeros, ones))
        out_eval, _, _ = layers.spatial_batchnorm_forward(x, ones, zeros, running, train=False)
        ln, _ = layers.layernorm_forward(x.reshape(8, -1), jnp.repeat(gamma, 9), jnp.repeat(beta, 9))
        gn1, _ = layers.spatial_groupnorm_forward(x, gamma, beta, 1)
        instance, _ = layers.spatial_groupnorm_forward(x, ones, zeros, 4)
        return out, running, out_eval, ln.reshape(x.shape), gn1, instance

    out, (rm, rv), out_eval, ln, gn1, instance = run(jnp.asarray(x), gamma, beta)
    # batch norm: every channel over (N, H, W), mean 0 and variance 1 per channel, not per pixel
    np.testing.assert_allclose(np.mean(out, axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.var(out, axis=(0, 2, 3)), 1.0, atol=1e-3)
    assert np.abs(np.mean(out, axis=0)).max() > 0.1  # a pixel's mean over the batch is not 0
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=(0, 2, 3)), rtol=1e-12)
    want_eval = (x - np.asarray(rm)[:, None, None]) / np.sqrt(np.asarray(rv)[:, None, None] + 1e-5)
    np.testing.assert_allclose(out_eval, want_eval, rtol=1e-12)
    # group norm with G = 1 is layer norm over (C, H, W) with gamma, beta repeated over the pixels;
    # with G = C it is instance norm, every (sample, channel) on its own
    np.testing.assert_allclose(gn1, ln, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.mean(instance, axis=(2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.var(instance, axis=(2, 3)), 1.0, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Bad input: ValueError/TypeError naming the function, the argument and the shapes
# --------------------------------------------------------------------------------------------

X, W, B = jnp.ones((2, 3, 5, 5)), jnp.ones((4, 3, 3, 3)), jnp.zeros(4)
POOL = dict(pool_height=2, pool_width=2, stride=2)
BN_ARGS = (jnp.ones(3), jnp.zeros(3), (jnp.zeros(3), jnp.ones(3)))

BAD_INPUTS = {
    "conv flat MNIST batch": (
        lambda: layers.conv_forward(jnp.ones((128, 784)), jnp.ones((16, 1, 3, 3)), jnp.zeros(16)), ValueError,
        r"conv_forward: x has shape \(128, 784\) but images need shape \(N, C, H, W\); .*"
        r"load the data with fnet\.data\.load\(name, flatten=False\)"),
    "conv W rank": (lambda: layers.conv_forward(X, jnp.ones((4, 3, 3)), B), ValueError,
                    r"conv_forward: W has shape \(4, 3, 3\) but filters need shape \(F, C, HH, WW\)"),
    "conv channel mismatch": (
        lambda: layers.conv_forward(X, jnp.ones((4, 2, 3, 3)), B), ValueError,
        r"conv_forward: x has shape \(2, 3, 5, 5\) \(3 channels\) but W has shape \(4, 2, 3, 3\) \(2 channels\)"),
    "conv b shape": (lambda: layers.conv_forward(X, W, jnp.zeros(3)), ValueError,
                     r"conv_forward: b has shape \(3,\) but W has shape \(4, 3, 3, 3\); b must have shape \(4,\)"),
    "conv kernel larger than padded input": (
        lambda: layers.conv_forward(X, jnp.ones((4, 3, 8, 3)), B, pad=1), ValueError,
        r"conv_forward: the 8x3 kernel of W \(shape \(4, 3, 8, 3\)\) is larger than the padded input "
        r"\(7x7 with pad \(1, 1\)\); "
        r"x has shape \(2, 3, 5, 5\)"),
    "conv kernel larger than input": (
        lambda: layers.conv_forward(X, jnp.ones((4, 3, 3, 6)), B), ValueError,
        r"conv_forward: the 3x6 kernel of W \(shape \(4, 3, 3, 6\)\) is larger than the input \(5x5\)"),
    "conv stride 0": (lambda: layers.conv_forward(X, W, B, stride=0), ValueError,
                      r"conv_forward: stride must be a positive int, got 0"),
    "conv stride pair negative": (lambda: layers.conv_forward(X, W, B, stride=(1, -2)), ValueError,
                                  r"conv_forward: stride\[1\] must be a positive int, got -2"),
    "conv stride float": (lambda: layers.conv_forward(X, W, B, stride=1.5), TypeError,
                          r"conv_forward: stride must be an int, got 1\.5"),
    "conv stride triple": (lambda: layers.conv_forward(X, W, B, stride=(1, 1, 1)), ValueError,
                           r"conv_forward: stride must be an int or a pair \(h, w\), got \(1, 1, 1\)"),
    "conv stride bool": (lambda: layers.conv_forward(X, W, B, stride=True), TypeError,
                         r"conv_forward: stride must be an int, got True \(bool\)"),
    "conv pad numpy float": (lambda: layers.conv_forward(X, W, B, pad=(np.float64(1), 1)), TypeError,
                             r"conv_forward: pad\[0\] must be an int, got np.float64\(1.0\)"),
    "conv negative pad": (lambda: layers.conv_forward(X, W, B, pad=-1), ValueError,
                          r"conv_forward: pad must be an int >= 0, got -1"),
    "conv integer x": (lambda: layers.conv_forward(jnp.ones((2, 3, 5, 5), jnp.int32), W, B), TypeError,
                       r"conv_forward: x must be a floating-point array, got dtype int32"),
    "max pool window larger than input": (
        lambda: layers.max_pool_forward(X, pool_height=6, pool_width=2, stride=1), ValueError,
        r"max_pool_forward: the 6x2 pooling window \(pool_height x pool_width\) is larger than the input "
        r"\(5x5\); x has shape \(2, 3, 5, 5\)"),
    "max pool width 0": (lambda: layers.max_pool_forward(X, pool_height=2, pool_width=0, stride=1), ValueError,
                         r"max_pool_forward: pool_width must be a positive int, got 0"),
    "max pool height float": (lambda: layers.max_pool_forward(X, pool_height=2.0, pool_width=2, stride=1), TypeError,
                              r"max_pool_forward: pool_height must be an int, got 2.0"),
    "max pool flat x": (lambda: layers.max_pool_forward(jnp.ones((4, 25)), **POOL), ValueError,
                        r"max_pool_forward: x has shape \(4, 25\) but images need shape \(N, C, H, W\)"),
    "avg pool stride 0": (lambda: layers.avg_pool_forward(X, pool_height=2, pool_width=2, stride=(0, 1)), ValueError,
                          r"avg_pool_forward: stride\[0\] must be a positive int, got 0"),
    "global avg pool rank": (lambda: layers.global_avg_pool_forward(jnp.ones((2, 3, 5))), ValueError,
                             r"global_avg_pool_forward: x has shape \(2, 3, 5\) but images need shape"),
    "groupnorm G does not divide C": (
        lambda: layers.spatial_groupnorm_forward(jnp.ones((2, 6, 3, 3)), jnp.ones(6), jnp.zeros(6), 4), ValueError,
        r"spatial_groupnorm_forward: G = 4 does not divide the 6 channels of x \(shape \(2, 6, 3, 3\)\)"),
    "groupnorm G 0": (lambda: layers.spatial_groupnorm_forward(X, jnp.ones(3), jnp.zeros(3), 0), ValueError,
                      r"spatial_groupnorm_forward: G must be a positive int, got 0"),
    "groupnorm G bool": (lambda: layers.spatial_groupnorm_forward(X, jnp.ones(3), jnp.zeros(3), True), TypeError,
                         r"spatial_groupnorm_forward: G must be an int, got True"),
    "groupnorm beta shape": (
        lambda: layers.spatial_groupnorm_forward(X, jnp.ones(3), jnp.zeros(5), 1), ValueError,
        r"spatial_groupnorm_forward: beta has shape \(5,\) but x has shape \(2, 3, 5, 5\); "
        r"beta must have shape \(3,\)"),
    "batchnorm gamma shape": (
        lambda: layers.spatial_batchnorm_forward(X, jnp.ones(5), *BN_ARGS[1:]), ValueError,
        r"spatial_batchnorm_forward: gamma has shape \(5,\) but x has shape \(2, 3, 5, 5\); "
        r"gamma must have shape \(3,\)"),
    "batchnorm running_var shape": (
        lambda: layers.spatial_batchnorm_forward(X, *BN_ARGS[:2], (jnp.zeros(3), jnp.ones(15))), ValueError,
        r"spatial_batchnorm_forward: running_var has shape \(15,\) but x has shape \(2, 3, 5, 5\)"),
    "batchnorm flat x": (lambda: layers.spatial_batchnorm_forward(jnp.ones((2, 3)), *BN_ARGS), ValueError,
                         r"spatial_batchnorm_forward: x has shape \(2, 3\) but images need shape \(N, C, H, W\)"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_a_clear_error(name):
    call, error, message = BAD_INPUTS[name]
    with pytest.raises(error, match=message):
        call()


def test_shape_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"conv_forward: x has shape \(2, 3, 5, 5\) \(3 channels\)"):
        jax.jit(layers.conv_forward)(X, jnp.ones((4, 2, 3, 3)), B)
    with pytest.raises(ValueError, match=r"max_pool_forward: the 6x6 pooling window .* is larger"):
        jax.jit(lambda x: layers.max_pool_forward(x, pool_height=6, pool_width=6, stride=1))(X)


@pytest.mark.parametrize("layer", ["conv", "max_pool", "avg_pool", "global_avg_pool", "spatial_batchnorm",
                                   "spatial_groupnorm"])
def test_backward_rejects_dout_of_the_wrong_shape(layer):
    forward = {
        "conv": lambda: layers.conv_forward(X, W, B, pad=1),
        "max_pool": lambda: layers.max_pool_forward(X, **POOL),
        "avg_pool": lambda: layers.avg_pool_forward(X, **POOL),
        "global_avg_pool": lambda: layers.global_avg_pool_forward(X),
        "spatial_batchnorm": lambda: (lambda o: (o[0], o[2]))(layers.spatial_batchnorm_forward(X, *BN_ARGS)),
        "spatial_groupnorm": lambda: layers.spatial_groupnorm_forward(X, jnp.ones(3), jnp.zeros(3), 3),
    }[layer]
    out, cache = jax.eval_shape(forward)  # the check runs before any computation
    # the reversed shape has the right size, so only the shape check can catch it
    bad = jnp.ones(out.shape[::-1])
    shape = out.shape
    with pytest.raises(ValueError, match=rf"{layer}_backward: dout has shape .* but the forward output has shape "
                                         rf"\({', '.join(map(str, shape))}\)"):
        getattr(layers, f"{layer}_backward")(bad, cache)


def test_autodiff_of_max_pool_sends_a_ties_gradient_where_the_backward_does():
    """The forward outputs the element at the argmax, so jax.grad of it agrees with
    max_pool_backward even at ties (jnp.max's autodiff would split the gradient)."""
    x = jnp.zeros((1, 2, 4, 4)).at[0, 1, 0, 0].set(-1.0)  # every window holds a tie
    out, cache = layers.max_pool_forward(x, pool_height=2, pool_width=2, stride=2)
    dout = jnp.arange(1.0, 1.0 + out.size).reshape(out.shape)
    auto = jax.grad(lambda x: jnp.sum(layers.max_pool_forward(x, pool_height=2, pool_width=2, stride=2)[0] * dout))(x)
    np.testing.assert_array_equal(auto, layers.max_pool_backward(dout, cache))
