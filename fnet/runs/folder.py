"""The run folder itself: its kinds, marker and lock, how a run starts in it, how ``--overwrite``
replaces a run through a staging folder, and the outputs written at the end (see :mod:`fnet.runs`)."""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable

import fnet
from fnet import files, plots, train
from fnet.runs.config import CONFIG_NAME, JSON_LIMIT, RunOptions, parse_options, read_config

MARKER = "fnet-run.json"
LOCK_NAME = files.LOCK_NAME
FORMAT = "fnet.run"
VERSION = 1
HISTORY_NAME, RESULTS_NAME, CURVES_NAME = "history.json", "results.json", "curves.png"

MISSING, EMPTY, RUN, OTHER = files.MISSING, files.EMPTY, files.OWNED, files.OTHER
_STAGING = re.compile(r"^\.(?P<name>.+)\.staging-[0-9a-f]{8}$")


def check_out_path(path) -> Path:
    """Refuse a path that must never become (or be replaced as) a run folder: the filesystem
    root, the home folder, the current folder and every ancestor of it (``--out .``, ``--out ..``,
    ``--out ~``, ``--out /``), compared after resolving links (:func:`fnet.files.refuse_special`).

    Returns:
      ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
      fnet.files.UnsafeFolderError: "--out X: refusing to use ... as a run folder; ...".
    """
    return files.refuse_special(path, option="--out", what="a run folder", example="--out runs/my-run")


def inspect(path) -> str:
    """What ``path`` is: :data:`MISSING`, :data:`EMPTY` (an empty folder, or one that holds only
    fnet's lock file and temporaries), :data:`RUN` (a folder with a valid marker) or :data:`OTHER`
    (anything else: a file, a foreign folder); see :func:`fnet.files.folder_state`."""
    return files.folder_state(path, lambda folder: read_marker(folder) is not None)


def check_out_kind(out, kind: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is touched, an output path of kind ``kind`` (:func:`inspect`) that
    ``--resume`` / ``--overwrite`` (or neither) may not use; one message naming the path each."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if resume and kind != RUN:
        what = "does not exist" if kind == MISSING else f"is not an fnet run folder (it has no {MARKER})"
        raise ValueError(f"--resume: {out} {what}; there is no run to continue")
    if kind == OTHER:
        raise FileExistsError(f"{out} exists and is not an fnet run folder (it has no {MARKER}); fnet will not write "
                              f"into it{' or delete it' if overwrite else ''}: choose a new --out")
    if kind == RUN and not (resume or overwrite):
        raise FileExistsError(f"output directory {out} already exists; pass --resume to continue it or --overwrite to replace it")


def read_marker(path) -> dict | None:
    """The run record of the run folder ``path``, or None when it has no valid marker."""
    try:
        record = json.loads(files.read_regular(Path(path) / MARKER, limit=JSON_LIMIT, what="run marker"))
    except (OSError, ValueError):  # missing, a link, a FIFO, too large, not JSON
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


class Lease:
    """A run folder held by this process (:func:`start`), released with :meth:`release`.

    ``folder`` is where the run writes now. When the run replaces another one (``--overwrite``),
    that is first a staging folder beside it, and ``replaces`` the old run's folder; once the new
    run's first checkpoint is in ``folder``, :meth:`commit` puts the new run in the old one's place.
    """

    def __init__(self, folder: Path, held: files.FolderLock, replaces: Path | None = None,
                 replaced_lock: files.FolderLock | None = None):
        self.folder, self.replaces = folder, replaces
        self._held, self._replaced_lock = held, replaced_lock

    def commit(self) -> Path:
        """Swap the new run in place of the one it replaces, then delete the old one; returns the
        run folder. A no-op for a run that replaces nothing.

        The swap is one atomic ``renameat2(RENAME_EXCHANGE)`` on Linux
        (:func:`fnet.files.exchange_folders`): a crash at any moment leaves the run folder holding
        either the old run or the new one, whole; the other one, under the staging name, is
        removed at the next start. The lock moves with the new folder (its own ``.fnet.lock``,
        held since it was created), and a process that opened the old lock file meanwhile is
        refused by :class:`fnet.files.FolderLock`'s identity check.

        What remains of a window: a crash between the swap and the deletion leaves the old run
        under the staging name (removed at the next start, or by hand); where renameat2 is missing
        the swap is three renames, and a crash between them leaves the run folder's name free for
        that moment, both runs intact beside it (:func:`fnet.files.exchange_folders`).
        """
        if self.replaces is None:
            return self.folder
        if not (self.folder / train.CHECKPOINT_NAME).is_file():
            raise RuntimeError(f"run folder {self.replaces}: the new run is not swapped in before its first checkpoint")
        files.exchange_folders(self.replaces, self.folder)
        old, self.folder, self.replaces = self.folder, self.replaces, None
        shutil.rmtree(old, ignore_errors=True)  # what is left has the staging name: removed at the next start
        self._replaced_lock.release()
        return self.folder

    def release(self) -> None:
        """Release the lock(s); a staging folder never committed (an error before the new run's
        first checkpoint) is deleted, and the old run stays as it was."""
        if self.replaces is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._replaced_lock.release()
            self.replaces = None
        self._held.release()


def _staging_folders(out: Path) -> list[Path]:
    """The staging folders of ``out`` in its parent (``.<name>.staging-<8 hex>``, real folders)."""
    found = []
    with os.scandir(out.parent) as entries:
        for entry in entries:
            match = _STAGING.match(entry.name)
            if match and match["name"] == out.name and entry.is_dir(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def _remove_stale_staging(out: Path) -> None:
    """Delete the staging folders that a killed ``--overwrite`` of ``out`` left (call it holding
    ``out``'s lock); one whose own lock is held belongs to a live process and is left alone."""
    for folder in _staging_folders(out.resolve()):  # where _stage puts them: beside the real folder
        try:
            with files.FolderLock(folder, what="staging folder"):
                shutil.rmtree(folder)
        except (files.FolderInUseError, OSError):
            continue


def _stage(out: Path, held: files.FolderLock, config: dict) -> Lease:
    """A new, locked staging folder beside the run folder ``out`` (whose lock ``held`` is),
    holding the new run's marker and config."""
    real = out.resolve()  # beside the folder itself, where a rename stays on one file system
    staging = real.parent / f".{real.name}.staging-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        own = lock(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    lease = Lease(staging, own, replaces=real, replaced_lock=held)
    try:
        write_marker(staging, fnet.__version__)
        files.write_json(staging / CONFIG_NAME, config)
    except BaseException:
        lease.release()
        raise
    return lease


def start(out, kind: str, *, resume: bool, overwrite: bool, stored: RunOptions | None, config: dict,
          check_resume: Callable[[Path], None] | None = None) -> Lease:
    """Create (or reuse) the run folder, lock it for this process, and leave it ready: stale
    temporaries and staging folders removed, marker and config written (for ``overwrite`` of a
    run, into a staging folder that replaces it later, see :class:`Lease`). The first side effects
    of ``fnet train``, done only once every option, every size and the data were validated.

    Args:
      out: the run folder (:func:`check_out_path`); kind: what :func:`inspect` found there.
      resume, overwrite: the command's flags, already checked by :func:`check_out_kind`.
      stored: the resumed run's options as read before (None for a new run); a change of
        config.json since then is refused.
      config: the new config.json (:func:`fnet.runs.new_config`).
      check_resume: for ``resume``, called with the folder under the lock before config.json is
        written, e.g. :func:`fnet.runs.check_resumable`; whatever it raises leaves the folder as it was.

    Returns:
      the :class:`Lease`; the caller releases it when the run ends.
    """
    out = Path(out)
    if kind == MISSING:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.mkdir()
        except FileExistsError:  # another process created it since: look again, under the lock
            pass
    held = lock(out)
    try:
        now = inspect(out)
        if now != kind and not (kind == MISSING and now == EMPTY):
            check_out_kind(out, now, resume=resume, overwrite=overwrite)  # it changed since it was validated
        if resume and parse_options(read_config(out), out / CONFIG_NAME) != stored:
            raise ValueError(f"--resume: {out / CONFIG_NAME} changed while this run was starting; try again")
        _remove_stale_staging(out)
        files.remove_stale_temporaries(out)
        if resume and check_resume is not None:
            check_resume(out)
        if overwrite and now == RUN:
            return _stage(out, held, config)
        if not resume or read_marker(out) is None:
            write_marker(out, fnet.__version__)
        files.write_json(out / CONFIG_NAME, config)
    except BaseException:
        held.release()
        raise
    return Lease(out, held)


def write_outputs(run_dir, history: dict) -> list[str]:
    """Write ``history.json`` and, after at least one epoch (a language model's: one evaluation),
    ``curves.png`` (when matplotlib is installed); returns the names written."""
    train.save_history(os.path.join(run_dir, HISTORY_NAME), history)
    written = [HISTORY_NAME]
    if history.get("epoch", history.get("step")) and plots.training_curves(history, os.path.join(run_dir, CURVES_NAME)):
        written.append(CURVES_NAME)
    return written


def write_results(run_dir, results: dict) -> None:
    """Write ``results.json``: the best epoch and its metrics on the test set (``{"best_epoch",
    "test"}``), or a language model's best step and validation loss."""
    files.write_json(Path(run_dir) / RESULTS_NAME, results)


def missing_outputs(run_dir) -> list[str]:
    """The outputs of a finished run (history, curves, results) missing from ``run_dir``."""
    return [n for n in (HISTORY_NAME, CURVES_NAME, RESULTS_NAME) if not (Path(run_dir) / n).exists()]
