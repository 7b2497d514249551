"""Fixtures for tests that need the real MNIST/Fashion-MNIST files.

The files are found only through ``$FNET_DATA`` (a folder with ``mnist/`` and ``fashion-mnist/``
sub-folders, or with the files themselves). Without them the tests are skipped, unless
``FNET_REQUIRE_DATA=1``, in which case they fail: CI sets it so that a missing data path cannot
silently turn the real-data checks into skips.
"""

import os
from pathlib import Path

import pytest


def skip_or_fail(reason: str):
    """Skip the test with ``reason``, or fail with it when ``FNET_REQUIRE_DATA=1``."""
    if os.environ.get("FNET_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason} (FNET_REQUIRE_DATA=1, so this is an error rather than a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder named by ``$FNET_DATA``; skips (or fails) when it is unset or missing."""
    value = os.environ.get("FNET_DATA")
    if not value:
        skip_or_fail("FNET_DATA is not set; point it at a folder with mnist/ and fashion-mnist/ IDX files")
    path = Path(value).expanduser()
    if not path.is_dir():
        skip_or_fail(f"FNET_DATA={value} is not a directory")
    return path
