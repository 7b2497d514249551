"""benchmarks/nanogpt_recipe.py in its quick form (a real `fnet train --model gpt` run and a real
plain JAX + optax run of a tiny GPT; no timing assertions), and the properties of the plain GPT
it compares against: causal, nanoGPT's schedule and decay mask, fnet's GPT but for the tied head."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnet
from fnet import schedules

pytest.importorskip("optax")
ROOT = pathlib.Path(__file__).resolve().parents[1]
F32_EPS = float(np.finfo(np.float32).eps)


@pytest.fixture
def recipe(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a top-level folder, not part of the fnet package
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the runs' processes import this checkout's fnet and benchmarks
    import benchmarks.nanogpt_recipe

    return benchmarks.nanogpt_recipe


@pytest.fixture
def plain(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.plain_gpt

    return benchmarks.plain_gpt


def test_quick_comparison_records_both_implementations(recipe, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    assert recipe.main(["--quick", "--seeds", "0,1", "--runs", str(runs), "--out", str(out)]) == 0
    (record_path,) = out.glob("nanogpt_recipe-*-quick.json")
    record = json.loads(record_path.read_text())
    assert record["recipe"] == recipe.QUICK
    for name, seeds in (("fnet", ["0", "1"]), ("plain", ["0"])):
        assert list(record["runs"][name]) == seeds
        for seed, r in record["runs"][name].items():
            results = json.loads((runs / f"quick-{name}-s{seed}" / "results.json").read_text())
            assert r["val_loss"] == results["val_loss"] and results["val_windows"] == fnet.lm.VAL_WINDOWS
            assert r["steps"] == 20 and r["curve"]["step"] == [10, 20] and r["ms_per_step"] > 0
        summary = record["summary"][name]
        assert summary["val_loss_mean"] == pytest.approx(np.mean([r["val_loss"] for r in record["runs"][name].values()]))
    summary = record["summary"]
    assert record["plain_over_fnet"]["ms_per_step"] == pytest.approx(
        summary["plain"]["ms_per_step_mean"] / summary["fnet"]["ms_per_step_mean"])
    table = record_path.with_suffix(".md").read_text()
    # fnet's GPT has its own head (16 x 65 + 65) where the plain one reuses the token table
    assert "| fnet train --model gpt | 5,713 | 0, 1 |" in table and "| plain JAX + optax | 4,608 | 0 |" in table


@pytest.mark.parametrize("argv, message", [
    (["--configs", "fnet,torch"], "--configs: choose from fnet, plain, got 'fnet,torch'"),
    (["--seeds", "0,-1"], "--seeds: expected distinct comma-separated integers >= 0, got '0,-1'"),
    (["--plain-seeds", "x"], "--plain-seeds: expected distinct comma-separated integers >= 0, got 'x'"),
])
def test_bad_options_are_one_line(recipe, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        recipe.main(argv)
    assert e.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(message)


def test_plain_gpt_is_causal(plain):
    params = plain.init_params(jax.random.PRNGKey(0), 65, 8, 2, 16)
    idx = jax.random.randint(jax.random.PRNGKey(1), (3, 8), 0, 65)
    changed = idx.at[:, 5:].set((idx[:, 5:] + 1) % 65)
    # masked keys get exactly zero weight, so the first five positions' scores are bit for bit equal
    np.testing.assert_array_equal(plain.forward(params, idx, 2)[:, :5], plain.forward(params, changed, 2)[:, :5])
    assert not np.allclose(plain.forward(params, idx, 2)[:, 5:], plain.forward(params, changed, 2)[:, 5:])


def test_plain_gpt_is_fnets_gpt_with_a_tied_head(plain):
    vocab, context, layers, heads, width = 65, 8, 2, 2, 16
    params = plain.init_params(jax.random.PRNGKey(0), vocab, context, layers, width)
    count = sum(p.size for p in jax.tree_util.tree_leaves(params))
    assert count + vocab * width + vocab == fnet.nets.num_params(fnet.gpt(vocab, context, layers=layers, heads=heads,
                                                                          width=width))


def test_plain_schedule_is_fnets_warmup_then_cosine(plain):
    lr, warmup, steps = 1e-3, 10, 50
    ours = schedules.warmup(schedules.cosine(lr, steps - warmup, alpha=0.1), warmup)
    theirs = plain.schedule(lr, lr / 10, warmup, steps)
    s = jnp.arange(steps + 5)
    # float32 sums of terms up to 10x the rate (cosine's floor is lr / 10): a few roundings of each
    np.testing.assert_allclose(theirs(s), ours(s), rtol=40 * F32_EPS, atol=0)


def test_plain_decay_acts_on_the_two_dimensional_parameters_only(plain):
    lr, wd = 1e-2, 0.1
    params = plain.init_params(jax.random.PRNGKey(0), 65, 8, 1, 16)
    opt = plain.optimizer(lr, lr, 0, 10, 0.99, wd, 1.0)  # constant rate: lr at step 0
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)  # Adam's step is 0: only the decay moves
    updates, _ = opt.update(zeros, opt.init(params), params)
    new = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new)):
        expected = p * (1 - lr * wd) if p.ndim >= 2 else p
        np.testing.assert_allclose(q, expected, rtol=4 * F32_EPS, atol=0)


def test_plain_mean_loss_weights_a_short_last_batch(plain):
    params = plain.init_params(jax.random.PRNGKey(0), 65, 8, 1, 16)
    x, y = (jax.random.randint(k, (7, 8), 0, 65) for k in jax.random.split(jax.random.PRNGKey(2)))
    whole = float(plain.loss_fn(params, x, y, 2))
    # batches of 3, 3 and 1 rows: float32 means of ~ln(65) ~ 4 re-weighted, a few roundings
    assert plain.mean_loss(params, 2, x, y, batch_size=3) == pytest.approx(whole, rel=16 * F32_EPS)
