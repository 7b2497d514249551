"""benchmarks/optim_update.py runs end to end in quick mode (no timing assertions)."""

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quick_mode_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    from benchmarks import optim_update

    path = pathlib.Path(optim_update.main(["--quick", "--reps", "2", "--out", str(tmp_path)]))
    assert path.parent == tmp_path and path.name.startswith("optim_update-") and path.name.endswith("-quick.json")
    record = json.loads(path.read_text())
    assert record["config"]["quick"] and record["config"]["leaves"] == 2
    assert set(record["results"]) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"}
    for row in record["results"].values():
        assert row["fnet_median_s"] > 0 and row["bandwidth_bound_s"] > 0
    assert {"cpu_model", "cores", "jax_backend"} <= set(record["machine"])
    assert "adam" in capsys.readouterr().out
