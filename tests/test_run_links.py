"""Writes never follow links (issue: symlinks planted as config.json.tmp, history.json.tmp,
results.json.tmp and curves.png made `train --resume` overwrite 4 files outside the run folder)."""

import os

import pytest
from _cli_helpers import one_line_error, train

from fnet import checkpoint, files


def test_planted_symlinks_are_never_written_through(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = ["config.json.tmp", "history.json.tmp", "results.json.tmp", "curves.png", "history.json",
               "results.json", ".config.json.tmp"]
    for name in planted:
        target = outside / f"{name}.target"
        target.write_text("the user's file")
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(target)
    assert train(out, "--resume", "--epochs", "2") == 0
    for name in planted:
        assert (outside / f"{name}.target").read_text() == "the user's file"
    # The links at the final names were replaced by the files themselves.
    for name in ("curves.png", "history.json", "results.json"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
    assert checkpoint.load_metadata(out / "checkpoint.safetensors")["epoch"] == 2


def test_a_symlinked_lock_file_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    target = tmp_path / "elsewhere"
    target.write_text("not a lock")
    (out / files.LOCK_NAME).unlink()
    (out / files.LOCK_NAME).symlink_to(target)
    assert train(out, "--resume", "--epochs", "2") == 2
    assert "is a symbolic link; refusing to use it" in one_line_error(capsys)
    assert target.read_text() == "not a lock"


def test_a_temporary_name_that_exists_is_never_opened(tmp_path, monkeypatch):
    """O_EXCL | O_NOFOLLOW: a name planted where the temporary would go is skipped, not followed."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    names = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".data.json.00000000.tmp").symlink_to(victim)
    files.atomic_write(tmp_path / "data.json", "new")
    assert (tmp_path / "data.json").read_text() == "new" and victim.read_text() == "keep"
    assert os.path.islink(tmp_path / ".data.json.00000000.tmp")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.json"
    files.atomic_write(path, "old")
    with pytest.raises(RuntimeError, match="disk"):
        with files.atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["data.json"]
