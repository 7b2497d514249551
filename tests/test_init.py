"""fnet.init: shapes, dtypes and empirical scales of the initializers, ``init.get``'s specs, and
the initializers as seen through ``mlp(init=...)``, a traced std (a sweep's) included."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import init, mlp
from fnet.modules import BatchNormState

KEY = jax.random.PRNGKey(0)
N_IN, N_OUT = 800, 250  # 200k samples: the empirical std is within ~0.5% of the true one


@pytest.mark.parametrize("name", sorted(init.INITIALIZERS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("shape", [(3, 2), (5,), (2, 3, 4)])
def test_shapes_and_dtypes(name, dtype, shape):
    w = init.INITIALIZERS[name](KEY, shape, dtype)
    chex.assert_shape(w, shape)
    assert w.dtype == dtype


def test_default_dtype_is_float32():
    for fn in (init.zeros, init.xavier, init.he, init.normal(0.1)):
        assert fn(KEY, (3, 2)).dtype == jnp.float32


@pytest.mark.parametrize(
    "fn, std",
    [(init.xavier, math.sqrt(1 / N_IN)), (init.he, math.sqrt(2 / N_IN)), (init.normal(0.05), 0.05),
     (init.normal(1.0), 1.0), (init.INITIALIZERS["normal"], 0.01)],
)
def test_empirical_std(fn, std):
    w = np.asarray(fn(KEY, (N_IN, N_OUT), jnp.float64))
    assert abs(w.std() / std - 1) < 0.02
    assert abs(w.mean()) < 5 * std / math.sqrt(w.size)


def test_scale_depends_on_fan_in_only():
    a = np.asarray(init.he(KEY, (N_OUT, N_IN), jnp.float64))
    assert abs(a.std() / math.sqrt(2 / N_OUT) - 1) < 0.02
    b = np.asarray(init.xavier(KEY, (N_OUT, N_IN), jnp.float64))
    assert abs(b.std() / math.sqrt(1 / N_OUT) - 1) < 0.02


def test_zeros():
    chex.assert_trees_all_equal(init.zeros(KEY, (3, 4), jnp.float64), jnp.zeros((3, 4), jnp.float64))
    chex.assert_trees_all_equal(init.zeros(None, (2,)), jnp.zeros(2, jnp.float32))


def test_same_key_same_values_other_key_other_values():
    a, b = init.he(KEY, (4, 4)), init.he(KEY, (4, 4))
    c = init.he(jax.random.PRNGKey(1), (4, 4))
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_normal_with_traced_std():
    stds = jnp.array([0.0, 0.1, 1.0])
    ws = jax.jit(jax.vmap(lambda s: init.normal(s)(KEY, (3, 2))))(stds)
    chex.assert_shape(ws, (3, 3, 2))
    chex.assert_trees_all_equal(ws[0], jnp.zeros((3, 2), jnp.float32))
    chex.assert_trees_all_close(ws[2], 10 * ws[1], rtol=1e-6)


def test_fan_in_required():
    with pytest.raises(ValueError, match=r"xavier: shape must have a positive fan-in, got shape \(\)"):
        init.xavier(KEY, ())
    with pytest.raises(ValueError, match=r"he: shape must have a positive fan-in, got shape \(0, 3\)"):
        init.he(KEY, (0, 3))


def test_fan_in_of_dense_and_conv_weights():
    """Dense W is (n_in, n_out); conv filters (F, C, HH, WW) see C * HH * WW inputs each."""
    assert init.fan_in((784, 100)) == 784 and init.fan_in((10,)) == 10
    assert init.fan_in((16, 3, 5, 5)) == 75
    w = np.asarray(init.he(KEY, (200, 8, 5, 5), jnp.float64))
    assert abs(w.std() / math.sqrt(2 / 200) - 1) < 0.02


def test_fan_in_takes_numpy_integer_dimensions_as_python_ints():
    n = init.fan_in((np.int64(784), np.int32(100)))
    assert n == 784 and type(n) is int
    assert init.fan_in((np.int64(16), np.uint8(3), 5, np.int64(5))) == 75


@pytest.mark.parametrize("shape, exc, msg", [
    ((2.0, 3), TypeError, r"he: shape\[0\] must be an int, got 2.0"),
    ((3, True), TypeError, r"he: shape\[1\] must be an int, got True"),
    ((3, np.float32(2)), TypeError, r"he: shape\[1\] must be an int, got np.float32\(2.0\)"),
    ((-3, 2), ValueError, r"he: shape\[0\] must be an int >= 0, got -3"),
], ids=["float", "bool", "numpy float", "negative"])
def test_fan_in_refuses_non_integer_and_negative_dimensions(shape, exc, msg):
    with pytest.raises(exc, match=msg):
        init.he(KEY, shape)


# --------------------------------------------------------------------------------------------
# init.get
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zeros", "normal", "xavier", "he"])
def test_get_by_name(name):
    assert init.get(name) is init.INITIALIZERS[name]


def test_get_float_int_and_callable():
    w = np.asarray(init.get(0.2)(KEY, (N_IN, N_OUT), jnp.float64))
    assert abs(w.std() / 0.2 - 1) < 0.02
    chex.assert_trees_all_equal(init.get(0)(KEY, (2, 2)), jnp.zeros((2, 2)))
    # NumPy numbers are stds too
    chex.assert_trees_all_equal(init.get(np.float32(0.2))(KEY, (2, 2)), init.get(0.2)(KEY, (2, 2)))
    chex.assert_trees_all_equal(init.get(np.int64(0))(KEY, (2, 2)), jnp.zeros((2, 2)))

    def custom(key, shape, dtype=jnp.float32):
        return jnp.full(shape, 7.0, dtype)

    assert init.get(custom) is custom


@pytest.mark.parametrize(
    "spec, exc, msg",
    [
        ("glorot", ValueError, r"init.get: unknown initializer 'glorot'; choose one of \['he', 'normal', 'xavier', 'zeros'\]"),
        (-0.1, ValueError, r"init.get: std must be >= 0, got -0.1"),
        (None, TypeError, r"init.get: init must be a name, a float std or a callable, got NoneType"),
        (True, TypeError, r"init.get: init must be a name, a float std or a callable, got bool"),
        ([0.1], TypeError, r"init.get: init must be a name, a float std or a callable, got list"),
    ],
)
def test_get_bad_specs(spec, exc, msg):
    with pytest.raises(exc, match=msg):
        init.get(spec)


# --------------------------------------------------------------------------------------------
# Through the network
# --------------------------------------------------------------------------------------------


def _weights(params):
    return {k: np.asarray(v["W"]) for k, v in params.items() if k.startswith("dense")}


@pytest.mark.parametrize(
    "spec, std_of",
    [
        ("he", lambda n_in: math.sqrt(2 / n_in)),
        ("xavier", lambda n_in: math.sqrt(1 / n_in)),
        ("normal", lambda n_in: 0.01),
        (0.3, lambda n_in: 0.3),
    ],
)
def test_mlp_init_specs(spec, std_of):
    net = mlp(N_IN, [N_OUT], 200, init=spec, norm="layernorm", dtype="float64")
    params, state = net.init(KEY)
    assert state == {}
    for k, w in _weights(params).items():
        assert w.dtype == np.float64
        assert abs(w.std() / std_of(w.shape[0]) - 1) < 0.03, k
    # biases start at 0, gamma at 1, beta at 0
    chex.assert_trees_all_equal(params["dense1"]["b"], jnp.zeros(N_OUT, jnp.float64))
    chex.assert_trees_all_equal(params["dense2"]["b"], jnp.zeros(200, jnp.float64))
    chex.assert_trees_all_equal(params["layernorm1"]["gamma"], jnp.ones(N_OUT, jnp.float64))
    chex.assert_trees_all_equal(params["layernorm1"]["beta"], jnp.zeros(N_OUT, jnp.float64))


def test_mlp_init_zeros_and_callable():
    params, _ = mlp(4, [3], 2, init="zeros").init(KEY)
    for w in _weights(params).values():
        assert not w.any()
    params, _ = mlp(4, [3], 2, init=lambda key, shape, dtype: jnp.full(shape, 0.5, dtype)).init(KEY)
    for w in _weights(params).values():
        np.testing.assert_array_equal(w, 0.5)


def test_mlp_init_shapes_dtypes_and_batchnorm_state():
    net = mlp(6, [5, 4], 3, norm="batchnorm")
    params, state = net.init(KEY)
    chex.assert_trees_all_equal_shapes(
        params,
        {"dense1": {"W": jnp.zeros((6, 5)), "b": jnp.zeros(5)}, "batchnorm1": {"gamma": jnp.zeros(5), "beta": jnp.zeros(5)},
         "dense2": {"W": jnp.zeros((5, 4)), "b": jnp.zeros(4)}, "batchnorm2": {"gamma": jnp.zeros(4), "beta": jnp.zeros(4)},
         "dense3": {"W": jnp.zeros((4, 3)), "b": jnp.zeros(3)}},
    )
    chex.assert_trees_all_equal(
        state,
        {"batchnorm1": BatchNormState(jnp.zeros(5), jnp.ones(5)), "batchnorm2": BatchNormState(jnp.zeros(4), jnp.ones(4))},
    )
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves((params, state)))
    # different layers get different keys
    assert not np.allclose(np.asarray(params["dense1"]["W"])[:4, :4], np.asarray(params["dense2"]["W"])[:4, :4])


def test_traced_std_init_under_vmap():
    """A sweep over init scales builds the network from a traced std: the same draws as a float std."""
    ws = jax.vmap(lambda s: mlp(3, [2], 2, init=s).init(KEY)[0]["dense1"]["W"])(jnp.array([0.0, 1.0, 2.0]))
    chex.assert_trees_all_equal(ws[0], jnp.zeros((3, 2)))
    chex.assert_trees_all_equal(ws[2], 2 * ws[1])  # scaling by 2 is exact
    # the same draws as the float std: bitwise with XLA's default options; the suite's -O0 may
    # round the normal's inverse erf differently in the vmapped program, by an ulp or two
    chex.assert_trees_all_close(ws[1], mlp(3, [2], 2, init=1.0).init(KEY)[0]["dense1"]["W"],
                                rtol=4 * np.finfo(np.float32).eps, atol=0)
    params, _ = mlp(N_IN, [N_OUT], 10, init=np.float64(0.05), dtype="float64").init(KEY)
    for w in _weights(params).values():
        assert abs(w.std() / 0.05 - 1) < 0.03


@pytest.mark.parametrize("spec, exc", [("glorot", ValueError), (-1.0, ValueError), (np.float32(-1.0), ValueError),
                                       (jnp.float32(-1.0), ValueError), (None, TypeError)])
def test_mlp_rejects_bad_init(spec, exc):
    with pytest.raises(exc, match="init.get"):
        mlp(3, [2], 2, init=spec)
