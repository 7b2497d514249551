"""benchmarks/char_lm_sizes.py in its quick form: each configuration is a real `fnet train` run,
the record holds what the runs wrote (no timing assertions), a finished run is reused."""

import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def sizes(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the runs' processes import this checkout's fnet
    import benchmarks.char_lm_sizes

    return benchmarks.char_lm_sizes


def test_quick_comparison_records_the_runs(sizes, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert sizes.main(["--quick", "--runs", str(runs), "--out", str(out)]) == 0
    (record_path,) = out.glob("char_lm_sizes-*-quick.json")
    record = json.loads(record_path.read_text())
    assert list(record["runs"]) == list(sizes.QUICK["lstm"]) and record["model"] == "lstm"
    for name, r in record["runs"].items():
        results = json.loads((runs / name / "results.json").read_text())
        assert r["val_loss"] == results["val_loss"] and r["best_step"] == results["best_step"] and r["steps"] == 20
        assert r["curve"]["step"] == [10, 20] and r["ms_per_step"] > 0
    assert record_path.with_suffix(".png").exists() or pytest.importorskip("matplotlib") is None
    table = record_path.with_suffix(".md").read_text()
    assert "| h16 | 3,225 | 20 |" in table  # 65*8 embedding + 4*16*(8+16+1) LSTM + 16*65+65 output
    # a finished run is reused, not trained again
    before = (runs / "h16" / "checkpoint.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert sizes.main(["--quick", "--configs", "h16", "--runs", str(runs), "--out", str(out)]) == 0
    assert "finished before, reused" in capsys.readouterr().out
    assert (runs / "h16" / "checkpoint.safetensors").stat().st_mtime_ns == before


def test_quick_gpt_comparison(sizes, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert sizes.main(["--quick", "--model", "gpt", "--runs", str(runs), "--out", str(out)]) == 0
    (record_path,) = out.glob("gpt_sizes-*-quick.json")
    record = json.loads(record_path.read_text())
    assert list(record["runs"]) == ["2x16", "2x16-tied"] and record["model"] == "gpt"
    assert record["runs"]["2x16-tied"]["net"]["tie"] is True
    table = record_path.with_suffix(".md").read_text()
    # tying removes the 16 x 65 output weights
    assert "| 2x16 | 8,993 | 20 |" in table and "| 2x16-tied | 7,953 | 20 |" in table


def test_unknown_configuration_is_one_line(sizes, capsys):
    with pytest.raises(SystemExit):
        sizes.main(["--configs", "h512,huge"])
    assert "--configs: unknown configuration huge of --model lstm; choose from h512, h512-d25" in capsys.readouterr().err
