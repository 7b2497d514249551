"""benchmarks/startup.py runs end to end in quick mode (no timing assertions): fresh processes,
the epoch line and the test accuracy read from their output, JSON and Markdown written. PyTorch's
run only (the cheapest fresh process); the fnet command's own runs are tested in test_cli_train."""

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quick_mode_times_fresh_processes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    from benchmarks import startup

    path = pathlib.Path(startup.main(["--quick", "--impls", "torch", "--out", str(tmp_path)]))
    assert path.name.startswith("startup-") and path.name.endswith("-quick.json")
    record = json.loads(path.read_text())
    assert record["quick"] and record["data"] == {"train": 1294, "val": 144, "test": 359}
    (run,) = record["runs"]["torch"]["cold"]
    assert 0 < run["first_epoch_s"] < run["total_s"]
    assert run["test_accuracy"].endswith("%") and 10 < float(run["test_accuracy"][:-1]) <= 100
    assert "| torch | cold |" in path.with_suffix(".md").read_text()
    assert "torch" in capsys.readouterr().out


def test_bad_options_are_refused(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import startup

    with pytest.raises(SystemExit):
        startup.main(["--impls", "tensorflow"])
    with pytest.raises(SystemExit):
        startup.main(["--reps", "0"])
