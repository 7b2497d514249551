"""benchmarks/train_step.py, benchmarks/mnist_e2e.py and benchmarks/xla_cpu_options.py run end to end
in quick mode (tiny networks, a few steps, output to tmp_path); no timing assertions, only that every
implementation ran, trained and was written out. The quick runs need the `bench` extra (flax, optax,
torch); they are skipped without it."""

import json
import pathlib

import numpy as np
import pytest
from _tolerances import rounding_rtol

ROOT = pathlib.Path(__file__).resolve().parents[1]

JAX_IMPLS = {"fnet manual step", "fnet manual epoch", "fnet autodiff step", "fnet autodiff epoch", "flax+optax"}


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    import benchmarks.mnist_e2e
    import benchmarks.train_step
    import benchmarks.xla_cpu_options

    return benchmarks


def test_step_flops_formula(benchmarks):
    # 784-[100]*4-10, batch 128: forward 2*128*109400; backward dW the same plus dx of layers 2..5.
    f = benchmarks.train_step.step_flops((784, 100, 100, 100, 100, 10), 128)
    assert f["forward"] == 2 * 128 * 109_400
    assert f["backward"] == 2 * 128 * (109_400 + 31_000)
    assert f["total"] == f["forward"] + f["backward"]


@pytest.mark.xla_defaults
def test_train_step_quick(benchmarks, bench_peers, tmp_path):
    json_path, md_path = map(pathlib.Path, benchmarks.train_step.main(
        ["--quick", "--configs", "small", "--threads", "1", "--out", str(tmp_path)]))
    assert json_path.parent == tmp_path and json_path.name.startswith("train_step-") and json_path.stem.endswith("-quick")
    record = json.loads(json_path.read_text())
    assert record["quick"] and list(record["configs"]) == ["small"]
    cfg = record["configs"]["small"]
    results = cfg["results"]
    assert JAX_IMPLS | {"torch eager", "numpy"} <= set(results)
    for name, r in results.items():
        assert r["median_s"] > 0 and r["trained"], name
        assert r["over_fnet_manual_epoch"] == pytest.approx(r["median_s"] / results["fnet manual epoch"]["median_s"])
        assert (r["peak_memory"] is not None) == (name in JAX_IMPLS), name
    # Same initial weights and data: every per-step implementation sees the same losses over the
    # first repetition (4 steps of batch 8, 16-8-8-8-8-4, float32), to rounding.
    first = {name: r["first_rep_mean_loss"] for name, r in results.items() if "epoch" not in name}
    rtol = rounding_rtol(np.float32, terms=(16 + 4 * 8) + (4 + 3 * 8) + 8, steps=4)
    assert max(first.values()) - min(first.values()) <= 2 * rtol * max(first.values())
    assert cfg["floor_s"] == pytest.approx(cfg["flops"]["total"] / cfg["matmul"]["median_flops_per_s"])
    assert any(t.startswith("small: manual / autodiff") for t in record["targets"])
    assert "| fnet manual epoch |" in md_path.read_text()


def test_train_step_rejects_unknown_config(benchmarks, tmp_path):
    with pytest.raises(SystemExit):
        benchmarks.train_step.main(["--quick", "--configs", "huge", "--out", str(tmp_path)])


def test_gpu_without_gpu_fails_clearly(benchmarks, tmp_path):
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="--device gpu"):
        benchmarks.train_step.main(["--quick", "--device", "gpu", "--out", str(tmp_path)])


def test_mnist_e2e_quick(benchmarks, bench_peers, tmp_path):
    json_path, md_path = map(pathlib.Path, benchmarks.mnist_e2e.main(
        ["--quick", "--threads", "1", "--out", str(tmp_path)]))
    record = json.loads(json_path.read_text())
    assert record["quick"] and record["epochs"] == 10 and record["repeats"] == 1
    assert set(record["results"]) == {"fnet", "flax+optax", "torch eager"}
    for name, r in record["results"].items():
        assert r["wall_s_median"] > 0, name
        # 10 short epochs (90 steps) on the 10-class digits: well above chance (0.1) for every library.
        assert r["test_accuracy_median"] > 0.3, name
    assert "| fnet |" in md_path.read_text()


def test_xla_cpu_options_quick(benchmarks, bench_peers, tmp_path):
    # One setting, in its own process (the others run the same code with other XLA_FLAGS).
    json_path, md_path = map(pathlib.Path, benchmarks.xla_cpu_options.main(
        ["--quick", "--settings", "default", "--out", str(tmp_path)]))
    record = json.loads(json_path.read_text())
    assert record["quick"] and record["rounds"] == 1 and list(record["settings"]) == ["default"]
    setting = record["settings"]["default"]
    assert set(setting["impls"]) == set(benchmarks.xla_cpu_options.IMPLS)
    for name, r in setting["impls"].items():
        assert r["median_s"] > 0 and r["vs_default"] == 1.0 and r["same_training"], name
    assert set(setting["library_fusions"]) <= {"ynn", "xnn", "onednn"}  # XLA's counts, whatever its defaults
    assert "| default | (none) |" in md_path.read_text()


def test_xla_cpu_options_reports_a_rejected_flag(benchmarks):
    got = benchmarks.xla_cpu_options.library_fusions("--xla_cpu_experimental_xnn_fusion_type=bogus")
    assert "Illegal value for --xla_cpu_experimental_xnn_fusion_type" in got["error"]


def test_xla_cpu_options_compares_each_setting_with_the_default(benchmarks):
    def record(seconds, loss):
        return {"floor_s": 1e-4, "results": {"numpy": {"median_s": seconds, "first_rep_mean_loss": loss}}}

    out = benchmarks.xla_cpu_options.summarize({
        "default": [record(2.0, 1.0), record(4.0, 1.0), record(3.0, 1.0)],
        "other": [record(1.0, 1.5), {"error": "no"}, record(2.0, 1.0)],
        "rejected": [{"error": "Illegal value"}],
    })
    assert out["default"]["impls"]["numpy"]["median_s"] == 3.0
    other = out["other"]["impls"]["numpy"]
    assert other["median_s"] == 1.5 and other["vs_default"] == 0.5
    assert not other["same_training"]  # its first round's first-repetition loss is 1.5, the default's 1.0
    assert out["rejected"] == {"error": "Illegal value"}
