"""Character language models of several sizes, each given the same wall-time budget by `fnet train`,
compared by validation loss against wall time: the comparison that chose the default of
`fnet train --model lstm` (docs/language_models.md).

Every configuration is one `fnet train --model lstm` run on tiny-shakespeare (windows of 128, batch
32, Adam 2e-3 cosine to 2e-4, clip 1.0: the model's preset) with its width, layers and dropout,
and a number of steps chosen so that the run takes about 14 minutes on a 2-core CPU (its step time
measured first). The runs are kept in ``--runs`` (a finished one is reused: delete it to train it
again); the figure plots each run's cheap validation estimate (128 windows) against wall time,
compile and evaluation included, and the table gives the full validation loss (512 windows) of
its best parameters, in nats per character.

    python -m benchmarks.char_lm_sizes                       # ~1 hour: every configuration
    python -m benchmarks.char_lm_sizes --configs h512,h512-d25
    python -m benchmarks.char_lm_sizes --quick               # seconds: two tiny runs (the tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks._common import RESULTS_DIR, publish, record_header
from fnet import models, nets, plots

NAME = "char_lm_sizes"
#: name -> (fnet train options, steps): about 14 minutes each on the 2-core Xeon.
CONFIGS = {
    "h512": (["--hidden", "512"], 3800),
    "h512-d25": (["--hidden", "512", "--dropout", "0.25"], 3600),
    "h768-d30": (["--hidden", "768", "--dropout", "0.3"], 2400),
    "2x384-d20": (["--hidden", "384,384", "--dropout", "0.2"], 3300),
}
QUICK = {
    "h16": (["--hidden", "16", "--embed", "8", "--context", "16", "--batch-size", "8", "--eval-every", "10"], 20),
    "h16-d20": (["--hidden", "16", "--embed", "8", "--context", "16", "--batch-size", "8", "--eval-every", "10",
                 "--dropout", "0.2"], 20),
}


def train(run_dir: str, options: list[str], steps: int) -> None:
    """``fnet train --model lstm OPTIONS --steps STEPS --out RUN_DIR`` in a process of its own (its
    wall time is the run's alone), unless the run in ``run_dir`` has finished already."""
    if os.path.exists(os.path.join(run_dir, "results.json")):
        print(f"{run_dir}: finished before, reused")
        return
    resume = ["--resume"] if os.path.exists(os.path.join(run_dir, "checkpoint.safetensors")) else []
    command = [sys.executable, "-m", "fnet", "train", "--model", "lstm", *options, "--steps", str(steps),
               "--out", run_dir, *resume]
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


def read_run(run_dir: str) -> dict:
    """A finished run's record: the full validation loss and its curve (step, time, estimate)."""
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    rates = sorted(history["chars_per_s"][1:] or history["chars_per_s"])  # the first chunk compiles
    context, batch = config["args"]["context"], config["args"]["batch_size"]
    return {"net": config["net"], "steps": history["step"][-1], "val_loss": results["val_loss"],
            "val_bits_per_char": results["val_bits_per_char"], "best_step": results["best_step"],
            "wall_time_s": results["wall_time_s"], "ms_per_step": 1e3 * context * batch / rates[len(rates) // 2],
            "curve": {k: history[k] for k in ("step", "time", "train_loss", "val_loss")}}


def markdown(record: dict) -> str:
    rows = ["| configuration | parameters | steps | ms/step | wall time | best step | val loss (nats/char) | bits/char |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in record["runs"].items():
        params = nets.num_params(models.from_config(r["net"]))
        rows.append(f"| {name} | {params:,} | {r['steps']} | {r['ms_per_step']:.3g} | {r['wall_time_s'] / 60:.1f} min | "
                    f"{r['best_step']} | {r['val_loss']:.4f} | {r['val_bits_per_char']:.3f} |")
    return "\n".join(rows)


def plot(record: dict, path: str) -> bool:
    plt = plots.pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in record["runs"].items():
        c = r["curve"]
        ax.plot([t / 60 for t in c["time"]], c["val_loss"], label=f"{name}: {r['val_loss']:.3f}")
    ax.axhline(1.55, color="gray", linestyle=":", label="1.55 nats/char")
    ax.axvline(15, color="gray", linestyle="--", linewidth=0.8, label="15 minutes")
    ax.set(xlabel="wall time (min, compile and evaluation included)", ylabel="validation loss (nats/char)",
           title="LSTM character models on tiny-shakespeare, 2-core CPU", ylim=(1.4, 2.2))
    ax.legend(title="configuration: full val loss of the best step")
    fig.tight_layout()
    plots.save_figure(fig, path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--runs", default="runs/char_lm_sizes", help="folder of the runs (default runs/char_lm_sizes)")
    parser.add_argument("--quick", action="store_true", help="two tiny runs of 20 steps (seconds)")
    parser.add_argument("--out", default=RESULTS_DIR, help="folder for the results (default benchmarks/results)")
    args = parser.parse_args(argv)
    table = QUICK if args.quick else CONFIGS
    names = args.configs.split(",") if args.configs else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"--configs: unknown configuration {', '.join(unknown)}; choose from {', '.join(table)}")
    record = record_header(NAME, "cpu")
    for name in names:
        options, steps = table[name]
        train(os.path.join(args.runs, name), options, steps)
    record["runs"] = {name: read_run(os.path.join(args.runs, name)) for name in names}
    json_path, _ = publish(record, markdown(record), args.out, NAME, args.quick)
    png_path = json_path.removesuffix(".json") + ".png"
    if plot(record, png_path):
        print(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    main()
