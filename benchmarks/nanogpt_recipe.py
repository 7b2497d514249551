"""nanoGPT's "baby GPT" CPU recipe for tiny-shakespeare's characters, trained by fnet and by a plain
JAX + optax GPT on the same machine: validation loss, ms/step and wall time.

The recipe is the one nanoGPT's README gives for a CPU ("baby GPT on CPU": ``python train.py
config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
--lr_decay_iters=2000 --dropout=0.0``): 4 layers, 4 heads, width 128, context 64, batch 12, 2,000
iterations, AdamW lr 1e-3 with 100 warmup steps then cosine decay to 1e-4 at step 2,000, betas
(0.9, 0.99), weight decay 0.1 on the 2-D weights, gradients clipped to norm 1.0, no dropout. Its
README reports a validation loss of 1.88 after about 3 minutes.

Two implementations run it, each run in a process of its own, one after the other (seed by seed,
fnet then plain, so that a change in the machine's load hits both):

- fnet: ``fnet train --model gpt`` with the recipe's options (:func:`fnet_command`; the model's
  preset gives AdamW with betas (0.9, 0.99), decay 0.1 on the weights, cosine to lr/10, clip 1.0);
- plain: nanoGPT's model and loop in plain JAX + optax (:mod:`benchmarks.plain_gpt`: one jitted
  ``jax.value_and_grad`` step per call, ``optax.adamw`` with the same schedule), on the same
  batches (:func:`fnet.data.random_windows`) and split.

Both evaluate a cheap estimate every 100 steps and keep the parameters with the best one; the
table gives their full validation loss (:func:`fnet.lm.validation_loss`'s 512 fixed windows of
64 characters from the last 10% of the text, nats/char), per seed and the mean, the ms/step (the
median over the 100-step intervals but the first, which compiles) and the wall time (from the
initialized parameters to the last evaluation, compile and evaluations included), and plain's
ms/step and wall time over fnet's. Runs are kept in ``--runs``; a finished one is reused (delete it
to train it again).

    python -m benchmarks.nanogpt_recipe                          # ~10 minutes on 2 idle cores
    python -m benchmarks.nanogpt_recipe --seeds 0 --plain-seeds 0,1,2
    python -m benchmarks.nanogpt_recipe --configs plain
    python -m benchmarks.nanogpt_recipe --quick                  # seconds: a tiny GPT, 20 steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from benchmarks._common import (RESULTS_DIR, load_average, publish, read_lm_run, record_header, run_in_process,
                                table_heading, targets_rows)
from fnet import models, nets

NAME = "nanogpt_recipe"
#: nanoGPT's CPU recipe (its README); the optimizer's other settings are fnet's GPT preset's.
RECIPE = {"layers": 4, "heads": 4, "width": 128, "context": 64, "batch_size": 12, "steps": 2000, "lr": 1e-3,
          "warmup": 100, "eval_every": 100}
QUICK = {"layers": 1, "heads": 2, "width": 16, "context": 16, "batch_size": 4, "steps": 20, "lr": 1e-3,
         "warmup": 5, "eval_every": 10}
IMPLEMENTATIONS = {"fnet": "fnet train --model gpt", "plain": "plain JAX + optax"}
#: The recipe's validation loss that fnet's mean over seeds must reach (nanoGPT's 1.88 plus seed noise).
VAL_GOAL = 1.90


def fnet_command(recipe: dict, seed: int, run_dir: str) -> list[str]:
    """``fnet train --model gpt`` of ``recipe`` (:data:`RECIPE`'s keys) with ``seed`` into ``run_dir``."""
    return [sys.executable, "-m", "fnet", "train", "--model", "gpt",
            "--hidden", ",".join([str(recipe["width"])] * recipe["layers"]), "--heads", str(recipe["heads"]),
            "--context", str(recipe["context"]), "--batch-size", str(recipe["batch_size"]),
            "--steps", str(recipe["steps"]), "--lr", str(recipe["lr"]), "--warmup", str(recipe["warmup"]),
            "--dropout", "0", "--eval-every", str(recipe["eval_every"]), "--seed", str(seed), "--out", run_dir]


def plain_command(recipe: dict, seed: int, run_dir: str) -> list[str]:
    """:mod:`benchmarks.plain_gpt` of ``recipe`` with ``seed`` into ``run_dir``: the rate decays to
    lr / 10 (nanoGPT's min_lr), the rest are its defaults (nanoGPT's: beta2 0.99, weight decay 0.1,
    clip 1.0)."""
    options = [token for k, v in recipe.items() for token in (f"--{k.replace('_', '-')}", str(v))]
    return [sys.executable, "-m", "benchmarks.plain_gpt", *options, "--min-lr", str(recipe["lr"] / 10),
            "--seed", str(seed), "--out", run_dir]


COMMANDS = {"fnet": fnet_command, "plain": plain_command}


def parameters(name: str, net: dict) -> int:
    """The parameter count of a run's network (config.json's ``net``)."""
    return nets.num_params(models.from_config(net)) if name == "fnet" else net["parameters"]


def summarize(name: str, runs: dict) -> dict:
    """One implementation's runs ``{seed: read_lm_run record}`` in a few numbers."""
    return {"parameters": parameters(name, next(iter(runs.values()))["net"]),
            "val_loss_per_seed": {seed: r["val_loss"] for seed, r in runs.items()},
            **{f"{k}_mean": statistics.mean(r[k] for r in runs.values()) for k in ("val_loss", "ms_per_step",
                                                                                   "wall_time_s")}}


def targets(summary: dict) -> dict:
    """The recipe's goals: fnet's mean validation loss <= :data:`VAL_GOAL`, and faster than plain."""
    out = {}
    if "fnet" in summary:
        value = summary["fnet"]["val_loss_mean"]
        out["fnet mean val loss (nats/char)"] = {"value": value, "goal": f"<= {VAL_GOAL:.2f}", "met": value <= VAL_GOAL}
    if len(summary) == 2:
        value = summary["plain"]["ms_per_step_mean"] / summary["fnet"]["ms_per_step_mean"]
        out["plain ms/step / fnet ms/step"] = {"value": value, "goal": "> 1", "met": value > 1}
    return out


def markdown(record: dict) -> str:
    r = record["recipe"]
    lines = [*table_heading(record, "nanoGPT's CPU recipe"), "",
             f"Layers {r['layers']}, heads {r['heads']}, width {r['width']}, context {r['context']}, batch "
             f"{r['batch_size']}, steps {r['steps']}, AdamW lr {r['lr']:g} ({r['warmup']} warmup, cosine to "
             f"{r['lr'] / 10:g}), betas (0.9, 0.99), weight decay 0.1, clip 1.0, no dropout. Validation loss: "
             "512 windows of the last 10%, nats/char, of the parameters with the best estimate.", "",
             "| implementation | parameters | seeds | val loss per seed | mean val loss | ms/step | wall time (s) |",
             "|---|---:|---|---|---:|---:|---:|"]
    for name, s in record["summary"].items():
        per_seed = ", ".join(f"{v:.4f}" for v in s["val_loss_per_seed"].values())
        lines.append(f"| {IMPLEMENTATIONS[name]} | {s['parameters']:,} | {', '.join(map(str, s['val_loss_per_seed']))} "
                     f"| {per_seed} | {s['val_loss_mean']:.4f} | {s['ms_per_step_mean']:.1f} | "
                     f"{s['wall_time_s_mean']:.0f} |")
    if "plain_over_fnet" in record:
        ratio = record["plain_over_fnet"]
        lines += ["", f"plain / fnet: ms/step x{ratio['ms_per_step']:.2f}, wall time x{ratio['wall_time_s']:.2f}."]
    return "\n".join(lines + (targets_rows(record["targets"]) if record["targets"] else []))


def seeds(parser: argparse.ArgumentParser, option: str, value: str) -> list[int]:
    """Comma-separated seeds >= 0 (a one-line parser error otherwise)."""
    try:
        out = [int(s) for s in value.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 0 or len(set(out)) < len(out):
        parser.error(f"{option}: expected distinct comma-separated integers >= 0, got {value!r}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="fnet,plain", help="comma-separated, from fnet, plain (default both)")
    parser.add_argument("--seeds", default="0,1,2", help="fnet's seeds (default 0,1,2)")
    parser.add_argument("--plain-seeds", default="0", help="the plain GPT's seeds (default 0)")
    parser.add_argument("--runs", default="runs/nanogpt_recipe", help="folder of the runs (default runs/nanogpt_recipe)")
    parser.add_argument("--quick", action="store_true", help="a tiny GPT for 20 steps (seconds)")
    parser.add_argument("--out", default=RESULTS_DIR, help="folder for the results (default benchmarks/results)")
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    if not names or any(n not in IMPLEMENTATIONS for n in names):
        parser.error(f"--configs: choose from {', '.join(IMPLEMENTATIONS)}, got {args.configs!r}")
    run_seeds = {"fnet": seeds(parser, "--seeds", args.seeds), "plain": seeds(parser, "--plain-seeds", args.plain_seeds)}
    recipe = QUICK if args.quick else RECIPE
    record = record_header(NAME, "cpu") | {"threads": "XLA's default", "recipe": recipe,
                                           "commands": {n: COMMANDS[n](recipe, 0, "RUN_DIR")[1:] for n in names}}
    folder = {n: lambda seed, n=n: os.path.join(args.runs, f"{'quick-' if args.quick else ''}{n}-s{seed}") for n in names}
    for seed in sorted(set().union(*(run_seeds[n] for n in names))):
        for n in names:
            if seed in run_seeds[n]:
                run_in_process(folder[n](seed), COMMANDS[n](recipe, seed, folder[n](seed)))
    record["runs"] = {n: {seed: read_lm_run(folder[n](seed)) for seed in run_seeds[n]} for n in names}
    record["summary"] = {n: summarize(n, record["runs"][n]) for n in names}
    if len(names) == 2:
        record["plain_over_fnet"] = {k: record["summary"]["plain"][f"{k}_mean"] / record["summary"]["fnet"][f"{k}_mean"]
                                     for k in ("ms_per_step", "wall_time_s")}
    record["targets"] = targets(record["summary"])
    record["load_average_after"] = load_average()
    publish(record, markdown(record), args.out, NAME, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
