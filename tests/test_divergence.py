"""Divergence without NaN is reported (issue: Adam at lr 1e6 reached a loss of 2.7e20 and exited
0 with 7.8% accuracy): an epoch whose mean loss exceeds DIVERGENCE_FACTOR times the untrained
network's loss stops the run, naming the epoch."""

import json

import numpy as np
import pytest
from _cli_helpers import one_line_error, train

from fnet import mlp, optim
from fnet import train as fnet_train
from fnet import trials as fnet_trials


def _data(n=64, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, c, n).astype(np.int32)


def test_a_finite_explosion_stops_fit_naming_the_epoch():
    x, y = _data()
    with pytest.raises(fnet_train.TrainingDiverged, match=r"diverged at epoch 1: its mean .* is more than 1000 times "
                                                          r"the untrained network's loss") as e:
        fnet_train.fit(mlp(4, [16], 3), optim.adam(1e6), x, y, epochs=3, batch_size=16, progress=False)
    assert e.value.history["epoch"] == []


def test_the_rule_can_be_turned_off_and_does_not_fire_on_healthy_runs():
    x, y = _data()
    net = mlp(4, [16], 3)
    healthy = fnet_train.fit(net, optim.adam(1e-2), x, y, epochs=5, batch_size=16, progress=False)
    assert healthy.history["epoch"] == [1, 2, 3, 4, 5]
    wild = fnet_train.fit(net, optim.adam(1e6), x, y, epochs=2, batch_size=16, progress=False, divergence_factor=None)
    assert max(wild.history["train_loss"]) > 1e3 * healthy.history["train_loss"][0]


def test_fit_trials_flags_the_same_trials():
    x, y = _data()
    net = mlp(4, [16], 3)
    lrs = np.array([1e-2, 1e6])
    trials = fnet_trials.fit_trials(net, lambda h: optim.adam(h["learning_rate"]), x, y,
                                   hparams={"learning_rate": lrs}, epochs=2, batch_size=16)
    assert trials.diverged.tolist() == [False, True]


def test_the_command_line_reports_it_and_keeps_what_was_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--lr", "1e6") == 2
    line = one_line_error(capsys)
    assert "the training loss diverged at epoch 1" in line and "smaller learning rate" in line
    assert json.loads((out / "history.json").read_text())["epoch"] == []
    assert (out / "config.json").exists() and not (out / "results.json").exists()


def test_a_start_that_is_already_non_finite_is_not_blamed_on_the_learning_rate():
    x, y = _data()
    # He init scaled to 1e30: the very first scores overflow float32, before any update.
    with pytest.raises(fnet_train.TrainingDiverged, match="untrained network's loss is already .* a smaller learning "
                                                          "rate cannot help"):
        fnet_train.fit(mlp(4, [16], 3, init=1e30), optim.sgd(1e-3), x, y, epochs=2, batch_size=16, progress=False)


def test_fit_refuses_non_finite_starting_params_and_seeds_out_of_range():
    import jax

    x, y = _data()
    net = mlp(4, [16], 3)
    params, state = net.init(jax.random.PRNGKey(0))
    params["dense1"]["b"] = params["dense1"]["b"].at[3].set(np.inf)
    with pytest.raises(ValueError, match=r"fit: params\['dense1'\]\['b'\] must be finite"):
        fnet_train.fit(net, optim.sgd(0.1), x, y, params=params, state=state, epochs=1, batch_size=16, progress=False)
    for seed, error in ((-1, ValueError), (2**63, ValueError), (2**70, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="fit: seed must be"):
            fnet_train.fit(net, optim.sgd(0.1), x, y, seed=seed, epochs=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="fit_trials: seeds must be integers with 0 <= seed"):
        fnet_trials.fit_trials(net, lambda h: optim.sgd(h["learning_rate"]), x, y,
                               hparams={"learning_rate": np.full(2, 0.1)}, seeds=np.array([0, -1]), epochs=1,
                               batch_size=16)
