"""Test configuration: float64 is enabled for the whole suite so that gradient checks can reach
1e-7; tests that exercise float32 create float32 arrays explicitly. With ``$CI`` set, hypothesis
is derandomized. The whole session (every xdist worker and every ``fnet`` subprocess the tests
start) shares one persistent compilation cache in a temporary folder, so that the many runs that
compile the same programs compile them once."""

import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest
from _data_fixtures import skip_or_fail
from hypothesis import settings

from fnet import compile_cache

jax.config.update("jax_enable_x64", True)

# CI runs the same hypothesis examples every time, so a red run is reproducible (and not luck).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_configure(config):
    # In the controller (and a run without xdist): one cache folder, inherited by the workers
    # and by the subprocesses through the environment.
    if not hasattr(config, "workerinput") and "FNET_CACHE_DIR" not in os.environ:
        os.environ["FNET_CACHE_DIR"] = config._fnet_cache = tempfile.mkdtemp(prefix="fnet-test-cache-")
    compile_cache.enable()


def pytest_unconfigure(config):
    if getattr(config, "_fnet_cache", None):
        shutil.rmtree(config._fnet_cache, ignore_errors=True)


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
