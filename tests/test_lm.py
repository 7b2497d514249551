"""fnet.lm: training a language model by steps, its randomness contract, bitwise resume, and the
validation loss against an independent NumPy computation."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

import fnet
from fnet import lm, optim

TEXT = fnet.data.load_text("shakespeare")
SIZES = {"embed": 8, "hidden": 16, "context": 16}


def _net(cell="lstm", **options):
    return fnet.char_lm(TEXT.vocab_size, cell=cell, **{**SIZES, **options})


def test_fit_lm_trains_records_and_keeps_the_best_parameters():
    net = _net()
    result = lm.fit_lm(net, optim.adam(1e-2), TEXT, steps=30, batch_size=8, eval_every=10, eval_windows=32,
                       progress=False)
    h = result.history
    assert list(h) == list(lm.HISTORY_KEYS) and h["step"] == [10, 20, 30] and result.steps_run == 30
    assert h["val_loss"][-1] < h["val_loss"][0] < np.log(TEXT.vocab_size) + 0.5
    assert all(t2 >= t1 for t1, t2 in zip(h["time"], h["time"][1:])) and all(c > 0 for c in h["chars_per_s"])
    # the best parameters are those of the step with the lowest cheap estimate, which they reproduce
    best = int(np.argmin(h["val_loss"]))
    assert result.best_step == h["step"][best]
    again = lm.validation_loss(net, result.best_variables, TEXT.val, windows=32)
    np.testing.assert_allclose(again, h["val_loss"][best], rtol=1e-6)


def test_each_step_draws_the_documented_batch():
    # step s trains on random_windows(fold_in(data_key, s)): the first step's loss is the untrained
    # network's loss on that batch, recomputed here from the documented keys.
    net = _net(cell="gru")
    seed = 3
    result = lm.fit_lm(net, optim.sgd(0.0), TEXT, steps=2, batch_size=4, eval_every=1, eval_windows=8, seed=seed,
                       progress=False)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    data_key, _ = jax.random.split(train_key)
    params, state = net.init(init_key)
    for step in range(2):
        x, y = fnet.data.random_windows(jax.random.fold_in(data_key, step), TEXT.train, 4, 16)
        loss, _ = net.loss(params, x, y, state=state)
        np.testing.assert_allclose(result.history["train_loss"][step], loss, rtol=1e-6)


def test_a_resumed_run_continues_bit_for_bit(tmp_path):
    net, opt = _net(dropout=0.2), optim.chain(optim.clip_by_global_norm(1.0), optim.adam(5e-3))
    options = {"batch_size": 8, "eval_every": 5, "eval_windows": 16, "progress": False}
    whole = lm.fit_lm(net, opt, TEXT, steps=15, **options)
    lm.fit_lm(net, opt, TEXT, steps=10, checkpoint_dir=tmp_path, **options)
    resumed = lm.fit_lm(net, opt, TEXT, steps=15, checkpoint_dir=tmp_path, resume=True, **options)
    assert resumed.steps_run == 5 and resumed.history["step"] == [5, 10, 15]
    assert resumed.history["time"] == sorted(resumed.history["time"])  # counted on from the checkpoint
    chex.assert_trees_all_equal((resumed.params, resumed.opt_state), (whole.params, whole.opt_state))
    assert resumed.history["train_loss"] == whole.history["train_loss"]
    finished = lm.fit_lm(net, opt, TEXT, steps=15, checkpoint_dir=tmp_path, resume=True, **options)
    assert finished.steps_run == 0
    chex.assert_trees_all_equal(finished.params, whole.params)


def test_validation_windows_are_fixed_slices_of_the_validation_text():
    x, y = lm.validation_windows(TEXT.val, 16, 40)
    x2, _ = lm.validation_windows(TEXT.val, 16, 40)
    assert x.shape == y.shape == (40, 16) and x.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    text = TEXT.decode(TEXT.val)
    assert all(TEXT.decode(np.append(row, last)) in text for row, last in zip(x, y[:, -1]))


def test_validation_loss_matches_a_numpy_cross_entropy():
    net = _net()
    variables = net.init(jax.random.PRNGKey(1))
    x, y = lm.validation_windows(TEXT.val, 16, 100)
    scores = np.asarray(net.apply(variables, x), np.float64)  # (N, T, V)
    log_probs = scores - scores.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, y[..., None], -1).mean()
    # float32 scores, a sum of V exponentials per token: rounding far below 1e-5 relative
    np.testing.assert_allclose(lm.validation_loss(net, variables, TEXT.val, windows=100), expected, rtol=1e-5)
    assert lm.bits(expected) == pytest.approx(expected / np.log(2))


def test_bad_input_is_named_before_training():
    opt = optim.adam(1e-3)
    with pytest.raises(TypeError, match=r"fit_lm: net must be a language model: token ids \(T,\) in, .* got a network "
                                        r"of input \(4,\) \(float\) and loss .softmax_cross_entropy."):
        lm.fit_lm(fnet.mlp(4, [8], 3), opt, TEXT, steps=1)
    with pytest.raises(ValueError, match=r"fit_lm: the network's vocabulary has 64 tokens but the text 'shakespeare' "
                                         r"has 65 characters"):
        lm.fit_lm(fnet.char_lm(64, **SIZES), opt, TEXT, steps=1)
    with pytest.raises(ValueError, match=r"fit_lm: steps must be a positive int, got 0"):
        lm.fit_lm(_net(), opt, TEXT, steps=0)
    with pytest.raises(ValueError, match=r"fit_lm: the validation text has 111540 characters, too few for windows "
                                         r"of the network's context 200000"):
        lm.fit_lm(_net(context=200_000), opt, TEXT, steps=1)
    with pytest.raises(TypeError, match=r"fit_lm: text must be a fnet.data.TextDataset"):
        lm.fit_lm(_net(), opt, TEXT.train, steps=1)
    with pytest.raises(TypeError, match=r"validation_loss: net must be a language model: token ids"):
        lm.validation_loss(fnet.mlp(4, [8], 3), {}, TEXT.val)


def test_a_diverging_run_stops_with_the_history_so_far():
    with pytest.raises(fnet.TrainingDiverged, match=r"fit_lm: the training loss became (nan|inf) at step \d+"):
        lm.fit_lm(_net(cell="rnn"), optim.sgd(1e30), TEXT, steps=20, batch_size=4, eval_every=10, eval_windows=8,
                  progress=False)
