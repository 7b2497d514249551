"""benchmarks/vmap_trials.py runs end to end in quick mode (no timing assertions)."""

import json
import pathlib

import numpy as np
from _tolerances import rounding_rtol

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quick_mode_writes_json_and_markdown(tmp_path, monkeypatch, capsys, bench_peers):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    from benchmarks import vmap_trials

    path = pathlib.Path(vmap_trials.main(["--quick", "--fit-trials", "1", "--out", str(tmp_path)]))
    assert path.name.startswith("vmap_trials-") and path.name.endswith("-quick.json")
    assert path.with_suffix(".md").exists()
    record = json.loads(path.read_text())
    assert record["config"]["quick"] and record["config"]["trials"] == 4
    assert set(record["seconds"]) == {"vmapped", "vmapped_warm", "fnet_loop", "fit_loop", "flax_loop"}
    assert all(t > 0 for t in record["seconds"].values())
    # The vmapped trials and the looped ones compute the same thing (float32, batched vs unbatched
    # matrix products: rounding differences only): 2 epochs of 4 steps of batch 10, 784-16-16-10.
    assert len(record["compared_trials"]) == 3
    rtol = rounding_rtol(np.float32, terms=(784 + 16 + 16) + (10 + 16) + 10, steps=2 * 4)
    for row in record["compared_trials"]:
        assert row["max_abs_param_diff"] <= 2 * rtol * row["max_abs_param"]
        assert row["max_abs_train_loss_diff"] <= 2 * rtol * row["max_train_loss"]
    assert set(record["per_trial_ms"]) == {"fit_trials call", "its compiled program",
                                           "the same epochs, no evaluation or init",
                                           "flax+optax trial (with its evaluation)"}
    assert all(ms > 0 for ms in record["per_trial_ms"].values())
    assert "vmapped" in capsys.readouterr().out
