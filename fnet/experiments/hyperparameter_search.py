"""The source material's hyperparameter random search (Deep Learning from Scratch, 6.5).

500 MNIST training images, the last 20% of them held out for validation (the source shuffles
them first; here the first 500 images in file order are shuffled with a fixed seed), a
784-[100]*6-10 ReLU network, SGD, batch 100, 50 epochs; 100 trials of
``weight_decay = 10**U(-8, -4)`` and ``lr = 10**U(-6, -2)``, ALL trained together as one
vmapped, jit-compiled program (:func:`fnet.search.random_search`); the best 20 validation curves
are plotted in 5 columns (training accuracy dashed, as in the source). A second round then
searches the ranges spanned by the best 10 trials of the first, as the source recommends.

Module protocol: ``NAME``, ``DESCRIPTION``, ``run(*, quick, data_dir) -> dict``,
``summary(result) -> str``, ``plot(result, path)``.
"""

from __future__ import annotations

import time

import numpy as np

from fnet import data, nets, optim, plots, search

NAME = "hyperparameter-search"
DESCRIPTION = "Random search of learning rate and weight decay: 100 trials of a 784-[100]*6-10 net on 500 MNIST images, vmapped."

FULL = {"n_samples": 500, "hidden": [100] * 6, "epochs": 50, "batch_size": 100, "num_trials": 100, "top_plot": 20,
        "top_narrow": 10}
#: Scaled down for the test suite: fewer, smaller trials for fewer epochs; the same two rounds.
QUICK = {"n_samples": 250, "hidden": [50] * 2, "epochs": 10, "batch_size": 50, "num_trials": 16, "top_plot": 5,
         "top_narrow": 4}
VAL_FRACTION = 0.2
RANGES = {"learning_rate": (1e-6, 1e-2), "weight_decay": (1e-8, 1e-4)}


def _split(data_dir, n_samples: int, seed: int = 0):
    """The first ``n_samples`` MNIST training images, shuffled, the last 20% held out."""
    ds = data.load("mnist", data_dir=data_dir, val_fraction=0.0)
    order = np.random.default_rng(seed).permutation(n_samples)
    x, y = ds.x_train[:n_samples][order], ds.y_train[:n_samples][order]
    n_val = int(n_samples * VAL_FRACTION)
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def _round(search_result: search.SearchResult, seconds: float) -> dict:
    return {
        "ranges": {k: list(v) for k, v in search_result.ranges.items()},
        "seconds": seconds,
        "trials": search_result.trials,
    }


def run(*, quick: bool = False, data_dir=None) -> dict:
    """Two rounds of random search; needs the MNIST files (``data_dir`` or ``$FNET_DATA``).

    Returns:
      ``{"settings", "rounds": [round1, round2]}`` where each round has "ranges"
      ({name: [low, high, scale]}), "seconds" (wall time, compilation included) and "trials"
      (sorted best first, see :class:`fnet.search.SearchResult`).
    """
    cfg = QUICK if quick else FULL
    (x, y), val = _split(data_dir, cfg["n_samples"])
    hidden = tuple(cfg["hidden"])

    def make_net(h):  # the searched weight decay is the network's (the learning rate SGD's)
        return nets.mlp(784, hidden, 10, weight_decay=h["weight_decay"])

    kwargs = {"num_trials": cfg["num_trials"], "epochs": cfg["epochs"], "batch_size": cfg["batch_size"],
              "optimizer": optim.sgd}
    rounds, ranges = [], RANGES
    for seed in (0, 1):
        t0 = time.perf_counter()
        found = search.random_search(make_net, x, y, val, ranges=ranges, seed=seed, **kwargs)
        rounds.append(_round(found, time.perf_counter() - t0))
        ranges = search.narrow_ranges(found, top=cfg["top_narrow"])
    settings = dict(cfg, n_train=len(x), n_val=len(val[0]), optimizer="sgd", network=nets.mlp(784, hidden, 10).name)
    return {"settings": settings, "rounds": rounds}


def _fmt_range(spec) -> str:
    low, high, _ = spec
    return f"[{low:.2e}, {high:.2e}]"


def summary(result: dict) -> str:
    """The ranges of each round and its best trials (validation accuracy, lr, weight decay)."""
    s = result["settings"]
    lines = [f"{s['network']}, SGD, {s['n_train']} train / {s['n_val']} val MNIST images, {s['epochs']} epochs, "
             f"batch {s['batch_size']}, {s['num_trials']} trials per round in one vmapped program"]
    for r, rnd in enumerate(result["rounds"], 1):
        ranges = ", ".join(f"{k} {_fmt_range(v)}" for k, v in rnd["ranges"].items())
        lines.append(f"round {r} ({rnd['seconds']:.1f} s): {ranges}")
        lines.append(f"  {'rank':>4} {'val acc':>8} {'lr':>10} {'weight decay':>13}")
        for i, t in enumerate(rnd["trials"][:5], 1):
            hp = t["hparams"]
            lines.append(f"  {i:>4} {100 * t['final_val_acc']:7.1f}% {hp['learning_rate']:10.2e} {hp['weight_decay']:13.2e}")
    top = s["top_narrow"]
    lines.append(f"ranges of the best {top} trials of round 1 (round 2's ranges): "
                 + ", ".join(f"{k} {_fmt_range(v)}" for k, v in result["rounds"][1]["ranges"].items()))
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Validation (solid) and training (dashed) accuracy of the best trials of each round, 5 columns."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is the optional "plot" extra
    from matplotlib.figure import Figure

    n_top, cols = result["settings"]["top_plot"], 5
    rows = -(-n_top // cols)
    fig = Figure(figsize=(2.6 * cols, 2.1 * rows * len(result["rounds"]) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle("Best trials of each round: validation accuracy (solid) and training accuracy (dashed) vs epoch")
    subfigs = np.atleast_1d(fig.subfigures(len(result["rounds"]), 1))
    for r, (sub, rnd) in enumerate(zip(subfigs, result["rounds"]), 1):
        sub.suptitle(f"Round {r}: " + ", ".join(f"{k} {_fmt_range(v)}" for k, v in rnd["ranges"].items()), fontsize=10)
        axes = np.atleast_1d(sub.subplots(rows, cols, sharex=True, sharey=True)).ravel()
        for i, (ax, t) in enumerate(zip(axes, rnd["trials"])):
            epochs = np.arange(1, len(t["val_acc"]) + 1)
            ax.plot(epochs, t["val_acc"], color="C0")
            ax.plot(epochs, t["train_acc"], "--", color="C1")
            ax.set_ylim(0, 1)
            hp = t["hparams"]
            ax.set_title(f"#{i + 1} lr {hp['learning_rate']:.1e}, wd {hp['weight_decay']:.1e}", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in axes[len(rnd["trials"]):]:
            ax.set_axis_off()
    plots.save_figure(fig, path)
