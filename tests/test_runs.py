"""Run folders: fnet acts only on folders that carry its marker, and never on `.`, `~`, `/` or
an ancestor of the current folder (issue: `--out . --overwrite` deleted the current folder's
files; `--resume` on an ordinary folder overwrote the user's config.json and history.json)."""

import json
import os

import pytest
from _cli_helpers import one_line_error, snapshot, train

from fnet import files, runs


@pytest.fixture
def user_folder(tmp_path):
    """An ordinary folder of the user's, holding files named like a run's."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "history.json").write_text("[1, 2, 3]")
    (folder / "notes.txt").write_text("important")
    return folder


@pytest.mark.parametrize("option", [[], ["--resume"], ["--overwrite"]], ids=["plain", "resume", "overwrite"])
def test_a_folder_without_the_marker_is_never_touched(user_folder, option, capsys):
    before = snapshot(user_folder)
    assert train(user_folder, *option) == 2
    line = one_line_error(capsys)
    assert "is not an fnet run folder" in line and runs.MARKER in line
    assert snapshot(user_folder) == before


@pytest.mark.parametrize("out", [".", "..", "~", "/"])
def test_current_folder_its_ancestors_home_and_root_are_refused(out, tmp_path, monkeypatch, capsys):
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    (work / "precious.txt").write_text("keep me")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    assert train(out, "--overwrite") == 2
    assert "refusing to use" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def test_resume_of_a_missing_folder_is_refused_and_creates_nothing(tmp_path, capsys):
    assert train(tmp_path / "nothing", "--resume") == 2
    assert "does not exist; there is no run to continue" in one_line_error(capsys)
    assert not (tmp_path / "nothing").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    assert train(tmp_path / "run", "--resume", "--overwrite") == 2
    assert "exclude each other" in one_line_error(capsys)


def test_a_run_folder_has_the_marker_and_overwrite_replaces_only_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    marker = runs.read_marker(out)
    assert marker["format"] == "fnet.run" and marker["fnet"]
    assert runs.inspect(out) == runs.RUN
    (out / "stray.txt").write_text("in the run folder")
    (tmp_path / "beside.txt").write_text("next to it")
    assert train(out, "--overwrite", "--seed", "2") == 0
    assert not (out / "stray.txt").exists() and (tmp_path / "beside.txt").read_text() == "next to it"
    assert json.loads((out / "config.json").read_text())["args"]["seed"] == 2


def test_an_empty_folder_or_one_left_by_a_killed_start_is_a_fresh_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / files.LOCK_NAME).write_text("12345\n")
    (killed / ".config.json.0123abcd.tmp").write_text("{half")
    assert runs.inspect(empty) == runs.inspect(killed) == runs.EMPTY
    assert train(killed) == 0
    assert sorted(os.listdir(killed)) == sorted([files.LOCK_NAME, runs.MARKER, "config.json", "history.json",
                                                 "checkpoint.safetensors", "results.json", "curves.png"])


def test_stale_temporaries_of_a_killed_run_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    stale = [".checkpoint.safetensors.89abcdef.tmp", ".history.json.00112233.tmp"]
    for name in stale:
        (out / name).write_bytes(b"left by a killed run")
    (out / "keep.tmp").write_text("not a name fnet makes")
    assert train(out, "--resume", "--epochs", "2") == 0
    names = os.listdir(out)
    assert not set(stale) & set(names) and "keep.tmp" in names
