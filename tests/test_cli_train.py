"""``fnet train``, called in-process through fnet.cli.main (and as a real process where it must
not be allocated or must not hang): the README's main job, every optimizer, schedule and option,
resume, convolutional models, a diverged or NaN run, and every option and the data validated
before the first side effect.

Runs use small nets and few epochs on the bundled digits, except the README's main job (the
default `fnet train`, about 15 s). Bad input must give ONE line `fnet: error: ...` on stderr,
exit status 2, no traceback, and leave what was already written in place. Each training run
compiles its own programs (a new net per run), which is most of the file's time. The run folder's
own guarantees (ownership, lock, links, resume, overwrite) are in test_runs.py.
"""

import json
import math
import os

import chex
import numpy as np
import pytest
from _cli_helpers import SMALL, one_line_error, run_fnet, snapshot, staging_folders, train

import fnet
from fnet import checkpoint, cli, cli_train, limits, models, nets, schedules


def test_default_train_reaches_97_percent_on_digits(tmp_path, capsys):
    """The README's main job: `fnet train` with no options reaches >= 97% test accuracy."""
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["accuracy"] >= 0.97
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["grad"] == "manual" and config["args"]["optimizer"] == "adam"
    assert config["dataset"]["name"] == "digits"
    assert f"test accuracy {100 * results['test']['accuracy']:.2f}%" in capsys.readouterr().out


# Every training option, each optimizer and each schedule at least once, in seven short runs.
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
    # without --quiet: the first epoch's line once the new run is in place, then the rest
    capsys.readouterr()
    assert cli.main(["train", *[o for o in SMALL if o != "--quiet"], "--out", str(out), "--overwrite"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("[##########----------] epoch 1/2") and lines[2].startswith("[####################] epoch 2/2")
    assert lines[3].startswith("test accuracy ")


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
    monkeypatch.setattr(cli_train, "_make_learning_rate", lambda args, steps: schedules.step_decay(0.01, 1e11, steps))
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


# --------------------------------------------------------------------------------------------
# Convolutional networks: --model, --filters, --dense-width
# --------------------------------------------------------------------------------------------


CNN_SMALL = ["--data", "digits", "--model", "small_cnn", "--filters", "4,8", "--dense-width", "16", "--epochs", "2",
             "--batch-size", "128", "--quiet"]


def test_train_resume_and_evaluate_a_cnn_on_digits(tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli.main(["train", *CNN_SMALL, "--out", str(whole)]) == 0
    assert cli.main(["train", *CNN_SMALL, "--epochs", "1", "--out", str(parts)]) == 0
    assert cli.main(["train", *CNN_SMALL, "--out", str(parts), "--resume"]) == 0
    h_whole, h_parts = (json.loads((d / "history.json").read_text()) for d in (whole, parts))
    assert h_parts["train_loss"] == h_whole["train_loss"]  # bitwise resume, as for the MLP
    a, b = (fnet.checkpoint.load(d / "checkpoint.safetensors")["params"] for d in (whole, parts))
    chex.assert_trees_all_equal(a, b)
    config = json.loads((whole / "config.json").read_text())
    assert config["net"]["model"] == "small_cnn" and config["net"]["input_shape"] == [1, 8, 8]
    assert config["net"]["filters"] == [4, 8] and config["args"]["model"] == "small_cnn"
    assert config["net"]["dense_width"] == 16 and config["args"]["dense_width"] == 16 and config["args"]["hidden"] == []
    accuracy = json.loads((whole / "results.json").read_text())["test"]["accuracy"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(whole)]) == 0
    assert f"test accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out
    # A run folder saved before the renames (model "cnn", its dense width as hidden) still loads.
    del config["args"]["dense_width"]
    config["args"].update(model="cnn", hidden=[16])
    config["net"]["hidden"] = config["net"].pop("dense_width")
    config["net"]["model"] = "cnn"
    (whole / "config.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", str(whole)]) == 0
    assert f"test accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out
    assert models.from_config(config["net"]).config == nets.cnn("small_cnn", (1, 8, 8), 10, filters=(4, 8),
                                                               dense_width=16).config


@pytest.mark.parametrize("options, message", [
    (["--model", "small_cnn", "--data", "sin"],
     "--model small_cnn is a convolutional network for images; --data sin holds regression"),
    (["--model", "cnn", "--data", "spiral"],
     "--model small_cnn is a convolutional network for images; --data spiral holds samples"),
    (["--model", "small_cnn", "--hidden", "8,8"],
     "--hidden 8,8: --hidden sets the MLP's hidden sizes; --model small_cnn takes --dense-width (the width of its "
     "dense layer) and --filters"),
    (["--dense-width", "8"], "--dense-width 8: --model mlp has no convolutions; --dense-width applies to the CNNs"),
    (["--model", "deep_convnet", "--filters", "8,8"], "deep_convnet has 6 convolutions, so filters needs 6 widths"),
    (["--model", "resnet"], "--model must be one of mlp, small_cnn, three_layer_convnet, simple_convnet, deep_convnet"),
], ids=["regression", "not-images", "hidden", "dense-width-mlp", "filters", "unknown"])
def test_bad_model_options_write_nothing(options, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out), *options]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# A diverged run (a finite explosion of the loss) is reported in one line
# --------------------------------------------------------------------------------------------


def test_a_diverged_run_is_reported_and_what_was_written_is_kept(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--lr", "1e6") == 2
    line = one_line_error(capsys)
    assert "the training loss diverged at epoch 1" in line and "smaller learning rate" in line
    assert json.loads((out / "history.json").read_text())["epoch"] == []
    assert (out / "config.json").exists() and not (out / "results.json").exists()


# --------------------------------------------------------------------------------------------
# Every option, size and the data are validated before the first side effect: a bad one with
# --overwrite keeps the finished run, a network too large for the memory is refused with its
# estimate (real processes: it must never be allocated)
# --------------------------------------------------------------------------------------------


OUT_OF_RANGE = [
    (["--seed", "99999999999999999999999"], "--seed must be an integer with 0 <= seed < 2**63"),
    (["--seed", str(2**63)], "--seed must be an integer with 0 <= seed < 2**63"),
    (["--epochs", "9999999999999999", "--schedule", "cosine"], "step counter (int32)"),
    (["--epochs", "300000000"], "--epochs 300000000 x 10 steps per epoch is 3,000,000,000 steps"),
    (["--hidden", "4096"], "--hidden 4096 --batch-size 128: a network of 307,210 parameters needs about"),
]


#: A memory limit that the 4096-unit network exceeds (its estimate is ~6 MB) and SMALL's does not.
SMALL_MEMORY = str(1 << 20)


@pytest.mark.parametrize("options, message", OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OUT_OF_RANGE])
def test_an_out_of_range_option_with_overwrite_keeps_the_finished_run(finished_run, options, message, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv(limits.ENV_MEMORY_LIMIT, SMALL_MEMORY)
    before = snapshot(finished_run)
    assert train(finished_run, "--overwrite", *options) == 2
    assert message in one_line_error(capsys)
    assert snapshot(finished_run) == before and not staging_folders(finished_run)


@pytest.mark.parametrize("options, message", OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OUT_OF_RANGE])
def test_an_out_of_range_option_creates_no_folder(tmp_path, options, message, capsys, monkeypatch):
    monkeypatch.setenv(limits.ENV_MEMORY_LIMIT, SMALL_MEMORY)
    assert train(tmp_path / "new", *options) == 2
    assert message in one_line_error(capsys)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("hidden", ["2000000000", "16,2000000000"])
def test_a_network_too_large_for_the_memory_is_refused_with_its_estimate(finished_run, tmp_path, hidden):
    before = snapshot(finished_run)
    for out, extra in ((tmp_path / "big", []), (finished_run, ["--overwrite"])):
        code, _, err = run_fnet("train", *SMALL, "--out", str(out), "--hidden", hidden, *extra)
        assert code == 2, err
        assert err.startswith(f"fnet: error: --hidden {hidden} --batch-size 128: a network of ") and \
            "parameters needs about" in err and "GiB" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "big").exists()
    assert snapshot(finished_run) == before


@pytest.mark.parametrize("options, message", [
    (["--hidden", "20", "--filters", "8,8"], "--filters 8,8: --model mlp has no convolutions"),
    (["--model", "small_cnn", "--norm", "layernorm"], "--norm layernorm: --model small_cnn has fixed layers"),
    (["--model", "simple_convnet", "--activation", "sigmoid"], "--activation sigmoid: --model simple_convnet has fixed"),
])
def test_an_option_the_model_does_not_use_is_refused(tmp_path, options, message, capsys):
    args = [a for a in SMALL if a not in ("--hidden", "16")]
    assert cli.main(["train", *args, "--out", str(tmp_path / "run"), *options]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


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
    (["--data", "imagenet"], "unknown data set 'imagenet'; known data sets: digits"),
    (["--device", "gpu"], "--device gpu: JAX sees no gpu device"),
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
