"""The persistent compilation cache of the `fnet` command: on by default in a user cache folder,
off with --no-compile-cache or FNET_COMPILE_CACHE=0, and a cache that cannot be used never fails a
run (an unwritable folder or a corrupted entry: one note, then the run goes on uncached). Real
processes, each with its own cache folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from fnet import compile_cache

RUN = ["train", "--data", "digits", "--hidden", "8", "--epochs", "1", "--batch-size", "256", "--quiet"]


def _fnet(*args, cache, out, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "FNET_COMPILE_CACHE"}
    env.update({"FNET_CACHE_DIR": str(cache), **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "fnet", *args, "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=180)


def test_the_cache_fills_is_reused_and_survives_a_corrupted_entry(tmp_path):
    cache = tmp_path / "cache"
    first = _fnet(*RUN, cache=cache, out=tmp_path / "a")
    assert first.returncode == 0, first.stderr
    entries = sorted(os.listdir(cache))
    assert entries and first.stderr == ""
    second = _fnet(*RUN, cache=cache, out=tmp_path / "b")
    assert second.returncode == 0 and second.stderr == ""
    assert sorted(os.listdir(cache)) == entries  # everything was found: nothing new compiled
    for name in entries:
        (cache / name).write_bytes(b"\x00garbage, not an executable")
    third = _fnet(*RUN, cache=cache, out=tmp_path / "c")
    assert third.returncode == 0, third.stderr
    lines = third.stderr.strip().splitlines()
    assert len(lines) == 1 and "a compilation cache entry could not be read" in lines[0], third.stderr
    # Entries that JAX would read forever (and without answering Ctrl-C): a symlink to an endless
    # device and a FIFO with no writer. They are removed before JAX sees the folder.
    for i, name in enumerate(entries):
        if name.startswith("."):
            continue
        (cache / name).unlink()
        if i % 2:
            (cache / name).symlink_to("/dev/urandom")
        else:
            os.mkfifo(cache / name)
    fourth = _fnet(*RUN, cache=cache, out=tmp_path / "d")
    assert fourth.returncode == 0, fourth.stderr
    assert "removed" in fourth.stderr and "not regular files" in fourth.stderr, fourth.stderr
    assert all((cache / n).is_file() and not (cache / n).is_symlink() for n in os.listdir(cache))
    results = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b", "c", "d")]
    assert results[0] == results[1] == results[2] == results[3]


def test_the_cache_can_be_turned_off(tmp_path):
    cache = tmp_path / "cache"
    assert _fnet("--no-compile-cache", *RUN, cache=cache, out=tmp_path / "a").returncode == 0
    assert not cache.exists()


def test_an_unwritable_cache_folder_is_reported_once_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = _fnet(*RUN, cache=blocker / "cache", out=tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fnet: note: the compilation cache") and "running without it" in lines[0]
    assert (tmp_path / "run" / "results.json").exists()


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.delenv("FNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_dir() == tmp_path / "xdg" / "fnet" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.default_dir() == tmp_path / "home" / ".cache" / "fnet" / "jax"
    for value, wanted in (("0", False), ("off", False), ("1", True), ("yes", True)):
        monkeypatch.setenv("FNET_COMPILE_CACHE", value)
        assert compile_cache.wanted() is wanted


def test_a_cache_warning_caught_by_matplotlibs_style_reader_becomes_the_one_note(monkeypatch, capsys):
    # matplotlib reads its style files (in fnet train's background import) inside a process-wide
    # catch_warnings and logs what it caught as "In <file>: ..."; a JAX cache warning raised in
    # the main thread meanwhile must still come out as fnet's note (seen once in CI).
    pytest.importorskip("matplotlib")
    from fnet import plots

    monkeypatch.setattr(compile_cache, "_reported", set())
    plots.import_pyplot_in_background().join()
    style_log = logging.getLogger("matplotlib.style")
    jax_warning = "Error reading persistent compilation cache entry for 'jit_copy': error: incorrect header check"
    style_log.warning("In %s: %s", "classic.mplstyle", jax_warning)
    style_log.warning("In %s: %s", "classic.mplstyle", jax_warning)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fnet: note: a compilation cache entry could not be read"), lines


def test_the_cache_is_written_only_into_a_folder_fnet_owns(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    for refused, why in (("/", "the filesystem root"), (tmp_path / "home", "your home folder"),
                         (tmp_path, "the current folder")):
        assert why in compile_cache._usable(compile_cache.Path(refused))
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_bytes(b"\xff\xd8")
    assert "did not create" in compile_cache._usable(user)
    assert sorted(os.listdir(user)) == ["cat.jpg"]
    # An earlier fnet's cache (JAX's entries only, no marker) is adopted; so is a new folder.
    old = tmp_path / "old-cache"
    old.mkdir()
    entry = old / f"jit_step-{'ab' * 32}-cache"
    entry.write_bytes(b"entry")
    assert compile_cache._usable(old) is None and entry.read_bytes() == b"entry"
    assert compile_cache._usable(tmp_path / "new" / "jax") is None


def test_oversized_and_special_entries_are_removed_before_jax_reads_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compile_cache, "_reported", set())
    monkeypatch.setattr(compile_cache, "MAX_ENTRY_BYTES", 10)
    cache = tmp_path / "cache"
    assert compile_cache._usable(cache) is None
    (cache / f"jit_a-{'0' * 64}-cache").write_bytes(b"small")
    (cache / f"jit_b-{'1' * 64}-cache").write_bytes(b"x" * 11)
    (cache / f"jit_c-{'2' * 64}-cache").symlink_to("/dev/zero")
    assert compile_cache._usable(cache) is None
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [f"jit_a-{'0' * 64}-cache"]
    assert "removed 2 entries" in capsys.readouterr().err
