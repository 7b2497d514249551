"""fnet.layers' vector layers (fnet/layers/dense.py, norm.py's batch and layer norm, dropout.py):
every hand-written backward pass against jax.vjp and central differences (all in one compiled
program), the documented conventions (ReLU at 0, batch-norm running statistics, inverted dropout),
property tests over random shapes, the argument checks, a ``dout`` of another shape than the
forward output refused (never broadcast), and NaN in giving NaN out (no layer hides a NaN).

The image layers (convolution, pooling, spatial norms) are in test_layers_conv.py, the recurrent
ones in test_layers_recurrent.py, the embedding ones in test_layers_embedding.py."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layer_checks import AUTODIFF_TOL, NUMERICAL_TOL, rnd
from hypothesis import given, settings
from hypothesis import strategies as st

from fnet import layers, losses
from fnet.gradcheck import NUMERICAL_FLOOR, numerical_gradient, rel_error

FLOAT32_TOL = 1e-3  # float32, manual vs jax.vjp (jit and eager)


def _away_from_zero(rng, shape, dtype=jnp.float64):
    """Random values with |x| >= 0.05, so that finite differences never straddle a kink."""
    x = rng.standard_normal(shape)
    return jnp.asarray(np.where(np.abs(x) < 0.05, 0.5, x), dtype)


DROP_KEY = jax.random.PRNGKey(42)
RUNNING = (jnp.array([0.3, -0.2, 0.1, 0.0, 0.5]), jnp.array([1.5, 0.7, 2.0, 1.0, 0.9]))


def _running(dtype):
    return tuple(r.astype(dtype) for r in RUNNING)


# Each case: name -> (forward(**inputs) -> (out, cache), backward, make_inputs(key, dtype)).
# The backward returns the gradients in the order of the inputs' keys.
CASES = {
    "affine_rank2": (
        layers.affine_forward, layers.affine_backward,
        lambda r, dt: dict(x=rnd(r, (4, 6), dtype=dt), W=rnd(r, (6, 3), dtype=dt), b=rnd(r, (3,), dtype=dt)),
    ),
    "affine_rank3": (
        layers.affine_forward, layers.affine_backward,
        lambda r, dt: dict(x=rnd(r, (4, 2, 3), dtype=dt), W=rnd(r, (6, 5), dtype=dt), b=rnd(r, (5,), dtype=dt)),
    ),
    "affine_rank4": (
        layers.affine_forward, layers.affine_backward,
        lambda r, dt: dict(x=rnd(r, (3, 2, 2, 2), dtype=dt), W=rnd(r, (8, 4), dtype=dt), b=rnd(r, (4,), dtype=dt)),
    ),
    "relu": (layers.relu_forward, layers.relu_backward, lambda r, dt: dict(x=_away_from_zero(r, (5, 4), dt))),
    **{
        f"leaky_relu_{alpha}": (
            (lambda alpha: lambda x: layers.leaky_relu_forward(x, alpha))(alpha),
            layers.leaky_relu_backward,
            lambda r, dt: dict(x=_away_from_zero(r, (5, 4), dt)),
        )
        for alpha in (0.0, 0.01, 0.2, 0.5)
    },
    "sigmoid": (layers.sigmoid_forward, layers.sigmoid_backward, lambda r, dt: dict(x=rnd(r, (5, 4), 2.0, dtype=dt))),
    "tanh": (layers.tanh_forward, layers.tanh_backward, lambda r, dt: dict(x=rnd(r, (5, 4), dtype=dt))),
    "batchnorm_train": (
        lambda x, gamma, beta: (lambda o: (o[0], o[2]))(layers.batchnorm_forward(x, gamma, beta, _running(x.dtype))),
        layers.batchnorm_backward,
        lambda r, dt: dict(x=rnd(r, (6, 5), 3.0, 2.0, dtype=dt), gamma=rnd(r, (5,), dtype=dt), beta=rnd(r, (5,), dtype=dt)),
    ),
    "batchnorm_eval": (
        lambda x, gamma, beta: (lambda o: (o[0], o[2]))(
            layers.batchnorm_forward(x, gamma, beta, _running(x.dtype), train=False)
        ),
        layers.batchnorm_backward,
        lambda r, dt: dict(x=rnd(r, (6, 5), 3.0, 2.0, dtype=dt), gamma=rnd(r, (5,), dtype=dt), beta=rnd(r, (5,), dtype=dt)),
    ),
    "layernorm": (
        layers.layernorm_forward, layers.layernorm_backward,
        lambda r, dt: dict(x=rnd(r, (6, 5), 3.0, -1.0, dtype=dt), gamma=rnd(r, (5,), dtype=dt), beta=rnd(r, (5,), dtype=dt)),
    ),
    "dropout": (
        lambda x: layers.dropout_forward(x, 0.4, DROP_KEY), layers.dropout_backward,
        lambda r, dt: dict(x=rnd(r, (6, 5), dtype=dt)),
    ),
    "dropout_eval": (
        lambda x: layers.dropout_forward(x, 0.4, None, train=False), layers.dropout_backward,
        lambda r, dt: dict(x=rnd(r, (6, 5), dtype=dt)),
    ),
    "softmax": (layers.softmax_forward, layers.softmax_backward, lambda r, dt: dict(x=rnd(r, (5, 4), 2.0, dtype=dt))),
    "softmax_rank3": (
        layers.softmax_forward, layers.softmax_backward, lambda r, dt: dict(x=rnd(r, (2, 3, 4), 2.0, dtype=dt))
    ),
}


def _make(name, dtype, seed=0):
    forward, backward, make_inputs = CASES[name]
    rng = np.random.default_rng(seed)
    inputs = make_inputs(rng, dtype)
    return forward, backward, inputs, rng


def _manual_and_vjp(forward, backward, inputs, dout, names=None):
    """(manual grads, jax.vjp grads), both dicts keyed like ``inputs``; ``names`` is the order of
    the backward's outputs (the forward's argument order; jit sorts a dict's keys)."""
    names = tuple(inputs) if names is None else names
    _, cache = forward(**inputs)
    manual = backward(dout, cache)
    if len(names) == 1:
        manual = (manual,)
    manual = dict(zip(names, manual))
    _, vjp = jax.vjp(lambda p: forward(**p)[0], inputs)
    return manual, vjp(dout)[0]


def _all_cases(dtype):
    """Inputs and upstream gradients of every case (NumPy data, so no per-shape RNG compiles)."""
    inputs, douts = {}, {}
    for name in sorted(CASES):
        forward, _, inp, rng = _make(name, dtype)
        inputs[name] = inp
        douts[name] = rnd(rng, jax.eval_shape(lambda p: forward(**p)[0], inp).shape, dtype=dtype)
    return inputs, douts


def _grads_of_all_cases(inputs, douts):
    """{case: (out, manual grads, jax.vjp grads)}; one program for all cases, so one jit compile."""
    result = {}
    for name in sorted(CASES):
        forward, backward, _ = CASES[name]
        names = tuple(CASE_ARGS[name])
        result[name] = (forward(**inputs[name])[0],) + _manual_and_vjp(forward, backward, inputs[name], douts[name], names)
    return result


#: each case's argument order (jit sorts dict keys, the backward returns them in this order)
CASE_ARGS = {name: tuple(_make(name, jnp.float64)[2]) for name in CASES}


@pytest.fixture(scope="module")
def float64_grads():
    inputs, douts = _all_cases(jnp.float64)
    return inputs, douts, jax.jit(_grads_of_all_cases)(inputs, douts)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_matches_vjp_and_finite_differences_float64(name, float64_grads):
    inputs, douts, grads = float64_grads
    forward = CASES[name][0]
    inputs, dout = inputs[name], douts[name]
    _, manual, auto = grads[name]
    chex.assert_trees_all_equal_shapes_and_dtypes(manual, inputs)
    assert rel_error(manual, auto) < AUTODIFF_TOL

    numeric = numerical_gradient(lambda p: jnp.sum(forward(**p)[0] * dout), inputs)
    # Floor as in `fnet gradcheck`: entries below 1e-5 are compared absolutely (|diff| < 1e-10).
    assert rel_error(manual, numeric, floor=NUMERICAL_FLOOR) < NUMERICAL_TOL


class Float32Test(chex.TestCase):
    """float32 under jit: manual backward vs jax.vjp < 1e-3 for every case (all cases in one
    program: one compile). Eager float32 would compile every op at every shape (~15 s); jit vs
    eager equality is checked in float64 below."""

    @chex.variants(with_jit=True)
    def test_backward_float32(self):
        inputs, douts = _all_cases(jnp.float32)
        result = self.variant(_grads_of_all_cases)(inputs, douts)
        for name, (out, manual, auto) in result.items():
            assert out.dtype == jnp.float32, name
            chex.assert_trees_all_equal_shapes_and_dtypes(manual, inputs[name])
            assert rel_error(manual, auto) < FLOAT32_TOL, name


def test_jit_equals_eager_float64():
    for name in ("affine_rank3", "batchnorm_train", "dropout"):
        forward, backward, inputs, kd = _make(name, jnp.float64, seed=3)
        out, cache = forward(**inputs)
        dout = rnd(kd, out.shape)
        out_j, cache_j = jax.jit(lambda p: forward(**p))(inputs)
        chex.assert_trees_all_close(out_j, out, rtol=1e-13, atol=1e-14)
        chex.assert_trees_all_close(jax.jit(backward)(dout, cache_j), backward(dout, cache), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------------


def test_relu_derivative_at_zero_is_zero():
    x = jnp.array([-1.0, 0.0, 2.0])
    out, cache = layers.relu_forward(x)
    chex.assert_trees_all_equal(out, jnp.array([0.0, 0.0, 2.0]))
    chex.assert_trees_all_equal(layers.relu_backward(jnp.ones(3), cache), jnp.array([0.0, 0.0, 1.0]))
    # and jax.grad of the forward agrees, at 0 in particular
    auto = jax.grad(lambda x: jnp.sum(layers.relu_forward(x)[0]))(x)
    chex.assert_trees_all_equal(auto, jnp.array([0.0, 0.0, 1.0]))
    assert float(jax.grad(lambda s: layers.relu_forward(s)[0])(0.0)) == 0.0


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.3])
def test_leaky_relu_derivative_at_zero_is_alpha(alpha):
    x = jnp.array([-2.0, 0.0, 3.0])
    out, cache = layers.leaky_relu_forward(x, alpha)
    chex.assert_trees_all_close(out, jnp.array([-2.0 * alpha, 0.0, 3.0]))
    chex.assert_trees_all_close(layers.leaky_relu_backward(jnp.ones(3), cache), jnp.array([alpha, alpha, 1.0]))
    auto = jax.grad(lambda x: jnp.sum(layers.leaky_relu_forward(x, alpha)[0]))(x)
    chex.assert_trees_all_close(auto, jnp.array([alpha, alpha, 1.0]))


def test_leaky_relu_default_alpha_and_traced_alpha():
    x = jnp.array([-1.0, 1.0])
    chex.assert_trees_all_close(layers.leaky_relu_forward(x)[0], jnp.array([-0.01, 1.0]))
    outs = jax.vmap(lambda a: layers.leaky_relu_forward(x, a)[0])(jnp.array([0.1, 0.2]))
    chex.assert_trees_all_close(outs, jnp.array([[-0.1, 1.0], [-0.2, 1.0]]))


def test_batchnorm_running_statistics_update_as_documented():
    rng = np.random.default_rng(0)
    n, d = 16, 4
    gamma, beta = rng.normal(size=d), rng.normal(size=d)
    rm, rv = np.zeros(d), np.ones(d)
    running = (jnp.asarray(rm), jnp.asarray(rv))
    for step in range(3):
        x = rng.normal(loc=step + 1.0, scale=2.0, size=(n, d))
        out, running, _ = layers.batchnorm_forward(jnp.asarray(x), jnp.asarray(gamma), jnp.asarray(beta), running)
        mean, var = x.mean(axis=0), x.var(axis=0)  # biased variance (ddof=0)
        np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-12, atol=1e-12)
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * var
        np.testing.assert_allclose(running[0], rm, rtol=1e-13)
        np.testing.assert_allclose(running[1], rv, rtol=1e-13)

    # eval mode normalizes with the running statistics and returns them unchanged
    x = rng.normal(size=(5, d))
    out, running_eval, cache = layers.batchnorm_forward(
        jnp.asarray(x), jnp.asarray(gamma), jnp.asarray(beta), running, train=False
    )
    np.testing.assert_allclose(out, gamma * (x - rm) / np.sqrt(rv + 1e-5) + beta, rtol=1e-12, atol=1e-12)
    assert running_eval[0] is running[0] and running_eval[1] is running[1]
    assert cache.axis is None


def test_batchnorm_custom_momentum_and_eps_and_normalized_output():
    rng = np.random.default_rng(1)
    x = rng.normal(loc=3.0, scale=5.0, size=(32, 3))
    running = (jnp.ones(3), jnp.full(3, 2.0))
    out, (rm, rv), _ = layers.batchnorm_forward(jnp.asarray(x), jnp.ones(3), jnp.zeros(3), running,
                                                momentum=0.5, eps=1e-3)
    np.testing.assert_allclose(rm, 0.5 * 1.0 + 0.5 * x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(rv, 0.5 * 2.0 + 0.5 * x.var(0), rtol=1e-13)
    np.testing.assert_allclose(out, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(np.mean(out, 0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.var(out, 0), 1.0, atol=1e-3)


def test_batchnorm_running_stats_keep_their_dtype():
    x = jnp.ones((4, 3), jnp.float32)
    _, (rm, rv), _ = layers.batchnorm_forward(x, jnp.ones(3, jnp.float32), jnp.zeros(3, jnp.float32),
                                              (jnp.zeros(3, jnp.float32), jnp.ones(3, jnp.float32)))
    assert rm.dtype == rv.dtype == jnp.float32


def test_layernorm_uses_per_sample_statistics():
    rng = np.random.default_rng(2)
    x = rng.normal(loc=-2.0, scale=3.0, size=(5, 7))
    gamma, beta = rng.normal(size=7), rng.normal(size=7)
    out, _ = layers.layernorm_forward(jnp.asarray(x), jnp.asarray(gamma), jnp.asarray(beta))
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-5) + beta, rtol=1e-12, atol=1e-12)
    # each sample is normalized on its own: a row does not depend on the others
    out0, _ = layers.layernorm_forward(jnp.asarray(x[:1]), jnp.asarray(gamma), jnp.asarray(beta))
    np.testing.assert_allclose(out0, out[:1], rtol=1e-13)


def test_dropout_rate_zero_is_identity_and_eval_mode_is_identity():
    x = jax.random.normal(jax.random.PRNGKey(0), (50, 20))
    out, _ = layers.dropout_forward(x, 0.0, jax.random.PRNGKey(1))
    chex.assert_trees_all_equal(out, x)
    out, cache = layers.dropout_forward(x, 0.7, None, train=False)
    chex.assert_trees_all_equal(out, x)
    assert cache is None
    dout = jnp.ones_like(x)
    chex.assert_trees_all_equal(layers.dropout_backward(dout, cache), dout)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_rate_and_scales_kept_units(rate):
    n = 400_000
    x = jnp.linspace(0.5, 1.5, n)
    out, mask = layers.dropout_forward(x, rate, jax.random.PRNGKey(7))
    dropped = np.asarray(out == 0)
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(dropped.mean() - rate) < 5 * sigma
    kept = ~dropped
    np.testing.assert_allclose(np.asarray(out)[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(mask)[kept], 1 / (1 - rate), rtol=1e-12)
    # inverted dropout preserves the mean (x ~ 1, so the mean of out has std ~ sqrt(rate/(1-rate)/n))
    assert abs(float(jnp.mean(out)) - float(jnp.mean(x))) < 5 * np.sqrt(rate / (1 - rate) / n) * 1.5


def test_dropout_same_key_same_mask_other_key_other_mask():
    x = jnp.ones((64, 64))
    a, _ = layers.dropout_forward(x, 0.5, jax.random.PRNGKey(0))
    b, _ = layers.dropout_forward(x, 0.5, jax.random.PRNGKey(0))
    c, _ = layers.dropout_forward(x, 0.5, jax.random.PRNGKey(1))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_dropout_with_traced_rate_under_vmap_and_jit():
    rates = jnp.array([0.0, 0.25, 0.5, 0.75])
    n = 100_000
    x = jnp.ones((n,))
    key = jax.random.PRNGKey(3)
    outs = jax.vmap(lambda r: layers.dropout_forward(x, r, key)[0])(rates)
    chex.assert_shape(outs, (4, n))
    for r, out in zip(np.asarray(rates), np.asarray(outs)):
        assert abs((out == 0).mean() - r) < 5 * np.sqrt(max(r * (1 - r), 1e-12) / n)
        np.testing.assert_allclose(out[out != 0], 1 / (1 - r), rtol=1e-12)
    # the rate-0 row is the identity
    chex.assert_trees_all_equal(outs[0], x)
    # jit with the rate as an argument: no recompile per rate, same masks as eager
    f = jax.jit(lambda r: layers.dropout_forward(x, r, key)[0])
    chex.assert_trees_all_close(f(jnp.asarray(0.25)), layers.dropout_forward(x, 0.25, key)[0])


def test_softmax_is_stable_and_matches_reference():
    x = jnp.array([[1e4, -1e4, 0.0], [1e4, 1e4 - 1.0, -5.0], [-1e4, -1e4, -1e4], [1.0, 2.0, 3.0]])
    out, cache = layers.softmax_forward(x)
    assert np.all(np.isfinite(out))
    x_np = np.asarray(x)
    z = x_np - x_np.max(axis=1, keepdims=True)
    ref = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-14)
    chex.assert_trees_all_close(out, jax.nn.softmax(x, axis=-1), rtol=1e-14)
    dx = layers.softmax_backward(jnp.ones_like(x), cache)
    assert np.all(np.isfinite(dx))
    out32, _ = layers.softmax_forward(x.astype(jnp.float32))
    assert np.all(np.isfinite(out32))


def test_sigmoid_is_stable_for_huge_inputs():
    x = jnp.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    for dtype in (jnp.float32, jnp.float64):
        out, cache = layers.sigmoid_forward(x.astype(dtype))
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(np.asarray(out)[[0, 2, 4]], [0.0, 0.5, 1.0])
        assert np.all(np.isfinite(layers.sigmoid_backward(jnp.ones_like(out), cache)))


# --------------------------------------------------------------------------------------------
# Property tests over random shapes and values
# --------------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=10, deadline=None)
seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([0.1, 1.0, 10.0])


def _assert_manual_equals_vjp(forward, backward, inputs, rng):
    """Under jit: a compile per new shape costs ~50 ms, eager dispatch of every op ~0.5 s."""
    names = tuple(inputs)
    out_shape = jax.eval_shape(lambda p: forward(**p)[0], inputs).shape
    dout = rnd(rng, out_shape)
    out, (manual, auto) = jax.jit(
        lambda p, g: (forward(**p)[0], _manual_and_vjp(forward, backward, p, g, names))
    )(inputs, dout)
    chex.assert_trees_all_equal_shapes(manual, inputs)
    assert rel_error(manual, auto) < AUTODIFF_TOL
    return out


@PROPERTY
@given(n=st.integers(1, 6), extra=st.lists(st.integers(1, 4), min_size=1, max_size=3), m=st.integers(1, 5),
       seed=seeds, scale=scales)
def test_property_affine(n, extra, m, seed, scale):
    rng = np.random.default_rng(seed)
    d = int(np.prod(extra))
    x, W, b = rnd(rng, (n, *extra), scale=scale), rnd(rng, (d, m)), rnd(rng, (m,))
    out = _assert_manual_equals_vjp(layers.affine_forward, layers.affine_backward, dict(x=x, W=W, b=b), rng)
    chex.assert_shape(out, (n, m))
    np.testing.assert_allclose(out, np.asarray(x).reshape(n, d) @ np.asarray(W) + np.asarray(b), rtol=1e-12, atol=1e-12)


@PROPERTY
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=seeds, scale=scales,
       act=st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh", "softmax"]))
def test_property_elementwise_and_softmax(shape, seed, scale, act):
    rng = np.random.default_rng(seed)
    x = rnd(rng, tuple(shape), scale=scale)
    if act == "softmax":
        forward, backward = layers.softmax_forward, layers.softmax_backward
    else:
        forward, backward = layers.ACTIVATIONS[act]
    out = _assert_manual_equals_vjp(forward, backward, dict(x=x), rng)
    chex.assert_shape(out, tuple(shape))
    if act == "softmax":
        np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-12)


@PROPERTY
@given(n=st.integers(2, 8), d=st.integers(1, 6), seed=seeds, scale=scales,
       mode=st.sampled_from(["batchnorm_train", "batchnorm_eval", "layernorm"]))
def test_property_normalization(n, d, seed, scale, mode):
    if mode == "layernorm" and d == 1:
        d = 2  # a single feature normalizes to 0 whatever x is
    rng = np.random.default_rng(seed)
    inputs = dict(x=rnd(rng, (n, d), scale=scale, shift=1.0), gamma=rnd(rng, (d,)), beta=rnd(rng, (d,)))
    if mode == "layernorm":
        forward = layers.layernorm_forward
    else:
        running = (rnd(rng, (d,)), jnp.abs(rnd(rng, (d,))) + 0.5)
        train = mode == "batchnorm_train"

        def forward(x, gamma, beta):
            out, _, cache = layers.batchnorm_forward(x, gamma, beta, running, train=train)
            return out, cache

    out = _assert_manual_equals_vjp(forward, layers.batchnorm_backward, inputs, rng)
    chex.assert_shape(out, (n, d))


@PROPERTY
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=seeds,
       rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]))
def test_property_dropout(shape, seed, rate):
    rng = np.random.default_rng(seed)
    x = rnd(rng, tuple(shape))
    key = jax.random.PRNGKey(seed)
    out = _assert_manual_equals_vjp(lambda x: layers.dropout_forward(x, rate, key), layers.dropout_backward,
                                    dict(x=x), rng)
    kept = np.asarray(out) != 0
    np.testing.assert_allclose(np.asarray(out)[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-12)
    if rate == 0.0:
        chex.assert_trees_all_equal(out, x)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_affine_rejects_mismatched_shapes():
    x, W, b = jnp.ones((4, 3)), jnp.ones((5, 2)), jnp.ones(2)
    with pytest.raises(ValueError, match=r"affine_forward: x has shape \(4, 3\).*W has shape \(5, 2\)"):
        layers.affine_forward(x, W, b)
    with pytest.raises(ValueError, match=r"affine_forward: x has shape \(4, 2, 2\) \(D = 4.*W has shape \(5, 2\)"):
        layers.affine_forward(jnp.ones((4, 2, 2)), W, b)
    with pytest.raises(ValueError, match=r"affine_forward: b has shape \(3,\) but W has shape \(3, 2\)"):
        layers.affine_forward(x, jnp.ones((3, 2)), jnp.ones(3))


def test_affine_rejects_wrong_ranks():
    with pytest.raises(ValueError, match=r"affine_forward: x must have at least 2 dimensions, got shape \(3,\)"):
        layers.affine_forward(jnp.ones(3), jnp.ones((3, 2)), jnp.ones(2))
    with pytest.raises(ValueError, match=r"affine_forward: W must have 2 dimensions, got shape \(3,\)"):
        layers.affine_forward(jnp.ones((4, 3)), jnp.ones(3), jnp.ones(2))
    with pytest.raises(ValueError, match=r"affine_forward: b must have 1 dimensions, got shape \(1, 2\)"):
        layers.affine_forward(jnp.ones((4, 3)), jnp.ones((3, 2)), jnp.ones((1, 2)))


def test_shape_errors_are_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"affine_forward: x has shape \(4, 3\)"):
        jax.jit(layers.affine_forward)(jnp.ones((4, 3)), jnp.ones((5, 2)), jnp.ones(2))


@pytest.mark.parametrize(
    "call, fn, arg",
    [
        (lambda: layers.affine_forward(jnp.ones((4, 3), jnp.int32), jnp.ones((3, 2)), jnp.ones(2)), "affine_forward", "x"),
        (lambda: layers.affine_forward(jnp.ones((4, 3)), jnp.ones((3, 2), jnp.int32), jnp.ones(2)), "affine_forward", "W"),
        (lambda: layers.affine_forward(jnp.ones((4, 3)), jnp.ones((3, 2)), np.ones(2, np.int64)), "affine_forward", "b"),
        (lambda: layers.relu_forward(jnp.arange(3)), "relu_forward", "x"),
        (lambda: layers.leaky_relu_forward(np.arange(3)), "leaky_relu_forward", "x"),
        (lambda: layers.sigmoid_forward(jnp.arange(3)), "sigmoid_forward", "x"),
        (lambda: layers.tanh_forward([1, 2, 3]), "tanh_forward", "x"),
        (lambda: layers.softmax_forward(jnp.arange(3)), "softmax_forward", "x"),
        (lambda: layers.dropout_forward(jnp.arange(3), 0.5, jax.random.PRNGKey(0)), "dropout_forward", "x"),
        (lambda: layers.layernorm_forward(jnp.ones((2, 3), jnp.int32), jnp.ones(3), jnp.zeros(3)), "layernorm_forward", "x"),
        (lambda: layers.batchnorm_forward(jnp.ones((2, 3)), jnp.ones(3, jnp.int32), jnp.zeros(3), (jnp.zeros(3), jnp.ones(3))),
         "batchnorm_forward", "gamma"),
        (lambda: layers.relu_forward(jnp.array([True, False])), "relu_forward", "x"),
    ],
)
def test_non_float_inputs_raise_type_error(call, fn, arg):
    with pytest.raises(TypeError, match=rf"{fn}: {arg} must be a floating-point array, got dtype (int|bool)"):
        call()


def test_normalization_rejects_bad_shapes():
    x = jnp.ones((4, 3))
    running = (jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"batchnorm_forward: x must have 2 dimensions, got shape \(4, 3, 1\)"):
        layers.batchnorm_forward(jnp.ones((4, 3, 1)), jnp.ones(3), jnp.zeros(3), running)
    with pytest.raises(ValueError, match=r"batchnorm_forward: gamma has shape \(2,\) but x has shape \(4, 3\)"):
        layers.batchnorm_forward(x, jnp.ones(2), jnp.zeros(3), running)
    with pytest.raises(ValueError, match=r"batchnorm_forward: beta has shape \(4,\) but x has shape \(4, 3\)"):
        layers.batchnorm_forward(x, jnp.ones(3), jnp.zeros(4), running)
    with pytest.raises(ValueError, match=r"batchnorm_forward: running_var has shape \(2,\) but x has shape \(4, 3\)"):
        layers.batchnorm_forward(x, jnp.ones(3), jnp.zeros(3), (jnp.zeros(3), jnp.ones(2)))
    with pytest.raises(ValueError, match=r"layernorm_forward: gamma must have 1 dimensions, got shape \(1, 3\)"):
        layers.layernorm_forward(x, jnp.ones((1, 3)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"layernorm_forward: x must have 2 dimensions, got shape \(3,\)"):
        layers.layernorm_forward(jnp.ones(3), jnp.ones(3), jnp.zeros(3))


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_dropout_rejects_rate_outside_unit_interval(rate):
    with pytest.raises(ValueError, match=rf"dropout_forward: rate must be in \[0, 1\), got {rate}"):
        layers.dropout_forward(jnp.ones(3), rate, jax.random.PRNGKey(0))


def test_dropout_rejects_array_rate_outside_unit_interval():
    with pytest.raises(ValueError, match=r"dropout_forward: rate must be in \[0, 1\)"):
        layers.dropout_forward(jnp.ones(3), jnp.array([0.5, 1.0]), jax.random.PRNGKey(0))


def test_dropout_train_mode_needs_a_key():
    with pytest.raises(ValueError, match="dropout_forward: key is None"):
        layers.dropout_forward(jnp.ones(3), 0.5, None)


def test_softmax_rejects_scalars():
    with pytest.raises(ValueError, match=r"softmax_forward: x must have at least 1 dimensions, got shape \(\)"):
        layers.softmax_forward(jnp.asarray(1.0))


# --------------------------------------------------------------------------------------------
# dout is checked against the forward output's shape (never broadcast)
# --------------------------------------------------------------------------------------------

N, D, M = 8, 5, 10
X = jax.random.normal(jax.random.PRNGKey(0), (N, D))
G, B = jnp.ones(D), jnp.zeros(D)

DOUT_CASES = {
    "affine_backward": (layers.affine_forward(X, jnp.ones((D, M)), jnp.zeros(M))[1], layers.affine_backward, (N, M)),
    "relu_backward": (layers.relu_forward(X)[1], layers.relu_backward, (N, D)),
    "leaky_relu_backward": (layers.leaky_relu_forward(X)[1], layers.leaky_relu_backward, (N, D)),
    "sigmoid_backward": (layers.sigmoid_forward(X)[1], layers.sigmoid_backward, (N, D)),
    "tanh_backward": (layers.tanh_forward(X)[1], layers.tanh_backward, (N, D)),
    "batchnorm_backward": (layers.batchnorm_forward(X, G, B, (G * 0, G))[2], layers.batchnorm_backward, (N, D)),
    "layernorm_backward": (layers.layernorm_forward(X, G, B)[1], layers.layernorm_backward, (N, D)),
    "dropout_backward": (layers.dropout_forward(X, 0.5, jax.random.PRNGKey(1))[1], layers.dropout_backward, (N, D)),
    "softmax_backward": (layers.softmax_forward(X)[1], layers.softmax_backward, (N, D)),
}


@pytest.mark.parametrize("name", list(DOUT_CASES))
@pytest.mark.parametrize("bad", ["column", "row", "transposed"])
def test_a_dout_of_another_shape_is_refused(name, bad):
    cache, backward, shape = DOUT_CASES[name]
    dout = {"column": jnp.ones((shape[0], 1)), "row": jnp.ones((1, shape[1])), "transposed": jnp.ones(shape[::-1])}[bad]
    message = f"{name}: dout has shape {tuple(dout.shape)} but the forward output has shape {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        backward(dout, cache)
    backward(jnp.ones(shape), cache)  # the right shape passes


@pytest.mark.parametrize("name", ["affine_backward", "relu_backward"])
def test_an_integer_dout_is_refused(name):
    cache, backward, shape = DOUT_CASES[name]
    with pytest.raises(TypeError, match=f"{name}: dout must be a floating-point array"):
        backward(jnp.ones(shape, jnp.int32), cache)


# --------------------------------------------------------------------------------------------
# NaN in, NaN out: no layer hides a NaN (ReLU included)
# --------------------------------------------------------------------------------------------

NAN_X = jnp.array([[jnp.nan, 1.0, -1.0], [0.5, -0.5, 2.0]])
NAN_W, NAN_B = jnp.ones((3, 2)), jnp.zeros(2)
GAMMA, BETA, NAN_RUNNING = jnp.ones(3), jnp.zeros(3), (jnp.zeros(3), jnp.ones(3))

FORWARDS = {
    "affine": lambda x: layers.affine_forward(x, NAN_W, NAN_B)[0],
    "relu": lambda x: layers.relu_forward(x)[0],
    "leaky_relu": lambda x: layers.leaky_relu_forward(x)[0],
    "sigmoid": lambda x: layers.sigmoid_forward(x)[0],
    "tanh": lambda x: layers.tanh_forward(x)[0],
    "batchnorm-train": lambda x: layers.batchnorm_forward(x, GAMMA, BETA, NAN_RUNNING)[0],
    "batchnorm-eval": lambda x: layers.batchnorm_forward(x, GAMMA, BETA, NAN_RUNNING, train=False)[0],
    "layernorm": lambda x: layers.layernorm_forward(x, GAMMA, BETA)[0],
    "dropout": lambda x: layers.dropout_forward(x, 0.5, jax.random.PRNGKey(0))[0],
    "softmax": lambda x: layers.softmax_forward(x)[0],
    "softmax_cross_entropy": lambda x: losses.softmax_cross_entropy(x, jnp.array([0, 1]))[0],
}


@pytest.mark.parametrize("name", list(FORWARDS))
def test_nan_in_gives_nan_out(name):
    out = np.asarray(FORWARDS[name](NAN_X))
    assert np.isnan(out).any(), f"{name} hid the NaN: {out}"
    assert np.isnan(layers.relu_forward(jnp.array([jnp.nan, -1.0, 1.0]))[0][0])
