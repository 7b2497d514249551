"""fnet.runs: the run folder of ``fnet train``, through the command.

- ownership: fnet acts only on folders that carry its marker, and never on ``.``, ``~``, ``/`` or
  an ancestor of the current folder; an ordinary folder is never written, resumed or replaced;
- one process per run folder: an advisory lock held for the whole run (real processes), so two
  runs never interleave their config.json or checkpoints;
- writes never follow links, and a failed write leaves the old file and no temporary;
- resume and overwrite: ``--resume`` changes nothing until the checkpoint was loaded and checked
  (structure, shapes, finite values, epochs done); a FIFO planted as config.json or checkpoint is
  refused, not waited on; ``--overwrite`` replaces the old run only once the new run's first
  checkpoint exists (bit for bit the same as a fresh run), and a stale staging folder is removed
  at the next start; resuming a finished run trains no further and regenerates the missing
  outputs."""

import json
import os
import shutil
import subprocess
import sys
import time

import chex
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from _cli_helpers import SMALL, fnet_process, one_line_error, run_fnet, snapshot, staging_folders, train

from fnet import checkpoint, cli, files, mlp, optim, runs
from fnet import train as fnet_train

CHECKPOINT = fnet_train.CHECKPOINT_NAME


@pytest.fixture
def user_folder(tmp_path):
    """An ordinary folder of the user's, holding files named like a run's."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "history.json").write_text("[1, 2, 3]")
    (folder / "notes.txt").write_text("important")
    return folder


@pytest.mark.parametrize("option", [[], ["--resume"], ["--overwrite"]], ids=["plain", "resume", "overwrite"])
def test_a_folder_without_the_marker_is_never_touched(user_folder, option, capsys):
    before = snapshot(user_folder)
    assert train(user_folder, *option) == 2
    line = one_line_error(capsys)
    assert "is not an fnet run folder" in line and runs.MARKER in line
    assert snapshot(user_folder) == before


@pytest.mark.parametrize("out", [".", "..", "~", "/"])
def test_current_folder_its_ancestors_home_and_root_are_refused(out, tmp_path, monkeypatch, capsys):
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    (work / "precious.txt").write_text("keep me")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    assert train(out, "--overwrite") == 2
    assert "refusing to use" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def test_resume_of_a_missing_folder_is_refused_and_creates_nothing(tmp_path, capsys):
    assert train(tmp_path / "nothing", "--resume") == 2
    assert "does not exist; there is no run to continue" in one_line_error(capsys)
    assert not (tmp_path / "nothing").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    assert train(tmp_path / "run", "--resume", "--overwrite") == 2
    assert "exclude each other" in one_line_error(capsys)


def test_a_run_folder_has_the_marker_and_overwrite_replaces_only_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    marker = runs.read_marker(out)
    assert marker["format"] == "fnet.run" and marker["fnet"]
    assert runs.inspect(out) == runs.RUN
    (out / "stray.txt").write_text("in the run folder")
    (tmp_path / "beside.txt").write_text("next to it")
    assert train(out, "--overwrite", "--seed", "2") == 0
    assert not (out / "stray.txt").exists() and (tmp_path / "beside.txt").read_text() == "next to it"
    assert json.loads((out / "config.json").read_text())["args"]["seed"] == 2


def test_an_empty_folder_or_one_left_by_a_killed_start_is_a_fresh_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / files.LOCK_NAME).write_text("12345\n")
    (killed / ".config.json.0123abcd.tmp").write_text("{half")
    assert runs.inspect(empty) == runs.inspect(killed) == runs.EMPTY
    assert train(killed) == 0
    assert sorted(os.listdir(killed)) == sorted([files.LOCK_NAME, runs.MARKER, "config.json", "history.json",
                                                 "checkpoint.safetensors", "results.json", "curves.png"])


def test_stale_temporaries_of_a_killed_run_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    stale = [".checkpoint.safetensors.89abcdef.tmp", ".history.json.00112233.tmp"]
    for name in stale:
        (out / name).write_bytes(b"left by a killed run")
    (out / "keep.tmp").write_text("not a name fnet makes")
    assert train(out, "--resume", "--epochs", "2") == 0
    names = os.listdir(out)
    assert not set(stale) & set(names) and "keep.tmp" in names


# --------------------------------------------------------------------------------------------
# One process per run folder: an advisory lock held for the whole run (real processes)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Writes into a run folder never follow links
# --------------------------------------------------------------------------------------------


def test_planted_symlinks_are_never_written_through(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = ["config.json.tmp", "history.json.tmp", "results.json.tmp", "curves.png", "history.json",
               "results.json", ".config.json.tmp"]
    for name in planted:
        target = outside / f"{name}.target"
        target.write_text("the user's file")
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(target)
    assert train(out, "--resume", "--epochs", "2") == 0
    for name in planted:
        assert (outside / f"{name}.target").read_text() == "the user's file"
    # The links at the final names were replaced by the files themselves.
    for name in ("curves.png", "history.json", "results.json"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0
    assert checkpoint.load_metadata(out / "checkpoint.safetensors")["epoch"] == 2


def test_a_symlinked_lock_file_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    target = tmp_path / "elsewhere"
    target.write_text("not a lock")
    (out / files.LOCK_NAME).unlink()
    (out / files.LOCK_NAME).symlink_to(target)
    assert train(out, "--resume", "--epochs", "2") == 2
    assert "is a symbolic link; refusing to use it" in one_line_error(capsys)
    assert target.read_text() == "not a lock"


def test_a_temporary_name_that_exists_is_never_opened(tmp_path, monkeypatch):
    """O_EXCL | O_NOFOLLOW: a name planted where the temporary would go is skipped, not followed."""
    victim = tmp_path / "victim"
    victim.write_text("keep")
    names = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".data.json.00000000.tmp").symlink_to(victim)
    files.atomic_write(tmp_path / "data.json", "new")
    assert (tmp_path / "data.json").read_text() == "new" and victim.read_text() == "keep"
    assert os.path.islink(tmp_path / ".data.json.00000000.tmp")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.json"
    files.atomic_write(path, "old")
    with pytest.raises(RuntimeError, match="disk"):
        with files.atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["data.json"]


# --------------------------------------------------------------------------------------------
# Resuming a finished run trains no further and regenerates the missing outputs
# --------------------------------------------------------------------------------------------


def test_a_finished_run_is_not_trained_again_and_missing_outputs_come_back(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    checkpoint_bytes = (out / "checkpoint.safetensors").read_bytes()
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert train(out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "already finished (2 epochs, all 2 epochs done); nothing to train; its outputs are all present" in printed
    assert (out / "checkpoint.safetensors").read_bytes() == checkpoint_bytes

    (out / "results.json").unlink()
    (out / "curves.png").unlink()
    assert train(out, "--resume") == 0
    assert "regenerating curves.png, results.json" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint.safetensors").read_bytes() == checkpoint_bytes


def test_a_run_that_stopped_early_stays_stopped(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 3)).astype(np.float32), rng.integers(0, 2, 64).astype(np.int32)
    net = mlp(3, [4], 2)
    # A learning rate of 0: the validation score never improves, so patience 2 stops at epoch 3.
    kwargs = dict(val=(x[:16], y[:16]), batch_size=16, early_stopping=2, checkpoint_dir=tmp_path, progress=False)
    first = fnet_train.fit(net, optim.sgd(0.0), x, y, epochs=10, **kwargs)
    assert first.stopped_early and first.history["epoch"] == [1, 2, 3] and first.epochs_run == 3
    again = fnet_train.fit(net, optim.sgd(0.0), x, y, epochs=20, resume=True, **kwargs)
    assert again.stopped_early and again.epochs_run == 0 and again.history["epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(again.params["dense1"]["W"], first.params["dense1"]["W"])


# --------------------------------------------------------------------------------------------
# Resume and overwrite: nothing changes before the checkpoint was loaded and checked, and the
# old run is replaced only once the new run's first checkpoint exists
# --------------------------------------------------------------------------------------------


def test_resume_of_a_config_edited_to_a_huge_size_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    config = json.loads((run / "config.json").read_text())
    config["args"]["hidden"] = [2000000000]
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    code, _, err = run_fnet("train", "--out", str(run), "--resume", "--epochs", "2")
    assert code == 2 and err.startswith("fnet: error: --hidden 2000000000 ") and "GiB" in err, err
    assert snapshot(run) == before


def test_a_fifo_planted_as_config_or_checkpoint_is_refused_not_waited_on(finished_run, tmp_path):
    for name, command in (("config.json", "evaluate"), ("config.json", "resume"), ("checkpoint.safetensors", "resume")):
        run = tmp_path / f"{name}-{command}"
        shutil.copytree(finished_run, run)
        (run / name).unlink()
        os.mkfifo(run / name)
        args = ["evaluate", str(run)] if command == "evaluate" else ["train", "--out", str(run), "--resume"]
        code, _, err = run_fnet(*args, timeout=60)
        assert code == 2 and str(run / name) in err and "a FIFO, not a regular file" in err, err
        assert len(err.splitlines()) == 1, err


def _poison(run):
    """NaN in the best params and inf in the params, in a checkpoint that is otherwise intact."""
    path = run / CHECKPOINT
    with safetensors.safe_open(path, "np") as f:
        metadata = f.metadata()
    tensors = safetensors.numpy.load_file(path)
    tensors["best_params/dense1/W"][:] = np.nan
    tensors["params/dense2/b"][:] = np.inf
    safetensors.numpy.save_file(tensors, path, metadata=metadata)


def test_non_finite_parameters_are_never_scored_or_trained_from(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    _poison(run)
    capsys.readouterr()
    before = snapshot(run)
    assert cli.main(["evaluate", str(run)]) == 2
    line = one_line_error(capsys)
    assert "best_params['dense1']['W'] must be finite, found 1024 NaN" in line, line
    assert train(run, "--resume", "--epochs", "2") == 2
    line = one_line_error(capsys)
    assert "params['dense2']['b'] must be finite, found 0 NaN and 10 inf" in line and "--overwrite" in line, line
    assert snapshot(run) == before


def test_a_failed_resume_leaves_config_json_as_it_was(tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    assert train(run, "--epochs", "1") == 0
    assert train(other, "--epochs", "1", "--hidden", "8") == 0
    # A well-formed checkpoint of another network: found unusable only once its arrays are read.
    (run / CHECKPOINT).write_bytes((other / CHECKPOINT).read_bytes())
    before = snapshot(run)
    assert train(run, "--resume", "--epochs", "3") == 2
    line = one_line_error(capsys)
    assert "--resume: " in line and "does not match the run's options" in line and "found float32[64, 8]" in line, line
    assert snapshot(run) == before
    (run / CHECKPOINT).write_bytes(b"not a checkpoint at all")
    before = snapshot(run)
    assert train(run, "--resume", "--epochs", "3") == 2
    assert "corrupt checkpoint" in one_line_error(capsys)
    assert snapshot(run) == before


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run) == 0
    (run / CHECKPOINT).unlink()
    before = snapshot(run)
    assert train(run, "--resume") == 2
    line = one_line_error(capsys)
    assert "has no checkpoint.safetensors" in line and "start it over with --overwrite" in line
    assert snapshot(run) == before


def test_resume_with_fewer_epochs_than_done_is_refused(finished_run, capsys):
    before = snapshot(finished_run)
    assert train(finished_run, "--resume", "--epochs", "1") == 2
    assert "--resume --epochs 1: the run in" in one_line_error(capsys)
    assert snapshot(finished_run) == before


def test_overwrite_swaps_the_new_run_in_bit_for_bit(tmp_path):
    # The new run's first epoch is trained in a staging folder, swapped in, and resumed there:
    # the same numbers as one uninterrupted run.
    replaced, fresh = tmp_path / "replaced", tmp_path / "fresh"
    assert train(replaced, "--epochs", "1", "--hidden", "8") == 0
    assert train(replaced, "--overwrite", "--seed", "3") == 0
    assert train(fresh, "--seed", "3") == 0
    assert not staging_folders(replaced) and sorted(os.listdir(tmp_path)) == ["fresh", "replaced"]
    h_replaced, h_fresh = (json.loads((d / "history.json").read_text()) for d in (replaced, fresh))
    for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert h_replaced[key] == h_fresh[key]
    assert json.loads((replaced / "results.json").read_text()) == json.loads((fresh / "results.json").read_text())
    chex.assert_trees_all_equal(*(checkpoint.load(d / CHECKPOINT) for d in (replaced, fresh)))
    assert json.loads((replaced / "config.json").read_text())["args"]["seed"] == 3


@pytest.mark.parametrize("failure", ["error", "divergence"])
def test_overwrite_that_fails_before_its_first_checkpoint_keeps_the_old_run(finished_run, failure, monkeypatch,
                                                                          capsys):
    before = snapshot(finished_run)
    if failure == "error":
        def fails(self):
            raise OSError("disk gone")

        monkeypatch.setattr(runs.Lease, "commit", fails)
        options = []
    else:
        options = ["--lr", "1e30"]  # the first epoch's loss becomes NaN
    assert train(finished_run, "--overwrite", *options) == 2
    one_line_error(capsys)
    assert snapshot(finished_run) == before and not staging_folders(finished_run)


def test_staging_left_by_a_killed_overwrite_is_removed_at_the_next_start(finished_run):
    before = snapshot(finished_run)
    stale = finished_run.parent / f".{finished_run.name}.staging-0123abcd"
    stale.mkdir()
    (stale / "checkpoint.safetensors").write_bytes(b"half a new run")
    other = finished_run.parent / f".{finished_run.name}-not-staging"
    other.mkdir()
    assert train(finished_run, "--resume") == 0  # finished: trains nothing
    assert not stale.exists() and other.exists()
    after = snapshot(finished_run)
    assert {k: v for k, v in after.items() if k != "config.json"} == \
        {k: v for k, v in before.items() if k != "config.json"}
