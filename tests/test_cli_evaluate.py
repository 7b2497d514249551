"""``fnet evaluate RUN``: a run written by ``fnet train`` is scored again to the same test
accuracy; config.json is checked against the checkpoint, and an edited or malformed config, a
missing or old-format checkpoint, or a folder that is not a run is named in one line (the file
and the field), never a traceback such as ``cannot reshape`` or ``KeyError``."""

import json
import re
import shutil

import numpy as np
import pytest
import safetensors.numpy
from _cli_helpers import one_line_error, snapshot, train

from fnet import checkpoint, cli
from fnet import train as fnet_train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert train(out, "--norm", "batchnorm") == 0
    return out


@pytest.fixture
def edited(run, tmp_path):
    """A copy of the run whose config.json the test edits."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    return copy


def _edit(folder, change):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_evaluate_reproduces_the_run(run, capsys):
    accuracy = json.loads((run / "results.json").read_text())["test"]["accuracy"]
    assert cli.main(["evaluate", str(run)]) == 0
    assert f"test accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    (lambda c: c["args"].update(hidden=[50]), r"config.json is inconsistent: net.hidden_dims is \[16\], the options build \[50\]"),
    (lambda c: (c["args"].update(hidden=[50]), c["net"].update(hidden_dims=[50])),
     r"checkpoint.safetensors does not match .*config.json \(options .*--hidden 50.*expected float32\[50\] \(from `like`\), "
     r"found float32\[16\]"),
    (lambda c: (c["args"].update(norm="none"), c["net"].update(norm=None)), r"checkpoint.safetensors does not match .*config.json"),
    (lambda c: c["args"].pop("hidden"), r"config.json: field 'args' lacks hidden"),
    (lambda c: c["args"].update(lr=-1), r"config.json does not describe a run fnet can rebuild: --lr must be a finite"),
    (lambda c: c.update(args=[1, 2]), r"config.json: field 'args' lacks data"),
    (lambda c: c.pop("version"), r"config.json is not an fnet run config of version 1 \(format 'fnet.config', version None\)"),
], ids=["hidden-args-only", "hidden-size", "norm", "missing-field", "bad-value", "wrong-type", "no-version"])
def test_an_edited_config_is_named(edited, change, message, capsys):
    _edit(edited, change)
    assert cli.main(["evaluate", str(edited)]) == 2
    line = one_line_error(capsys)
    assert re.search(message, line), line
    assert str(edited / "config.json") in line


def test_malformed_json_names_the_file_and_position(edited, capsys):
    (edited / "config.json").write_text('{"args": {"data": "digits",')
    assert cli.main(["evaluate", str(edited)]) == 2
    line = one_line_error(capsys)
    assert f"{edited / 'config.json'} is not valid JSON" in line and "line 1 column" in line


@pytest.mark.parametrize("field, value", [("dtype", "float64"), ("hidden_dims", [100])])
def test_an_edited_net_section_is_refused(edited, field, value, capsys):
    _edit(edited, lambda c: c["net"].update({field: value}))
    assert cli.main(["evaluate", str(edited)]) == 2
    line = one_line_error(capsys)
    assert f"config.json is inconsistent: net.{field} is {value!r}, the options build" in line


def test_a_missing_checkpoint_is_named(edited, capsys):
    (edited / "checkpoint.safetensors").unlink()
    assert cli.main(["evaluate", str(edited)]) == 2
    assert "checkpoint.safetensors not found" in one_line_error(capsys)


def test_a_run_with_an_npz_checkpoint_of_earlier_versions_is_named_in_one_line(edited, capsys):
    (edited / "checkpoint.safetensors").rename(edited / "checkpoint.npz")
    before = snapshot(edited)
    for command in (["evaluate", str(edited)], ["train", "--out", str(edited), "--resume"]):
        assert cli.main(command) == 2
        line = one_line_error(capsys)
        assert f"{edited} holds checkpoint.npz, a checkpoint in the .npz format of fnet" in line
        assert "this fnet reads and writes checkpoint.safetensors: train the run again (--overwrite)" in line
    assert snapshot(edited) == before


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


def test_evaluate_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert "config.json not found; is" in one_line_error(capsys)
