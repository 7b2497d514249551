"""cs231n's sanity check for a convolutional network: it must overfit a small training set.

cs231n assignment 2 (ConvolutionalNetworks.ipynb) trains its ``ThreeLayerConvNet`` on 100
training images for 15 epochs (minibatches of 50, Adam lr 1e-3) and expects training accuracy
near 100% with a low validation accuracy: a network that cannot memorize 100 images has a bug in
its forward or backward pass. Here: fnet's ``three_layer_convnet`` (conv7x7(32)-ReLU-2x2 max pool-
affine(100)-ReLU-affine, He init, hand-written gradients) on the first 100 MNIST training images,
with the accuracy on 1,000 test images after every epoch.

``quick``: the same run, tested on 500 images (it takes seconds either way).
"""

from __future__ import annotations

import numpy as np

from fnet import models, optim, plots
from fnet import train as fnet_train
from fnet.experiments import _common

NAME = "cnn-overfit"
DESCRIPTION = "cs231n's sanity check: a three-layer convnet overfits 100 MNIST images to 100% training accuracy."


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train the network on 100 images; training and test accuracy after every epoch.

    Returns:
      ``{"n_train", "n_test", "epochs", "batch_size", "filters", "hidden", "train_acc" (epochs,),
      "test_acc" (epochs,), "loss" (epochs,), "epochs_to_100"}`` (``epochs_to_100``: the first
      epoch with 100% training accuracy, or None).
    """
    filters, hidden, epochs = 32, 100, 15
    x, y, x_test, y_test = _common.mnist_subset(data_dir, 100, 500 if quick else 1000, flatten=False)
    net = models.cnn("three_layer_convnet", (1, 28, 28), 10, filters=(filters,), dense_width=hidden)
    result = fnet_train.fit(net, optim.adam(1e-3), x, y, val=(x_test, y_test), epochs=epochs, batch_size=50,
                            seed=seed, progress=False, divergence_factor=None)
    train_acc, test_acc = result.history["train_acc"], result.history["val_acc"]
    first = next((e for e, a in zip(result.history["epoch"], train_acc) if a >= 1.0), None)
    return {"n_train": int(len(x)), "n_test": int(len(x_test)), "epochs": epochs, "batch_size": 50,
            "filters": filters, "hidden": hidden, "train_acc": train_acc, "test_acc": test_acc,
            "loss": result.history["train_loss"], "epochs_to_100": first, "quick": quick}


def summary(result: dict) -> str:
    """The final accuracies and the epoch where training accuracy first reached 100%."""
    reached = (f"100% training accuracy from epoch {result['epochs_to_100']}" if result["epochs_to_100"]
               else "training accuracy never reached 100%")
    return "\n".join([
        f"three_layer_convnet (conv7x7({result['filters']})-relu-pool-affine({result['hidden']})-relu-affine), "
        f"Adam 1e-3, batch {result['batch_size']}, {result['epochs']} epochs on {result['n_train']} MNIST images",
        f"{'epoch':>5} {'loss':>8} {'train acc':>9} {'test acc':>9}",
        *(f"{e:>5} {l:>8.4f} {100 * a:>8.1f}% {100 * t:>8.1f}%" for e, (l, a, t) in
          enumerate(zip(result["loss"], result["train_acc"], result["test_acc"]), 1)),
        reached + f"; test accuracy {100 * result['test_acc'][-1]:.1f}% on {result['n_test']} images (overfit)",
    ])


def plot(result: dict, path) -> None:
    """Training and test accuracy and the training loss vs epoch."""
    plt = plots.pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, result["epochs"] + 1)
    ax_acc.plot(epochs, result["train_acc"], "o-", label=f"train ({result['n_train']} images)")
    ax_acc.plot(epochs, result["test_acc"], "s-", label=f"test ({result['n_test']} images)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="A convnet overfits 100 images")
    ax_acc.legend(loc="lower right")
    ax_loss.plot(epochs, result["loss"], "o-")
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Training loss")
    fig.tight_layout()
    plots.save_figure(fig, path)

