"""Ctrl-C in the ``fnet`` command: one line, ``fnet: interrupted``, and exit status 130, at any moment.

This module imports only what the interpreter has loaded before any script runs (``os``, ``signal``,
``sys``), so that the command's entry point (:mod:`fnet.__main__`) can set the handler before
anything else is imported.
"""

import os
import signal
import sys


def exit_on_interrupt(signum, frame) -> None:
    """The SIGINT handler: flush stdout, write ``fnet: interrupted`` to stderr, exit with status 130.

    ``os._exit`` skips the interpreter's shutdown, which is what crashed (SIGSEGV) when an
    interrupt hit XLA's compiler threads and printed "Exception ignored in ZipFile.__del__" during
    a checkpoint write. Nothing is lost: every file is written to a temporary and renamed into
    place (:mod:`fnet.files`), so the last complete checkpoint stays, and the stale temporary is
    removed at the next start; the run folder's lock dies with the process.
    """
    del signum, frame
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - the interrupt may have hit a write to stdout itself
        pass
    os.write(2, b"fnet: interrupted\n")
    os._exit(130)


def install():
    """Set :func:`exit_on_interrupt` as the SIGINT handler (main thread only); returns the previous one."""
    return signal.signal(signal.SIGINT, exit_on_interrupt)
