"""A convolutional network against an MLP with the same number of parameters, on MNIST and
Fashion-MNIST.

Both have ~106k parameters: fnet's ``cnn`` with 16 and 32 filters and a dense layer of 64
(conv3x3-batchnorm-ReLU-pool twice, dense, dropout 0.25) and a 784-[133]-10 ReLU MLP. Each is
trained the same way (Adam lr 1e-3, minibatches of 64, hand-written gradients) and tested on the
official 10,000 test images. The lesson: with the same budget, weight sharing and locality win,
and by more on the harder Fashion-MNIST.

``quick``: 1,000 training / 500 test images, 2 epochs.
"""

from __future__ import annotations

import numpy as np

from fnet import models, nets, optim, plots
from fnet import train as fnet_train
from fnet.experiments import _common

NAME = "conv-vs-mlp"
DESCRIPTION = "A CNN and an MLP of the same parameter count (~106k) on MNIST and Fashion-MNIST test accuracy."

DATASETS = ("mnist", "fashion-mnist")


def networks() -> dict:
    """The two networks, ``{name: (net, takes images)}``."""
    return {"cnn": (models.cnn("small_cnn", (1, 28, 28), 10, filters=(16, 32), dense_width=64), True),
            "mlp": (models.mlp(784, [133], 10), False)}


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train both networks on both data sets.

    Returns:
      ``{"epochs", "n_train", "n_test", "params": {name: count}, "results": {data set: {name:
      {"test_accuracy", "train_loss" (epochs,), "epoch_time" (epochs,)}}}}``.
    """
    n_train, n_test, epochs = (1000, 500, 2) if quick else (None, None, 3)
    results, counts, built = {}, {}, networks()  # one build: both data sets share the compiled programs
    for name in DATASETS:
        results[name] = {}
        for label, (net, images) in built.items():
            counts[label] = nets.num_params(net)
            x, y, x_test, y_test = _common.mnist_subset(data_dir, n_train, n_test, flatten=not images, name=name)
            fit = fnet_train.fit(net, optim.adam(1e-3), x, y, epochs=epochs, batch_size=64, seed=seed, progress=False)
            test = fnet_train.evaluate(net, fit.params, fit.state, x_test, y_test)
            results[name][label] = {"test_accuracy": test["accuracy"], "train_loss": fit.history["train_loss"],
                                    "epoch_time": fit.history["epoch_time"]}
    return {"epochs": epochs, "n_train": int(len(x)), "n_test": int(len(x_test)), "params": counts,
            "results": results, "quick": quick}


def summary(result: dict) -> str:
    """Test accuracy of both networks on both data sets."""
    p = result["params"]
    lines = [f"Adam 1e-3, batch 64, {result['epochs']} epochs on {result['n_train']} images, tested on {result['n_test']}",
             f"{'data set':<14} {'cnn (' + format(p['cnn'], ',') + ' params)':>22} {'mlp (' + format(p['mlp'], ',') + ' params)':>22}"]
    for name, r in result["results"].items():
        lines.append(f"{name:<14} {100 * r['cnn']['test_accuracy']:>21.2f}% {100 * r['mlp']['test_accuracy']:>21.2f}%")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Test accuracy bars per data set, and the training loss per epoch."""
    plt = plots.pyplot()
    fig, (ax_bar, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(result["results"])
    for i, label in enumerate(("cnn", "mlp")):
        acc = [100 * result["results"][n][label]["test_accuracy"] for n in names]
        ax_bar.bar(np.arange(len(names)) + 0.38 * i, acc, 0.36, label=f"{label} ({result['params'][label]:,} params)")
        for n, r in result["results"].items():
            ax_loss.plot(np.arange(1, result["epochs"] + 1), r[label]["train_loss"], "o-" if label == "cnn" else "s--",
                         label=f"{label}, {n}")
    ax_bar.set_xticks(np.arange(len(names)) + 0.19, names)
    low = min(100 * r[k]["test_accuracy"] for r in result["results"].values() for k in ("cnn", "mlp"))
    ax_bar.set(ylabel="test accuracy (%)", ylim=(max(0, low - 5), 100), title="Same parameter budget")
    ax_bar.legend(loc="lower left")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    plots.save_figure(fig, path)
