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
