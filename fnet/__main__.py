"""The ``fnet`` command's entry point: ``python -m fnet`` and the installed ``fnet`` script.

The Ctrl-C handler is set before the command itself is imported: importing :mod:`fnet.cli` (argparse,
json, dataclasses, ...) takes about 0.1 s, over 0.3 s on a loaded machine, and an interrupt in that
window printed a KeyboardInterrupt traceback. What remains unguarded is the interpreter's own start.
"""

import sys

from fnet import interrupt


def run() -> int:
    """Run the ``fnet`` command on ``sys.argv``; returns its exit status (see :func:`fnet.cli.main`)."""
    interrupt.install()
    from fnet.cli import main  # after the handler, on purpose

    return main()


if __name__ == "__main__":
    sys.exit(run())
