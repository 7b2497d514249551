"""The 2-D optimizer comparison: the scanned path, numerical descent, and the experiment protocol."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import optim
from fnet.experiments import optimizer_paths as op


def test_numerical_descent_reaches_the_origin_like_the_source():
    path = op.numerical_descent(lambda x: x[0] ** 2 + x[1] ** 2, jnp.array([-3.0, 4.0]), lr=0.1, steps=100)
    assert path.shape == (101, 2) and path.dtype == jnp.float64
    np.testing.assert_array_equal(path[0], [-3.0, 4.0])
    assert np.all(np.abs(path[-1]) < 1e-9)
    # The source prints [-6.11110793e-10  8.14814391e-10]; exact descent gives 0.8**100 * x0.
    np.testing.assert_allclose(path[-1], np.array([-3.0, 4.0]) * 0.8**100, rtol=1e-6)


def test_optimize_path_is_a_scan_of_the_optimizer():
    opt = optim.momentum(0.1)
    path = op.optimize_path(opt, op.f, op.X0, 5)
    assert path.shape == (6, 2)
    x, state = jnp.asarray(op.X0), opt.init(jnp.asarray(op.X0))
    for k in range(5):
        updates, state = opt.update(jax.grad(op.f)(x), state, x)
        x = optim.apply_updates(x, updates)
        np.testing.assert_allclose(path[k + 1], x, rtol=1e-12)


def test_sgd_path_closed_form():
    """On f = x**2/20 + y**2, SGD multiplies x by (1 - lr/10) and y by (1 - 2 lr) per step."""
    path = op.optimize_path(optim.sgd(0.95), op.f, op.X0, 30)
    k = np.arange(31)[:, None]
    np.testing.assert_allclose(path, np.array(op.X0) * np.array([1 - 0.095, 1 - 1.9]) ** k, rtol=1e-10)


def test_numerical_descent_matches_sgd_path():
    num = op.numerical_descent(op.f, op.X0, 0.95, 30)
    auto = op.optimize_path(optim.sgd(0.95), op.f, op.X0, 30)
    np.testing.assert_allclose(num, auto, atol=1e-8)


def test_experiment_protocol(tmp_path):
    assert op.NAME == "optimizer-paths" and "\n" not in op.DESCRIPTION
    result = op.run(quick=True)
    result = json.loads(json.dumps(result))  # JSON-serialisable
    assert set(result["optimizers"]) == {"SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam"}
    for name, r in result["optimizers"].items():
        assert np.asarray(r["path"]).shape == (31, 2)
        assert r["final_value"] < op.f(np.array(op.X0)) / 10, name  # every optimizer makes progress
    assert {k: r["learning_rate"] for k, r in result["optimizers"].items() if k in ("SGD", "Momentum", "AdaGrad", "Adam")} == {
        "SGD": 0.95, "Momentum": 0.1, "AdaGrad": 1.5, "Adam": 0.3}
    text = op.summary(result)
    assert all(name in text for name in result["optimizers"])
    pytest.importorskip("matplotlib")
    out = tmp_path / "paths.png"
    op.plot(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
