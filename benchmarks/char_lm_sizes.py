"""Character language models of several sizes, each given the same wall-time budget by `fnet train`,
compared by validation loss against wall time: the comparison that chose the defaults of
`fnet train --model lstm` and `--model gpt` (docs/language_models.md).

Every configuration is one `fnet train --model MODEL` run on tiny-shakespeare with the model's
preset (LSTM: windows of 128, batch 32, Adam 2e-3 cosine to 2e-4, clip 1.0; GPT: windows of 128,
batch 16, AdamW 2e-3 (betas 0.9, 0.99, decay 0.1) with 100 warmup steps then cosine to 2e-4,
clip 1.0) and its own sizes and dropout, for a number of steps chosen so that the run takes
about 14 minutes on a 2-core CPU (its step time measured first). The runs are kept in ``--runs``
(a finished one is reused: delete it to train it again); the figure plots each run's cheap
validation estimate (128 windows) against wall time, compile and evaluation included, and the
table gives the full validation loss (512 windows) of its best parameters, in nats per character.

    python -m benchmarks.char_lm_sizes                       # ~1 hour: every LSTM configuration
    python -m benchmarks.char_lm_sizes --model gpt           # ~45 minutes: the GPT's
    python -m benchmarks.char_lm_sizes --configs h512,h512-d25
    python -m benchmarks.char_lm_sizes --quick [--model gpt] # seconds: two tiny runs (the tests)
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks._common import RESULTS_DIR, publish, read_lm_run, record_header, run_in_process
from fnet import models, nets, plots

#: The validation loss each model's default aims at within 15 minutes (nats/char), on the figure.
TARGETS = {"lstm": 1.55, "gpt": 1.50}
#: The record's name per model.
NAMES = {"lstm": "char_lm_sizes", "gpt": "gpt_sizes"}
#: model -> name -> (fnet train options, steps): about 14 minutes each on the 2-core Xeon.
CONFIGS = {
    "lstm": {
        "h512": (["--hidden", "512"], 3800),
        "h512-d25": (["--hidden", "512", "--dropout", "0.25"], 3600),
        "h768-d30": (["--hidden", "768", "--dropout", "0.3"], 2400),
        "2x384-d20": (["--hidden", "384,384", "--dropout", "0.2"], 3300),
    },
    "gpt": {  # 4 heads; dropout 0.1 (after the embeddings, on the attention weights and at the end of
        # each residual branch) costs ~0.4 of a step: its random bits take ~10 ns each on XLA:CPU
        "4x128": (["--hidden", "128,128,128,128", "--dropout", "0"], 11000),
        "4x192-d10": (["--hidden", "192,192,192,192", "--dropout", "0.1"], 4300),
        "4x256-d10": (["--hidden", "256,256,256,256", "--dropout", "0.1"], 3200),
    },
}
_TINY = ["--context", "16", "--batch-size", "8", "--eval-every", "10"]
QUICK = {
    "lstm": {"h16": (["--hidden", "16", "--embed", "8", *_TINY], 20),
             "h16-d20": (["--hidden", "16", "--embed", "8", *_TINY, "--dropout", "0.2"], 20)},
    "gpt": {"2x16": (["--hidden", "16,16", "--heads", "2", "--warmup", "5", *_TINY], 20),
            "2x16-tied": (["--hidden", "16,16", "--heads", "2", "--warmup", "5", "--tie", *_TINY], 20)},
}


def train(run_dir: str, model: str, options: list[str], steps: int) -> None:
    """``fnet train --model MODEL OPTIONS --steps STEPS --out RUN_DIR`` in a process of its own,
    unless the run in ``run_dir`` has finished already (:func:`benchmarks._common.run_in_process`)."""
    run_in_process(run_dir, [sys.executable, "-m", "fnet", "train", "--model", model, *options, "--steps", str(steps),
                             "--out", run_dir])


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
    target = TARGETS[record["model"]]
    ax.axhline(target, color="gray", linestyle=":", label=f"{target} nats/char")
    ax.axvline(15, color="gray", linestyle="--", linewidth=0.8, label="15 minutes")
    ax.set(xlabel="wall time (min, compile and evaluation included)", ylabel="validation loss (nats/char)",
           title=f"{record['model'].upper()} character models on tiny-shakespeare, 2-core CPU", ylim=(1.4, 2.2))
    ax.legend(title="configuration: full val loss of the best step")
    fig.tight_layout()
    plots.save_figure(fig, path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(CONFIGS), default="lstm", help="the language model (default lstm)")
    parser.add_argument("--configs", help="comma-separated configuration names (default: all of the model's)")
    parser.add_argument("--runs", help="folder of the runs (default runs/<record name>)")
    parser.add_argument("--quick", action="store_true", help="two tiny runs of 20 steps (seconds)")
    parser.add_argument("--out", default=RESULTS_DIR, help="folder for the results (default benchmarks/results)")
    args = parser.parse_args(argv)
    table = (QUICK if args.quick else CONFIGS)[args.model]
    names = args.configs.split(",") if args.configs else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"--configs: unknown configuration {', '.join(unknown)} of --model {args.model}; choose from "
                     f"{', '.join(table)}")
    name = NAMES[args.model]
    runs_dir = args.runs or os.path.join("runs", name)
    record = record_header(name, "cpu")
    record["model"] = args.model
    for config in names:
        options, steps = table[config]
        train(os.path.join(runs_dir, config), args.model, options, steps)
    record["runs"] = {config: read_lm_run(os.path.join(runs_dir, config)) for config in names}
    json_path, _ = publish(record, markdown(record), args.out, name, args.quick)
    png_path = json_path.removesuffix(".json") + ".png"
    if plot(record, png_path):
        print(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    main()
