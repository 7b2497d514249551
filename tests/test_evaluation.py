"""fnet.evaluation: the batched evaluation equals a direct apply on the whole set (the last
incomplete batch included, the accuracy an exact count), regression has no accuracy (NaN), and
bad labels or non-finite params are refused."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _data_fixtures import classification

import fnet
from fnet import nets, train

N, D, C = 37, 5, 3  # 37 samples: batches of 10 leave an incomplete last batch
NET = nets.mlp(D, [6, 7], C, norm="batchnorm", dropout=0.25, weight_decay=1e-3, dtype="float64")


def test_evaluate_matches_a_direct_apply_on_the_whole_set():
    net = NET
    x, y = classification(N, D, C, dtype=np.float64)
    params, state = net.init(jax.random.PRNGKey(0))
    # Move the running statistics away from (0, 1) so that eval mode really uses them.
    state = jax.tree_util.tree_map(lambda v: v + 0.3, state)
    got = train.evaluate(net, params, state, x, y, batch_size=10)  # 37 = 3 full batches + 7
    scores = net.apply(params, x, state=state)
    log_p = jax.nn.log_softmax(scores, axis=1)
    assert got["loss"] == pytest.approx(float(-jnp.mean(log_p[jnp.arange(N), y])), rel=1e-12)
    # The accuracy is the exact fraction of correct rows (a count over N, not a float32 mean).
    assert got["accuracy"] == pytest.approx(np.mean(np.argmax(np.asarray(scores), 1) == np.asarray(y)), abs=1e-12)
    assert train.evaluate(net, params, state, x, y, batch_size=1000) == pytest.approx(got, rel=1e-12)


def test_evaluate_regression_has_nan_accuracy():
    net = nets.mlp(D, [4], 2, loss="mse", dtype="float64")
    x, _ = classification(N, D, C, dtype=np.float64)
    t = np.random.default_rng(1).normal(size=(N, 2))
    params, _ = net.init(jax.random.PRNGKey(0))
    got = train.evaluate(net, params, {}, x, t, batch_size=8)
    assert math.isnan(got["accuracy"])
    expected = float(0.5 * jnp.mean(jnp.sum((net.apply(params, x) - t) ** 2, axis=1)))
    assert got["loss"] == pytest.approx(expected, rel=1e-10)


def test_evaluate_rejects_bad_labels():
    net = NET
    x, y = classification(N, D, C, dtype=np.float64)
    params, state = net.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"evaluate: y must lie in \[0, 3\)"):
        train.evaluate(net, params, state, x, np.where(y == 0, C, y))
    with pytest.raises(TypeError, match="evaluate: y must be integer class labels"):
        train.evaluate(net, params, state, x, y.astype(np.float32))
    with pytest.raises(ValueError, match="evaluate: y must have shape"):
        train.evaluate(net, params, state, x, y[:-1])


def test_the_library_evaluate_refuses_non_finite_params():
    net = fnet.mlp(4, [3], 2)
    params, state = net.init(jax.random.PRNGKey(0))
    params["dense2"]["W"] = params["dense2"]["W"].at[0, 0].set(math.nan)
    x, y = np.ones((5, 4), np.float32), np.zeros(5, np.int32)
    with pytest.raises(ValueError, match=r"evaluate: params\['dense2'\]\['W'\] must be finite"):
        fnet.evaluate(net, params, state, x, y)
