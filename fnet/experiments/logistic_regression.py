"""Vectorized logistic regression (Andrew Ng's "Neural Networks and Deep Learning", week 2):
``p = sigmoid(X w + b)``, binary cross-entropy, full-batch gradient descent, weights started at
zero, 2,000 iterations (the source's count), on a 2-class 2-D set with a decision boundary.

The model is ``fnet.mlp(2, [], 1, loss="sigmoid_binary_cross_entropy", init="zeros")``: the whole
batch goes through one matrix product per step (no loop over samples). The data: 500 points
``x ~ N(0, I)`` labelled ``1[2 x1 - 3.4 x2 + 0.5 + eps > 0]`` with ``eps ~ N(0, 1)``
(:func:`fnet.data.linear`'s samples, thresholded): linearly separable up to the label noise that
``eps`` adds near the boundary. The learning rate is 0.5 (the source's 0.005 is for 12,288-pixel
images; on two standard-normal features it would barely move in 2,000 steps). ``quick``: 300
iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots
from fnet.experiments import _common

NAME = "logistic-regression"
DESCRIPTION = "Vectorized logistic regression (sigmoid, binary cross-entropy) on a 2-class set, with its decision boundary."

N_SAMPLES, ITERATIONS, LEARNING_RATE = 500, 2000, 0.5


def two_class_set(n: int = N_SAMPLES, seed: int = 0):
    """``(x, y)``: x of shape (n, 2) ~ N(0, I), y of shape (n, 1) = 1[2 x1 - 3.4 x2 + 0.5 + eps > 0] in float32."""
    ds = data.linear(n, w=(2.0, -3.4), b=0.5, noise=1.0, val_fraction=0.0, test_fraction=0.0, seed=seed)
    return ds.x_train, (ds.y_train > 0).astype(np.float32)


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Fit logistic regression by full-batch gradient descent.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"iterations", "learning_rate", "loss" (iterations,), "accuracy", "w", "b", "x", "y",
      "grid"}`` (``grid``: see :func:`fnet.experiments._common.decision_grid`).
    """
    iterations = 300 if quick else ITERATIONS
    x, y = two_class_set(seed=seed)
    net = nets.mlp(2, [], 1, loss="sigmoid_binary_cross_entropy", init="zeros")
    params, _ = net.init(jax.random.PRNGKey(seed))
    params, _, _, trace = jax.jit(lambda p: _common.train_iterations(
        net, optim.sgd(LEARNING_RATE), jnp.asarray(x), jnp.asarray(y), iterations=iterations, batch_size=None,
        key=jax.random.PRNGKey(seed), params=p))(params)
    return {"n_samples": len(x), "iterations": iterations, "learning_rate": LEARNING_RATE, "quick": quick,
            "loss": np.asarray(trace["loss"]).tolist(),
            "accuracy": float(_common.accuracy(net, params, {}, jnp.asarray(x), jnp.asarray(y))),
            "w": np.asarray(params["dense1"]["W"][:, 0]).tolist(), "b": float(params["dense1"]["b"][0]),
            "x": np.round(x, 4).tolist(), "y": y[:, 0].astype(int).tolist(),
            "grid": _common.decision_grid(net, params, x)}


def summary(result: dict) -> str:
    """One table row: iterations, final loss, training accuracy, fitted w and b."""
    return "\n".join([
        f"logistic regression, {result['n_samples']} points, full-batch GD lr {result['learning_rate']}",
        f"{'iterations':>10} {'final loss':>11} {'accuracy':>9} {'w':>20} {'b':>8}",
        f"{result['iterations']:>10} {result['loss'][-1]:>11.4f} {100 * result['accuracy']:>8.1f}% "
        f"{str(np.round(result['w'], 3).tolist()):>20} {result['b']:>8.3f}",
    ])


def plot(result: dict, path) -> None:
    """Decision boundary over the points, and the loss per iteration."""
    plt = plots.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    _common.draw_boundary(ax, result["grid"], result["x"], result["y"],
                          f"decision boundary (training accuracy {100 * result['accuracy']:.1f}%)")
    ax2.plot(result["loss"])
    ax2.set(xlabel="iteration", ylabel="binary cross-entropy", title="Loss (full batch)")
    fig.tight_layout()
    plots.save_figure(fig, path)
