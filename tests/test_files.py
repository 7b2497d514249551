"""fnet.files: the folders fnet may write into (claim_folder), bounded reads of regular files
only (read_regular), and write errors that name the file."""

from __future__ import annotations

import errno
import os

import pytest

from fnet import files


def _claim(path, adopt=None):
    return files.claim_folder(path, kind="test", option="--out", what="a test folder", example="--out new",
                              adopt=adopt)


def test_claim_creates_marks_and_reuses_its_own_folder(tmp_path):
    folder = _claim(tmp_path / "a" / "b")
    assert folder.is_dir() and files.read_folder_marker(folder, "test") == {
        "format": "fnet.folder", "kind": "test", "written": []}
    (folder / "x.json").write_text("{}")
    assert _claim(folder) == folder  # fnet's own folder, with fnet's files in it
    assert files.read_folder_marker(folder, "other-kind") is None


@pytest.mark.parametrize("where", ["root", "home", "cwd", "parent"])
def test_claim_refuses_special_folders(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    path = {"root": "/", "home": "~", "cwd": ".", "parent": ".."}[where]
    with pytest.raises(files.UnsafeFolderError, match=r"^--out .*: refusing to use .* as a test folder"):
        _claim(path)
    assert not (tmp_path / "home" / files.FOLDER_MARKER).exists()


def test_claim_refuses_a_users_folder_and_file_and_touches_nothing(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(files.UnsafeFolderError, match="folder that fnet did not create"):
        _claim(user)
    assert sorted(os.listdir(user)) == ["notes.txt"]
    (tmp_path / "f").write_text("a file")
    with pytest.raises(files.UnsafeFolderError, match="refusing to write into a file"):
        _claim(tmp_path / "f")
    # ... unless the caller recognises every entry as its own (an older cache, say).
    assert _claim(user, adopt=lambda names: names == ["notes.txt"]) == user


def test_a_folder_with_only_a_lock_and_temporaries_counts_as_empty(tmp_path):
    (tmp_path / files.LOCK_NAME).write_text("123\n")
    (tmp_path / ".config.json.0123abcd.tmp").write_text("half")
    assert files.folder_state(tmp_path, lambda p: False) == files.EMPTY
    assert files.folder_state(tmp_path / "nope", lambda p: False) == files.MISSING


def test_read_regular_refuses_fifos_links_and_oversized_files_without_blocking(tmp_path):
    regular = tmp_path / "r"
    regular.write_bytes(b"12345")
    assert files.read_regular(regular, limit=5, what="config") == b"12345"
    with pytest.raises(ValueError, match=r"config .* holds 5 bytes, more than the 4"):
        files.read_regular(regular, limit=4, what="config")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without O_NONBLOCK, reading it would wait forever for a writer
    with pytest.raises(ValueError, match="is not a regular file"):
        files.read_regular(fifo, limit=100, what="checkpoint")
    link = tmp_path / "link"
    link.symlink_to(regular)
    with pytest.raises(OSError) as e:
        files.read_regular(link, limit=100, what="checkpoint")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(ValueError, match="is not a regular file"):
        files.read_regular(tmp_path, limit=100, what="checkpoint")


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "history.json"
    target.write_text("old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device") as e:
        files.atomic_write(target, "new")
    assert e.value.filename == str(target) and str(target) in str(e.value)
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["history.json"]
