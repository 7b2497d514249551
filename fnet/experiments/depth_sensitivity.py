"""cs231n's depth question (assignment 2, "FullyConnectedNets"): train a three-layer net (two
hidden layers of 100) and a five-layer net (four hidden layers of 100) to overfit 50 training
samples in 20 epochs (SGD, minibatches of 25, ReLU, weights N(0, scale**2), biases 0), over a grid
of weight scales and learning rates; "which network seemed more sensitive to the initialization
scale?" The answer the notebook expects: the five-layer net, whose region of (scale, learning
rate) that reaches 100% training accuracy is much narrower.

The samples are the first 50 MNIST training images (the notebook uses CIFAR-10). Every grid cell
of one depth is trained in ONE vmapped, jit-compiled program (traced init scale and learning
rate). The figure has a heat map of final training accuracy per depth. Weight scales
``logspace(-2, 0.5, 11)`` (below 0.01 neither depth learns in 20 epochs on MNIST), learning rates
``logspace(-4, 0, 9)``. ``quick``: a 6 x 7 grid (with 4 learning rates, a tie between the depths is
within the draws of the init; 7 separate them for init seeds 0-2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import nets, optim, plots
from fnet.experiments import _common

NAME = "depth-sensitivity"
DESCRIPTION = "Which overfits 50 samples over more (weight scale, learning rate) cells: a 3-layer or a 5-layer net?"

DEPTHS = {"3-layer": (100, 100), "5-layer": (100, 100, 100, 100)}
N_TRAIN, EPOCHS, BATCH_SIZE = 50, 20, 25
SCALES = np.logspace(-2, 0.5, 11)
LEARNING_RATES = np.logspace(-4, 0, 9)


def grid_accuracy(make_net, x, y, scales, learning_rates, *, epochs: int, batch_size: int, key):
    """Final training accuracy for every (init scale, learning rate) pair, all vmapped.

    Args:
      make_net: ``std -> Net`` (classification) with weights drawn from N(0, std**2), called with
        a traced std; x: (N, D); y: labels (N,).
      scales: array of shape (S,); learning_rates: array of shape (R,).

    Returns:
      Array of shape (S, R): eval-mode accuracy on (x, y) after ``epochs`` epochs of SGD
      (0 where training diverged to NaN).
    """
    init_key, train_key = jax.random.split(key)
    s, r = np.meshgrid(np.asarray(scales, np.float32), np.asarray(learning_rates, np.float32), indexing="ij")

    def one(std, lr):
        net = make_net(std)
        params, state = net.init(init_key)
        params, state, _ = _common.train_epochs(net, optim.sgd(lr), x, y, epochs=epochs, batch_size=batch_size,
                                                key=train_key, params=params, state=state)
        scores = net.apply(params, x, state=state)
        ok = jnp.all(jnp.isfinite(scores))
        return jnp.where(ok, jnp.mean(jnp.argmax(scores, axis=1) == y), 0.0)

    acc = jax.jit(jax.vmap(one))(jnp.asarray(s.ravel()), jnp.asarray(r.ravel()))
    return np.asarray(acc).reshape(s.shape)


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Sweep the grid for both depths.

    Returns:
      ``{"scales", "learning_rates", "epochs", "n_train", "depths": {name: {"hidden", "accuracy"
      (S x R), "cells_at_100" (number of cells reaching 100% training accuracy), "scales_working"
      (number of scales at which some learning rate reaches 100%), "scale_span" (per learning
      rate: number of scales that reach 100%)}}}``.
    """
    scales = np.logspace(-2, 0.5, 6) if quick else SCALES
    lrs = np.logspace(-3, 0, 7) if quick else LEARNING_RATES
    x, y, _, _ = map(jnp.asarray, _common.mnist_subset(data_dir, N_TRAIN, 0))
    key = jax.random.PRNGKey(seed)
    depths = {}
    for name, hidden in DEPTHS.items():
        make_net = lambda std, hidden=hidden: nets.mlp(784, hidden, 10, init=std)  # noqa: E731
        acc = grid_accuracy(make_net, x, y, scales, lrs, epochs=EPOCHS, batch_size=BATCH_SIZE, key=key)
        perfect = acc >= 1.0
        depths[name] = {"hidden": list(hidden), "accuracy": acc.tolist(), "cells_at_100": int(perfect.sum()),
                        "scales_working": int(perfect.any(axis=1).sum()), "scale_span": perfect.sum(axis=0).tolist()}
    return {"scales": scales.tolist(), "learning_rates": lrs.tolist(), "epochs": EPOCHS, "batch_size": BATCH_SIZE,
            "n_train": N_TRAIN, "quick": quick, "depths": depths}


def summary(result: dict) -> str:
    """Table: depth, cells reaching 100% training accuracy, and the scales that work at each rate."""
    n = len(result["scales"]) * len(result["learning_rates"])
    lines = [f"{result['n_train']} MNIST images, SGD, batch {result['batch_size']}, {result['epochs']} epochs; "
             f"grid of {len(result['scales'])} weight scales x {len(result['learning_rates'])} learning rates",
             f"{'depth':<8} {'cells at 100% train acc':>24} {'scales that work':>17}   "
             "scales reaching 100% per learning rate",
             " " * 54 + " ".join(f"{lr:>7.0e}" for lr in result["learning_rates"])]
    for name, d in result["depths"].items():
        lines.append(f"{name:<8} {d['cells_at_100']:>17d} / {n:<4} {d['scales_working']:>10d} / "
                     f"{len(result['scales']):<4}  " + " ".join(f"{k:>7d}" for k in d["scale_span"]))
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """One heat map per depth: final training accuracy over (weight scale, learning rate)."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(result["depths"]), figsize=(12, 5), squeeze=False)
    for ax, (name, d) in zip(axes[0], result["depths"].items()):
        acc = np.asarray(d["accuracy"])
        im = ax.imshow(acc, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(result["learning_rates"])), [f"{v:.0e}" for v in result["learning_rates"]], rotation=45)
        ax.set_yticks(range(len(result["scales"])), [f"{v:.0e}" for v in result["scales"]])
        for (i, j), a in np.ndenumerate(acc):
            ax.text(j, i, f"{100 * a:.0f}", ha="center", va="center", fontsize=7, color="white" if a < 0.6 else "black")
        ax.set(xlabel="learning rate", ylabel="weight scale (init std)",
               title=f"{name} {d['hidden']}: {d['cells_at_100']} cells at 100%")
    fig.colorbar(im, ax=axes[0].tolist(), label="final training accuracy")
    plots.save_figure(fig, path)
