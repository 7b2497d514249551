"""fnet.nets: a network from any composition of modules (fnet.network) and what its functions
check: params and state of another network named by path, inputs of the wrong shape, rank or
dtype (flat images given to a CNN, with a hint), a missing state or key, bad labels, the
``apply(variables, x)`` form; the summary table; networks of any shape (residual, two-branch,
convolutional) trained by fit; a NaN weight giving NaN scores, never hidden."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _data_fixtures import classification

import fnet
from fnet import data, mlp, nets, optim
from fnet import train as fnet_train
from fnet.combinators import fan_in_concat, fan_out, parallel, residual, serial
from fnet.modules import (avg_pool, batchnorm, conv2d, dense, flatten, global_avg_pool, groupnorm, identity,
                          max_pool, relu, tanh)

N, D, H, C = 8, 5, 6, 3


def test_summary_lists_modules_shapes_and_parameter_counts():
    net = fnet.network(serial(dense(100), batchnorm(), relu(), residual(serial(dense(100), tanh())), dense(10)), (784,))
    text = fnet.summary(net)
    lines = text.splitlines()
    assert lines[0] == net.name and lines[1].split() == ["module", "type", "output", "shape", "params"]
    row = next(line for line in lines if line.strip().startswith("dense1"))
    assert "(N, 100)" in row and row.rstrip().endswith("78,500")
    assert any(line.strip().startswith("residual1") and "10,100" in line for line in lines)
    total = 78_500 + 200 + 10_100 + 1_010
    assert lines[-1] == f"total: {total:,} parameters"
    assert total == sum(a.size for a in jax.tree_util.tree_leaves(net.init(jax.random.PRNGKey(0)).params))


def test_a_residual_and_a_two_branch_network_train_with_fit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32)  # XOR of signs: needs the hidden layers
    shapes = {
        "residual": serial(dense(32), relu(), residual(serial(dense(32), relu(), dense(32))), dense(2)),
        "two-branch": serial(fan_out(2), parallel(serial(dense(16), tanh()), serial(dense(16), relu())),
                             fan_in_concat(), dense(2)),
    }
    for name, module in shapes.items():
        net = fnet.network(module, (8,), weight_decay=1e-4, name=name)
        result = fnet_train.fit(net, optim.adam(1e-2), x, y, epochs=30, batch_size=64, progress=False)
        scores = net.apply(result.variables, x)
        assert float(jnp.mean(jnp.argmax(scores, 1) == y)) > 0.9, name


def test_network_rejects_bad_modules_losses_and_shapes():
    with pytest.raises(TypeError, match="network: module must be a fnet.modules.Module, got int"):
        nets.network(3, (4,))
    with pytest.raises(ValueError, match=r"network: input_shape must be the shape of one sample"):
        nets.network(dense(2), (None, 4))
    with pytest.raises(ValueError, match=r"network: softmax_cross_entropy needs scores of shape \(N, C\)"):
        nets.network(identity(), (2, 3))
    with pytest.raises(ValueError, match=r"network: unknown loss 'hinge'"):
        nets.network(dense(2), (4,), loss="hinge")
    with pytest.raises(ValueError, match=r"serial\[0\] \(groupnorm1\): groupnorm: expects images of shape \(N, C, H, W\), "
                                         r"got \(None, 2, 3\)"):
        nets.network(serial(groupnorm(2), flatten(), dense(2)), (2, 3))
    # A network takes no sweep keywords (a sweep builds one network per trial, see fnet.fit_trials).
    net = nets.network(dense(2), (4,))
    with pytest.raises(TypeError, match="unexpected keyword argument 'dropout'"):
        net.apply(net.init(jax.random.PRNGKey(0)), jnp.ones((1, 4)), dropout=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'std'"):
        net.init(jax.random.PRNGKey(0), std=0.1)


def test_a_cnn_composes_like_any_network_and_trains_with_fit():
    ds = data.load("digits", flatten=False)
    assert ds.x_train.shape[1:] == (1, 8, 8)
    module = serial(conv2d(16, 3, pad=1), groupnorm(4), relu(), max_pool(2), conv2d(32, 3, pad=1), relu(),
                    avg_pool(2, stride=1), global_avg_pool(), dense(10))
    net = fnet.network(module, (1, 8, 8))
    result = fnet_train.fit(net, optim.adam(3e-3), ds.x_train, ds.y_train, epochs=8, batch_size=64, progress=False)
    test = fnet_train.evaluate(net, result.params, result.state, ds.x_test, ds.y_test)
    assert test["accuracy"] > 0.8


def test_flat_images_are_refused_with_a_hint():
    net = nets.cnn("simple_convnet", (1, 28, 28), 10)
    variables = net.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"net.apply: x has shape \(2, 784\) but the network expects samples of shape "
                                         r"\(1, 28, 28\).*flatten=False"):
        net.apply(variables, jnp.zeros((2, 784)))
    with pytest.raises(ValueError, match=r"fit: training features have shape \(5, 784\) .*flatten=False"):
        fnet_train.fit(net, optim.sgd(), np.zeros((5, 784), np.float32), np.zeros(5, np.int32), batch_size=5)


@pytest.fixture(scope="module")
def bn_net():
    net = mlp(D, [H], C, norm="batchnorm", dropout=0.5, dtype="float64")
    params, state = net.init(jax.random.PRNGKey(0))
    return net, params, state


def test_params_of_another_network_are_named(bn_net):
    net, params, state = bn_net
    x, y = classification(N, D, C, dtype=np.float64)
    bad = dict(params, batchnorm1={"gamma": params["batchnorm1"]["gamma"]})
    with pytest.raises(ValueError, match=r"net.apply: params does not match the network's params .*missing "
                                         r"\['batchnorm1'\]\['beta'\]"):
        net.apply(bad, x, state=state)
    with pytest.raises(ValueError, match=r"net.loss_and_grad: params does not match .*unexpected \['dense3'\]"):
        net.loss_and_grad(dict(params, dense3=params["dense2"]), x, y, state=state, key=jax.random.PRNGKey(0))
    other = mlp(D, [H + 1], C, norm="batchnorm", dtype="float64").init(jax.random.PRNGKey(0)).params
    with pytest.raises(ValueError, match=r"net.loss: params does not match .*shapes differ at \['batchnorm1'\]\['beta'\]: "
                                         r"\(7,\) vs \(6,\)"):
        net.loss(other, x, y, state=state, key=jax.random.PRNGKey(0))


def test_a_state_with_wrong_keys_is_named(bn_net):
    net, params, state = bn_net
    x, _ = classification(N, D, C, dtype=np.float64)
    with pytest.raises(ValueError, match=r"net.apply: state does not match the network's state .*missing \['batchnorm1'\]"):
        net.apply(params, x, state={"norm1": state["batchnorm1"]})
    with pytest.raises(ValueError, match=r"net.apply: state does not match"):
        net.apply(params, x, state={"batchnorm1": {"mean": state["batchnorm1"].mean, "var": state["batchnorm1"].var}})


def test_x_with_wrong_feature_count_or_rank_or_dtype(bn_net):
    net, params, state = bn_net
    with pytest.raises(ValueError, match=r"net.apply: x has shape \(8, 4\) but the network expects samples of shape "
                                         r"\(5,\), i.e. x of shape \(N, 5\)"):
        net.apply(params, jnp.ones((N, 4)), state=state)
    with pytest.raises(ValueError, match=r"net.loss_and_grad: x has shape \(8, 2, 3\) but the network expects samples"):
        net.loss_and_grad(params, jnp.ones((N, 2, 3)), jnp.zeros(N, jnp.int32), state=state, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"net.apply: x must have at least 2 dimensions, got shape \(5,\)"):
        net.apply(params, jnp.ones(D), state=state)
    with pytest.raises(TypeError, match=r"net.loss: x must be a floating-point array, got dtype int"):
        net.loss(params, jnp.ones((N, D), jnp.int32), jnp.zeros(N, jnp.int32), state=state, key=jax.random.PRNGKey(0))
    # and under jit the shape checks fire at trace time
    with pytest.raises(ValueError, match=r"net.apply: x has shape \(8, 4\)"):
        jax.jit(lambda p, x: net.apply(p, x, state=state))(params, jnp.ones((N, 4)))


def test_batchnorm_net_without_state(bn_net):
    net, params, _ = bn_net
    x, y = classification(N, D, C, dtype=np.float64)
    with pytest.raises(ValueError, match=r"net.apply: state is None but the network has state"):
        net.apply(params, x)
    with pytest.raises(ValueError, match=r"net.loss_and_grad: state is None but the network has state"):
        net.loss_and_grad(params, x, y, key=jax.random.PRNGKey(0))


def test_apply_takes_the_variables_for_every_network(bn_net):
    """The project's promise: net.apply(variables, x) with exactly two arguments, batch norm included."""
    net, params, state = bn_net
    x, _ = classification(N, D, C, dtype=np.float64)
    variables = net.init(jax.random.PRNGKey(0))
    assert isinstance(variables, nets.Variables)
    chex.assert_trees_all_equal(net.apply(variables, x), net.apply(variables.params, x, state=variables.state))
    with pytest.raises(TypeError, match=r"net.apply: state is given twice"):
        net.apply(variables, x, state=state)
    with pytest.raises(TypeError, match=r"net.loss: takes params and state= separately; got a Variables"):
        net.loss(variables, x, jnp.zeros(N, jnp.int32))


def test_dropout_net_in_train_mode_without_key(bn_net):
    net, params, state = bn_net
    x, y = classification(N, D, C, dtype=np.float64)
    with pytest.raises(ValueError, match=r"net.loss: serial\[3\] \(dropout1\): dropout: key is None in train mode; "
                                         r"dropout \(rate 0.5\) needs a PRNG key"):
        net.loss(params, x, y, state=state)
    with pytest.raises(ValueError, match=r"net.apply: serial\[3\] \(dropout1\): dropout: key is None"):
        net.apply(params, x, state=state, train=True)
    net.apply(params, x, state=state)  # eval mode needs no key


def test_bad_labels_through_the_network(bn_net):
    net, params, state = bn_net
    x, _ = classification(N, D, C, dtype=np.float64)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must lie in \[0, 3\) for 3 classes, got values in \[0, 3\]"):
        net.loss_and_grad(params, x, jnp.array([0, 1, 2, 3, 0, 1, 2, 0]), state=state, key=key)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must have shape \(8,\) to match 8 samples, got shape \(7,\)"):
        net.loss(params, x, jnp.zeros(7, jnp.int32), state=state, key=key)
    with pytest.raises(TypeError, match=r"softmax_cross_entropy: y must be integer class labels"):
        net.loss_and_grad(params, x, jnp.zeros(8), state=state, key=key)
    # the range check is skipped under jit (no error at trace time)
    jax.jit(lambda y: net.loss_and_grad(params, x, y, state=state, key=key))(jnp.full(8, 5))
def test_a_nan_weight_gives_nan_scores():
    net = mlp(3, [4], 2)
    params, state = net.init(jax.random.PRNGKey(0))
    params = dict(params, dense1=dict(params["dense1"], W=params["dense1"]["W"].at[0, 0].set(jnp.nan)))
    x = jnp.array([[1.0, 1.0, -1.0], [0.5, -0.5, 2.0]])
    assert np.isnan(np.asarray(net.apply(params, x))).any()


