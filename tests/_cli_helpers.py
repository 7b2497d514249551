"""Helpers for the tests that run ``fnet train``: in-process calls, subprocesses, and the checks
that a failed command printed one line and touched nothing. (The ``finished_run`` fixture, a
finished run of :data:`SMALL`, is in conftest.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fnet import cli

#: A run that compiles and trains in a few seconds on the bundled digits.
SMALL = ["--data", "digits", "--hidden", "16", "--epochs", "2", "--batch-size", "128", "--quiet"]


def train(out, *options) -> int:
    """``fnet train SMALL --out OUT OPTIONS`` in this process; returns the exit status."""
    return cli.main(["train", *SMALL, "--out", str(out), *options])


def one_line_error(capsys) -> str:
    """The single ``fnet: error: ...`` line a failed command printed (no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fnet: error: ") and "Traceback" not in err
    return lines[0]


def snapshot(folder) -> dict:
    """Every entry of ``folder`` (recursively) -> its bytes, or the target of a symlink."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def python_process(*args, cwd=None, env=None, **popen) -> subprocess.Popen:
    """Start ``python ARGS`` as a real process (unbuffered, stdout and stderr piped, text mode),
    with ``env`` (a dict) added to this process's environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def fnet_process(*args, cwd=None, env=None, **popen) -> subprocess.Popen:
    """Start ``python -m fnet ARGS`` as a real process (see :func:`python_process`)."""
    return python_process("-m", "fnet", *args, cwd=cwd, env=env, **popen)


def run_fnet(*args, timeout: float = 120) -> tuple[int, str, str]:
    """``python -m fnet ARGS`` in a real process, waited for: ``(exit status, stdout, stderr)``."""
    proc = fnet_process(*args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def staging_folders(run) -> list[str]:
    """The names of the staging folders an ``--overwrite`` of ``run`` left beside it."""
    run = Path(run)
    return [n for n in os.listdir(run.parent) if n.startswith(f".{run.name}.staging-")]
