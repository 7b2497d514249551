"""Test configuration: float64 is enabled for the whole suite so that gradient checks can reach
1e-7; tests that exercise float32 create float32 arrays explicitly. With ``$CI`` set, hypothesis
is derandomized. The whole session (every xdist worker and every ``fnet`` subprocess the tests
start) shares one persistent compilation cache in a temporary folder, so that the many runs that
compile the same programs compile them once.

The suite's programs are tiny and each runs a few times, so the suite is compile-bound: it
compiles with the XLA:CPU options of the gradient check's programs
(:data:`fnet.xla_options.CHECK_COMPILER_OPTIONS`: the elemental emitter at LLVM -O0, which gives the
same results to rounding), set through ``XLA_FLAGS`` so that the subprocesses compile with them
too. That halves the suite's time (584 -> 304 s on 2 cores). ``FNET_TEST_XLA_DEFAULTS=1`` runs it
with XLA's default options instead (it passes both ways)."""

import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest
from _cli_helpers import train as cli_train
from _data_fixtures import skip_or_fail
from hypothesis import settings

from fnet import compile_cache
from fnet.xla_options import CHECK_COMPILER_OPTIONS

jax.config.update("jax_enable_x64", True)

# XLA reads XLA_FLAGS when the first program compiles; nothing has compiled yet at this point.
if not os.environ.get("FNET_TEST_XLA_DEFAULTS"):
    _flags = os.environ.get("XLA_FLAGS", "").split()
    _flags += [f"--{k}={str(v).lower()}" for k, v in CHECK_COMPILER_OPTIONS.items() if f"--{k}" not in " ".join(_flags)]
    os.environ["XLA_FLAGS"] = " ".join(_flags)

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
def bench_peers():
    """The peer libraries the benchmarks compare against (the ``bench`` extra): ``{name: module}``
    for flax, optax and torch; the test is skipped when one is not installed."""
    return {name: pytest.importorskip(name) for name in ("flax", "optax", "torch")}


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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished ``fnet train`` run of ``_cli_helpers.SMALL``, one per test module; the tests that
    use it must leave it as it was (they compare snapshots)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli_train(out) == 0
    return out
