"""benchmarks/conv_breakdown.py in quick mode (tiny networks, a few iterations, output to tmp_path):
every piece of the step was timed for both configurations and written out, a ready CNN layer by
layer; the timed loop keeps its piece inside the loop; an unknown configuration is a one-line
usage error. No timing assertions."""

import json
import pathlib

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def breakdown(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    import benchmarks.conv_breakdown

    return benchmarks.conv_breakdown


def test_quick_record_has_every_piece(breakdown, tmp_path):
    json_path, md_path = map(pathlib.Path, breakdown.main(["--quick", "--out", str(tmp_path)]))
    record = json.loads(json_path.read_text())
    assert record["quick"] and set(record["configs"]) == {"simple", "two_conv"}
    assert record["pieces"] == list(breakdown.PIECES)
    for cname, cfg in record["configs"].items():
        assert set(cfg["results"]) == set(breakdown.PIECES), cname
        for name, r in cfg["results"].items():
            assert r["median_s"] > 0 and r["harness_median_s"] > 0, (cname, name)
            assert r["share_of_step"] == pytest.approx(r["median_s"] / cfg["whole_step"]["median_s"])
        assert cfg["whole_step"]["median_s"] > 0
    # A single conv layer's dx is unused by the step; two layers' second one is used.
    assert not record["configs"]["simple"]["results"]["conv dx"]["in_step"]
    assert record["configs"]["two_conv"]["results"]["conv dx"]["in_step"]
    md = md_path.read_text()
    assert all(name in md for name in breakdown.PIECES) and "whole step" in md


def test_quick_ready_cnn_is_broken_down_by_layer(breakdown, tmp_path):
    json_path, md_path = map(pathlib.Path, breakdown.main(["--quick", "--configs", "small_cnn", "--out", str(tmp_path)]))
    cfg = json.loads(json_path.read_text())["configs"]["small_cnn"]
    # small_cnn: conv - batchnorm - relu - pool, twice: each conv's three pieces, each batch norm's one
    want = {f"conv2d{i} {p}" for i in (1, 2) for p in ("forward", "dx", "dW")}
    assert set(cfg["results"]) == want | {"batchnorm1 forward+backward", "batchnorm2 forward+backward"}
    assert not cfg["results"]["conv2d1 dx"]["in_step"] and cfg["results"]["conv2d2 dx"]["in_step"]
    assert all(r["median_s"] > 0 for r in cfg["results"].values()) and cfg["whole_step"]["trained"]
    assert cfg["model"].startswith("small_cnn") and "batchnorm" in cfg["layers"]
    assert "conv2d2 dW" in md_path.read_text()


def test_scanned_piece_stays_in_the_loop(breakdown):
    # The loop returns the piece of the last iteration's input (x0 + c rounds to x0), the carry
    # scalar moved, and XLA computed the piece inside the while body, not hoisted out of it.
    x = jnp.linspace(0.5, 1.0, 4096, dtype=jnp.float32).reshape(64, 64)
    compiled = breakdown.scanned(jnp.sin, [x], 4)
    c, out = compiled(x)
    assert c.dtype == jnp.float32 and float(c) > 0
    assert jnp.allclose(out, jnp.sin(x), rtol=4e-7, atol=0)  # a few float32 ulps: sin may vectorize differently
    sines = [line for line in compiled.as_text().splitlines() if " sine(" in line]
    assert sines and all("while/body" in line for line in sines)


def test_unknown_config_is_one_line_error(breakdown, capsys):
    with pytest.raises(SystemExit) as e:
        breakdown.main(["--quick", "--configs", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--configs: choose from simple,two_conv,small_cnn,three_layer_convnet,deep_convnet, got 'nope'")
