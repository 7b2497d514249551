"""fnet.gradcheck: central differences on pytrees, rel_error's semantics, the three-way checks
of one network and of one module (a user's own module included, and a wrong backward caught with
a clear message), and the report. (check_layers() and check_networks() run in
tests/test_cli_gradcheck.py's single end-to-end run of ``fnet gradcheck``.)"""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import gradcheck, mlp
from fnet.gradcheck import CheckResult, LeafErrors, format_report, numerical_gradient, rel_error
from fnet.modules import Module, dense

N = 4  # the batch of the module checks


def test_numerical_gradient_on_a_pytree():
    rng = np.random.default_rng(0)
    p = {"a": jnp.asarray(rng.standard_normal((3, 2))), "b": {"c": jnp.asarray(rng.standard_normal(4))},
         "d": jnp.asarray(0.7)}

    def f(p):
        return jnp.sum(p["a"] ** 3) + jnp.sum(jnp.sin(p["b"]["c"])) + p["d"] * jnp.sum(p["a"])

    expected = {"a": 3 * p["a"] ** 2 + p["d"], "b": {"c": jnp.cos(p["b"]["c"])}, "d": jnp.sum(p["a"])}
    g = numerical_gradient(f, p)
    chex.assert_trees_all_equal_structs(g, p)
    chex.assert_trees_all_equal_shapes_and_dtypes(g, p)
    assert rel_error(g, expected) < 1e-8


def test_numerical_gradient_on_an_array_with_small_batches():
    x = jnp.linspace(-1.0, 1.0, 11)
    g = numerical_gradient(lambda x: jnp.sum(jnp.exp(x)), x, batch_size=4)
    assert rel_error(g, jnp.exp(x)) < 1e-9
    g = numerical_gradient(lambda x: jnp.sum(x ** 2), x, h=1e-3)
    assert rel_error(g, 2 * x, floor=1e-6) < 1e-9


def test_integer_arguments_accept_numpy_ints_and_refuse_bools_and_floats():
    x = jnp.linspace(-1.0, 1.0, 5)
    chex.assert_trees_all_equal(numerical_gradient(jnp.sum, x, batch_size=np.int64(2)),
                                numerical_gradient(jnp.sum, x, batch_size=2))
    for bad, shown in ((True, r"True \(bool\)"), (2.0, r"2.0 \(float\)")):
        with pytest.raises(TypeError, match=rf"numerical_gradient: batch_size must be an int, got {shown}"):
            numerical_gradient(jnp.sum, x, batch_size=bad)
    for check in (gradcheck.check_layers, gradcheck.check_combinators, gradcheck.check_networks):
        with pytest.raises(TypeError, match=rf"{check.__name__}: seed must be an int, got 0.0"):
            check(seed=0.0)
    with pytest.raises(ValueError, match=r"check_module: seed must be an int >= 0, got -1"):
        gradcheck.check_module(dense(2), (3, 4), seed=-1)


def test_numerical_gradient_of_empty_input():
    x = jnp.zeros((0, 3))
    assert numerical_gradient(lambda x: jnp.sum(x), x) is x


def test_rel_error_semantics():
    a = jnp.array([1.0, 2.0, 0.0])
    assert rel_error(a, a) == 0.0
    # max over elements of |a-b| / (|a|+|b|)
    np.testing.assert_allclose(rel_error(jnp.array([1.0, 2.0]), jnp.array([1.1, 2.0])), 0.1 / 2.1)
    np.testing.assert_allclose(rel_error(jnp.array([1.0]), jnp.array([-1.0])), 1.0)
    # symmetric
    assert rel_error(jnp.array([3.0]), jnp.array([2.0])) == rel_error(jnp.array([2.0]), jnp.array([3.0]))
    # the denominator floor (1e-8 by default) makes tiny values compare absolutely
    np.testing.assert_allclose(rel_error(jnp.array([0.0]), jnp.array([1e-10])), 1e-10 / 1e-8)
    np.testing.assert_allclose(rel_error(jnp.array([0.0]), jnp.array([1e-10]), floor=1e-5), 1e-10 / 1e-5)
    np.testing.assert_allclose(rel_error(jnp.array([0.0]), jnp.array([1.0]), floor=1e-5), 1.0)
    # pytrees: the worst leaf
    np.testing.assert_allclose(
        rel_error({"x": jnp.ones(2), "y": jnp.array([1.0, 3.0])}, {"x": jnp.ones(2), "y": jnp.array([1.0, 1.0])}),
        0.5,
    )
    # a NaN or an infinity is never close
    assert rel_error(jnp.array([jnp.nan, 1.0]), jnp.array([1.0, 1.0])) == np.inf
    assert rel_error(jnp.array([1.0]), jnp.array([jnp.inf])) == np.inf
    # empty leaves are fine, and Python floats/NumPy arrays are accepted
    assert rel_error({"e": jnp.zeros(0)}, {"e": jnp.zeros(0)}) == 0.0
    np.testing.assert_allclose(rel_error(1.0, np.float64(1.5)), 0.2)
    assert isinstance(rel_error(a, a), float)


def test_rel_error_rejects_mismatched_trees_and_shapes():
    with pytest.raises(ValueError, match="rel_error: the two trees differ"):
        rel_error({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"rel_error: shapes differ: \(2,\) vs \(3,\)"):
        rel_error(jnp.ones(2), jnp.ones(3))


def test_check_network_passes_for_one_config():
    net = mlp(4, [5], 3, activation="tanh", norm="batchnorm", dropout=0.3, weight_decay=0.1, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.standard_normal((6, 4))), jnp.asarray(rng.integers(0, 3, 6))
    row = gradcheck.check_network(net, x, y, name="one net")
    assert row.name == "one net"
    assert set(row.leaves) == {"dense1.W", "dense1.b", "batchnorm1.gamma", "batchnorm1.beta", "dense2.W", "dense2.b"}
    assert row.passed, format_report([row], verbose=True)


def test_check_result_and_format_report():
    good = CheckResult("good", {"W": LeafErrors(1e-12, 1e-9, 1e-9), "b": LeafErrors(1e-10, 2e-9, 3e-9)})
    bad_autodiff = CheckResult("bad autodiff", {"W": LeafErrors(2e-7, 1e-9, 1e-9)})
    bad_numeric = CheckResult("bad numeric", {"W": LeafErrors(1e-12, 1e-9, 2e-5)})
    assert good.worst == LeafErrors(1e-10, 2e-9, 3e-9)
    assert good.passed and not bad_autodiff.passed and not bad_numeric.passed

    report = format_report([good, bad_autodiff, bad_numeric])
    lines = report.splitlines()
    assert "manual~autodiff" in lines[0] and "manual~numeric" in lines[0] and "autodiff~numeric" in lines[0]
    good_line = next(line for line in lines if line.startswith("good"))
    assert good_line.endswith("PASS") and "1.00e-10" in good_line and "3.00e-09" in good_line
    assert next(line for line in lines if line.startswith("bad autodiff")).endswith("FAIL")
    assert next(line for line in lines if line.startswith("bad numeric")).endswith("FAIL")
    assert "thresholds: manual~autodiff < 1e-07, vs numerical < 1e-05" in lines[-1]
    assert "    W" not in report

    verbose = format_report([good], verbose=True)
    assert any(line.startswith("    W") for line in verbose.splitlines())
    assert any(line.startswith("    b") for line in verbose.splitlines())


def test_three_way_catches_a_wrong_gradient():
    x = {"x": jnp.array([0.5, -1.0, 2.0])}
    good = gradcheck.three_way("square", lambda p: jnp.sum(p["x"] ** 2), x, {"x": 2 * x["x"]})
    bad = gradcheck.three_way("square", lambda p: jnp.sum(p["x"] ** 2), x, {"x": 2.001 * x["x"]})
    assert good.passed and not bad.passed
    assert bad.worst.manual_autodiff > 1e-4 and bad.worst.autodiff_numerical < 1e-8


def test_a_wrong_backward_is_caught_by_the_gradient_check_with_a_clear_message():
    honest = dense(3)
    shapes_wrong = honest._replace(backward=lambda p, c, dy: (honest.backward(p, c, dy)[0], {"W": p["W"]}))
    with pytest.raises(ValueError, match=r"three_way: the manual gradient of mine does not match the inputs: "
                                         r"missing \['params'\]\['b'\]"):
        gradcheck.check_module(shapes_wrong, (N, 2), name="mine")
    values_wrong = honest._replace(backward=lambda p, c, dy: (lambda dx, dp: (dx, {**dp, "b": 2 * dp["b"]}))(
        *honest.backward(p, c, dy)))
    row = gradcheck.check_module(values_wrong, (N, 2), name="mine")
    assert not row.passed and row.leaves["params.b"].manual_autodiff > 0.1 and row.leaves["params.W"].manual_autodiff < 1e-7


def test_a_users_own_module_gets_the_three_way_table():
    """A module written from scratch (forward + hand-written backward), checked like fnet's own."""

    def init(key, input_shape):
        return {"a": jnp.ones(input_shape[1:])}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        y = params["a"] * x**2  # y = a * x^2
        return y, state, x

    def backward(params, x, dy):
        return 2 * params["a"] * x * dy, {"a": jnp.sum(dy * x**2, axis=0)}

    row = gradcheck.check_module(Module(init, forward, backward, "square"), (N, 3))
    report = gradcheck.format_report([row], verbose=True)
    assert row.passed and "square" in report and "params.a" in report and "PASS" in report


def test_check_module_takes_the_parameters_of_a_module_with_a_domain():
    """The default point draws every parameter from N(0, 0.25): a module defined only for positive
    parameters (y = sqrt(s) * x) is checked at parameters the caller gives."""

    def init(key, input_shape):
        return {"s": jnp.ones(input_shape[1:])}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        return jnp.sqrt(params["s"]) * x, state, x

    def backward(params, x, dy):
        return jnp.sqrt(params["s"]) * dy, {"s": jnp.sum(dy * x, axis=0) / (2 * jnp.sqrt(params["s"]))}

    module = Module(init, forward, backward, "sqrt_scale")
    assert not gradcheck.check_module(module, (N, 3)).passed  # some s < 0: NaN, which never passes
    row = gradcheck.check_module(module, (N, 3), params={"s": jnp.array([0.5, 1.0, 2.0])})
    assert row.passed and set(row.leaves) == {"params.s", "x"}
