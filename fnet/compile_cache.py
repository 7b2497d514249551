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
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ENV_DIR = "FNET_CACHE_DIR"
ENV_SWITCH = "FNET_COMPILE_CACHE"
_JAX_CACHE_WARNINGS = r"Error (reading|writing) persistent compilation cache entry"
_reported: set[str] = set()


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


def _usable(folder: Path) -> str | None:
    """Why ``folder`` cannot hold the cache, or None: it must be (made) a folder we can write to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
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
