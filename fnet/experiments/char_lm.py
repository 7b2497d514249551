"""Character language models on tiny-shakespeare (Karpathy's char-rnn, *Deep Learning from Scratch
2* chapters 5-6): a tanh RNN, an LSTM and a GRU with the SAME number of parameters, trained the same
way by :func:`fnet.lm.fit_lm` (hand-written BPTT), compared by validation loss; and what the LSTM
writes after each training stage and at several sampling temperatures.

The LSTM's width sets the budget; the RNN's and the GRU's widths are the ones whose parameter
counts come closest to it (:func:`matched_widths`): a wider vanilla RNN, a slightly wider GRU.
Each trains for the same steps on random windows (batch 32, Adam 2e-3 cosine to 2e-4, gradients
clipped at global norm 1). Validation loss: nats per character over 512 fixed windows of the
last 10% of the text (:func:`fnet.lm.validation_loss`).
"""

from __future__ import annotations

import tempfile

import jax

from fnet import data, lm, models, nets, optim, plots, sampling, schedules

NAME = "char-lm"
DESCRIPTION = "RNN vs LSTM vs GRU character models on Shakespeare at equal parameter counts; LSTM samples by stage and temperature."
CELLS = ("rnn", "lstm", "gru")
TEMPERATURES = (0.0, 0.5, 0.8, 1.0, 1.5)
PROMPT = "\n"


def num_params(vocab_size: int, cell: str, embed: int, hidden: int) -> int:
    """The parameters of ``char_lm(vocab_size, cell=cell, embed=embed, hidden=hidden)``."""
    return nets.num_params(models.char_lm(vocab_size, cell=cell, embed=embed, hidden=hidden))


def matched_widths(vocab_size: int, embed: int, lstm_hidden: int) -> dict:
    """``{cell: hidden}``: the LSTM's width, and for the RNN and the GRU the width whose parameter
    count is closest to the LSTM's (the counts grow with the width, so a bisection finds it)."""
    target = num_params(vocab_size, "lstm", embed, lstm_hidden)
    widths = {"lstm": lstm_hidden}
    for cell in ("rnn", "gru"):
        lo, hi = 1, 8 * lstm_hidden
        while hi - lo > 1:  # the smallest width with at least the target's parameters
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if num_params(vocab_size, cell, embed, mid) < target else (lo, mid)
        widths[cell] = min((lo, hi), key=lambda h: abs(num_params(vocab_size, cell, embed, h) - target))
    return {cell: widths[cell] for cell in CELLS}


def _sample(net, variables, text, length: int, temperature: float, seed: int) -> str:
    ids = sampling.generate(net, variables, text.encode(PROMPT), length, temperature=temperature,
                            key=jax.random.PRNGKey(seed))
    return text.decode(ids)


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train the three cells and sample the LSTM.

    Returns:
      ``{"quick", "embed", "context", "batch", "steps", "cells": {cell: {"hidden", "params",
      "step", "time", "val_estimate" (the cheap estimate after every interval), "val_loss" (the
      full one at the end)}}, "stages": {step: LSTM sample at temperature 0.8}, "temperatures":
      {temperature: sample of the trained LSTM}}``.
    """
    text = data.load_text("shakespeare", data_dir=data_dir)
    embed, hidden, context, batch, steps, every, stages, length = (
        (8, 16, 16, 16, 40, 20, (20, 40), 40) if quick else (64, 256, 128, 32, 1500, 100, (100, 400, 1500), 300))
    widths = matched_widths(text.vocab_size, embed, hidden)
    result = {"quick": quick, "embed": embed, "context": context, "batch": batch, "steps": steps, "cells": {},
              "stages": {}, "temperatures": {}}
    for cell in CELLS:
        net = models.char_lm(text.vocab_size, cell=cell, embed=embed, hidden=widths[cell], context=context)
        opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(schedules.cosine(2e-3, steps, alpha=0.1)))
        with tempfile.TemporaryDirectory() as folder:
            for stage in stages:  # one run, stopped at each stage (resumed bit for bit)
                fit = lm.fit_lm(net, opt, text, steps=stage, batch_size=batch, seed=seed, eval_every=every,
                                checkpoint_dir=folder, resume=True, progress=False)
                if cell == "lstm":
                    result["stages"][stage] = _sample(net, fit.variables, text, length, 0.8, seed)
        h = fit.history
        result["cells"][cell] = {"hidden": widths[cell], "params": nets.num_params(net), "step": h["step"],
                                 "time": h["time"], "val_estimate": h["val_loss"],
                                 "val_loss": lm.validation_loss(net, fit.variables, text.val)}
        if cell == "lstm":
            result["temperatures"] = {t: _sample(net, fit.variables, text, length, t, seed) for t in TEMPERATURES}
    return result


def summary(result: dict) -> str:
    """The three cells' sizes and validation losses, then the LSTM's samples."""
    lines = [f"{result['steps']} steps of {result['batch']} windows of {result['context']} characters; validation "
             "loss in nats/char (512 windows of the last 10%)",
             f"{'cell':<6} {'hidden':>6} {'params':>9} {'val loss':>9} {'bits/char':>9}"]
    for cell, r in result["cells"].items():
        lines.append(f"{cell:<6} {r['hidden']:>6} {r['params']:>9,} {r['val_loss']:>9.4f} {lm.bits(r['val_loss']):>9.3f}")
    for title, samples in (("LSTM after step", result["stages"]), ("LSTM at temperature", result["temperatures"])):
        for key, sample in samples.items():
            lines.append(f"--- {title} {key}:\n{sample.strip()[:200]}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Left: the validation estimate of each cell against the step; right: the LSTM's samples."""
    plt = plots.pyplot()
    fig, (ax, ax_text) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.3]})
    for cell, r in result["cells"].items():
        ax.plot(r["step"], r["val_estimate"], label=f"{cell} (H={r['hidden']}, {r['params']:,} params): "
                                                   f"{r['val_loss']:.3f}")
    ax.set(xlabel="step", ylabel="validation loss (nats/char)", title="Equal parameter counts, same training")
    ax.legend(fontsize=8, title="cell: final validation loss", title_fontsize=8)
    blocks = [f"after step {k} (T=0.8): {' '.join(v.split())[:110]}" for k, v in result["stages"].items()]
    blocks += [f"T={k}: {' '.join(v.split())[:110]}" for k, v in result["temperatures"].items()]
    ax_text.axis("off")
    ax_text.set_title("LSTM samples (new lines shown as spaces)", fontsize=10)
    for i, block in enumerate(blocks):
        ax_text.text(0, 1 - i / len(blocks), "\n".join(block[j:j + 62] for j in range(0, len(block), 62)),
                     va="top", family="monospace", fontsize=7, transform=ax_text.transAxes)
    fig.tight_layout()
    plots.save_figure(fig, path)
