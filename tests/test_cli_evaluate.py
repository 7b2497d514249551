"""`fnet evaluate` checks config.json against the checkpoint and names the file and the field
(issue: `cannot reshape`, `KeyError: 'hidden_dims'`, `list indices ...`; an edited hidden size or
dtype was silently accepted)."""

import json
import re
import shutil

import pytest
from _cli_helpers import one_line_error, snapshot, train

from fnet import cli


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
