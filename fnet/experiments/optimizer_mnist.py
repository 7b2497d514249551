"""The source material's optimizer comparison on MNIST (Deep Learning from Scratch, ch. 6,
``optimizer_compare_mnist.py``).

A 784-[100]*4-10 ReLU network (He init, the source's ``weight_init_std='relu'``) is trained for
2,000 iterations on random minibatches of 128 MNIST training images by each optimizer at its usual
setting: SGD, Momentum, Nesterov, AdaGrad and RMSProp at lr 0.01, Adam at lr 0.001 (momentum 0.9,
RMSProp decay 0.99, Adam b1 0.9 / b2 0.999: fnet's defaults). All optimizers start from the same
weights and see the same minibatches. The figure shows the training loss, smoothed with the
source's ``smooth_curve``; the table adds the final test accuracy.

``quick``: 500 training / 500 test images, 150 iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import nets, optim, plots
from fnet.experiments import _common

NAME = "optimizer-mnist"
DESCRIPTION = "SGD, Momentum, Nesterov, AdaGrad, RMSProp and Adam training a 784-[100]*4-10 ReLU net on MNIST."

HIDDEN = (100, 100, 100, 100)
BATCH_SIZE = 128
#: Optimizer name -> (constructor, learning rate).
SETTINGS = {
    "SGD": (optim.sgd, 0.01),
    "Momentum": (optim.momentum, 0.01),
    "Nesterov": (optim.nesterov, 0.01),
    "AdaGrad": (optim.adagrad, 0.01),
    "RMSProp": (optim.rmsprop, 0.01),
    "Adam": (optim.adam, 0.001),
}


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train one network per optimizer from the same init on the same minibatches.

    Returns:
      ``{"iterations", "batch_size", "n_train", "hidden", "optimizers": {name: {"learning_rate",
      "loss" (iterations,), "smoothed_loss" (iterations,), "final_loss" (mean minibatch loss of the
      last 10% of iterations), "test_accuracy"}}}``.
    """
    iterations, n_train, n_test = (150, 500, 500) if quick else (2000, None, None)
    x, y, x_test, y_test = _common.mnist_subset(data_dir, n_train, n_test)
    net = nets.mlp(784, HIDDEN, 10, init="he")
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params0, _ = net.init(init_key)
    x, y, x_test, y_test = map(jnp.asarray, (x, y, x_test, y_test))
    out = {}
    for name, (make, lr) in SETTINGS.items():
        @jax.jit
        def train_one(params):
            params, _, _, trace = _common.train_iterations(
                net, make(lr), x, y, iterations=iterations, batch_size=BATCH_SIZE, key=train_key, params=params)
            return trace["loss"], _common.accuracy(net, params, {}, x_test, y_test)

        loss, test_acc = train_one(params0)
        loss = np.asarray(loss)
        smoothed = _common.smooth_curve(loss)
        tail = max(1, iterations // 10)
        out[name] = {
            "learning_rate": lr,
            "loss": loss.tolist(),
            "smoothed_loss": smoothed.tolist(),
            "final_loss": float(loss[-tail:].mean()),
            "test_accuracy": float(test_acc),
        }
    return {"iterations": iterations, "batch_size": BATCH_SIZE, "n_train": int(x.shape[0]), "n_test": int(x_test.shape[0]),
            "hidden": list(HIDDEN), "quick": quick, "optimizers": out}


def summary(result: dict) -> str:
    """Table: optimizer, learning rate, mean loss of the last 10% of iterations, test accuracy."""
    lines = [f"784-{result['hidden']}-10 ReLU, {result['iterations']} iterations of batch {result['batch_size']} "
             f"on {result['n_train']} MNIST images",
             f"{'optimizer':<10} {'lr':>7} {'final loss':>11} {'test acc':>9}"]
    for name, r in result["optimizers"].items():
        lines.append(f"{name:<10} {r['learning_rate']:>7g} {r['final_loss']:>11.4f} {100 * r['test_accuracy']:>8.2f}%")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Smoothed training-loss curves of all optimizers on one axis, as a PNG."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in result["optimizers"].items():
        ax.plot(r["smoothed_loss"], label=f"{name} (lr {r['learning_rate']:g})", linewidth=1.2)
    ax.set(xlabel="iteration", ylabel="training loss (smoothed)", ylim=(0, 1), title="Optimizers on MNIST")
    ax.legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
