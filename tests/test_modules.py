"""fnet.modules: the module contract (shapes from init, one return shape, dparams shaped like
params), the leaf modules (dense, activations, norms, dropout, flatten, conv and pooling), batch
norm's running statistics in its state, the integer arguments of every constructor, the
convolutional shapes named at init; the recurrent modules (fnet.modules.recurrent): a 2-layer
LSTM language model composed from modules (embedding -> lstm -> dropout -> lstm ->
temporal_dense) whose derived manual backward equals jax.grad in float64, the options (last
state, initial state from the input, state out) and their shapes, check_module on integer token
input, composition with residual, and the argument checks.

The combinators are tested in test_combinators.py, networks built from modules in test_nets.py."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layer_checks import AUTODIFF_TOL

import fnet
from fnet import gradcheck, losses, modules, nets
from fnet.combinators import fan_in_concat, fan_out, residual, serial
from fnet.modules import (BatchNormState, Module, avg_pool, batchnorm, conv2d, dense, dropout, flatten, groupnorm,
                          identity, init_shapes, layernorm, leaky_relu, max_pool, relu, sigmoid, softmax, tanh)
from fnet.modules import recurrent as rm

N = 4

LEAVES = {
    "dense": (dense(3), (N, 2, 3), (None, 3)),
    "relu": (relu(), (N, 5), (None, 5)),
    "leaky_relu": (leaky_relu(0.1), (N, 5), (None, 5)),
    "sigmoid": (sigmoid(), (N, 5), (None, 5)),
    "tanh": (tanh(), (N, 5), (None, 5)),
    "identity": (identity(), (N, 5), (None, 5)),
    "softmax": (softmax(), (N, 5), (None, 5)),
    "batchnorm": (batchnorm(), (N, 5), (None, 5)),
    "layernorm": (layernorm(), (N, 5), (None, 5)),
    "dropout": (dropout(0.5), (N, 5), (None, 5)),
    "flatten": (flatten(), (N, 2, 3), (None, 6)),
}


@pytest.mark.parametrize("name", list(LEAVES))
def test_leaf_module_contract(name):
    """(Each leaf's gradient is checked by `fnet gradcheck`, run in tests/test_cli_gradcheck.py.)"""
    module, shape, out_shape = LEAVES[name]
    assert isinstance(module, Module) and module.name == name
    params, state, out = module.init(jax.random.PRNGKey(0), (None, *shape[1:]))
    assert out == out_shape  # shapes are known from init, before any data (batch axis: None)
    # eval mode: one return shape, the state unchanged
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    y, new_state, _ = module.forward(params, state, x, train=False)
    assert y.shape == (N, *out_shape[1:])
    chex.assert_trees_all_equal(new_state, state)


def test_batchnorm_keeps_running_statistics_in_its_state():
    module = batchnorm(momentum=0.8)
    params, state, _ = module.init(jax.random.PRNGKey(0), (None, 3))
    assert isinstance(state, BatchNormState) and set(params) == {"gamma", "beta"}
    x = jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    _, new_state, _ = module.forward(params, state, x, train=True)
    np.testing.assert_allclose(new_state.mean, 0.2 * np.array([2.0, 2.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(new_state.var, 0.8 + 0.2 * np.array([1.0, 0.0, 1.0]), rtol=1e-6)


def test_dropout_without_a_key_in_train_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"dropout: key is None in train mode; dropout \(rate 0.5\) needs a PRNG key"):
        dropout(0.5).forward({}, {}, jnp.ones((2, 3)), train=True)
    y, _, _ = dropout(0.5).forward({}, {}, jnp.ones((2, 3)), train=False)  # eval: no key needed
    np.testing.assert_array_equal(y, 1.0)


IMAGES = (None, 4, 8, 8)
#: Every integer argument of a module or combinator constructor:
#: name -> (build from the value, function, argument as the message names it, minimum, input shape).
SIZE_ARGUMENTS = {
    "dense units": (lambda v: dense(v), "dense", "units", 1, (None, 5)),
    "conv2d filters": (lambda v: conv2d(v, 3), "conv2d", "filters", 1, IMAGES),
    "conv2d kernel_size": (lambda v: conv2d(2, v), "conv2d", "kernel_size", 1, IMAGES),
    "conv2d kernel_size pair": (lambda v: conv2d(2, (3, v)), "conv2d", r"kernel_size\[1\]", 1, IMAGES),
    "conv2d stride": (lambda v: conv2d(2, 3, stride=v), "conv2d", "stride", 1, IMAGES),
    "conv2d pad": (lambda v: conv2d(2, 3, pad=v), "conv2d", "pad", 0, IMAGES),
    "max_pool pool_size": (lambda v: max_pool(v), "max_pool", "pool_size", 1, IMAGES),
    "avg_pool stride": (lambda v: avg_pool(2, stride=(v, 2)), "avg_pool", r"stride\[0\]", 1, IMAGES),
    "groupnorm groups": (lambda v: groupnorm(v), "groupnorm", "groups", 1, IMAGES),
    "fan_out n": (lambda v: fan_out(v), "fan_out", "n", 1, (None, 5)),
    "fan_in_concat axis": (lambda v: serial(fan_out(2), fan_in_concat(v)), "fan_in_concat", "axis", None, IMAGES),
}


@pytest.mark.parametrize("to_numpy", [np.int64, np.int32, np.uint8, np.array], ids=["int64", "int32", "uint8", "0-d"])
@pytest.mark.parametrize("name", list(SIZE_ARGUMENTS))
def test_integer_arguments_take_numpy_integers_as_python_ints(name, to_numpy):
    build, _, _, _, input_shape = SIZE_ARGUMENTS[name]
    python, numpy = build(2), build(to_numpy(2))
    assert numpy.info == python.info
    shape = init_shapes(numpy, input_shape)[2]
    assert shape == init_shapes(python, input_shape)[2]
    assert all(type(d) is int for d in jax.tree_util.tree_leaves(shape))  # no NumPy scalar leaks into shapes


@pytest.mark.parametrize("name, bad", [(name, bad) for name, case in SIZE_ARGUMENTS.items()
                                       for bad in ("bool", "float", "numpy float", "string", "below minimum")
                                       if bad != "below minimum" or case[3] is not None])
def test_integer_arguments_refuse_bools_floats_and_out_of_range_naming_the_argument(name, bad):
    build, fn, arg, minimum, _ = SIZE_ARGUMENTS[name]
    if bad == "below minimum":
        bound = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        with pytest.raises(ValueError, match=rf"{fn}: {arg} must be {bound}, got {minimum - 1}"):
            build(minimum - 1)
        return
    value = {"bool": True, "float": 2.0, "numpy float": np.float32(2), "string": "2"}[bad]
    with pytest.raises(TypeError, match=rf"{fn}: {arg} must be an int, got (True|.*2)"):
        build(value)


@pytest.mark.parametrize("build, message", [
    (lambda: conv2d(4, 9), r"serial\[0\] \(conv2d1\): conv2d: the 9x9 kernel is larger than the input \(8x8\)"),
    (lambda: max_pool(9), r"max_pool: the 9x9 pooling window is larger than the input \(8x8\)"),
    (lambda: groupnorm(3), r"groupnorm: 3 groups do not divide the 1 channels"),
    (lambda: flatten(), None),
], ids=["kernel", "pool", "groups", "ok"])
def test_bad_convolutional_shapes_are_named_at_init(build, message):
    module = serial(build(), flatten(), dense(2))
    if message is None:
        module.init(jax.random.PRNGKey(0), (None, 1, 8, 8))
        return
    with pytest.raises(ValueError, match=message):
        module.init(jax.random.PRNGKey(0), (None, 1, 8, 8))


def test_conv_module_arguments_are_checked_when_built():
    with pytest.raises(ValueError, match=r"conv2d: stride must be a positive int, got 0"):
        conv2d(4, 3, stride=0)
    with pytest.raises(ValueError, match=r"conv2d: kernel_size must be an int or a pair \(h, w\)"):
        conv2d(4, (3, 3, 3))
    with pytest.raises(ValueError, match=r"cnn: unknown model 'alexnet'"):
        nets.cnn("alexnet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match=r"cnn: deep_convnet has 6 convolutions, so filters needs 6 widths"):
        nets.cnn("deep_convnet", (1, 28, 28), 10, filters=(8, 8))
    with pytest.raises(ValueError, match=r"serial\[0\] \(conv2d1\): conv2d: expects images of shape \(N, C, H, W\), "
                                         r"got \(None, 64\).*flatten=False"):
        fnet.network(serial(conv2d(4, 3), flatten(), dense(2)), (64,))


# --------------------------------------------------------------------------------------------
# fnet.modules.recurrent: a language model composed from modules, the options and their shapes
# --------------------------------------------------------------------------------------------


def _random_params(module, input_shape, seed=0):
    """float64 N(0, 0.5^2) parameters of the module's shapes, with its output shape (drawn with
    NumPy: nothing compiled for the draws) and its state."""
    params, state, out_shape = modules.init_shapes(module, input_shape)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)), params), state, out_shape


def test_two_layer_lstm_language_model_manual_backward_equals_grad():
    V, N, T = 7, 3, 5
    lm = serial(rm.embedding(V, 4), rm.lstm(6), modules.dropout(0.3), rm.lstm(5), rm.temporal_dense(V))
    params, state, out_shape = _random_params(lm, (N, T))
    assert out_shape == (N, T, V)
    assert set(params) == {"embedding1", "lstm1", "lstm2", "temporal_dense1"}
    rng = np.random.default_rng(0)
    ids, y = jnp.asarray(rng.integers(0, V, (N, T))), jnp.asarray(rng.integers(0, V, (N, T)))
    mask = jnp.ones((N, T), bool).at[0, -2:].set(False)
    key = jax.random.PRNGKey(1)

    def loss(params):
        scores = lm.forward(params, state, ids, train=True, key=key)[0]
        return losses.temporal_softmax_loss(scores, y, mask)[0]

    def manual(params):
        scores, _, cache = lm.forward(params, state, ids, train=True, key=key)
        value, dscores = losses.temporal_softmax_loss(scores, y, mask)
        dx, dparams = lm.backward(params, cache, dscores)
        return value, dx, dparams

    (value, dx, dparams), auto = jax.jit(lambda p: (manual(p), jax.grad(loss)(p)))(params)
    assert dx is None  # token ids have no gradient
    chex.assert_trees_all_equal_shapes_and_dtypes(dparams, params)
    assert gradcheck.rel_error(dparams, auto) < AUTODIFF_TOL
    assert 0 < float(value) < 2 * T * np.log(V)  # summed over time, divided by N: about T log V at init


def test_check_module_takes_integer_token_input():
    ids = np.array([[1, 3, 3], [0, 3, 1]])  # a repeated id: the gradients of its rows add up
    row = gradcheck.check_module(serial(rm.embedding(4, 3), rm.gru(2, return_sequences=False)), (2, 3), x=ids)
    assert set(row.leaves) == {"params.embedding1.W", "params.gru1.Wx", "params.gru1.Wh", "params.gru1.b",
                               "params.gru1.bh"}
    assert row.passed, gradcheck.format_report([row], verbose=True)


def test_check_module_on_state_in_and_out_and_a_residual_block():
    lstm = rm.lstm(3, initial_state=True, return_state=True)
    row = gradcheck.check_module(lstm, ((2, 3, 2), (2, 3), (2, 3)))
    assert {"x.0", "x.1", "x.2"} <= set(row.leaves)  # dx, dh0, dc0
    assert row.passed, gradcheck.format_report([row], verbose=True)
    row = gradcheck.check_module(serial(rm.rnn(3), residual(rm.gru(3))), (2, 3, 2))
    assert row.passed, gradcheck.format_report([row], verbose=True)


OPTIONS = [dict(), dict(return_sequences=False), dict(initial_state=True), dict(return_state=True),
           dict(return_sequences=False, initial_state=True, return_state=True)]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_output_shapes_from_init_match_forward(kind, options):
    n, t, d, h = 2, 4, 3, 5
    m = getattr(rm, kind)(h, **options)
    states = 2 if kind == "lstm" else 1
    shape = ((n, t, d),) + ((n, h),) * states if options.get("initial_state") else (n, t, d)
    params, state, out_shape = modules.init_shapes(m, shape)
    x = (jax.tree_util.tree_map(lambda s: jnp.ones(s), shape, is_leaf=lambda s: isinstance(s[0], int))
         if options.get("initial_state") else jnp.ones(shape))
    y = jax.eval_shape(lambda p, x: m.forward(p, state, x, train=False)[0], params, x)
    assert jax.tree_util.tree_map(lambda s: s.shape, y) == out_shape
    want = (n, t, h) if options.get("return_sequences", True) else (n, h)
    assert (out_shape[0] if options.get("return_state") else out_shape) == want


def test_last_state_and_returned_state_are_the_sequences_last_step():
    rng = np.random.default_rng(1)
    x, h0, c0 = (jnp.asarray(rng.standard_normal(s)) for s in ((2, 4, 3), (2, 5), (2, 5)))
    full = rm.lstm(5, initial_state=True)
    params, _, _ = _random_params(full, ((2, 4, 3), (2, 5), (2, 5)))
    h = full.forward(params, {}, (x, h0, c0), train=False)[0]
    last, h_last, _ = rm.lstm(5, initial_state=True, return_state=True, return_sequences=False).forward(
        params, {}, (x, h0, c0), train=False)[0]
    np.testing.assert_array_equal(last, h[:, -1])
    np.testing.assert_array_equal(h_last, h[:, -1])


def test_summary_of_a_language_model():
    lm = serial(rm.embedding(10, 4), rm.lstm(6, return_state=True))
    text = modules.summary(lm, (None, 8))
    assert "embedding1" in text and "(N, 8, 4)" in text and "(N, 8, 6) (N, 6) (N, 6)" in text
    assert "total: 304 parameters" in text  # 10 * 4 + 4 * 6 * (4 + 6 + 1)


def test_bad_input():
    with pytest.raises(ValueError, match=r"lstm: expects input of shape \(N, T, D\), got \(2, 3\)"):
        rm.lstm(4).init(jax.random.PRNGKey(0), (2, 3))
    with pytest.raises(ValueError, match=r"lstm: with initial_state=True the input is a tuple \(x, h0, c0\)"):
        rm.lstm(4, initial_state=True).init(jax.random.PRNGKey(0), ((2, 3, 1), (2, 4)))
    with pytest.raises(ValueError, match=r"gru: h0 must have shape \(N, H\) = \(2, 4\) for x of shape \(2, 3, 1\), "
                                         r"got shape \(2, 5\)"):
        rm.gru(4, initial_state=True).init(jax.random.PRNGKey(0), ((2, 3, 1), (2, 5)))
    with pytest.raises(ValueError, match=r"rnn: hidden must be a positive int, got 0"):
        rm.rnn(0)
    with pytest.raises(ValueError, match=r"temporal_dense: expects input of shape \(N, T, D\), got \(2, 3\)"):
        rm.temporal_dense(3).init(jax.random.PRNGKey(0), (2, 3))
    emb = rm.embedding(5, 2)
    params, _, _ = _random_params(emb, (1, 2))
    with pytest.raises(TypeError, match=r"word_embedding_forward: x must be integer token ids, got dtype float"):
        emb.forward(params, {}, jnp.zeros((1, 2)), train=False)
