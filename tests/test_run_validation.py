"""Every option and the data are validated before the first side effect (issue: `--overwrite
--epochs 0` deleted the finished run first; `--epochs 0` left a folder with only config.json;
`--resume --hidden 50` rewrote config.json before the mismatch error)."""

import json

import numpy as np
import pytest
from _cli_helpers import one_line_error, snapshot, train

from fnet import mlp, optim
from fnet import train as fnet_train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train(out) == 0
    return out


BAD = [
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--epochs", "-1"], "--epochs must be an integer >= 1, got -1"),
    (["--batch-size", "-5"], "--batch-size must be an integer >= 1, got -5"),
    (["--batch-size", "100000"], "--batch-size 100000 is larger than the 1294 training samples of digits"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0"),
    (["--lr-decay", "1.5"], "--lr-decay must be in (0, 1]"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0, got -1"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--init", "nan"], "--init must be a name or a finite float std >= 0, got nan"),
    (["--init", "gaussian"], "--init must be one of"),
    (["--early-stopping", "0"], "--early-stopping must be an integer >= 1"),
    (["--seed", "-3"], "--seed must be an integer with 0 <= seed < 2**63, got -3"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_option_writes_nothing(options, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, *options) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("options, message", BAD[:2] + BAD[4:5] + BAD[3:4], ids=["epochs0", "epochs-1", "lr-nan", "batch"])
def test_overwrite_with_a_bad_option_keeps_the_finished_run(finished_run, options, message, capsys):
    before = snapshot(finished_run)
    assert train(finished_run, "--overwrite", *options) == 2
    assert message in one_line_error(capsys)
    assert snapshot(finished_run) == before


def test_resume_with_other_options_names_them_and_touches_nothing(finished_run, capsys):
    before = snapshot(finished_run)
    assert train(finished_run, "--resume", "--hidden", "50", "--lr", "0.01") == 2
    line = one_line_error(capsys)
    assert "--hidden 50 given, the run has 16" in line and "--lr 0.01 given, the run has 0.001" in line
    assert snapshot(finished_run) == before


def test_resume_takes_the_stored_options(finished_run, capsys):
    from fnet import cli

    # No --hidden, --epochs, ...: they come from config.json (hidden 16, 2 epochs: finished).
    assert cli.main(["train", "--out", str(finished_run), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert json.loads((finished_run / "config.json").read_text())["args"]["hidden"] == [16]


def test_cosine_runs_cannot_change_their_length_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--schedule", "cosine", "--epochs", "1") == 0
    before = snapshot(out)
    assert train(out, "--schedule", "cosine", "--epochs", "3", "--resume") == 2
    assert "--epochs cannot change from 1 for a run with --schedule cosine" in one_line_error(capsys)
    assert snapshot(out) == before


def test_library_accepts_numpy_integers_and_names_bad_values(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)).astype(np.float32), rng.integers(0, 2, 40).astype(np.int32)
    net = mlp(3, [4], 2)
    result = fnet_train.fit(net, optim.sgd(0.1), x, y, epochs=np.int64(2), batch_size=np.int32(8),
                            seed=np.int16(1), early_stopping=np.int64(5), progress=False)
    assert result.history["epoch"] == [1, 2]
    with pytest.raises(TypeError, match=r"fit: epochs must be an int, got 2.0"):
        fnet_train.fit(net, optim.sgd(0.1), x, y, epochs=2.0, progress=False)
    with pytest.raises(ValueError, match=r"fit: early_stopping must be a positive int \(epochs\), got 0"):
        fnet_train.fit(net, optim.sgd(0.1), x, y, batch_size=8, early_stopping=0, progress=False)
    with pytest.raises(ValueError, match="fit: validation data is empty"):
        fnet_train.fit(net, optim.sgd(0.1), x, y, batch_size=8, val=(x[:0], y[:0]), progress=False)
    with pytest.raises(ValueError, match="fit: divergence_factor must be a finite number > 1"):
        fnet_train.fit(net, optim.sgd(0.1), x, y, batch_size=8, divergence_factor=0.5, progress=False)
