"""Data for the tests: a random classification problem, skipping (or failing) when the real
MNIST/Fashion-MNIST files are missing (the ``shared_data_dir`` fixture itself is in conftest.py),
and a guard for tests that plant a FIFO where a data file is expected.

The files are found only through ``$FNET_DATA`` (a folder with ``mnist/`` and ``fashion-mnist/``
sub-folders, or with the files themselves). Without them the tests are skipped, unless
``FNET_REQUIRE_DATA=1``, in which case they fail: CI sets it so that a missing data path cannot
silently turn the real-data checks into skips.
"""

import contextlib
import os
import threading

import numpy as np
import pytest

def classification(n: int, d: int, c: int, *, seed: int = 0, dtype=np.float32):
    """A random classification problem drawn with NumPy (nothing compiled): features of shape
    ``(n, d)`` from N(0, 1) in ``dtype`` and int32 labels of shape ``(n,)`` uniform in ``[0, c)``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, c, n).astype(np.int32)


def skip_or_fail(reason: str):
    """Skip the test with ``reason``, or fail with it when ``FNET_REQUIRE_DATA=1``."""
    if os.environ.get("FNET_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason} (FNET_REQUIRE_DATA=1, so this is an error rather than a skip)")
    pytest.skip(reason)


@contextlib.contextmanager
def unblocked_fifo(fifo, after: float = 10.0):
    """Within the block, a read that blocks on the FIFO ``fifo`` ends after ``after`` seconds: a
    writer opens and closes it, so the reader sees end-of-file and the test fails instead of
    hanging. With no reader the writer's open fails at once (ENXIO) and nothing happens."""

    def end_blocked_reads():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    timer = threading.Timer(after, end_blocked_reads)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
