"""Resuming a run that already finished trains no further: it says so and regenerates the
outputs that are missing, from the checkpoint."""

import json

import numpy as np
from _cli_helpers import train

from fnet import mlp, optim
from fnet import train as fnet_train


def test_a_finished_run_is_not_trained_again_and_missing_outputs_come_back(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    checkpoint_bytes = (out / "checkpoint.safetensors").read_bytes()
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert train(out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "already finished (2 epochs, all 2 epochs done); nothing to train; its outputs are all present" in printed
    assert (out / "checkpoint.safetensors").read_bytes() == checkpoint_bytes

    (out / "results.json").unlink()
    (out / "curves.png").unlink()
    assert train(out, "--resume") == 0
    assert "regenerating curves.png, results.json" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint.safetensors").read_bytes() == checkpoint_bytes


def test_a_run_that_stopped_early_stays_stopped(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 3)).astype(np.float32), rng.integers(0, 2, 64).astype(np.int32)
    net = mlp(3, [4], 2)
    # A learning rate of 0: the validation score never improves, so patience 2 stops at epoch 3.
    kwargs = dict(val=(x[:16], y[:16]), batch_size=16, early_stopping=2, checkpoint_dir=tmp_path, progress=False)
    first = fnet_train.fit(net, optim.sgd(0.0), x, y, epochs=10, **kwargs)
    assert first.stopped_early and first.history["epoch"] == [1, 2, 3] and first.epochs_run == 3
    again = fnet_train.fit(net, optim.sgd(0.0), x, y, epochs=20, resume=True, **kwargs)
    assert again.stopped_early and again.epochs_run == 0 and again.history["epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(again.params["dense1"]["W"], first.params["dense1"]["W"])
