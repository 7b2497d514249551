"""Run folders: how ``fnet train`` recognizes, creates, locks and cleans the folder of one run.

A run folder is a folder that holds fnet's marker, ``fnet-run.json`` (the run record: format,
version, the fnet version that created it, the creation time); besides it, ``config.json``,
``history.json``, ``checkpoint.npz``, ``results.json``, ``curves.png`` and the lock file
``.fnet.lock``. The rules that keep a user's files safe:

- :func:`check_out_path`: ``.``, ``~``, ``/`` and any folder that contains the current folder
  (an ancestor of it) are never used as a run folder;
- :func:`inspect`: an output path is ``missing``, ``empty``, a ``run`` folder (has the marker) or
  ``other`` (a non-empty folder without the marker, or a file). ``--resume`` and ``--overwrite``
  act only on ``run`` folders; ``other`` is refused and never touched;
- :func:`lock`: one process per run folder, an advisory ``fcntl.flock`` on ``.fnet.lock`` held
  for the whole run; a second process is told "run folder X is in use by process P";
- :func:`clear`: ``--overwrite`` empties a run folder (except the held lock) only after every
  option and the data were validated;
- every file is written with :func:`fnet.files.atomic_open` (never through a link), and stale
  temporaries of a killed run are removed at the next start (:func:`fnet.files.remove_stale_temporaries`).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

from fnet import files

MARKER = "fnet-run.json"
LOCK_NAME = files.LOCK_NAME
FORMAT = "fnet.run"
VERSION = 1

MISSING, EMPTY, RUN, OTHER = "missing", "empty", "run", "other"


class RunFolderError(ValueError):
    """An output path that fnet refuses to use (or to use the way it was asked to)."""


def check_out_path(path) -> Path:
    """Refuse a path that must never become (or be emptied as) a run folder.

    Refused: the filesystem root, the home folder, the current folder and every ancestor of it
    (``--out .``, ``--out ..``, ``--out ~``, ``--out /``), compared after resolving links.

    Returns:
      ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
      RunFolderError: naming the path and why.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        why = "the filesystem root"
    elif resolved == Path.home().resolve():
        why = "your home folder"
    elif resolved == cwd:
        why = "the current folder"
    elif resolved in cwd.parents:
        why = "a folder that contains the current folder"
    else:
        return path
    raise RunFolderError(f"--out {path}: refusing to use {why} ({resolved}) as a run folder; name a new folder, "
                         f"e.g. --out runs/my-run")


def inspect(path) -> str:
    """What ``path`` is: :data:`MISSING`, :data:`EMPTY` (an empty folder), :data:`RUN` (a folder
    with a valid marker) or :data:`OTHER` (anything else: a file, a foreign folder)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return MISSING
    if not path.is_dir():
        return OTHER
    if read_marker(path) is not None:
        return RUN
    # A lock file or temporaries alone: a run killed before it wrote its marker.
    leftovers = [n for n in os.listdir(path) if n != LOCK_NAME and not files.is_temporary(n)]
    return OTHER if leftovers else EMPTY


def read_marker(path) -> dict | None:
    """The run record of the run folder ``path``, or None when it has no valid marker."""
    marker = Path(path) / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("version") != VERSION:
        return None
    return record


def write_marker(path, fnet_version: str) -> None:
    """Make ``path`` a run folder: write its run record (atomically)."""
    record = {"format": FORMAT, "version": VERSION, "fnet": fnet_version,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    files.atomic_write(Path(path) / MARKER, json.dumps(record, indent=1) + "\n")


def lock(folder) -> files.FolderLock:
    """Take the run folder's lock for the whole run (see :class:`fnet.files.FolderLock`).

    Raises:
      fnet.files.FolderInUseError: "run folder X is in use by process P".
    """
    return files.FolderLock(folder, what="run folder")


def clear(folder) -> None:
    """Delete everything in the run folder ``folder`` except its lock file (never following links).

    Call it only on a :data:`RUN` folder whose :func:`lock` this process holds.
    """
    if inspect(folder) != RUN:
        raise RunFolderError(f"{folder} is not an fnet run folder (no {MARKER}); refusing to empty it")
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
