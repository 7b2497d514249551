"""JAX's persistent compilation cache, as fnet's commands use it.

Compiling is most of a short run's time (a digits run compiles a few dozen small programs), and
the same run compiles the same programs again the next time. With the cache on, every compiled
XLA program is also written to a cache folder and read back, instead of being compiled, by the
next process that builds the same program (``jax_compilation_cache_dir``).

- Where: ``$FNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/fnet/jax``, else ``~/.cache/fnet/jax``:
  a user's cache folder, never the source tree.
- On by default for the ``fnet`` command; off with ``fnet --no-compile-cache ...`` or
  ``FNET_COMPILE_CACHE=0``. The library itself never turns it on (a program that imports fnet
  decides for itself; call :func:`enable` to opt in).
- Every program is cached, however short its compilation (JAX's default skips those under 1 s,
  which are nearly all of fnet's).
- Safe when processes share it, in the sense that sharing never fails a run or gives a wrong
  program: JAX writes an entry in place (no rename; jaxlib 0.10's ``LRUCache.put``), so a
  process may read an entry another one is still writing, or one a killed process left half
  written; deserializing it then fails, JAX warns, and the program is compiled as if it were
  not cached (reported below). A half-written entry is never rewritten (JAX skips keys that
  exist): delete the cache folder to get rid of one.
- A cache that cannot be used never fails a run: an unwritable folder is reported once and the
  run goes on uncached; an unreadable (corrupted) entry is reported once and compiled again.
- fnet writes its cache only into a folder it owns (:func:`fnet.files.claim_folder`): a new or
  empty folder, one it marked before, or one holding nothing but JAX cache entries (an earlier
  fnet's cache). ``/``, ``~``, the current folder and a folder with other files are refused
  (reported once; the run goes on uncached), so ``FNET_CACHE_DIR`` can never scatter entries
  among a user's files.
- Bounded reads: JAX reads an entry whole and cannot be interrupted while it does, so before
  JAX sees the folder, fnet removes every entry that is not a regular file (a symlink to
  ``/dev/urandom`` or a FIFO would make the read endless) or is larger than
  :data:`MAX_ENTRY_BYTES`. The folder is fnet's, so nothing of a user's is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import warnings
from pathlib import Path

from fnet import files

ENV_DIR = "FNET_CACHE_DIR"
ENV_SWITCH = "FNET_COMPILE_CACHE"
_JAX_CACHE_WARNINGS = r"Error (reading|writing) persistent compilation cache entry"
_reported: set[str] = set()
#: The largest cache entry fnet lets JAX read. A compiled fnet program is kilobytes to a few MB;
#: anything far larger was not written by JAX for fnet.
MAX_ENTRY_BYTES = 256 << 20
#: JAX's entry names (jaxlib 0.10's LRUCache): "<program>-<sha256>-cache" and "...-atime".
_ENTRY_NAME = re.compile(r"^.+-[0-9a-f]{64}-(cache|atime)$")


def default_dir() -> Path:
    """``$FNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/fnet/jax``, else ``~/.cache/fnet/jax``."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "fnet" / "jax"


def wanted() -> bool:
    """False when ``$FNET_COMPILE_CACHE`` is "0", "false", "no" or "off" (case-insensitive)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _note(kind: str, message: str) -> None:
    """Print one line to stderr, once per process and kind."""
    if kind not in _reported:
        _reported.add(kind)
        print(f"fnet: note: {message}", file=sys.stderr)


def _only_cache_entries(names: list) -> bool:
    """True for a folder an earlier fnet filled: JAX's entries and fnet's hidden files only."""
    return all(_ENTRY_NAME.match(n) or n.startswith(".") for n in names)


def _remove_unsafe_entries(folder: Path) -> None:
    """Delete the entries of fnet's own cache folder that JAX could not read in bounded time:
    anything under an entry's name but a regular file (links are never followed), and files over
    :data:`MAX_ENTRY_BYTES`."""
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not _ENTRY_NAME.match(entry.name):
                continue  # JAX reads nothing else (fnet's marker, lock and probe files)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_ENTRY_BYTES:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(entry.path)  # never follows links inside
                removed.append(entry.name)
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
    if removed:
        _note("unsafe-entries", f"removed {len(removed)} entries from the compilation cache {folder} that were not "
                                f"regular files or held over {MAX_ENTRY_BYTES:,} bytes (e.g. {removed[0]})")


def _usable(folder: Path) -> str | None:
    """Why ``folder`` cannot hold the cache, or None: it must be a folder fnet owns (made one if
    new or empty) that we can write to."""
    try:
        files.claim_folder(folder, kind="cache", option=ENV_DIR if os.environ.get(ENV_DIR) else "cache folder",
                           what="fnet's compilation cache", example=f"{ENV_DIR}=~/.cache/fnet/jax",
                           adopt=_only_cache_entries)
        _remove_unsafe_entries(folder)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except files.UnsafeFolderError as e:
        return str(e)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def enable(folder=None) -> Path | None:
    """Turn JAX's persistent compilation cache on for this process, in ``folder`` (default
    :func:`default_dir`). Call it before the first compilation.

    Returns:
      The folder in use, or None when it cannot be used (reported once on stderr; the process
      then compiles as usual).
    """
    import jax

    folder = Path(folder).expanduser() if folder is not None else default_dir()
    why = _usable(folder)
    if why is not None:
        _note("unwritable", f"the compilation cache {folder} cannot be used ({why}); running without it")
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _report_bad_entries_once()
    return folder


def report_bad_entry(text: str) -> bool:
    """If ``text`` holds JAX's warning about an unreadable or unwritable cache entry, print fnet's
    one note for it (once per process) and return True; else return False."""
    if "persistent compilation cache entry" not in text:
        return False
    what = "read" if "reading" in text else "written"
    _note(f"entry-{what}", f"a compilation cache entry could not be {what} ({text.split(': ', 1)[-1][:120]}); "
                           "compiling without it")
    return True


def _report_bad_entries_once() -> None:
    """Replace JAX's warning about an unreadable or unwritable cache entry (one multi-line warning
    per entry) by one fnet note per process; the entry is compiled as if it were not cached."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not report_bad_entry(str(message)):
            previous(message, category, filename, lineno, file, line)

    if getattr(warnings.showwarning, "__fnet_cache__", False):
        return
    show.__fnet_cache__ = True
    warnings.showwarning = show
    warnings.filterwarnings("always", message=_JAX_CACHE_WARNINGS)
