"""benchmarks/conv_step.py and benchmarks/compose_step.py in quick mode (tiny networks, a few steps,
output to tmp_path): every implementation ran, trained and was written out; the flop count of a
step against a hand count; PyTorch's copy of a ready CNN computes fnet's scores; the NumPy
baseline's im2col/col2im pair. No timing assertions."""

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
    cs = benchmarks.conv_step
    from fnet import nets

    f = cs.step_flops(cs.layers_of(nets.network(cs.fnet_module([(30, 5, 0)], 100), (1, 28, 28))), 100)
    conv = 2 * 100 * 30 * 25 * 24 * 24
    dense = 2 * 100 * (4320 * 100 + 100 * 10)
    assert f["forward"] == conv + dense
    assert f["backward"] == conv + 2 * dense  # dW of the conv (its dx is unused), dW and dx of the dense layers


def test_deep_convnet_flops_by_hand(benchmarks):
    # DeepConvNet on 28x28, batch 64: conv3x3 widths 16,16 at 28x28; pool; 32 at 14x14, 32 at 16x16 (pad
    # 2); pool; 64, 64 at 8x8; pool to 64 x 4 x 4 = 1024; dense 1024-50-10; its dropouts cost no flops.
    cs = benchmarks.conv_step
    net, rate = cs.ready_net("deep_convnet", 28)
    layers = cs.layers_of(net, rate)
    assert [l.rate for l in layers if l.kind == "dropout"] == [0.5, 0.5]
    f = cs.step_flops(layers, 64)
    convs = [2 * 64 * 9 * c_in * c_out * side * side for c_in, c_out, side in
             [(1, 16, 28), (16, 16, 28), (16, 32, 14), (32, 32, 16), (32, 64, 8), (64, 64, 8)]]
    dense = [2 * 64 * 1024 * 50, 2 * 64 * 50 * 10]
    assert f["forward"] == sum(convs) + sum(dense)
    assert f["backward"] == f["forward"] + sum(convs[1:]) + sum(dense)  # dW of all; dx of all but the first conv


@pytest.mark.parametrize("name", ["small_cnn", "deep_convnet"])
def test_torch_copy_of_a_ready_cnn_computes_fnets_scores(benchmarks, bench_peers, name):
    import jax
    import torch

    cs = benchmarks.conv_step
    net, rate = cs.ready_net(name, 12, filters=(4,) * len(cs.models.ARCHITECTURES[name].filters), dense_width=8)
    variables = net.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(0).random((5, 1, 12, 12), dtype=np.float32)
    ours = np.asarray(net.apply(variables, x))
    model = cs.torch_model(cs.layers_of(net, rate), variables.params).eval()  # no dropout, running statistics
    theirs = model(torch.from_numpy(x)).detach().numpy()
    # float32 sums of at most 36 products per output (4 channels x 3 x 3) through at most 8 weighted
    # layers: about 300 roundings of eps = 1.2e-7 relative to the scores' size, bounded by 1000.
    np.testing.assert_allclose(theirs, ours, atol=1e3 * np.finfo(np.float32).eps * np.abs(ours).max())


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


def test_conv_step_quick_ready_cnns(benchmarks, bench_peers, tmp_path):
    names = ["small_cnn", "three_layer_convnet", "deep_convnet"]
    json_path, md_path = map(pathlib.Path, benchmarks.conv_step.main(
        ["--quick", "--threads", "1", "--configs", ",".join(names), "--out", str(tmp_path)]))
    record = json.loads(json_path.read_text())
    assert list(record["configs"]) == names
    for name, cfg in record["configs"].items():
        assert set(cfg["results"]) == {"fnet manual epoch", "fnet autodiff epoch", "torch eager"}
        assert all(r["trained"] for r in cfg["results"].values()), cfg["results"]
        assert set(cfg["not_run"]) == {"torch compile", "flax+optax", "numpy im2col"}
        assert f"{name}: fastest peer / fnet manual" in record["targets"]
    markdown = md_path.read_text()
    assert "## small_cnn: conv3x3(8, pad 1)-batchnorm-relu-pool" in markdown
    assert "conv3x3(8, pad 2)" in markdown and "dense(10)-dropout(0.5)," in markdown


def test_conv_step_unknown_config_is_one_line(benchmarks, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        benchmarks.conv_step.main(["--quick", "--configs", "small_cnn,resnet", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--configs: choose from" in err[-1] and "deep_convnet" in err[-1] and "'small_cnn,resnet'" in err[-1]


def test_compose_step_quick(benchmarks, tmp_path):
    json_path, _ = map(pathlib.Path, benchmarks.compose_step.main(["--quick", "--out", str(tmp_path)]))
    cfg = json.loads(json_path.read_text())["configs"]["residual"]
    assert set(cfg["results"]) == {"fnet manual epoch", "fnet autodiff epoch"}
    assert all(r["trained"] for r in cfg["results"].values())
    assert cfg["manual_over_autodiff"]["time"] > 0 and cfg["manual_over_autodiff"]["peak_memory"] > 0
