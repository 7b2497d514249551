"""One process per run folder: an advisory lock held for the whole run, tested with real
processes (issue: two `fnet train` on one --out left config.json as invalid JSON; two `--resume`
mixed one process's config with the other's checkpoint)."""

import json
import subprocess
import sys
import time

from _cli_helpers import SMALL, fnet_process

from fnet import checkpoint, files


def _holder(folder):
    """A second process that takes the folder's lock and keeps it until its stdin closes."""
    code = ("import sys; from fnet import files; lock = files.FolderLock(sys.argv[1], what='run folder'); "
            "print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_told_who_holds_the_run(tmp_path):
    out = tmp_path / "run"
    first = fnet_process("train", *SMALL, "--out", str(out))
    assert first.wait(timeout=120) == 0, first.stderr.read()
    before = (out / "checkpoint.safetensors").read_bytes()
    holder = _holder(out)
    try:
        second = fnet_process("train", *SMALL, "--out", str(out), "--resume", "--epochs", "4")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2
        assert err.strip() == f"fnet: error: run folder {out} is in use by process {holder.pid}"
        assert (out / "checkpoint.safetensors").read_bytes() == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_two_runs_started_together_on_one_folder(tmp_path):
    out = tmp_path / "run"
    procs = [fnet_process("train", *SMALL, "--out", str(out)) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2)
    assert ("is in use by process" in err) or ("already exists" in err), err
    config = json.loads((out / "config.json").read_text())  # valid JSON, one process's
    assert config["args"]["hidden"] == [16]
    assert checkpoint.load_metadata(out / "checkpoint.safetensors")["epoch"] == 2


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = _holder(tmp_path)
    holder.kill()
    holder.wait(timeout=10)
    t0 = time.time()
    with files.FolderLock(tmp_path, what="run folder"):
        assert time.time() - t0 < 5
