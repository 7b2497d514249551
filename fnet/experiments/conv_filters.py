"""The first layer's filters before and after training (Deep Learning from Scratch, ch. 7,
``visualize_filter.py``).

Deep Learning from Scratch's ``SimpleConvNet`` (conv5x5(30)-ReLU-2x2 max pool-affine(100)-ReLU-
affine) with the book's initialization, N(0, 0.01**2) (its ``weight_init_std=0.01``), is trained
on MNIST with Adam (lr 1e-3, minibatches of 100) and hand-written gradients; its 30 first-layer
filters are drawn before and after training. The book's lesson:
the random filters are noise, the trained ones have structure (edges, blobs). Measured here by
their smoothness: the correlation between horizontally and vertically neighbouring weights of a
filter, averaged over the filters (about 0 for independent random weights).

``quick``: 2,000 training images, 1 epoch.
"""

from __future__ import annotations

import jax
import numpy as np

from fnet import models, optim, plots
from fnet import train as fnet_train
from fnet.experiments import _common

NAME = "conv-filters"
DESCRIPTION = "SimpleConvNet's 30 first-layer 5x5 filters on MNIST before and after training, and their smoothness."


def smoothness(filters) -> float:
    """Mean correlation of neighbouring weights within each filter (horizontal and vertical pairs
    pooled), averaged over filters.

    Args:
      filters: array of shape (F, 1, HH, WW).
    """
    w = np.asarray(filters, np.float64)[:, 0]
    out = []
    for f in w:
        a = np.concatenate([f[:, :-1].ravel(), f[:-1, :].ravel()])
        b = np.concatenate([f[:, 1:].ravel(), f[1:, :].ravel()])
        out.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(out))


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train SimpleConvNet; its filters and their smoothness before and after.

    Returns:
      ``{"n_train", "epochs", "test_accuracy", "before": {"filters" (30, 5, 5), "smoothness"},
      "after": {...}}``.
    """
    n_train, n_test, epochs = (2000, 1000, 1) if quick else (None, None, 2)
    x, y, x_test, y_test = _common.mnist_subset(data_dir, n_train, n_test, flatten=False)
    net = models.cnn("simple_convnet", (1, 28, 28), 10, init=0.01)
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))  # fit draws the same initial params
    before = net.init(init_key).params["conv2d1"]["W"]
    result = fnet_train.fit(net, optim.adam(1e-3), x, y, epochs=epochs, batch_size=100, seed=seed, progress=False)
    after = result.params["conv2d1"]["W"]
    test = fnet_train.evaluate(net, result.params, result.state, x_test, y_test)
    return {"n_train": int(len(x)), "n_test": int(len(x_test)), "epochs": epochs, "quick": quick,
            "test_accuracy": test["accuracy"],
            **{name: {"filters": np.round(np.asarray(w)[:, 0], 5).tolist(), "smoothness": smoothness(w)}
               for name, w in (("before", before), ("after", after))}}


def summary(result: dict) -> str:
    """The smoothness of the filters before and after, and the trained network's accuracy."""
    return "\n".join([
        f"SimpleConvNet, Adam 1e-3, {result['epochs']} epoch(s) on {result['n_train']} MNIST images: test accuracy "
        f"{100 * result['test_accuracy']:.2f}% ({result['n_test']} images)",
        f"{'filters':<8} {'smoothness (neighbour correlation)':>36}",
        f"{'before':<8} {result['before']['smoothness']:>36.3f}",
        f"{'after':<8} {result['after']['smoothness']:>36.3f}",
    ])


def plot(result: dict, path) -> None:
    """The 30 filters before (top) and after (bottom) training, as the book draws them."""
    plt = plots.pyplot()
    before, after = np.asarray(result["before"]["filters"]), np.asarray(result["after"]["filters"])
    n, cols = len(before), 10
    rows = -(-n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 0.9, 2 * rows * 0.9 + 0.8))
    for block, (name, w) in enumerate((("before", before), ("after", after))):
        for i in range(rows * cols):
            ax = axes[block * rows + i // cols, i % cols]
            ax.set(xticks=[], yticks=[])
            if i < n:
                ax.imshow(w[i], cmap="gray_r", interpolation="nearest")
            else:
                ax.set_axis_off()
        axes[block * rows, 0].set_ylabel(f"{name}\n(smooth. {result[name]['smoothness']:.2f})", fontsize=8)
    fig.suptitle("First-layer 5x5 filters of SimpleConvNet, before (top) and after (bottom) training", fontsize=10)
    fig.tight_layout()
    plots.save_figure(fig, path)
