"""The source material's batch-norm experiment (Deep Learning from Scratch, ch. 6,
``batch_norm_test.py``).

A 784-[100]*5-10 ReLU network is trained on the first 1,000 MNIST training images with SGD
(lr 0.01), minibatches of 100, for 20 epochs, from weights drawn at 16 scales
``logspace(0, -4, 16)`` (std 1 down to 1e-4), with and without batch norm. Training accuracy (eval
mode, on the 1,000 images) after every epoch is plotted in a 4 x 4 grid, one panel per scale.
Without batch norm, small scales make the signal vanish and large ones make it explode, so the
network stays near chance; with batch norm it learns at almost every scale.

The 16 scales of each network are ONE vmapped, jit-compiled program (the init std is traced).
Epochs shuffle the 1,000 images (the source samples minibatches with replacement; same number of
steps). ``quick``: 200 images, minibatches of 20 (the same 200 steps, so that the running
statistics that eval mode uses have settled), 20 epochs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import nets, optim, plots
from fnet.experiments import _common

NAME = "batchnorm-scales"
DESCRIPTION = "Training accuracy of a 784-[100]*5-10 net on 1,000 MNIST images at 16 weight scales, with vs without batch norm."

HIDDEN = (100,) * 5
BATCH_SIZE, LEARNING_RATE = 100, 0.01
SCALES = np.logspace(0, -4, 16)


def scale_sweep(make_net, x, y, scales, *, epochs: int, batch_size: int, learning_rate: float, key):
    """Train ``make_net(s)`` (weights drawn from N(0, s**2)) for every scale ``s``, all scales vmapped.

    Args:
      make_net: ``std -> Net`` (classification), called with a traced std.
      x: array of shape (N, D); y: labels of shape (N,).
      scales: array of shape (S,), the init stds.

    Returns:
      Array of shape (S, epochs): eval-mode training accuracy after each epoch.
    """
    init_key, train_key = jax.random.split(key)

    def one(std):
        net = make_net(std)
        params, state = net.init(init_key)
        _, _, curves = _common.train_epochs(
            net, optim.sgd(learning_rate), x, y, epochs=epochs, batch_size=batch_size, key=train_key,
            params=params, state=state, metrics=lambda p, s: {"acc": _common.accuracy(net, p, s, x, y)})
        return curves["acc"]

    return jax.jit(jax.vmap(one))(jnp.asarray(scales, jnp.float32))


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Sweep the 16 scales with and without batch norm.

    Returns:
      ``{"scales" (16,), "epochs", "n_train", "batchnorm": (16, epochs) accuracies, "plain":
      (16, epochs), "bn_wins": number of scales where batch norm ends with the higher accuracy}``.
    """
    n_train, epochs, batch_size = (200, 20, 20) if quick else (1000, 20, BATCH_SIZE)
    x, y, _, _ = _common.mnist_subset(data_dir, n_train, 0)
    x, y = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.PRNGKey(seed)
    curves = {}
    for label, norm in (("batchnorm", "batchnorm"), ("plain", None)):
        make_net = lambda std, norm=norm: nets.mlp(784, HIDDEN, 10, norm=norm, init=std)  # noqa: E731
        curves[label] = np.asarray(scale_sweep(make_net, x, y, SCALES, epochs=epochs, batch_size=batch_size,
                                               learning_rate=LEARNING_RATE, key=key))
    bn_final, plain_final = curves["batchnorm"][:, -1], curves["plain"][:, -1]
    return {"scales": SCALES.tolist(), "epochs": epochs, "n_train": n_train, "batch_size": batch_size,
            "learning_rate": LEARNING_RATE, "hidden": list(HIDDEN), "quick": quick,
            "batchnorm": curves["batchnorm"].tolist(), "plain": curves["plain"].tolist(),
            "bn_wins": int(np.sum(bn_final > plain_final))}


def summary(result: dict) -> str:
    """Table: weight scale, final training accuracy with and without batch norm."""
    lines = [f"784-{result['hidden']}-10 ReLU, SGD lr {result['learning_rate']}, {result['epochs']} epochs on "
             f"{result['n_train']} MNIST images; batch norm better at {result['bn_wins']}/{len(result['scales'])} scales",
             f"{'weight std':>10} {'batch norm':>11} {'no norm':>8}"]
    for s, bn, plain in zip(result["scales"], result["batchnorm"], result["plain"]):
        lines.append(f"{s:>10.2e} {100 * bn[-1]:>10.1f}% {100 * plain[-1]:>7.1f}%")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """4 x 4 grid: training accuracy vs epoch at each scale, batch norm (solid) vs none (dashed)."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(4, 4, figsize=(12, 10), sharex=True, sharey=True)
    epochs = np.arange(1, result["epochs"] + 1)
    for ax, s, bn, plain in zip(axes.ravel(), result["scales"], result["batchnorm"], result["plain"]):
        ax.plot(epochs, bn, label="batch norm", color="C0")
        ax.plot(epochs, plain, "--", label="no batch norm", color="C1")
        ax.set_title(f"W std {s:.2g}", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("train accuracy")
    fig.tight_layout()
    plots.save_figure(fig, path, dpi=90)
