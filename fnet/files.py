"""Safe file writes: every file fnet writes goes through :func:`atomic_open`.

A write never follows a link and never leaves a half-written file under the final name:

1. the data go to a NEW temporary file beside the target, ``.<name>.<8 hex digits>.tmp``, created
   with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so a file or symlink planted under any name is never
   opened, let alone written through);
2. the temporary is flushed and fsynced, then renamed over the target with ``os.replace``, which
   replaces a symlink planted at the target itself instead of writing to where it points;
3. the folder is fsynced so that the rename survives a crash (best effort).

A write interrupted before step 2 (an exception, SIGKILL, a full disk) leaves the previous file
untouched and at most a stale temporary, which :func:`remove_stale_temporaries` deletes at the
next start in that folder. The downloader's partial files (``.<name>.<hex>.part``) follow the same
pattern.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Callable

TEMP_SUFFIX = ".tmp"
PART_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.(tmp|part)$")


def create_temporary(folder, name: str, suffix: str = TEMP_SUFFIX) -> tuple[int, Path]:
    """Create a new, empty file ``folder/.<name>.<8 hex>.<suffix>`` that no one else has opened.

    Returns:
      ``(fd, path)``: a file descriptor open for writing and the file's path. The file has the
      permissions of a plain ``open()`` (0666 minus the umask).

    Raises:
      OSError: the folder is missing or not writable.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = Path(folder) / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # a 1-in-4-billion clash (or a planted name): draw another
            continue


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", *, encoding: str | None = None):
    """Open a temporary beside ``path`` for writing; on a clean exit it replaces ``path``.

    >>> import json, pathlib, tempfile
    >>> from fnet.files import atomic_open
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "config.json"
    ...     with atomic_open(path, "w") as f:
    ...         json.dump({"learning_rate": 0.1}, f)
    ...     print(path.read_text(), sorted(p.name for p in path.parent.iterdir()))
    {"learning_rate": 0.1} ['config.json']

    Args:
      path: the final file; its folder must exist. A symlink at ``path`` is replaced, never
        followed.
      mode: "wb" (default) or "w" (text, ``encoding`` default UTF-8).

    On an exception inside the block the temporary is deleted and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    fd, tmp = create_temporary(path.parent, path.name)
    try:
        if mode == "w":
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8")
        else:
            f = os.fdopen(fd, "wb")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # e.g. a full disk on write: say which file could not be written
            raise OSError(e.errno, f"{e.strerror or e}; {path} was not written (left as it was)", str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through :func:`atomic_open`."""
    with atomic_open(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON through :func:`atomic_write` (values JSON cannot hold, such
    as paths, are written as their ``str``)."""
    atomic_write(path, json.dumps(obj, indent=1, default=str) + "\n")


def fsync_dir(folder) -> None:
    """Make renames in ``folder`` durable; not every platform can open a folder, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """True for the names :func:`create_temporary` makes (``.<name>.<8 hex>.tmp`` or ``.part``)."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temporaries(folder) -> list[str]:
    """Delete the temporaries a killed process left in ``folder`` (never following links).

    Only names matching :func:`is_temporary` are touched, and only regular files or symlinks (a
    symlink is removed itself, not its target). Call it while holding the folder's lock, so that
    no live writer's temporary is removed.

    Returns:
      The names removed.
    """
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_temporary(entry.name) and (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(entry.name)
    return removed


LOCK_NAME = ".fnet.lock"


class FolderInUseError(RuntimeError):
    """Another process holds the folder's :class:`FolderLock`."""


class FolderLock:
    """An exclusive advisory lock on a folder (``fcntl.flock`` on ``<folder>/.fnet.lock``).

    The lock file is opened without following links and holds the owner's process id, so that a
    second process can say who holds it. The kernel releases the lock when the process exits,
    however it exits (SIGKILL included); the file itself stays, harmless.

    Args:
      folder: an existing folder.
      wait: block until the lock is free (True), or raise :class:`FolderInUseError` at once.
      what: how the folder is named in messages, e.g. "run folder".

    Raises:
      FolderInUseError: "<what> X is in use by process P" (only with ``wait=False``).
      OSError: the lock file cannot be created, or is a symbolic link.
    """

    def __init__(self, folder, *, wait: bool = False, what: str = "folder"):
        self.folder = Path(folder)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.folder / LOCK_NAME, flags, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OSError(e.errno, f"{what} {self.folder}: {LOCK_NAME} is a symbolic link; refusing to use it") from None
            raise
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self._fd)
            raise FolderInUseError(f"{what} {self.folder} is in use by process {owner}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)

    def release(self) -> None:
        """Release the lock (it is also released when the process exits)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------------------------
# Folders fnet writes into: the one set of rules for run folders, experiment outputs and the
# compilation cache.

MISSING, EMPTY, OWNED, OTHER = "missing", "empty", "owned", "other"
#: The marker of a folder fnet created (or adopted) for its experiment outputs or its cache.
FOLDER_MARKER = ".fnet-folder.json"
_FOLDER_FORMAT = "fnet.folder"


class UnsafeFolderError(ValueError):
    """A folder fnet refuses to write into (or to write into the way it was asked to)."""


def refuse_special(path, *, option: str, what: str, example: str) -> Path:
    """Refuse a path that fnet must never write into or empty: the filesystem root, the home
    folder, the current folder and every ancestor of it, compared after resolving links.

    Args:
      path: the folder as the user gave it (``~`` is expanded).
      option: how the user gave it, for the message, e.g. "--out" or "FNET_CACHE_DIR".
      what: what fnet would make of it, e.g. "a run folder".
      example: a safe alternative, e.g. "--out runs/my-run".

    Returns:
      ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
      UnsafeFolderError: "<option> <path>: refusing to use <why> (<resolved>) as <what>; ...".
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
    raise UnsafeFolderError(f"{option} {path}: refusing to use {why} ({resolved}) as {what}; name a new folder, "
                            f"e.g. {example}")


def folder_state(path, is_owned: Callable[[Path], bool]) -> str:
    """What ``path`` is to fnet: :data:`MISSING`; :data:`EMPTY` (a folder holding nothing but
    fnet's lock file and temporaries, e.g. one a killed process left); :data:`OWNED` (a folder
    for which ``is_owned(path)`` is true, i.e. that holds fnet's marker); :data:`OTHER` (a file,
    a symlink, or a folder with a user's files)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return MISSING
    if path.is_symlink() and not path.is_dir() or not path.is_dir():
        return OTHER
    if is_owned(path):
        return OWNED
    leftovers = [n for n in os.listdir(path) if n != LOCK_NAME and not is_temporary(n)]
    return OTHER if leftovers else EMPTY


def read_folder_marker(path, kind: str) -> dict | None:
    """The record of the :data:`FOLDER_MARKER` of ``path`` if it marks a folder of ``kind``."""
    try:
        record = json.loads(read_regular(Path(path) / FOLDER_MARKER, limit=1 << 20, what="folder marker"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != _FOLDER_FORMAT or record.get("kind") != kind:
        return None
    return record


def write_folder_marker(path, kind: str, written=()) -> None:
    """Mark ``path`` as fnet's folder of ``kind``; ``written`` lists the files fnet wrote there."""
    write_json(Path(path) / FOLDER_MARKER, {"format": _FOLDER_FORMAT, "kind": kind, "written": sorted(written)})


def claim_folder(path, *, kind: str, option: str, what: str, example: str,
                 adopt: Callable[[list], bool] | None = None) -> Path:
    """Make ``path`` a folder that fnet owns for ``kind`` ("experiments", "cache"), or check that
    it is one, before anything is written there.

    - :func:`refuse_special` paths are refused;
    - a missing folder is created (with its parents) and marked; an empty one is marked;
    - a folder marked for ``kind`` is used as it is;
    - any other folder is refused, unless ``adopt(names)`` accepts its entries (e.g. a cache
      folder that an earlier fnet filled with JAX's entries only), and then marked.

    Raises:
      UnsafeFolderError: naming the option, the path and why.
    """
    path = refuse_special(path, option=option, what=what, example=example)
    state = folder_state(path, lambda p: read_folder_marker(p, kind) is not None)
    if state == OTHER and path.is_dir() and not path.is_symlink() and adopt is not None and adopt(os.listdir(path)):
        state = EMPTY
    if state == OTHER:
        kind_of = "a file" if path.exists() and not path.is_dir() else "a symbolic link" if path.is_symlink() else \
            f"a folder that fnet did not create (no {FOLDER_MARKER})"
        raise UnsafeFolderError(f"{option} {path}: refusing to write into {kind_of}; name a new or empty folder, "
                                f"e.g. {example}")
    if state == MISSING:
        path.mkdir(parents=True, exist_ok=True)
    if state != OWNED:
        write_folder_marker(path, kind)
    return path


def read_regular(path, *, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, read only if it is one and holds at most ``limit``
    bytes: a symlink, FIFO, device or folder is refused before anything is read (a FIFO would
    block, a device could never end), and so is a file over the limit.

    Raises:
      OSError: the file cannot be opened (missing, a symlink: ELOOP).
      ValueError: "<what> <path> is not a regular file" / "... holds N bytes, more than ...".
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{what} {path} is not a regular file; refusing to read it")
        if info.st_size > limit:
            raise ValueError(f"{what} {path} holds {info.st_size:,} bytes, more than the {limit:,} such a file "
                             "can hold; refusing to read it")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while being read
        raise ValueError(f"{what} {path} grew past {limit:,} bytes while being read; refusing it")
    return data
