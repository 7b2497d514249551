"""Networks of token input and the character language model (fnet.models.char_lm): the derived
backward chain against jax.grad in float64 for every cell, the three-way check, weight decay on
the embedding table, the temporal loss in LOSSES and custom_vjp.LOSSES, evaluate's token loss and
accuracy, fit on a tiny text with a bitwise resume, the registry and config round trip, and the
messages for bad input."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnet
from fnet import custom_vjp, data, gradcheck, losses, models, nets, optim, train
from fnet.combinators import serial
from fnet.gradcheck import rel_error
from fnet.modules import dense, embedding, lstm, temporal_dense

V, T, N = 7, 5, 4


def _tokens(seed=0, n=N, t=T, v=V):
    """Ids (n, t) and their next ids (n, t), cut from one random stream as a language model's are."""
    stream = np.random.default_rng(seed).integers(0, v, n * (t + 1)).reshape(n, t + 1)
    return stream[:, :-1], stream[:, 1:]


@pytest.mark.parametrize("cell", list(models.CELLS))
def test_manual_backward_equals_jax_grad_for_every_cell_float64(cell):
    # Two layers, dropout between and before the scores, weight decay: every branch of the chain.
    net = models.char_lm(V, cell=cell, embed=3, hidden=4, layers=2, dropout=0.3, context=T, weight_decay=0.1,
                         dtype="float64")
    variables = net.init(jax.random.PRNGKey(0))
    x, y = _tokens()
    key = jax.random.PRNGKey(1)
    loss, grads, _ = jax.jit(net.loss_and_grad)(variables.params, x, y, key=key)
    (auto_loss, _), auto = jax.jit(jax.value_and_grad(net.loss, has_aux=True))(variables.params, x, y, key=key)
    chex.assert_trees_all_equal_shapes_and_dtypes(grads, auto)
    # A handful of float64 ops per gradient element (T = 5 steps, widths <= 7): ~1e-15 relative.
    assert rel_error(grads, auto) < 1e-7
    np.testing.assert_allclose(loss, auto_loss, rtol=1e-13)
    assert set(grads) == {"embedding1", f"{cell}1", f"{cell}2", "temporal_dense1"}


def test_three_way_check_of_a_gru_language_model():
    net = models.char_lm(V, cell="gru", embed=3, hidden=4, context=T, dtype="float64")
    x, y = _tokens(seed=2)
    result = gradcheck.check_network(net, x, y)
    assert result.passed, gradcheck.format_report([result], verbose=True)
    assert "embedding1.W" in result.leaves  # the table is checked; the ids are held fixed


def test_the_loss_is_the_mean_token_cross_entropy_in_nats():
    # cs231n's temporal_softmax_loss (summed over time, / N) divided by T, i.e. DLFS2's "tokens".
    rng = np.random.default_rng(3)
    scores, (_, y) = jnp.asarray(rng.standard_normal((N, T, V))), _tokens(seed=3)
    loss, dscores = losses.temporal_softmax_cross_entropy(scores, y)
    cs231n, cs231n_d = losses.temporal_softmax_loss(scores, y, np.ones((N, T), bool))
    np.testing.assert_allclose(loss, cs231n / T, rtol=1e-14)
    np.testing.assert_allclose(dscores, cs231n_d / T, rtol=1e-14)
    log_probs = jax.nn.log_softmax(scores)
    np.testing.assert_allclose(loss, -np.mean(np.take_along_axis(np.asarray(log_probs), y[..., None], -1)), rtol=1e-14)
    # It is a loss of the registry, so the custom-VJP bridge runs its hand-written dscores.
    assert losses.LOSSES["temporal_softmax_cross_entropy"] is losses.temporal_softmax_cross_entropy
    chex.assert_trees_all_close(jax.grad(custom_vjp.LOSSES["temporal_softmax_cross_entropy"])(scores, y), dscores,
                                rtol=1e-15)


def test_weight_decay_covers_the_embedding_and_recurrent_weights_not_biases():
    plain, decayed = (models.char_lm(V, embed=3, hidden=4, context=T, weight_decay=wd, dtype="float64")
                      for wd in (0.0, 0.5))
    params = plain.init(jax.random.PRNGKey(0)).params
    x, y = _tokens()
    (l0, g0, _), (l1, g1, _) = (net.loss_and_grad(params, x, y) for net in (plain, decayed))
    weights = [params["embedding1"]["W"], params["lstm1"]["Wx"], params["lstm1"]["Wh"], params["temporal_dense1"]["W"]]
    np.testing.assert_allclose(l1 - l0, 0.25 * sum(float(jnp.sum(w * w)) for w in weights), rtol=1e-12)
    np.testing.assert_allclose(g1["embedding1"]["W"] - g0["embedding1"]["W"], 0.5 * params["embedding1"]["W"],
                               atol=1e-15)
    for layer, leaf in (("lstm1", "b"), ("temporal_dense1", "b")):
        np.testing.assert_array_equal(g1[layer][leaf], g0[layer][leaf])


def test_network_infers_token_input_from_a_first_embedding():
    lm = serial(serial(embedding(V, 3), lstm(4)), temporal_dense(V))  # the embedding nested one level down
    net = fnet.network(lm, (T,), loss="temporal_softmax_cross_entropy")
    assert (net.input_dtype, net.vocab_size, net.output_shape) == ("int32", V, (T, V))
    scores = jax.jit(net.apply)(net.init(jax.random.PRNGKey(0)), _tokens()[0])
    assert scores.shape == (N, T, V) and scores.dtype == jnp.float32
    assert fnet.network(serial(dense(3)), (4,)).input_dtype is None  # float features, as before
    declared = fnet.network(serial(lstm(4), temporal_dense(V)), (T, 2), input_dtype="float32",
                            loss="temporal_softmax_cross_entropy")
    assert declared.input_dtype is None and declared.output_shape == (T, V)


def test_evaluate_reports_the_mean_token_loss_and_token_accuracy():
    net = models.char_lm(V, embed=3, hidden=4, context=T, dtype="float64")
    variables = net.init(jax.random.PRNGKey(0))
    x, y = _tokens(n=7)
    scores = np.asarray(net.apply(variables, x))
    metrics = fnet.evaluate(net, *variables, x, y, batch_size=3)  # 3 batches, the last one padded
    np.testing.assert_allclose(metrics["loss"], float(losses.temporal_softmax_cross_entropy(scores, y)[0]), rtol=1e-12)
    # Per-sample means of T correct flags summed in float32: a few float32 roundings (eps 6e-8).
    np.testing.assert_allclose(metrics["accuracy"], np.mean(scores.argmax(-1) == y), rtol=1e-6)


def test_fit_on_a_tiny_text_lowers_the_loss_and_resumes_bitwise(tmp_path):
    vocab = "abcd"
    ids = data.encode("abcdabcaabdc" * 30, vocab)
    x, y = map(np.asarray, data.random_windows(jax.random.PRNGKey(0), ids, 32, 6))
    net = models.char_lm(len(vocab), embed=4, hidden=8, context=6)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(0.03))
    kw = {"batch_size": 8, "seed": 3, "progress": False}
    whole = train.fit(net, opt, x, y, val=(x[:8], y[:8]), epochs=4, **kw)
    history = whole.history
    assert history["train_loss"][-1] < 0.8 * history["train_loss"][0]
    assert history["val_loss"][-1] < np.log(len(vocab))  # better than uniform guessing, in nats
    train.fit(net, opt, x, y, val=(x[:8], y[:8]), epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = train.fit(net, opt, x, y, val=(x[:8], y[:8]), epochs=4, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.history["train_loss"] == history["train_loss"]
    chex.assert_trees_all_equal(resumed.params, whole.params)
    chex.assert_trees_all_equal(resumed.opt_state, whole.opt_state)


def test_config_round_trip_and_registry():
    net = models.char_lm(V, cell="rnn", embed=3, hidden=4, layers=2, dropout=0.2, context=T)
    again = models.from_config(dataclasses.asdict(net.config))
    assert again.config == net.config and again.name == net.name == (
        "rnn char LM (7 tokens, embed 3, 2x4, context 5, dropout=0.2)")
    assert {name: m.cell for name, m in models.MODELS.items() if m.cell} == {c: c for c in models.CELLS}
    built = models.build("gru", (T,), V, hidden=(4, 4), embed=3)
    assert (built.config.cell, built.config.hidden, built.config.layers, built.config.context) == ("gru", 4, 2, T)
    # The parameters do not depend on the window length.
    longer = models.from_config(dataclasses.replace(net.config, context=2 * T))
    chex.assert_trees_all_equal_shapes(jax.eval_shape(longer.init, jax.random.PRNGKey(0)),
                                       jax.eval_shape(net.init, jax.random.PRNGKey(0)))


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture(scope="module")
def lm():
    net = models.char_lm(V, embed=3, hidden=4, context=T)
    return net, net.init(jax.random.PRNGKey(0))


def test_bad_token_input_is_named(lm):
    net, variables = lm
    x, y = _tokens()
    with pytest.raises(TypeError, match=r"net.apply: x must be integer token ids of shape \(N, 5\), got dtype float"):
        net.apply(variables, x.astype(np.float32))
    with pytest.raises(ValueError, match=r"net.apply: x has shape \(4, 4\) but the network takes token ids of shape "
                                         r"\(N, 5\)"):
        net.apply(variables, x[:, :4])
    with pytest.raises(ValueError, match=r"net.loss_and_grad: x must lie in \[0, 7\) for a vocabulary of 7, got "
                                         r"values in \[1, 7\]"):
        net.loss_and_grad(variables.params, np.where(x == 0, V, x), y)
    with pytest.raises(ValueError, match=r"evaluate: x must lie in \[0, 7\)"):
        fnet.evaluate(net, *variables, x - 1, y)
    with pytest.raises(ValueError, match=r"temporal_softmax_loss: y must have shape \(N, T\) = \(4, 5\)"):
        net.loss(variables.params, x, y[:, :3])


@pytest.mark.parametrize("data_, message", [
    (lambda x, y: (x.astype(np.float32), y), r"fit: training token ids must be integers, got dtype float32"),
    (lambda x, y: (x[:, :3], y),
     r"fit: training token ids have shape \(4, 3\) but the network takes token ids of shape \(N, 5\)"),
    (lambda x, y: (x + V, y), r"fit: training token ids must lie in \[0, 7\)"),
    (lambda x, y: (x, y[:, 1:]),
     (r"fit: training labels has shape \(4, 4\) but the network's scores for 4 samples have shape \(4, 5, 7\): "
      r"the targets are one token id per step, of shape \(4, 5\)")),
    (lambda x, y: (x, y - 1), r"fit: training labels must lie in \[0, 7\)"),
])
def test_fit_refuses_bad_token_data_before_training(lm, data_, message):
    net, _ = lm
    with pytest.raises((TypeError, ValueError), match=message):
        train.fit(net, optim.adam(1e-3), *data_(*_tokens()), epochs=1, batch_size=2, progress=False)


def test_bad_networks_and_configs_are_named():
    lm_module = serial(embedding(V, 3), lstm(4), temporal_dense(V))
    with pytest.raises(TypeError, match=r"network: input_dtype is float32 but the module starts with an embedding, "
                                        r"which takes integer token ids"):
        fnet.network(lm_module, (T,), input_dtype="float32", loss="temporal_softmax_cross_entropy")
    with pytest.raises(ValueError, match=r"softmax_cross_entropy needs scores of shape \(N, C\), but the module outputs "
                                         r"\(N, 5, 7\).*use loss=\"temporal_softmax_cross_entropy\""):
        fnet.network(lm_module, (T,))
    with pytest.raises(ValueError, match=r"network: temporal_softmax_cross_entropy needs scores of shape \(N, T, V\), "
                                         r"but the module outputs \(N, 3\); end it with temporal_dense\(V\)"):
        fnet.mlp(4, [], 3, loss="temporal_softmax_cross_entropy")
    with pytest.raises(ValueError, match=r"char_lm: unknown cell 'transformer'; choose one of rnn, lstm, gru"):
        models.char_lm(V, cell="transformer")
    with pytest.raises(ValueError, match=r"char_lm: hidden must be a positive int, got 0"):
        models.char_lm(V, hidden=0)
    with pytest.raises(ValueError, match=r"char_lm: dropout must be in \[0, 1\), got 1.0"):
        models.char_lm(V, dropout=1.0)
    with pytest.raises(ValueError, match=r"build: the lstm language model takes windows of token ids, input_shape "
                                         r"\(T,\), got \(1, 28, 28\)"):
        models.build("lstm", (1, 28, 28), 10)

def test_the_token_check_is_the_networks_own(lm):
    # check_input is what apply, fit and evaluate share; a list of ids is accepted too.
    net, _ = lm
    ids = nets.check_input("f", [[1, 2, 3, 4, 5]], net.input_shape, input_dtype="int32", vocab_size=V)
    assert ids.dtype == jnp.int32 and ids.shape == (1, T)
