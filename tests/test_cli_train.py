"""`fnet train`, `fnet evaluate` and `fnet data download`, called in-process through fnet.cli.main.

Runs use small nets and few epochs on the bundled digits, except the README's main job (the
default `fnet train`, about 15 s). Bad input must give ONE line `fnet: error: ...` on stderr,
exit status 2, no traceback, and leave what was already written in place. Each training run
compiles its own programs (a new net per run), which is most of the file's time.
"""

import json
import math

import chex
import numpy as np
import pytest
import safetensors.numpy
from _cli_helpers import one_line_error, snapshot, train

from fnet import checkpoint, cli, data, schedules
from fnet import train as fnet_train


def test_default_train_reaches_97_percent_on_digits(tmp_path, capsys):
    """The README's main job: `fnet train` with no options (the issue: >= 97% test accuracy)."""
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["accuracy"] >= 0.97
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["grad"] == "manual" and config["args"]["optimizer"] == "adam"
    assert config["dataset"]["name"] == "digits"
    assert f"test accuracy {100 * results['test']['accuracy']:.2f}%" in capsys.readouterr().out


def test_train_writes_the_run_and_evaluate_reproduces_its_test_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--hidden", "16", "--epochs", "3", "--batch-size", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 3/3" in printed  # progress lines without --quiet
    assert {"history.json", "curves.png", "checkpoint.safetensors", "config.json", "results.json"} <= set(snapshot(out))
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3] and set(history) == set(fnet_train.HISTORY_KEYS)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["net"]["hidden_dims"] == [16] and config["args"]["epochs"] == 3
    assert checkpoint.load_metadata(out / "checkpoint.safetensors")["epoch"] == 3
    # The checkpoint is a plain safetensors file, its tensors named by their tree path.
    tensors = safetensors.numpy.load_file(out / "checkpoint.safetensors")
    best = checkpoint.load(out / "checkpoint.safetensors")["best_params"]
    np.testing.assert_array_equal(tensors["best_params/dense1/W"], best["dense1"]["W"])
    assert {"params/dense1/W", "params/dense2/b", "opt_state/count"} <= set(tensors)
    accuracy = json.loads((out / "results.json").read_text())["test"]["accuracy"]

    assert cli.main(["evaluate", str(out)]) == 0
    assert f"test accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out


# Every option of issue 4, each optimizer and each schedule at least once, in seven short runs.
COMBOS = {
    "sgd": ("constant", ["--lr", "0.1", "--activation", "tanh", "--init", "xavier"]),
    "momentum": ("step", ["--lr", "0.05", "--lr-decay", "0.5", "--norm", "batchnorm"]),
    "nesterov": ("exponential", ["--lr", "0.05", "--lr-decay", "0.5", "--activation", "leaky_relu", "--norm", "layernorm"]),
    "adagrad": ("cosine", ["--lr", "0.05", "--init", "0.05", "--activation", "sigmoid"]),
    "rmsprop": ("constant", ["--lr", "0.003", "--dropout", "0.2", "--grad", "autodiff"]),
    "adam": ("step", ["--lr", "0.01", "--weight-decay", "1e-3", "--early-stopping", "5", "--device", "cpu"]),
    "adamw": ("cosine", ["--lr", "0.01", "--weight-decay", "1e-2", "--init", "normal", "--seed", "3"]),
}


def _expected_lr(schedule, lr, decay, steps, epochs):
    """The rate of the last update of each epoch (history["lr"]) under the CLI's schedule."""
    fn = {
        "constant": lambda s: lr,
        "step": schedules.step_decay(lr, decay, steps),
        "exponential": schedules.exponential(lr, decay, steps),
        "cosine": schedules.cosine(lr, epochs * steps),
    }[schedule]
    return [float(fn(e * steps - 1)) for e in range(1, epochs + 1)]


@pytest.mark.parametrize("optimizer", list(COMBOS))
def test_every_optimizer_schedule_and_option_is_accepted(optimizer, tmp_path):
    schedule, options = COMBOS[optimizer]
    out = tmp_path / "run"
    assert train(out, "--optimizer", optimizer, "--schedule", schedule, *options) == 0
    config = json.loads((out / "config.json").read_text())
    args = config["args"]
    assert (args["optimizer"], args["schedule"]) == (optimizer, schedule)
    history = json.loads((out / "history.json").read_text())
    assert history["train_loss"][1] < history["train_loss"][0]  # it trains
    steps = config["dataset"]["train"] // 128
    assert history["lr"] == pytest.approx(_expected_lr(schedule, args["lr"], args["lr_decay"], steps, 2), rel=1e-5)
    # AdamW decays the weights itself; the L2 term of the loss is used by the other optimizers.
    assert config["net"]["weight_decay"] == (0.0 if optimizer == "adamw" else args["weight_decay"])
    assert 0.0 <= json.loads((out / "results.json").read_text())["test"]["accuracy"] <= 1.0


def test_resume_continues_the_run_exactly(tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(whole, "--epochs", "3", "--dropout", "0.2") == 0
    assert train(parts, "--epochs", "1", "--dropout", "0.2") == 0
    assert train(parts, "--epochs", "3", "--dropout", "0.2", "--resume") == 0
    h_whole, h_parts = (json.loads((d / "history.json").read_text()) for d in (whole, parts))
    assert h_parts["epoch"] == [1, 2, 3]
    assert h_parts["train_loss"] == h_whole["train_loss"] and h_parts["val_acc"] == h_whole["val_acc"]
    a, b = (checkpoint.load(d / "checkpoint.safetensors")["params"] for d in (whole, parts))
    chex.assert_trees_all_equal(a, b)


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    before = snapshot(out)
    assert train(out) == 2
    line = one_line_error(capsys)
    assert "already exists" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(out) == before
    assert train(out, "--overwrite", "--seed", "1") == 0
    assert json.loads((out / "config.json").read_text())["args"]["seed"] == 1


@pytest.mark.parametrize(
    "options, message",
    [
        (["--data", "imagenet"], "unknown data set 'imagenet'; known data sets: digits"),
        (["--batch-size", "100000"], "--batch-size 100000 is larger than the 1294 training samples of digits"),
        (["--device", "gpu"], "--device gpu: JAX sees no gpu device"),
    ],
    ids=["unknown-dataset", "batch-too-large", "no-gpu"],
)
def test_bad_input_gives_one_line_and_writes_nothing(options, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, *options) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "options, message",
    [(["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
     (["--hidden", "0"], "--hidden sizes must be positive"),
     (["--dense-width", "0"], "--dense-width sizes must be positive"),
     (["--dense-width", "8,8"], "--dense-width must be one positive size like 128, got '8,8'"),
     (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'")],
    ids=["unknown-option", "bad-hidden", "bad-dense-width", "two-dense-widths", "unknown-optimizer"],
)
def test_options_argparse_rejects_exit_2(options, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--out", str(tmp_path / "run"), *options])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_data_dir_without_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FNET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/fnet either
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(tmp_path / "run", "--data", "mnist", "--data-dir", str(empty)) == 2
    line = one_line_error(capsys)
    assert "mnist: the IDX files were not found" in line and str(empty) in line and "fnet data download mnist" in line
    assert not (tmp_path / "run").exists()


def test_nan_loss_names_epoch_and_step_and_keeps_history_and_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # Epoch 1 at lr 0.01, epoch 2 at 0.01 * 1e11 = 1e9: the loss overflows during epoch 2. (The
    # command line refuses --lr-decay > 1, so the schedule is put in place behind its back.)
    monkeypatch.setattr(cli, "_make_learning_rate", lambda args, steps: schedules.step_decay(0.01, 1e11, steps))
    code = cli.main(["train", "--data", "digits", "--epochs", "3", "--batch-size", "128", "--quiet", "--out", str(out),
                     "--optimizer", "sgd", "--schedule", "step"])
    assert code == 2
    line = one_line_error(capsys)
    assert "the training loss became nan at epoch 2, step" in line and "the checkpoint of epoch 1" in line
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1] and math.isfinite(history["train_loss"][0])
    assert checkpoint.load_metadata(out / "checkpoint.safetensors")["epoch"] == 1
    assert np.all(np.isfinite(checkpoint.load(out / "checkpoint.safetensors")["params"]["dense1"]["W"]))
    assert (out / "curves.png").exists() and (out / "config.json").exists()
    assert not (out / "results.json").exists()


def test_huge_learning_rate_fails_in_the_first_epoch(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--optimizer", "sgd", "--lr", "1e9", "--epochs", "2", "--quiet", "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert "the training loss became" in line and "at epoch 1, step" in line and "smaller learning rate" in line
    assert json.loads((out / "history.json").read_text())["epoch"] == []
    assert (out / "config.json").exists()


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        cli.main(["--debug", "train", "--data", "imagenet", "--out", str(tmp_path / "run")])


def test_evaluate_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "config.json not found; is" in one_line_error(capsys)


def test_data_download_from_an_unreachable_mirror(tmp_path, capsys, monkeypatch):
    # Port 9 (discard) on the loopback: the connection is refused at once, no real network used.
    monkeypatch.setitem(data.MIRRORS, "mnist", ("http://127.0.0.1:9/",))
    cache = tmp_path / "cache"
    assert cli.main(["data", "download", "mnist", "--cache-dir", str(cache)]) == 2
    line = one_line_error(capsys)
    assert "could not get train-images-idx3-ubyte.gz" in line and "http://127.0.0.1:9/" in line
    assert "Nothing was written" in line and str(cache / "mnist") in line
    assert not (cache / "mnist").exists()
