"""fnet.modules.recurrent: a 2-layer LSTM language model composed from modules (embedding ->
lstm -> dropout -> lstm -> temporal_dense) whose derived manual backward equals jax.grad in
float64; the options (last state, initial state from the input, state out) and their shapes;
check_module on integer token input; composition with residual; the argument checks."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import gradcheck, losses, modules
from fnet.modules import recurrent as rm
from fnet.combinators import residual, serial

AUTODIFF_TOL = 1e-7  # float64, manual vs jax.grad


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
