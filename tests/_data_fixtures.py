"""Helpers for tests that need the real MNIST/Fashion-MNIST files (the ``shared_data_dir``
fixture itself is in conftest.py).

The files are found only through ``$FNET_DATA`` (a folder with ``mnist/`` and ``fashion-mnist/``
sub-folders, or with the files themselves). Without them the tests are skipped, unless
``FNET_REQUIRE_DATA=1``, in which case they fail: CI sets it so that a missing data path cannot
silently turn the real-data checks into skips.
"""

import os

import pytest

def skip_or_fail(reason: str):
    """Skip the test with ``reason``, or fail with it when ``FNET_REQUIRE_DATA=1``."""
    if os.environ.get("FNET_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason} (FNET_REQUIRE_DATA=1, so this is an error rather than a skip)")
    pytest.skip(reason)
