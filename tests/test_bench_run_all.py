"""benchmarks/run_all.py in its --quick CPU form: the two cheapest benchmarks run, each in a process
of its own, and are summarized; a benchmark that crashes is recorded and the next one still runs;
the budget skips what would not fit and kills what outlives it; unknown names and a missing device give one line, exit
status 2 and no files. The quick runs need the `bench` extra (flax, optax, torch)."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def run_all(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    import benchmarks.run_all

    return benchmarks.run_all


def test_plan_names_real_benchmarks(run_all):
    for name in run_all.BENCHMARKS:
        assert (ROOT / "benchmarks" / f"{name}.py").exists(), name
    assert sum(b.gpu_s for b in run_all.BENCHMARKS.values()) <= run_all.BUDGET_S  # the plan fits its own estimate


def test_quick_cpu_run_records_a_crash_and_goes_on(run_all, bench_peers, monkeypatch, tmp_path):
    # A module that does not exist crashes its process (exit 1, "No module named ..."), first in line.
    plan = {"no_such_benchmark": run_all.Bench((), 1, 1, "crashes"),
            **{n: run_all.BENCHMARKS[n] for n in ("compose_step", "optim_update")}}
    monkeypatch.setattr(run_all, "BENCHMARKS", plan)
    json_path, md_path = map(pathlib.Path, run_all.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]))
    assert json_path.parent == tmp_path and json_path.name.startswith("run_all-") and json_path.stem.endswith("-quick")
    record = json.loads(json_path.read_text())
    assert record["quick"] and record["device"] == "cpu" and list(record["benchmarks"]) == list(plan)
    crashed = record["benchmarks"]["no_such_benchmark"]
    assert crashed["status"] == "failed" and crashed["exit_status"] == 1 and crashed["results"] is None
    assert "no_such_benchmark" in crashed["note"]
    for name in ("compose_step", "optim_update"):
        b = record["benchmarks"][name]
        assert b["status"] == "ok" and b["exit_status"] == 0 and b["wall_s"] > 0, b
        for path in b["results"].values():
            assert (tmp_path / path).is_file() and pathlib.Path(path).name.startswith(name)
    assert not record["all_ok"]
    md = md_path.read_text()
    assert "| no_such_benchmark |" in md and "failed (exit 1)" in md and "| compose_step |" in md


def test_budget_skips_what_would_not_fit(run_all, tmp_path):
    json_path, _ = run_all.main(["--quick", "--device", "cpu", "--only", "optim_update,compose_step",
                                 "--budget-s", "0", "--out", str(tmp_path)])
    record = json.loads(pathlib.Path(json_path).read_text())
    assert list(record["benchmarks"]) == ["compose_step", "optim_update"]  # the plan's order
    for b in record["benchmarks"].values():
        assert b["status"] == "skipped" and "--budget-s 0" in b["note"] and b["results"] is None
    assert record["all_ok"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [pathlib.Path(json_path).name,
                                                                       pathlib.Path(json_path).with_suffix(".md").name]


@pytest.mark.parametrize("argv, says", [
    (["--only", "compose_step,huge"], "run_all: --only: unknown benchmark huge; choose from"),
    (["--device", "gpu"], "run_all: --device gpu: "),
])
def test_bad_input_is_one_line_and_exit_2(run_all, capsys, tmp_path, argv, says):
    import jax

    if "gpu" in argv and jax.default_backend() != "cpu":
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as e:
        run_all.main(["--quick", *argv, "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(says), err
    assert not (tmp_path / "out").exists()


def test_a_benchmark_past_the_budget_is_killed(run_all, monkeypatch, tmp_path):
    header = {"benchmark": "run_all", "date": "-", "device": "cpu", "torch_cuda": False,
              "machine": {"cpu_model": "a CPU", "cores": 1, "device_kind": "cpu"}}
    monkeypatch.setattr(run_all, "check_device", lambda device: {"slug": "test", "header": header})
    monkeypatch.setattr(run_all, "BENCHMARKS", {"sleeper": run_all.Bench((), 0, 0, "never ends")})
    monkeypatch.setattr(run_all, "command", lambda *a: [sys.executable, "-c", "import time; time.sleep(600)"])
    json_path, _ = run_all.main(["--device", "cpu", "--budget-s", "2", "--out", str(tmp_path)])
    b = json.loads(pathlib.Path(json_path).read_text())["benchmarks"]["sleeper"]
    assert b["status"] == "timeout" and b["exit_status"] < 0 and 1.5 < b["wall_s"] < 30 and b["results"] is None
