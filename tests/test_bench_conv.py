"""benchmarks/conv_step.py and benchmarks/compose_step.py in quick mode (tiny networks, a few steps,
output to tmp_path): every implementation ran, trained and was written out; the flop count of a
step against a hand count; the NumPy baseline's im2col/col2im pair. No timing assertions."""

import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    import benchmarks.compose_step
    import benchmarks.conv_step

    return benchmarks


def test_conv_step_flops_by_hand(benchmarks):
    # SimpleConvNet on 28x28, batch 100: conv 30 x (1 x 5 x 5) over 24 x 24 outputs; dense 4320-100-10.
    f = benchmarks.conv_step.step_flops([(30, 5, 0)], 100, 28, 100)
    conv = 2 * 100 * 30 * 25 * 24 * 24
    dense = 2 * 100 * (4320 * 100 + 100 * 10)
    assert f["forward"] == conv + dense
    assert f["backward"] == conv + 2 * dense  # dW of the conv (its dx is unused), dW and dx of the dense layers


def test_im2col_and_col2im_are_adjoint(benchmarks):
    cs = benchmarks.conv_step
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5))
    col = cs.im2col(x, 3, 1, 1)
    g = rng.standard_normal(col.shape)
    # <im2col(x), g> == <x, col2im(g)>: col2im is im2col's transpose, as the book's backward needs.
    np.testing.assert_allclose(np.sum(col * g), np.sum(x * cs.col2im(g, x.shape, 3, 1, 1)), rtol=1e-12)


def test_conv_step_quick(benchmarks, bench_peers, tmp_path):
    json_path, md_path = map(pathlib.Path, benchmarks.conv_step.main(["--quick", "--threads", "1", "--out", str(tmp_path)]))
    record = json.loads(json_path.read_text())
    assert record["quick"] and set(record["configs"]) == {"simple", "two_conv"}
    for cfg in record["configs"].values():
        ran = set(cfg["results"])
        assert ran == {"fnet manual epoch", "fnet autodiff epoch", "flax+optax", "torch eager", "numpy im2col"}
        assert all(r["trained"] for r in cfg["results"].values()), cfg["results"]
        assert "torch compile" in cfg["not_run"]
    assert "x floor" in md_path.read_text()


def test_compose_step_quick(benchmarks, tmp_path):
    json_path, _ = map(pathlib.Path, benchmarks.compose_step.main(["--quick", "--out", str(tmp_path)]))
    cfg = json.loads(json_path.read_text())["configs"]["residual"]
    assert set(cfg["results"]) == {"fnet manual epoch", "fnet autodiff epoch"}
    assert all(r["trained"] for r in cfg["results"].values())
    assert cfg["manual_over_autodiff"]["time"] > 0 and cfg["manual_over_autodiff"]["peak_memory"] > 0
