"""`fnet train --model gpt`, `fnet evaluate` and `fnet sample` of its run: the options that build the
GPT and its optimizer (AdamW of the weights only, warmup then cosine), bitwise resume, sampling
with the prompt cropped to the context, and the bad-input lines."""

from __future__ import annotations

import json

import chex
import jax
import numpy as np
import pytest
from _cli_helpers import one_line_error

import fnet
from fnet import checkpoint, cli, cli_lm, runs, schedules

#: A GPT that trains in seconds: 2 blocks of width 16 with 2 heads, 20 steps of 8 windows of 16.
GPT = ["--model", "gpt", "--hidden", "16,16", "--heads", "2", "--context", "16", "--batch-size", "8", "--steps", "20",
       "--warmup", "4", "--eval-every", "10"]


def train_gpt(out, *options) -> int:
    return cli.main(["train", *GPT, "--out", str(out), *options])


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt") / "run"
    assert train_gpt(out, "--quiet", "--tie") == 0
    return out


def test_the_run_records_the_gpt_and_its_validation_loss(gpt_run, capsys):
    config = json.loads((gpt_run / "config.json").read_text())
    assert config["net"] == {"vocab_size": 65, "context": 16, "layers": 2, "heads": 2, "width": 16, "dropout": 0.0,
                             "tie": True, "weight_decay": 0.0, "dtype": "float32"}
    args = config["args"]
    assert (args["optimizer"], args["beta2"], args["weight_decay"], args["warmup"]) == ("adamw", 0.99, 0.1, 4)
    results = json.loads((gpt_run / "results.json").read_text())
    assert results["context"] == 16 and results["val_loss"] < np.log(65)
    assert cli.main(["evaluate", str(gpt_run)]) == 0
    assert f"validation loss {results['val_loss']:.4f} nats/char" in capsys.readouterr().out


def test_the_optimizer_is_adamw_of_the_weights_with_warmup_then_cosine():
    options = runs.RunOptions(**{**{k: None for k in runs.RUN_OPTIONS}, "model": "gpt", "hidden": (16,), "heads": 2,
                                 "tie": False, "context": 8, "dropout": 0.0, "optimizer": "adamw", "weight_decay": 0.1,
                                 "lr": 1e-3, "steps": 100, "warmup": 10, "schedule": "cosine", "clip": 1.0,
                                 "beta2": 0.99})
    net, opt = cli_lm.build(options, 65)
    params = net.init(jax.random.PRNGKey(0)).params
    zero = jax.tree.map(np.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    lr = schedules.warmup(schedules.cosine(1e-3, 90, alpha=0.1), 10)
    # With zero gradients AdamW's update is -lr(0) * wd * p on the weights, and 0 elsewhere; lr(0) = 0 in warmup.
    assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1e-3) and float(lr(100)) == pytest.approx(1e-4)
    chex.assert_trees_all_equal(updates, zero)
    state = opt.init(params)
    for _ in range(5):
        updates, state = opt.update(zero, state, params)
    # the fifth update (step 4, in the warmup): the table is a weight, decayed; positions and norms are not.
    # float32: -lr * wd * p in another order of three roundings, within a few eps (1.2e-7) of it
    np.testing.assert_allclose(updates["embedding1"]["W"], -float(lr(4)) * 0.1 * params["embedding1"]["W"], rtol=1e-6)
    np.testing.assert_array_equal(updates["position_embedding1"]["P"], 0.0)
    assert not np.any(updates["serial1"]["residual1"]["branches"]["block"]["layernorm1"]["gamma"])


def test_resume_continues_bit_for_bit(tmp_path):
    constant = ["--schedule", "constant", "--quiet"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert train_gpt(whole, "--steps", "30", *constant) == 0
    assert train_gpt(part, *constant) == 0
    assert cli.main(["train", "--out", str(part), "--resume", "--steps", "30", "--quiet"]) == 0
    chex.assert_trees_all_equal(checkpoint.load(part / fnet.train.CHECKPOINT_NAME),
                                checkpoint.load(whole / fnet.train.CHECKPOINT_NAME))


def test_sample_crops_a_long_prompt_to_the_context_and_says_so(gpt_run, capsys):
    prompt = "ROMEO: " * 4  # 28 characters, the model sees its last 16
    assert cli.main(["sample", str(gpt_run), "--prompt", prompt, "--length", "30", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert "the prompt has 28 characters; --model gpt sees at most its context of 16, so it continues the last 16" \
        in captured.err
    text = fnet.data.load_text("shakespeare")
    net = fnet.gpt(65, 16, layers=2, heads=2, width=16, tie=True)
    best = checkpoint.load(gpt_run / fnet.train.CHECKPOINT_NAME)["best_params"]
    ids = fnet.generate(net, best, text.encode(prompt[-16:]), 30, temperature=0)
    assert captured.out == prompt + text.decode(ids) + "\n"
    assert cli.main(["sample", str(gpt_run), "--prompt", "KING", "--length", "10"]) == 0
    assert capsys.readouterr().err == ""  # a prompt within the context: no note


@pytest.mark.parametrize("options, message", [
    (["--heads", "3"], "--heads 3: the heads must divide the width --hidden 16"),
    (["--hidden", "16,32"], "--hidden 16,32: a language model's layers have one width"),
    (["--embed", "8"], "--embed 8: a GPT's embedding width is its width, --hidden"),
    (["--init", "he"], "--init he: a GPT's initialization is fixed"),
    (["--warmup", "20"], "--warmup 20: the warmup must be shorter than the run's --steps 20"),
    (["--warmup", "-1"], "--warmup must be an integer >= 0 (steps), got -1"),
    (["--beta2", "1"], "--beta2 must be in (0, 1) (Adam's second-moment decay), got 1.0"),
    (["--context", "0"], "--context must be an integer >= 1, got 0"),
])
def test_bad_gpt_options_are_one_line_before_any_file(tmp_path, capsys, options, message):
    assert train_gpt(tmp_path / "run", *options) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    (["--heads", "2"], "--heads 2: --model lstm is a recurrent language model; --heads applies to --model gpt"),
    (["--tie"], "--tie True: --model lstm is a recurrent language model; --tie applies to --model gpt"),
])
def test_gpt_options_are_refused_for_a_recurrent_model(tmp_path, capsys, options, message):
    assert cli.main(["train", "--model", "lstm", "--steps", "5", "--out", str(tmp_path / "run"), *options]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()
