"""fnet.interrupt: Ctrl-C at any moment (during the jax import, during compilation, between and
during epochs, during a checkpoint write) exits with status 130 and the one line
`fnet: interrupted`: no traceback, no crash. The checkpoint of the last completed epoch stays
loadable and `--resume` continues bit for bit. Real processes, real SIGINT."""

import json
import os
import signal
import time
import tomllib
from pathlib import Path

import chex
import pytest
from _cli_helpers import SMALL, fnet_process, python_process

from fnet import checkpoint


def _interrupt_when(proc, line_startswith: str | None, delay: float = 0.0):
    """Send SIGINT once stdout shows a line starting with ``line_startswith`` (or, for None, once
    the process has begun to import jax: jaxlib's first shared library is mapped into it)."""
    if line_startswith is None:
        _wait_for_jaxlib(proc)
    else:
        while True:
            line = proc.stdout.readline()
            assert line, f"the process ended before printing {line_startswith!r}: {proc.stderr.read()}"
            if line.startswith(line_startswith):
                break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _wait_for_jaxlib(proc):
    # A moment, not a fixed delay: under load the interpreter's own start can take longer than any
    # delay, and an interrupt before any script runs is the interpreter's, not fnet's, to handle.
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():
        pytest.skip("needs /proc/PID/maps to see when the jax import starts")
    while "/jaxlib/" not in maps.read_text():
        assert proc.poll() is None, f"the process ended before importing jax: {proc.stderr.read()}"
        time.sleep(0.005)


@pytest.mark.parametrize("moment, wait_for", [
    ("jax-import", None),           # the command imports jax first thing after parsing its options
    ("compilation", "training "),   # printed just before the first epoch is compiled
], ids=["during-jax-import", "during-compilation"])
def test_interrupt_before_the_first_epoch(tmp_path, moment, wait_for):
    out = tmp_path / "run"
    options = [o for o in SMALL if o != "--quiet"]
    code, err = _interrupt_when(fnet_process("train", *options, "--out", str(out)), wait_for)
    assert (code, err) == (130, "fnet: interrupted\n")
    assert not (out / "checkpoint.safetensors").exists()


def _console_script_process(env):
    """What the installed ``fnet`` script does: import pyproject's entry point and call it."""
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["fnet"].split(":")
    return python_process("-c", f"import sys; from {module} import {function}; sys.exit({function}())", "--help", env=env)


@pytest.mark.parametrize("start", [lambda env: fnet_process("--help", env=env), _console_script_process],
                         ids=["python -m fnet", "console script"])
def test_interrupt_while_the_command_itself_is_imported(tmp_path, start):
    # The handler is set before fnet.cli and its imports load (they took over 0.3 s on a loaded
    # machine, and an interrupt then printed a KeyboardInterrupt traceback): the entry point is
    # run with the command's import slowed down, and interrupted in the middle of it.
    slow_import = tmp_path / "sitecustomize.py"
    slow_import.write_text("import time, builtins\n_real = builtins.__import__\n"
                           "def _slow(name, *a, **k):\n"
                           "    if name == 'fnet.cli':\n        print('importing fnet.cli', flush=True)\n"
                           "        for _ in range(300): time.sleep(0.1)\n"  # in steps: a signal can land before a sleep starts
                           "    return _real(name, *a, **k)\nbuiltins.__import__ = _slow\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    code, err = _interrupt_when(start(env), "importing fnet.cli")
    assert (code, err) == (130, "fnet: interrupted\n")


def test_interrupt_during_training_keeps_a_checkpoint_that_resumes_bitwise(tmp_path):
    options = ["--data", "digits", "--hidden", "16", "--batch-size", "128", "--epochs", "60"]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    code, err = _interrupt_when(fnet_process("train", *options, "--out", str(cut)), "[", delay=0.05)
    assert (code, err) == (130, "fnet: interrupted\n")
    done = checkpoint.load_metadata(cut / "checkpoint.safetensors")["epoch"]  # loadable: a complete epoch
    assert 1 <= done < 60
    # Subprocesses again: the test process runs in float64, the command in float32.
    runs = [fnet_process("train", *options, "--quiet", "--out", str(d), *extra) for d, extra in ((cut, ["--resume"]), (whole, []))]
    assert [p.wait(timeout=120) for p in runs] == [0, 0], [p.stderr.read() for p in runs]
    h_cut, h_whole = (json.loads((d / "history.json").read_text()) for d in (cut, whole))
    assert h_cut["train_loss"] == h_whole["train_loss"] and h_cut["val_acc"] == h_whole["val_acc"]
    a, b = (checkpoint.load(d / "checkpoint.safetensors")["params"] for d in (cut, whole))
    chex.assert_trees_all_equal(a, b)
