"""benchmarks/train_datasets.py runs end to end in quick mode on the real files (no timing or
accuracy thresholds: one epoch of a 784-16-10 net on 1,024 samples)."""

import json
import pathlib

import numpy as np
import pytest
from _tolerances import rounding_rtol

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.xla_defaults
def test_quick_mode_writes_json_and_markdown(tmp_path, monkeypatch, capsys, shared_data_dir):  # noqa: F811
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    from benchmarks import train_datasets

    path = pathlib.Path(train_datasets.main(["--quick", "--out", str(tmp_path), "--data-dir", str(shared_data_dir)]))
    assert path.parent == tmp_path and path.name.startswith("train_datasets-") and path.name.endswith("-quick.json")
    record = json.loads(path.read_text())
    assert record["config"]["quick"] and record["config"]["train_samples"] == 1024
    assert set(record["results"]) == {"mnist", "fashion-mnist"}
    for r in record["results"].values():
        assert set(r["runs"]) == {"manual", "autodiff"}
        for run in r["runs"].values():
            assert 0.0 <= run["test_acc"] <= 1.0 and run["wall_s"] > 0
        # One epoch (8 steps of batch 128) of a 784-16-10 net: manual and autodiff params agree to
        # float32 rounding, |a - b| <= rtol * (|b| + S) <= 2 * rtol * S (tests/_tolerances.py).
        rtol = rounding_rtol(np.float32, terms=(784 + 16) + 10 + 128, steps=1024 // 128)
        assert r["param_diff"]["max"] <= 2 * rtol * r["param_diff"]["max_abs_param"]
    assert list(record["variants"]) == ["cosine-10"]
    assert "manual vs autodiff" in record["notes"].lower()
    markdown = path.with_suffix(".md").read_text()
    assert "| mnist | manual |" in markdown and "cosine-10" in markdown
    assert "wrote" in capsys.readouterr().out
