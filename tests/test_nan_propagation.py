"""NaN is never hidden (issue: relu_forward mapped NaN to 0, so a NaN input or weight gave finite
scores, `evaluate` on all-NaN data reported loss 2.303 and `fit` with a NaN weight trained on)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import layers, losses, mlp, optim
from fnet import train as fnet_train

NAN_X = jnp.array([[jnp.nan, 1.0, -1.0], [0.5, -0.5, 2.0]])
W, B = jnp.ones((3, 2)), jnp.zeros(2)
GAMMA, BETA, RUNNING = jnp.ones(3), jnp.zeros(3), (jnp.zeros(3), jnp.ones(3))

FORWARDS = {
    "affine": lambda x: layers.affine_forward(x, W, B)[0],
    "relu": lambda x: layers.relu_forward(x)[0],
    "leaky_relu": lambda x: layers.leaky_relu_forward(x)[0],
    "sigmoid": lambda x: layers.sigmoid_forward(x)[0],
    "tanh": lambda x: layers.tanh_forward(x)[0],
    "batchnorm-train": lambda x: layers.batchnorm_forward(x, GAMMA, BETA, RUNNING)[0],
    "batchnorm-eval": lambda x: layers.batchnorm_forward(x, GAMMA, BETA, RUNNING, train=False)[0],
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


def test_a_nan_weight_gives_nan_scores():
    net = mlp(3, [4], 2)
    params, state = net.init(jax.random.PRNGKey(0))
    params = dict(params, dense1=dict(params["dense1"], W=params["dense1"]["W"].at[0, 0].set(jnp.nan)))
    assert np.isnan(np.asarray(net.apply(params, NAN_X.at[0, 0].set(1.0)))).any()


def test_fit_and_evaluate_refuse_non_finite_data_and_params():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 3)).astype(np.float32), rng.integers(0, 2, 32).astype(np.int32)
    net = mlp(3, [4], 2)
    params, state = net.init(jax.random.PRNGKey(0))
    bad_params = dict(params, dense1=dict(params["dense1"], W=params["dense1"]["W"].at[1, 2].set(jnp.nan)))
    with pytest.raises(ValueError, match=r"fit: params\['dense1'\]\['W'\] must be finite"):
        fnet_train.fit(net, optim.sgd(0.1), x, y, batch_size=8, params=bad_params, progress=False)
    x_nan = np.full_like(x, np.nan)
    with pytest.raises(ValueError, match="fit: training features contain NaN or inf"):
        fnet_train.fit(net, optim.sgd(0.1), x_nan, y, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="evaluate: x must be finite, found 96 NaN"):
        fnet_train.evaluate(net, params, state, x_nan, y)
    with pytest.raises(ValueError, match=r"evaluate: x is empty \(shape \(0, 3\)\)"):
        fnet_train.evaluate(net, params, state, x[:0], y[:0])
    with pytest.raises(ValueError, match="evaluate: batch_size must be a positive int, got 0"):
        fnet_train.evaluate(net, params, state, x, y, batch_size=0)
