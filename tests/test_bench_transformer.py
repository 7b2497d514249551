"""benchmarks/transformer_step.py: the quick mode end to end (every implementation ran, trained,
started from the same weights: the same first loss to rounding), the flop count by hand, PyTorch's
nanoGPT-shaped model against fnet's forward, and the one-line errors for an unknown configuration
or device. No timing assertions."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import rounding_rtol

ROOT = pathlib.Path(__file__).resolve().parents[1]
JAX_IMPLS = {"fnet manual step", "fnet manual epoch", "fnet autodiff step", "fnet autodiff epoch",
             "fnet manual recompute epoch", "flax+optax"}


@pytest.fixture
def transformer_step(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    import benchmarks.transformer_step

    return benchmarks.transformer_step


def _forward_terms(c: dict) -> int:
    """The longest chain of sums in the forward: per layer the q/k/v/output projections (E each),
    the attention's T keys, the MLP's E and 4E, then the output layer's E, the softmax's V and the
    mean over the B*T tokens."""
    return c["layers"] * (6 * c["width"] + c["T"]) + c["width"] + c["vocab"] + c["batch"] * c["T"]


def test_transformer_step_flops_by_hand(transformer_step):
    # L = 4, E = 128, T = 64, B = 12, V = 65: 768 tokens; per layer 12 E^2 per token of
    # projections and MLP, 4 T E per token of attention; the output layer E V per token.
    f = transformer_step.step_flops(4, 128, 64, 12, 65)
    assert f["forward"] == 4 * (2 * 768 * 12 * 128**2 + 4 * 768 * 64 * 128) + 2 * 768 * 128 * 65
    assert f["total"] == 3 * f["forward"] and f["backward"] == 2 * f["forward"]


def test_torch_gpt_computes_fnet_gpt(transformer_step, bench_peers):
    torch = bench_peers["torch"]
    spec = (2, 2, 8, 6, 3, 1, 1)
    net = transformer_step.fnet_net(11, spec)
    params = net.init(jax.random.PRNGKey(0)).params
    # biases and layer-norm parameters away from their 0/1 initial values, so that their mapping counts
    params = jax.tree_util.tree_map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(a.size), a.shape, a.dtype), params)
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 6), 0, 11)
    expected = net.apply(params, ids)
    model = transformer_step.torch_gpt(params, heads=2)
    with torch.no_grad():
        got = model(torch.from_numpy(np.array(ids)).long()).numpy()
    c = {"layers": 2, "width": 8, "T": 6, "vocab": 11, "batch": 3}
    rtol = rounding_rtol(np.float32, terms=_forward_terms(c))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(expected))))


@pytest.mark.xla_defaults
def test_transformer_step_quick(transformer_step, bench_peers, tmp_path):
    json_path, md_path = map(pathlib.Path, transformer_step.main(
        ["--quick", "--configs", "nano", "--threads", "1", "--out", str(tmp_path)]))
    assert json_path.parent == tmp_path and json_path.name.startswith("transformer_step-")
    assert json_path.stem.endswith("-quick")
    record = json.loads(json_path.read_text())
    assert record["quick"] and list(record["configs"]) == ["nano"]
    cfg = record["configs"]["nano"]
    results = cfg["results"]
    assert set(results) == JAX_IMPLS | {"torch eager"} and set(cfg["not_run"]) == {"torch compile"}
    for name, r in results.items():
        assert r["median_s"] > 0 and r["trained"], name
        assert (r["peak_memory"] is not None) == (name in JAX_IMPLS), name
    # The same weights and the same first batch: the same first loss, to the float32 rounding of
    # the forward's longest chain of sums.
    first = [r["first_loss"] for r in results.values()]
    assert max(first) - min(first) <= 2 * rounding_rtol(np.float32, terms=_forward_terms(cfg)) * max(first)
    assert cfg["floor_s"] == pytest.approx(cfg["flops"]["total"] / cfg["matmul"]["median_flops_per_s"])
    assert {"nano: manual / autodiff epoch time", "nano: manual / autodiff epoch peak memory",
            "nano: recompute / store epoch peak memory", "nano: flax+optax / fnet manual epoch"} <= set(record["targets"])
    text = md_path.read_text()
    assert "| fnet manual recompute epoch |" in text and "First loss" in text


def test_unknown_config_and_missing_device_are_one_line_errors(transformer_step, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        transformer_step.main(["--quick", "--configs", "huge", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--configs: choose from nano,large, got 'huge'" in capsys.readouterr().err
    if jax.default_backend() == "cpu":
        with pytest.raises(SystemExit, match="--device gpu"):
            transformer_step.main(["--quick", "--device", "gpu", "--out", str(tmp_path)])
