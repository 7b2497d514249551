"""`fnet train` of a character language model, `fnet evaluate` of its run and `fnet sample`: the run
folder, bitwise resume, the validation loss, the generated text and the bad-input lines."""

from __future__ import annotations

import json
import re

import chex
import numpy as np
import pytest
from _cli_helpers import one_line_error, snapshot

import fnet
from fnet import checkpoint, cli, lm, nets, runs

#: A language model that trains in seconds: 20 steps of 8 windows of 16 characters.
LM = ["--model", "lstm", "--hidden", "16", "--embed", "8", "--context", "16", "--batch-size", "8", "--steps", "20",
      "--eval-every", "10"]


def train_lm(out, *options) -> int:
    return cli.main(["train", *LM, "--out", str(out), *options])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    assert train_lm(out, "--quiet") == 0
    return out


def _params(run, part="params"):
    return checkpoint.load(run / fnet.train.CHECKPOINT_NAME)[part]


def test_train_writes_a_run_with_its_validation_loss(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_lm(out) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("training lstm char LM (65 tokens, embed 8, 1x16, context 16, dropout=0.25)")
    assert "on shakespeare (1,003,854 train / 111,540 val characters, vocabulary 65) for 20 steps" in lines[0]
    assert lines[1].startswith("[##########----------] step 10/20  train ")
    for line in lines[1:3]:  # train and validation loss in nats, then in bits per character
        train, val, train_bits, val_bits = map(float, re.search(
            r"train (\S+)  val (\S+) nats/char \((\S+) / (\S+) bits/char\)", line).groups())
        # printed to 4 and 3 decimals: within half a unit of each, 5e-5 / ln 2 + 5e-4
        assert abs(train / np.log(2) - train_bits) < 6e-4 and abs(val / np.log(2) - val_bits) < 6e-4
    assert " bits/char)  lr " in lines[2] and lines[2].startswith("[####################] step 20/20")
    assert lines[3].startswith("validation loss ") and "mean over 512 windows of 16 characters from the last 10%" \
        in lines[3]
    assert {"config.json", "checkpoint.safetensors", "history.json", "results.json", "curves.png",
            runs.MARKER} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == [10, 20] and results["best_step"] in history["step"]
    assert results["val_bits_per_char"] == pytest.approx(results["val_loss"] / np.log(2))
    # results.json's validation loss is the full one of the best parameters, recomputed here
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"]["vocab"] == fnet.data.load_text("shakespeare").vocab and config["args"]["steps"] == 20
    net = fnet.char_lm(65, embed=8, hidden=16, context=16)
    best = nets.Variables(_params(out, "best_params"), {})
    assert lm.validation_loss(net, best, fnet.data.load_text("shakespeare").val) == pytest.approx(results["val_loss"],
                                                                                                 rel=1e-6)
    assert results["val_loss"] < np.log(65)


def test_evaluate_prints_the_runs_validation_loss(lm_run, capsys):
    assert cli.main(["evaluate", str(lm_run)]) == 0
    val = json.loads((lm_run / "results.json").read_text())["val_loss"]
    assert capsys.readouterr().out.strip() == (f"{lm_run}: validation loss {val:.4f} nats/char ({val / np.log(2):.3f} "
                                               "bits/char; mean over 512 windows of 16 characters from the last 10% "
                                               "of the text)")


def test_resume_continues_bit_for_bit_and_overwrite_replaces(tmp_path, capsys):
    constant = ["--schedule", "constant"]  # a cosine schedule's length is the run's steps: they cannot change
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert train_lm(whole, "--quiet", "--steps", "30", *constant) == 0
    assert train_lm(part, "--quiet", *constant) == 0
    assert cli.main(["train", "--out", str(part), "--resume", "--steps", "30", "--quiet"]) == 0
    chex.assert_trees_all_equal(checkpoint.load(part / fnet.train.CHECKPOINT_NAME),
                                checkpoint.load(whole / fnet.train.CHECKPOINT_NAME))
    assert json.loads((part / "history.json").read_text())["step"] == [10, 20, 30]
    # --overwrite of a language-model run: the new run (another seed) replaces the old one
    before = _params(part)
    capsys.readouterr()
    assert train_lm(part, "--overwrite", "--seed", "1") == 0  # its first interval's line once it is in place
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("[##########----------] step 10/20") and lines[2].startswith("[####################] step 20/20")
    assert json.loads((part / "history.json").read_text())["step"] == [10, 20]
    assert not np.array_equal(_params(part)["lstm1"]["Wx"], before["lstm1"]["Wx"])
    capsys.readouterr()
    assert cli.main(["train", "--out", str(part), "--resume", "--steps", "40"]) == 2
    assert "--resume: --steps cannot change from 20 for a run with --schedule cosine" in one_line_error(capsys)


def test_a_diverging_language_model_keeps_its_last_checkpoint_and_history(tmp_path, capsys, monkeypatch):
    from fnet import cli_lm, optim, schedules

    build = cli_lm.build

    def exploding(options, vocab_size):  # the rate jumps from 0.1 to inf (float32) after 10 steps
        return build(options, vocab_size)[0], optim.sgd(schedules.step_decay(0.1, 1e45, 10))

    monkeypatch.setattr(cli_lm, "build", exploding)
    out = tmp_path / "run"
    assert train_lm(out, "--quiet") == 2
    line = one_line_error(capsys)
    assert "fit_lm: the training loss became" in line and f"the checkpoint of step 10 in {out} is kept" in line
    assert json.loads((out / "history.json").read_text())["step"] == [10]
    assert checkpoint.load_metadata(out / fnet.train.CHECKPOINT_NAME)["step"] == 10


def test_sample_prints_the_prompt_and_its_continuation(lm_run, capsys):
    args = ["sample", str(lm_run), "--prompt", "ROMEO:", "--length", "40", "--seed", "3"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 40 + 1  # and print's new line
    assert cli.main(args) == 0 and capsys.readouterr().out == first  # a seed gives the same text
    assert cli.main([*args[:-1], "4"]) == 0 and capsys.readouterr().out != first
    # greedy decoding is the library's, from the best parameters
    assert cli.main([*args, "--temperature", "0"]) == 0
    text = fnet.data.load_text("shakespeare")
    net = fnet.char_lm(65, embed=8, hidden=16, context=16)
    ids = fnet.generate(net, _params(lm_run, "best_params"), text.encode("ROMEO:"), 40, temperature=0)
    assert capsys.readouterr().out == "ROMEO:" + text.decode(ids) + "\n"


@pytest.mark.parametrize("options, message", [
    (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["--context", "0"], "--context must be an integer >= 1, got 0"),
    (["--epochs", "3"], "--epochs 3: --model lstm is a language model, trained by --steps"),
    (["--data", "digits"], "--data digits: --model lstm is a character language model, which trains on a text; "
                           "give --data shakespeare"),
    (["--hidden", "16,32"], "--hidden 16,32: a language model's layers have one width"),
    (["--schedule", "step"], "--schedule step decays per epoch; a language model trains by steps"),
    (["--norm", "layernorm"], "--norm layernorm: --model lstm is a language model"),
    (["--eval-every", "0"], "--eval-every must be an integer >= 1 (steps), got 0"),
    (["--clip", "-1"], "--clip must be a finite number >= 0"),
    (["--context", "200000"], "--context 200000: the validation part of shakespeare has only 111540 characters"),
])
def test_bad_language_model_options_are_one_line_before_any_file(tmp_path, capsys, options, message):
    assert train_lm(tmp_path / "run", *options) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    (["--data", "shakespeare"], "--data shakespeare is a text: train a language model on it (--model lstm, rnn, gru or gpt)"),
    (["--steps", "10"], "--steps 10: --model mlp trains by epochs; --steps applies to the language models (lstm, rnn, "
                        "gru, gpt)"),
    (["--embed", "8"], "--embed 8: --model mlp trains by epochs"),
    (["--warmup", "5"], "--warmup 5: --model mlp trains by epochs"),
    (["--heads", "2"], "--heads 2: --model mlp trains by epochs"),
    (["--tie"], "--tie True: --model mlp trains by epochs"),
    (["--beta2", "0.99", "--optimizer", "sgd"], "--beta2 0.99: --optimizer sgd has no second moment"),
])
def test_language_model_options_for_the_other_models_are_refused(tmp_path, capsys, options, message):
    assert cli.main(["train", "--out", str(tmp_path / "run"), *options]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    (["--prompt", ""], "--prompt is empty; give at least one character"),
    (["--prompt", "ROMEO\u00e9"], "--prompt: character '\u00e9' (U+00E9) at position 5 of text is not in the vocabulary "
                                  "of 65 characters"),
    (["--length", "0"], "--length must be an integer >= 1 (characters to generate), got 0"),
    (["--temperature", "-1"], "--temperature must be a finite number >= 0 (0: greedy), got -1.0"),
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--seed", "-1"], "--seed must be an integer with 0 <= seed < 2**63, got -1"),
])
def test_bad_sample_options_are_one_line(lm_run, capsys, options, message):
    before = snapshot(lm_run)
    assert cli.main(["sample", str(lm_run), *options]) == 2
    assert message in one_line_error(capsys)
    assert snapshot(lm_run) == before


def test_sampling_a_run_that_is_not_a_language_model_is_refused(finished_run, capsys):
    assert cli.main(["sample", str(finished_run)]) == 2
    assert f"sample: {finished_run} holds a run of --model mlp, which is not a language model" in one_line_error(capsys)


def test_a_vocabulary_that_differs_from_the_checkpoint_is_named(lm_run, tmp_path, capsys):
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in lm_run.iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    config = json.loads((edited / "config.json").read_text())
    config["dataset"]["vocab"] = config["dataset"]["vocab"][:-1]  # one character fewer than the embedding's rows
    (edited / "config.json").write_text(json.dumps(config))
    for command in ("sample", "evaluate"):
        assert cli.main([command, str(edited)]) == 2
        assert "net.vocab_size is 65, the options build 64" in one_line_error(capsys)
