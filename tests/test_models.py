"""fnet.models, the model zoo: ``mlp``'s derived backward chain against jax.grad for every
combination of activation, normalization, dropout and weight decay; jit; batch-norm state;
dropout; weight decay on weights only; argument checks; the cs231n-name mapping of the
parameters; the ready convolutional networks against their sources' parameter shapes; one
registry of model names, read by the command line.

The combination test runs eagerly: all combinations share the same layer shapes, so after the
first few every op is already compiled, whereas a jit per combination costs ~4x more."""

from __future__ import annotations

import dataclasses
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _data_fixtures import classification

import fnet
from fnet import cli, cli_train, mlp, models, nets, optim
from fnet.gradcheck import leaf_name, rel_error

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "identity")
COMBOS = list(itertools.product(ACTIVATIONS, nets.NORMS, (0.0, 0.3), (0.0, 0.1)))
N, D, H, C = 8, 5, 6, 3


def _flat(tree) -> dict:
    """{"dense1.W": array, ...}: a nested params tree by leaf path."""
    return {leaf_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_grads_equal(manual, auto, cfg, tol=1e-7):
    """rel_error < tol on every leaf; except that a bias feeding batch norm has an exact gradient
    of 0 (batch norm removes the mean), so both paths give rounding noise (~1e-17) there: those
    leaves are compared absolutely."""
    chex.assert_trees_all_equal_shapes_and_dtypes(manual, auto)
    manual, auto = _flat(manual), _flat(auto)
    assert set(manual) == set(auto) == set(_names(cfg))
    zero = {f"dense{i}.b" for i in range(1, cfg.num_layers)} if cfg.norm == "batchnorm" else set()
    rest = [k for k in manual if k not in zero]
    assert rel_error({k: manual[k] for k in rest}, {k: auto[k] for k in rest}) < tol
    for k in zero:
        assert float(jnp.max(jnp.abs(manual[k]))) < 1e-12 and float(jnp.max(jnp.abs(auto[k]))) < 1e-12, k


def _names(cfg) -> list:
    """The documented parameter names of an mlp: dense{i}.W/b, and {norm}{i}.gamma/beta."""
    names = []
    for i in range(1, cfg.num_layers + 1):
        names += [f"dense{i}.W", f"dense{i}.b"]
        if cfg.norm is not None and i < cfg.num_layers:
            names += [f"{cfg.norm}{i}.gamma", f"{cfg.norm}{i}.beta"]
    return names


def _compare(net, x, y, seed=0):
    k_init, k_drop = jax.random.split(jax.random.PRNGKey(seed))
    params, state = net.init(k_init)
    loss, grads, new_state = net.loss_and_grad(params, x, y, state=state, key=k_drop)
    (loss_auto, state_auto), grads_auto = jax.value_and_grad(net.loss, has_aux=True)(
        params, x, y, state=state, key=k_drop
    )
    np.testing.assert_allclose(loss, loss_auto, rtol=1e-14)
    chex.assert_trees_all_close(new_state, state_auto, rtol=1e-14, atol=1e-15)
    _assert_grads_equal(grads, grads_auto, net.config)
    return params, state, loss, grads, new_state


@pytest.mark.parametrize("index", range(len(COMBOS)),
                         ids=[f"{a}-{n}-drop{d}-wd{w}" for a, n, d, w in COMBOS])
def test_manual_grad_equals_jax_grad_all_combinations(index):
    activation, norm, dropout, wd = COMBOS[index]
    depth = 1 + index % 5
    net = mlp(D, [H] * depth, C, activation=activation, norm=norm, dropout=dropout, weight_decay=wd,
              dtype="float64")
    x, y = classification(N, D, C, seed=index, dtype=np.float64)
    _, state, loss, _, new_state = _compare(net, x, y, seed=index)
    assert np.isfinite(loss)
    chex.assert_trees_all_equal_structs(new_state, state)
    if norm == "batchnorm":
        assert not np.allclose(new_state["batchnorm1"].mean, state["batchnorm1"].mean)


def test_the_combinations_cover_the_librarys_activations_norms_and_losses():
    """Every activation and norm that fnet.mlp accepts has combinations above, every loss a case
    (the combinations' default, the heads' others), and every depth 1..5 occurs: adding one of
    them to the library without a case here fails."""
    activations, norms, dropouts, decays = map(set, zip(*COMBOS))
    assert activations == set(fnet.modules.ACTIVATIONS)
    assert norms == set(nets.NORMS)
    assert {0.0} < dropouts and {0.0} < decays  # with and without each
    (heads,) = [m for m in test_regression_and_binary_heads.pytestmark if m.name == "parametrize"]
    # The sequence loss needs scores (N, T, V), which an MLP does not make: tests/test_nets_tokens.py.
    mlp_losses = set(fnet.losses.LOSSES) - {"temporal_softmax_cross_entropy"}
    assert {mlp.__kwdefaults__["loss"]} | {loss for loss, _ in heads.args[1]} == mlp_losses
    assert {1 + i % 5 for i in range(len(COMBOS))} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("loss, norm", [("mse", "batchnorm"), ("sigmoid_binary_cross_entropy", "layernorm")])
def test_regression_and_binary_heads(loss, norm):
    net = mlp(D, [H, H], C, activation="tanh", norm=norm, dropout=0.2, weight_decay=0.05, loss=loss,
              dtype="float64")
    x, _ = classification(N, D, C, seed=1, dtype=np.float64)
    t = jnp.asarray(np.random.default_rng(2).standard_normal((N, C)))
    if loss != "mse":
        t = (t > 0).astype(jnp.float64)
    _compare(net, x, t)


def test_linear_model():
    net = mlp(D, [], C, weight_decay=0.1, dropout=0.5, dtype="float64")
    x, y = classification(N, D, C, seed=3, dtype=np.float64)
    params, *_ = _compare(net, x, y)
    assert list(_flat(params)) == ["dense1.W", "dense1.b"]
    scores = net.apply(params, x)
    W, b = np.asarray(params["dense1"]["W"]), np.asarray(params["dense1"]["b"])
    np.testing.assert_allclose(scores, np.asarray(x) @ W + b, rtol=1e-13)


def test_parameter_tree_and_its_cs231n_mapping():
    """The documented mapping: W{i}/b{i} -> dense{i}, gamma{i}/beta{i} -> batchnorm{i}, the running
    statistics -> state["batchnorm{i}"].mean/var; parameter-free layers have no entry."""
    net = mlp(D, [H, 4], C, norm="batchnorm", dropout=0.2)
    params, state = net.init(jax.random.PRNGKey(0))
    assert set(params) == {"dense1", "batchnorm1", "dense2", "batchnorm2", "dense3"}
    assert jax.tree_util.tree_map(jnp.shape, params["dense2"]) == {"W": (H, 4), "b": (4,)}
    assert jax.tree_util.tree_map(jnp.shape, params["batchnorm1"]) == {"gamma": (H,), "beta": (H,)}
    assert set(state) == {"batchnorm1", "batchnorm2"} and state["batchnorm2"].mean.shape == (4,)
    assert optim.weights_only(params) == {
        "dense1": {"W": True, "b": False}, "dense2": {"W": True, "b": False}, "dense3": {"W": True, "b": False},
        "batchnorm1": {"gamma": False, "beta": False}, "batchnorm2": {"gamma": False, "beta": False}}


def test_inputs_of_higher_rank_are_flattened():
    net = mlp(6, [H], C, norm="layernorm", dtype="float64")
    x = jnp.asarray(np.random.default_rng(4).standard_normal((N, 2, 3)))
    y = classification(N, D, C, seed=4, dtype=np.float64)[1]
    params, *_ = _compare(net, x, y)
    chex.assert_trees_all_close(net.apply(params, x), net.apply(params, x.reshape(N, 6)), rtol=1e-15)


def test_float32_network_under_jit():
    net = mlp(D, [H], C, norm="batchnorm", dropout=0.2)
    params, state = net.init(jax.random.PRNGKey(0))
    x, y = classification(N, D, C, seed=5, dtype=np.float64)
    x = x.astype(jnp.float32)

    @jax.jit
    def both(params, x, y, state, key):
        return (net.loss_and_grad(params, x, y, state=state, key=key),
                jax.value_and_grad(net.loss, has_aux=True)(params, x, y, state=state, key=key))

    (loss, grads, new_state), ((loss2, _), grads2) = both(params, x, y, state, jax.random.PRNGKey(1))
    assert loss.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves((grads, new_state)))
    np.testing.assert_allclose(loss, loss2, rtol=1e-6)
    chex.assert_trees_all_close(grads, grads2, rtol=1e-3, atol=1e-6)


# --------------------------------------------------------------------------------------------
# jit, state, dropout, weight decay
# --------------------------------------------------------------------------------------------


def test_jit_equals_eager():
    net = mlp(D, [H, H], C, norm="batchnorm", dropout=0.3, weight_decay=0.1, dtype="float64")
    params, state = net.init(jax.random.PRNGKey(0))
    x, y = classification(N, D, C, seed=6, dtype=np.float64)
    key = jax.random.PRNGKey(1)
    chex.assert_trees_all_close(jax.jit(lambda p, x, s: net.apply(p, x, state=s))(params, x, state),
                                net.apply(params, x, state=state), rtol=1e-13)
    train = lambda p, x, s, k: net.apply(p, x, state=s, train=True, key=k)  # noqa: E731
    chex.assert_trees_all_close(jax.jit(train)(params, x, state, key), train(params, x, state, key), rtol=1e-13)
    lg = lambda p, x, y, s, k: net.loss_and_grad(p, x, y, state=s, key=k)  # noqa: E731
    chex.assert_trees_all_close(jax.jit(lg)(params, x, y, state, key), lg(params, x, y, state, key),
                                rtol=1e-12, atol=1e-15)


def test_batchnorm_state_updates_as_documented_and_eval_uses_it():
    net = mlp(D, [H], C, norm="batchnorm", dtype="float64")
    params, state = net.init(jax.random.PRNGKey(0))
    params = dict(params, dense1=dict(params["dense1"], b=jnp.linspace(-1.0, 1.0, H)),
                  batchnorm1=dict(params["batchnorm1"], gamma=jnp.linspace(0.5, 2.0, H)))
    P = {"W1": np.asarray(params["dense1"]["W"]), "b1": np.asarray(params["dense1"]["b"]),
         "gamma1": np.asarray(params["batchnorm1"]["gamma"]), "beta1": np.asarray(params["batchnorm1"]["beta"]),
         "W2": np.asarray(params["dense2"]["W"]), "b2": np.asarray(params["dense2"]["b"])}
    rm, rv = np.zeros(H), np.ones(H)
    for step in range(3):
        x, y = classification(N, D, C, seed=10 + step, dtype=np.float64)
        _, _, state = net.loss_and_grad(params, x, y, state=state)
        h = np.asarray(x) @ P["W1"] + P["b1"]
        rm = 0.9 * rm + 0.1 * h.mean(axis=0)
        rv = 0.9 * rv + 0.1 * h.var(axis=0)  # biased variance
        np.testing.assert_allclose(state["batchnorm1"].mean, rm, rtol=1e-12)
        np.testing.assert_allclose(state["batchnorm1"].var, rv, rtol=1e-12)
    # train-mode apply returns the same new state
    _, state_apply = net.apply(params, x, state=state, train=True)
    _, state_loss = net.loss(params, x, y, state=state)
    chex.assert_trees_all_close(state_apply, state_loss, rtol=1e-15)
    # eval mode normalizes with the running statistics
    h = np.asarray(x) @ P["W1"] + P["b1"]
    h = P["gamma1"] * (h - rm) / np.sqrt(rv + 1e-5) + P["beta1"]
    expected = np.maximum(h, 0) @ P["W2"] + P["b2"]
    np.testing.assert_allclose(net.apply(params, x, state=state), expected, rtol=1e-12, atol=1e-13)
    # and depends on the state, not on the batch: one sample gives its row of the full batch
    np.testing.assert_allclose(net.apply(params, x[:1], state=state), expected[:1], rtol=1e-12, atol=1e-13)


def test_dropout_in_the_network():
    net = mlp(D, [H, H], C, dropout=0.5, dtype="float64")
    plain = mlp(D, [H, H], C, dtype="float64")
    params, _ = net.init(jax.random.PRNGKey(0))
    x, _ = classification(N, D, C, seed=7, dtype=np.float64)
    # eval mode is the identity: same scores as the network without dropout, no key needed
    chex.assert_trees_all_equal(net.apply(params, x), plain.apply(params, x))
    # train mode drops units: the scores change with the key, and are fixed for a fixed key
    a, _ = net.apply(params, x, train=True, key=jax.random.PRNGKey(1))
    b, _ = net.apply(params, x, train=True, key=jax.random.PRNGKey(1))
    c, _ = net.apply(params, x, train=True, key=jax.random.PRNGKey(2))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a, c)
    # rate 0 given as an array (a sweep's value: the dropout layers are present) is the identity
    # in train mode
    zero = mlp(D, [H, H], C, dropout=jnp.asarray(0.0), dtype="float64")
    assert len(zero.module.children) == len(net.module.children)
    z, _ = zero.apply(params, x, train=True, key=jax.random.PRNGKey(1))
    chex.assert_trees_all_close(z, plain.apply(params, x, train=True)[0], rtol=1e-15)


def test_input_dropout_drops_input_features_in_train_mode_only():
    net = mlp(D, [H], C, input_dropout=0.5, dtype="float64")
    plain = mlp(D, [H], C, dtype="float64")
    assert net.name.endswith("input_dropout=0.5") and nets.from_config(dataclasses.asdict(net.config)).name == net.name
    params, _ = net.init(jax.random.PRNGKey(0))
    x, y = classification(N, D, C, seed=7, dtype=np.float64)
    chex.assert_trees_all_equal(net.apply(params, x), plain.apply(params, x))  # eval: the identity
    # train mode: the first layer sees the inputs with ~half the features zeroed and the rest
    # scaled by 1 / (1 - 0.5): the same scores as the plain net on that masked input
    key = jax.random.PRNGKey(3)
    scores, _ = net.apply(params, x, train=True, key=key)
    dropped, _, _ = fnet.modules.dropout(0.5).forward({}, {}, x, train=True, key=jax.random.split(key, 2)[0])
    assert 0 < np.mean(np.asarray(dropped) == 0) < 1 and set(np.unique(np.asarray(dropped / x)).round(12)) <= {0.0, 2.0}
    chex.assert_trees_all_close(scores, plain.apply(params, dropped), rtol=1e-12)
    # the hand-written chain through it is jax.grad's, and a traced hidden rate of 0 (a sweep's
    # network, whose hidden dropout layers are present) leaves the input dropout alone
    manual = net.loss_and_grad(params, x, y, key=key)[1]
    auto = jax.grad(lambda p: net.loss(p, x, y, key=key)[0])(params)
    assert rel_error(manual, auto) < 1e-10
    swept = jax.jit(lambda r: mlp(D, [H], C, input_dropout=0.5, dropout=r, dtype="float64")
                    .apply(params, x, train=True, key=key)[0])(0.0)
    chex.assert_trees_all_close(swept, scores, rtol=1e-12)


def test_traced_dropout_and_weight_decay_under_vmap():
    """A network built inside vmap from traced rates (a sweep's) equals the one built from floats."""
    net = mlp(D, [H], C, dtype="float64")
    params, _ = net.init(jax.random.PRNGKey(0))
    x, y = classification(N, D, C, seed=8, dtype=np.float64)
    key = jax.random.PRNGKey(1)
    rates = jnp.array([0.0, 0.2, 0.5])
    lams = jnp.array([0.0, 0.1, 1.0])
    losses_, grads, _ = jax.vmap(
        lambda r, lam: mlp(D, [H], C, dropout=r, weight_decay=lam, dtype="float64").loss_and_grad(
            params, x, y, state={}, key=key)
    )(rates, lams)
    for i in range(3):
        net_i = mlp(D, [H], C, dropout=float(rates[i]), weight_decay=float(lams[i]), dtype="float64")
        (l_auto, _), g_auto = jax.value_and_grad(net_i.loss, has_aux=True)(params, x, y, key=key)
        np.testing.assert_allclose(losses_[i], l_auto, rtol=1e-13)
        assert rel_error(jax.tree_util.tree_map(lambda g: g[i], grads), g_auto) < 1e-7
    # rate 0 and lambda 0 give the plain network's loss
    np.testing.assert_allclose(losses_[0], net.loss(params, x, y)[0], rtol=1e-14)


@pytest.mark.parametrize("norm", [None, "batchnorm", "layernorm"])
def test_weight_decay_applies_to_weights_only(norm):
    lam = 0.37
    with_wd = mlp(D, [H, H], C, norm=norm, dropout=0.2, weight_decay=lam, dtype="float64")
    without = mlp(D, [H, H], C, norm=norm, dropout=0.2, dtype="float64")
    params, state = with_wd.init(jax.random.PRNGKey(0))
    x, y = classification(N, D, C, seed=9, dtype=np.float64)
    key = jax.random.PRNGKey(1)
    l1, g1, s1 = with_wd.loss_and_grad(params, x, y, state=state, key=key)
    l0, g0, s0 = without.loss_and_grad(params, x, y, state=state, key=key)
    p, f1, f0 = _flat(params), _flat(g1), _flat(g0)
    weights = {k: v for k, v in p.items() if k.endswith(".W")}
    np.testing.assert_allclose(l1 - l0, 0.5 * lam * sum(float(jnp.sum(w ** 2)) for w in weights.values()), rtol=1e-10)
    for k in p:
        if k.endswith(".W"):
            chex.assert_trees_all_close(f1[k] - f0[k], lam * p[k], rtol=1e-10, atol=1e-14)
        else:  # biases, gamma, beta: untouched
            chex.assert_trees_all_equal(f1[k], f0[k])
    chex.assert_trees_all_equal(s1, s0)
    # and autodiff agrees on the decayed loss
    (_, _), g_auto = jax.value_and_grad(with_wd.loss, has_aux=True)(params, x, y, state=state, key=key)
    _assert_grads_equal(g1, g_auto, with_wd.config)


def test_config_round_trip():
    net = mlp(D, [H, 4], C, activation="tanh", norm="layernorm", dropout=0.1, init=0.05, weight_decay=0.01,
              dtype="float64")
    cfg = net.config
    assert cfg.hidden_dims == (H, 4) and cfg.num_layers == 3 and cfg.dtype == "float64"
    again = nets.from_config(dataclasses.asdict(cfg))
    assert again.config == cfg
    params, _ = net.init(jax.random.PRNGKey(0))
    x, _ = classification(N, D, C, seed=11, dtype=np.float64)
    chex.assert_trees_all_equal(again.apply(params, x), net.apply(params, x))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(activation="gelu"), ValueError, r"mlp: unknown activation 'gelu'; choose one of"),
        (dict(norm="groupnorm"), ValueError, r"mlp: unknown norm 'groupnorm'; choose one of"),
        (dict(loss="hinge"), ValueError, r"mlp: unknown loss 'hinge'; choose one of"),
        (dict(weight_decay=-0.1), ValueError, r"mlp: weight_decay must be >= 0, got -0.1"),
        (dict(dropout=1.0), ValueError, r"mlp: dropout must be in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), ValueError, r"mlp: dropout must be in \[0, 1\), got -0.1"),
        (dict(input_dropout=1.0), ValueError, r"mlp: input_dropout must be in \[0, 1\), got 1.0"),
        (dict(dtype="int32"), TypeError, r"mlp: dtype must be a floating dtype, got 'int32'"),
    ],
)
def test_mlp_rejects_bad_config(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        mlp(D, [H], C, **kwargs)


@pytest.mark.parametrize(
    "args, exc, msg",
    [
        ((0, [H], C), ValueError, r"mlp: input_dim must be a positive int, got 0"),
        ((2.5, [H], C), TypeError, r"mlp: input_dim must be an int, got 2.5"),
        ((D, [H], -1), ValueError, r"mlp: output_dim must be a positive int, got -1"),
        ((D, [H, 0], C), ValueError, r"mlp: hidden_dims\[1\] must be a positive int, got 0"),
        ((D, [3.0], C), TypeError, r"mlp: hidden_dims\[0\] must be an int, got 3.0"),
        ((D, [True], C), TypeError, r"mlp: hidden_dims\[0\] must be an int, got True"),
    ],
)
def test_mlp_rejects_bad_dims(args, exc, msg):
    with pytest.raises(exc, match=msg):
        mlp(*args)


def test_numpy_integer_sizes_are_accepted_and_stored_as_python_ints():
    import dataclasses
    import json

    import fnet

    net = mlp(np.int64(D), [np.int32(H)], np.int64(C))
    assert net.config == mlp(D, [H], C).config and type(net.config.input_dim) is int
    json.dumps(dataclasses.asdict(net.config))
    cnn = fnet.models.cnn("simple_convnet", (np.int64(1), 8, 8), np.int64(3), filters=(np.int16(4),),
                          dense_width=np.int64(5))
    assert cnn.config.input_shape == (1, 8, 8) and cnn.config.dense_width == 5
    lm = fnet.models.char_lm(np.int64(7), cell="gru", embed=np.int64(4), hidden=np.int64(6), context=np.int64(5))
    assert (lm.config.vocab_size, lm.config.context) == (7, 5)
    assert fnet.network(fnet.modules.dense(np.int64(3)), input_shape=(np.int64(4),)).input_shape == (4,)


@pytest.mark.parametrize("model, params", [
    # The sources' parameter shapes for 28x28 MNIST, written out:
    ("simple_convnet", 30 * 25 + 30 + 30 * 12 * 12 * 100 + 100 + 100 * 10 + 10),      # DLFS ch. 7
    ("three_layer_convnet", 32 * 49 + 32 + 32 * 14 * 14 * 100 + 100 + 100 * 10 + 10),  # cs231n
    ("deep_convnet", 16 * 9 + 16 + 16 * 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 32 * 9 + 32 + 64 * 32 * 9 + 64
     + 64 * 64 * 9 + 64 + 64 * 4 * 4 * 50 + 50 + 50 * 10 + 10),                        # DLFS ch. 8
])
def test_ready_networks_have_their_sources_shapes(model, params):
    net = nets.cnn(model, (1, 28, 28), 10)
    assert nets.num_params(net) == params
    assert net.input_shape == (1, 28, 28) and net.output_shape == (10,)
    assert fnet.summary(net).splitlines()[-1] == f"total: {params:,} parameters"


def test_model_names_agree_between_the_command_line_and_the_library():
    # The command reads the registry: every model is listed in its help and accepted by name; the
    # language models train on their preset's text by default.
    train_help = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions
                      if "--model" in a.option_strings).help
    assert all(name in train_help for name in models.MODELS)
    assert all(cli_train.model_name(name.replace("_", "-")) == name for name in models.MODELS)
    with pytest.raises(ValueError, match=r"--model must be one of mlp, small_cnn, .*, lstm, rnn, gru, gpt, got 'transformer'"):
        cli_train.model_name("transformer")
    language_models = [name for name, model in models.MODELS.items() if model.cell is not None]
    assert language_models == ["lstm", "rnn", "gru"] and all(cli_train.default_data(n) == "shakespeare" for n in language_models)
    assert cli_train.default_data("mlp") == cli_train.default_data(None) == "digits"
    assert cli_train.model_name("cnn") == "small_cnn"  # the old name, for run folders saved before the rename
    assert set(cli_train.ACTIVATIONS) == set(fnet.modules.ACTIVATIONS)
    # one place for a model's facts: its builder uses the registry's widths and dropout
    for name, model in models.MODELS.items():
        if model.images:
            cfg = nets.cnn(name, (1, 28, 28), 10).config
            assert cfg.model == name and models.describe_cnn(cfg).startswith(name)
            assert models.preset(name, "mnist")["epochs"] >= 1 and models.preset(name, "sin") == {
                "hidden": (), "filters": (), "dense_width": 0, "dropout": None, **model.presets[None]}
