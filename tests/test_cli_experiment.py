"""``fnet experiment NAME --out DIR`` writes only into a folder fnet owns and never replaces a
file that fnet did not write; refusals are one line, before the experiment runs."""

from __future__ import annotations

import json
import os

import pytest
from _cli_helpers import one_line_error, snapshot

from fnet import cli, experiments, files


def test_an_experiment_writes_into_a_new_folder_and_may_replace_its_own_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "exp"
    assert cli.main(["experiment", "numerical-descent", "--quick", "--out", str(out)]) == 0
    assert json.loads((out / "numerical-descent.json").read_text())
    marker = files.read_folder_marker(out, experiments.FOLDER_KIND)
    assert marker["written"] == ["numerical-descent.json", "numerical-descent.png"]
    assert experiments.check_outputs(out, "numerical-descent") == (out / "numerical-descent.json",
                                                                    out / "numerical-descent.png")


@pytest.mark.parametrize("out", ["/", "~", "."])
def test_special_folders_are_refused(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    before = snapshot(tmp_path)
    assert cli.main(["experiment", "numerical-descent", "--quick", "--out", out]) == 2
    assert "refusing to use" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def test_a_users_folder_and_a_users_file_are_never_written(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "numerical-descent.json").write_text("my own notes")
    assert cli.main(["experiment", "numerical-descent", "--quick", "--out", str(user)]) == 2
    assert "did not create" in one_line_error(capsys)
    # In fnet's own folder, a file of the same name that fnet did not write is kept too.
    own = tmp_path / "own"
    files.claim_folder(own, kind=experiments.FOLDER_KIND, option="--out", what="an experiment folder", example="x")
    (own / "numerical-descent.png").write_bytes(b"a user's picture")
    before = snapshot(own)
    assert cli.main(["experiment", "numerical-descent", "--quick", "--out", str(own)]) == 2
    assert "was not written by fnet" in one_line_error(capsys)
    assert snapshot(own) == before and sorted(os.listdir(user)) == ["numerical-descent.json"]
