"""A one-hidden-layer network on the planar "flower" set versus logistic regression (Andrew Ng's
"Neural Networks and Deep Learning", week 3, "Planar data classification with one hidden layer").

The network is ``2 -> n_h tanh -> 1 sigmoid`` with binary cross-entropy, weights N(0, 0.01**2),
biases 0, trained by full-batch gradient descent at lr 1.2 (the source's settings) on the 400-point
flower (:func:`fnet.data.planar`): 10,000 iterations for the main ``n_h = 4`` model, 5,000 for
the sweep over hidden sizes 1, 2, 3, 4, 5, 20, 50 (the source's). Logistic regression
(``fnet.mlp(2, [], 1)``, same loss and optimizer, 10,000 iterations) cannot bend its boundary
and stays near chance on the flower; the hidden layer can. Accuracies are on the 400 training
points, as in the source. ``quick``: 1,000 iterations, hidden sizes 1 and 20 (next to the main 4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots
from fnet.experiments import _common

NAME = "shallow-net"
DESCRIPTION = "A 2-n_h-1 tanh network vs logistic regression on the planar flower, for hidden sizes 1..50."

LEARNING_RATE, INIT_STD = 1.2, 0.01
MAIN_HIDDEN, MAIN_ITERATIONS, SWEEP_ITERATIONS = 4, 10_000, 5_000
HIDDEN_SIZES = (1, 2, 3, 4, 5, 20, 50)


def fit(hidden, x, y, *, iterations: int, seed: int = 0):
    """Full-batch gradient descent on a ``2 -> hidden tanh -> 1 sigmoid`` net (``hidden=[]``: logistic regression).

    Args:
      hidden: list of hidden sizes, ``[]`` or ``[n_h]``.
      x: array of shape (N, 2); y: 0/1 targets of shape (N, 1).

    Returns:
      ``(net, params, losses)`` with losses of shape (iterations,).
    """
    net = nets.mlp(2, hidden, 1, activation="tanh", loss="sigmoid_binary_cross_entropy", init=INIT_STD)
    params, _ = net.init(jax.random.PRNGKey(seed))
    params, _, _, trace = jax.jit(lambda p: _common.train_iterations(
        net, optim.sgd(LEARNING_RATE), x, y, iterations=iterations, batch_size=None, key=jax.random.PRNGKey(seed),
        params=p))(params)
    return net, params, np.asarray(trace["loss"])


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Fit logistic regression, the n_h = 4 network, and the hidden-size sweep.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"x", "y", "models": {label: {"hidden", "iterations", "accuracy", "loss" (every 10th
      iteration), "grid"}}}`` with labels "logistic regression", "n_h=4 (main)" and "n_h=K" for the
      sweep.
    """
    main_iters, sweep_iters = (1000, 1000) if quick else (MAIN_ITERATIONS, SWEEP_ITERATIONS)
    sizes = (1, 20) if quick else HIDDEN_SIZES
    ds = data.planar(400, val_fraction=0.0, test_fraction=0.0, seed=seed)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train[:, None].astype(np.float32))
    runs = [("logistic regression", [], main_iters), (f"n_h={MAIN_HIDDEN} (main)", [MAIN_HIDDEN], main_iters)]
    runs += [(f"n_h={h}", [h], sweep_iters) for h in sizes]
    models = {}
    for label, hidden, iterations in runs:
        net, params, losses = fit(hidden, x, y, iterations=iterations, seed=seed)
        models[label] = {"hidden": hidden, "iterations": iterations,
                         "accuracy": float(_common.accuracy(net, params, {}, x, y)),
                         "loss": losses[::10].tolist(), "grid": _common.decision_grid(net, params, ds.x_train)}
    return {"n_samples": len(ds.x_train), "learning_rate": LEARNING_RATE, "init_std": INIT_STD, "quick": quick,
            "x": np.round(ds.x_train, 4).tolist(), "y": ds.y_train.tolist(), "models": models}


def summary(result: dict) -> str:
    """Table: model, iterations, final loss, training accuracy."""
    lines = [f"planar flower, {result['n_samples']} points, full-batch GD lr {result['learning_rate']}, "
             f"init std {result['init_std']}",
             f"{'model':<22} {'iterations':>10} {'final loss':>11} {'accuracy':>9}"]
    for label, m in result["models"].items():
        lines.append(f"{label:<22} {m['iterations']:>10} {m['loss'][-1]:>11.4f} {100 * m['accuracy']:>8.1f}%")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """One decision-boundary panel per model (logistic regression, main net, the sweep)."""
    plt = plots.pyplot()
    models = list(result["models"].items())
    cols = 3
    rows = -(-len(models) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, (label, m) in zip(axes.ravel(), models):
        _common.draw_boundary(ax, m["grid"], result["x"], result["y"],
                              f"{label}: {100 * m['accuracy']:.1f}% ({m['iterations']} it.)")
    for ax in axes.ravel()[len(models):]:
        ax.set_axis_off()
    fig.tight_layout()
    plots.save_figure(fig, path, dpi=90)
