"""What a hostile user tried against ``fnet train``/``evaluate``/``gradcheck``: every case is one
clear line (exit 2), before any side effect, and nothing already written is lost or changed.

- a bad option with ``--overwrite`` keeps the finished run (sizes and ranges checked first), and
  ``--overwrite`` replaces a run only once the new run's first checkpoint exists;
- a network too large for the machine is refused with its estimate, never allocated (the real
  2-billion-unit cases run as separate processes: before the fix they aborted the interpreter);
- a FIFO planted as config.json or checkpoint is refused, not waited on (separate processes:
  before the fix they hung);
- non-finite parameters are never scored or trained from;
- ``--resume`` changes nothing until the checkpoint was loaded and checked;
- an option the chosen model does not use is refused."""

from __future__ import annotations

import json
import math
import os

import chex
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from _cli_helpers import SMALL, fnet_process, one_line_error, snapshot, train

from fnet import checkpoint, cli, limits, runs


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train(out) == 0
    return out


def _checkpoint_path(run):
    return run / "checkpoint.safetensors"


def _staging(run):
    return [n for n in os.listdir(run.parent) if n.startswith(f".{run.name}.staging-")]


OUT_OF_RANGE = [
    (["--seed", "99999999999999999999999"], "--seed must be an integer with 0 <= seed < 2**63"),
    (["--seed", str(2**63)], "--seed must be an integer with 0 <= seed < 2**63"),
    (["--epochs", "9999999999999999", "--schedule", "cosine"], "step counter (int32)"),
    (["--epochs", "300000000"], "--epochs 300000000 x 10 steps per epoch is 3,000,000,000 steps"),
    (["--hidden", "4096"], "--hidden 4096 --batch-size 128: a network of 307,210 parameters needs about"),
]
#: A memory limit that the 4096-unit network exceeds (its estimate is ~6 MB) and SMALL's does not.
SMALL_MEMORY = str(1 << 20)


@pytest.mark.parametrize("options, message", OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OUT_OF_RANGE])
def test_an_out_of_range_option_with_overwrite_keeps_the_finished_run(finished_run, options, message, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv(limits.ENV_MEMORY_LIMIT, SMALL_MEMORY)
    before = snapshot(finished_run)
    assert train(finished_run, "--overwrite", *options) == 2
    assert message in one_line_error(capsys)
    assert snapshot(finished_run) == before and not _staging(finished_run)


@pytest.mark.parametrize("options, message", OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OUT_OF_RANGE])
def test_an_out_of_range_option_creates_no_folder(tmp_path, options, message, capsys, monkeypatch):
    monkeypatch.setenv(limits.ENV_MEMORY_LIMIT, SMALL_MEMORY)
    assert train(tmp_path / "new", *options) == 2
    assert message in one_line_error(capsys)
    assert os.listdir(tmp_path) == []


def _fnet(*args, timeout=120):
    proc = fnet_process(*args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.parametrize("hidden", ["2000000000", "16,2000000000"])
def test_a_network_too_large_for_the_memory_is_refused_with_its_estimate(finished_run, tmp_path, hidden):
    before = snapshot(finished_run)
    for out, extra in ((tmp_path / "big", []), (finished_run, ["--overwrite"])):
        code, _, err = _fnet("train", *SMALL, "--out", str(out), "--hidden", hidden, *extra)
        assert code == 2, err
        assert err.startswith(f"fnet: error: --hidden {hidden} --batch-size 128: a network of ") and \
            "parameters needs about" in err and "GiB" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "big").exists()
    assert snapshot(finished_run) == before


def test_resume_of_a_config_edited_to_a_huge_size_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    assert train(run, "--epochs", "1") == 0
    config = json.loads((run / "config.json").read_text())
    config["args"]["hidden"] = [2000000000]
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    code, _, err = _fnet("train", "--out", str(run), "--resume", "--epochs", "2")
    assert code == 2 and err.startswith("fnet: error: --hidden 2000000000 ") and "GiB" in err, err
    assert snapshot(run) == before


def test_a_fifo_planted_as_config_or_checkpoint_is_refused_not_waited_on(finished_run, tmp_path):
    import shutil

    for name, command in (("config.json", "evaluate"), ("config.json", "resume"), ("checkpoint.safetensors", "resume")):
        run = tmp_path / f"{name}-{command}"
        shutil.copytree(finished_run, run)
        (run / name).unlink()
        os.mkfifo(run / name)
        args = ["evaluate", str(run)] if command == "evaluate" else ["train", "--out", str(run), "--resume"]
        code, _, err = _fnet(*args, timeout=60)
        assert code == 2 and str(run / name) in err and "a FIFO, not a regular file" in err, err
        assert len(err.splitlines()) == 1, err


def _poison(run):
    """NaN in the best params and inf in the params, in a checkpoint that is otherwise intact."""
    path = _checkpoint_path(run)
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


def test_the_library_evaluate_refuses_non_finite_params():
    import jax

    import fnet

    net = fnet.mlp(4, [3], 2)
    params, state = net.init(jax.random.PRNGKey(0))
    params["dense2"]["W"] = params["dense2"]["W"].at[0, 0].set(math.nan)
    x, y = np.ones((5, 4), np.float32), np.zeros(5, np.int32)
    with pytest.raises(ValueError, match=r"evaluate: params\['dense2'\]\['W'\] must be finite"):
        fnet.evaluate(net, params, state, x, y)


def test_a_failed_resume_leaves_config_json_as_it_was(tmp_path, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    assert train(run, "--epochs", "1") == 0
    assert train(other, "--epochs", "1", "--hidden", "8") == 0
    # A well-formed checkpoint of another network: found unusable only once its arrays are read.
    _checkpoint_path(run).write_bytes(_checkpoint_path(other).read_bytes())
    before = snapshot(run)
    assert train(run, "--resume", "--epochs", "3") == 2
    line = one_line_error(capsys)
    assert "--resume: " in line and "does not match the run's options" in line and "found float32[64, 8]" in line, line
    assert snapshot(run) == before
    _checkpoint_path(run).write_bytes(b"not a checkpoint at all")
    before = snapshot(run)
    assert train(run, "--resume", "--epochs", "3") == 2
    assert "corrupt checkpoint" in one_line_error(capsys)
    assert snapshot(run) == before


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run) == 0
    _checkpoint_path(run).unlink()
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
    assert not _staging(replaced) and sorted(os.listdir(tmp_path)) == ["fresh", "replaced"]
    h_replaced, h_fresh = (json.loads((d / "history.json").read_text()) for d in (replaced, fresh))
    for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert h_replaced[key] == h_fresh[key]
    assert json.loads((replaced / "results.json").read_text()) == json.loads((fresh / "results.json").read_text())
    chex.assert_trees_all_equal(*(checkpoint.load(_checkpoint_path(d)) for d in (replaced, fresh)))
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
    assert snapshot(finished_run) == before and not _staging(finished_run)


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


@pytest.mark.parametrize("options, message", [
    (["--hidden", "20", "--filters", "8,8"], "--filters 8,8: --model mlp has no convolutions"),
    (["--model", "small_cnn", "--norm", "layernorm"], "--norm layernorm: --model small_cnn has fixed layers"),
    (["--model", "simple_convnet", "--activation", "sigmoid"], "--activation sigmoid: --model simple_convnet has fixed"),
])
def test_an_option_the_model_does_not_use_is_refused(tmp_path, options, message, capsys):
    args = [a for a in SMALL if a not in ("--hidden", "16")]
    assert cli.main(["train", *args, "--out", str(tmp_path / "run"), *options]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_gradcheck_refuses_a_negative_seed_before_printing_anything(capsys):
    assert cli.main(["gradcheck", "--seed", "-1"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1
    assert err.err.startswith("fnet: error: --seed must be an integer with 0 <= seed < 2**63, got -1")
