"""benchmarks/rnn_step.py: the quick mode end to end (every implementation ran, trained, started
from the same weights: the same first loss to rounding), the flop count by hand, the NumPy
reference's gradients against fnet's, and the recorded reason when NumPy is skipped. No timing
assertions."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import rounding_rtol

ROOT = pathlib.Path(__file__).resolve().parents[1]
JAX_IMPLS = {"fnet manual step", "fnet manual epoch", "fnet autodiff step", "fnet autodiff epoch", "flax+optax"}


@pytest.fixture
def rnn_step(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    import benchmarks.rnn_step

    return benchmarks.rnn_step


def test_rnn_step_flops_by_hand(rnn_step):
    # H = 128, E = 64, V = 65, B = 32, T = 64: x Wx (64 x 512), h Wh (128 x 512), the output 128 x 65.
    f = rnn_step.step_flops(128, 64, 65, 32, 64)
    assert f["forward"] == 2 * 32 * 64 * (64 * 512 + 128 * 512 + 128 * 65)
    assert f["total"] == 3 * f["forward"] and f["backward"] == 2 * f["forward"]


def test_numpy_reference_matches_fnet_gradients(rnn_step):
    vocab, embed, hidden, n, t = 11, 5, 6, 3, 7
    model = rnn_step.fnet_model(vocab, embed, hidden)
    params, _, _ = model.init(jax.random.PRNGKey(0), (n, t))
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    params["lstm1"]["b"] = jax.random.normal(jax.random.PRNGKey(1), params["lstm1"]["b"].shape, jnp.float64)
    ids = jax.random.randint(jax.random.PRNGKey(2), (n, t), 0, vocab)
    y = jax.random.randint(jax.random.PRNGKey(3), (n, t), 0, vocab)
    names = {"emb": ("embedding1", "W"), "Wx": ("lstm1", "Wx"), "Wh": ("lstm1", "Wh"), "b": ("lstm1", "b"),
             "W": ("temporal_dense1", "W"), "bo": ("temporal_dense1", "b")}
    p = {k: np.asarray(params[m][leaf]) for k, (m, leaf) in names.items()}
    loss, grads = rnn_step.numpy_loss_and_grads(p, np.asarray(ids), np.asarray(y))
    rtol = rounding_rtol(np.float64, terms=t * (embed + hidden) + hidden + vocab + n * t)
    for grad in ("manual", "autodiff"):
        f_loss, f_grads = rnn_step.fnet_loss_and_grad(model, grad)(params, ids, y)
        np.testing.assert_allclose(loss, f_loss, rtol=rtol)
        scale = max(float(np.max(np.abs(g))) for g in grads.values())
        for k, (m, leaf) in names.items():
            np.testing.assert_allclose(grads[k], f_grads[m][leaf], rtol=rtol, atol=rtol * scale, err_msg=f"{grad} {k}")


def test_numpy_skip_is_recorded(rnn_step):
    made = []
    impls, not_run = rnn_step._common.peers(lambda name, compile_model: made.append(name) or name,
                                            lambda: made.append("numpy") or "numpy", "numpy", device="cpu",
                                            torch_compile=False, numpy_skip="too slow here")
    assert impls == ["torch eager"] and made == ["torch eager"]
    assert not_run["numpy"] == "too slow here" and "torch compile" in not_run


@pytest.mark.xla_defaults
def test_rnn_step_quick(rnn_step, bench_peers, tmp_path):
    json_path, md_path = map(pathlib.Path, rnn_step.main(
        ["--quick", "--configs", "h128", "--threads", "1", "--out", str(tmp_path)]))
    assert json_path.parent == tmp_path and json_path.name.startswith("rnn_step-") and json_path.stem.endswith("-quick")
    record = json.loads(json_path.read_text())
    assert record["quick"] and list(record["configs"]) == ["h128"]
    cfg = record["configs"]["h128"]
    results = cfg["results"]
    assert set(results) == JAX_IMPLS | {"torch eager", "numpy"} and "torch compile" in cfg["not_run"]
    for name, r in results.items():
        assert r["median_s"] > 0 and r["trained"], name
        assert (r["peak_memory"] is not None) == (name in JAX_IMPLS), name
    # The same weights and the same first batch: the same first loss, to the rounding of the
    # forward's longest chain of sums (T steps of E + H terms, the output's H, the softmax's V, the
    # mean over B*T tokens), float32.
    first = [r["first_loss"] for r in results.values()]
    terms = cfg["T"] * (cfg["embed"] + cfg["hidden"]) + cfg["hidden"] + cfg["vocab"] + cfg["batch"] * cfg["T"]
    assert max(first) - min(first) <= 2 * rounding_rtol(np.float32, terms=terms) * max(first)
    assert cfg["floor_s"] == pytest.approx(cfg["flops"]["total"] / cfg["matmul"]["median_flops_per_s"])
    assert {"h128: manual / autodiff epoch time", "h128: manual / autodiff epoch peak memory"} <= set(record["targets"])
    assert "| fnet manual epoch |" in md_path.read_text() and "First loss" in md_path.read_text()
