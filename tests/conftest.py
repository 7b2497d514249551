"""Test configuration: float64 is enabled for the whole suite so that gradient checks can reach
1e-7; tests that exercise float32 create float32 arrays explicitly. With ``$CI`` set, hypothesis
is derandomized."""

import os
from pathlib import Path

import jax
import pytest
from _data_fixtures import skip_or_fail
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

# CI runs the same hypothesis examples every time, so a red run is reproducible (and not luck).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
