"""A 1-3-1 network fit to sin (the classic "approximate a function with a tiny network" exercise):
one input, 3 sigmoid hidden units, one linear output, half mean squared error, per-sample SGD
(minibatches of 1, reshuffled every epoch) at lr 0.1 for 3,000 epochs, with the fit drawn every
500 epochs.

The data are 50 points ``x ~ Uniform[0, 2 pi)``, ``y = sin x`` (:func:`fnet.data.sin`, no
noise); weights start from Xavier init. Each 500-epoch stretch is one compiled call (a scan over
epochs of :func:`fnet.train.make_epoch`). ``quick``: 20 points, 600 epochs, drawn every 100.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots
from fnet.experiments import _common

NAME = "sin-regression"
DESCRIPTION = "A 1-3-1 sigmoid network fit to sin on [0, 2pi) by per-sample SGD, the fit every 500 epochs."

N_POINTS, EPOCHS, EVERY, LEARNING_RATE = 50, 3000, 500, 0.1


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train and record the loss per epoch and the fitted curve every ``EVERY`` epochs.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"epochs", "every", "x", "y", "loss" (epochs,): mean per-sample loss of each epoch,
      "grid" (200,), "fits": {epoch: prediction on grid}, "mse": {epoch: half MSE on the points}}``.
    """
    n, epochs, every = (20, 600, 100) if quick else (N_POINTS, EPOCHS, EVERY)
    ds = data.sin(n, val_fraction=0.0, test_fraction=0.0, seed=seed)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    grid = np.linspace(0, 2 * np.pi, 200, dtype=np.float32)[:, None]
    net = nets.mlp(1, [3], 1, activation="sigmoid", loss="mse", init="xavier")
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params, _ = net.init(init_key)
    opt = optim.sgd(LEARNING_RATE)

    @jax.jit
    def stretch(params, key):
        params, _, curves = _common.train_epochs(net, opt, x, y, epochs=every, batch_size=1, key=key, params=params)
        return params, curves["loss"]

    fits = {0: net.apply(params, grid)[:, 0]}
    mse = {0: net.loss(params, x, y)[0]}
    losses = []
    for done in range(every, epochs + 1, every):
        params, loss = stretch(params, jax.random.fold_in(train_key, done))
        losses.append(np.asarray(loss))
        fits[done] = net.apply(params, grid)[:, 0]
        mse[done] = net.loss(params, x, y)[0]
    return {"n_points": n, "epochs": epochs, "every": every, "learning_rate": LEARNING_RATE, "quick": quick,
            "x": ds.x_train[:, 0].tolist(), "y": ds.y_train[:, 0].tolist(), "grid": grid[:, 0].tolist(),
            "loss": np.concatenate(losses).tolist(),
            "fits": {str(e): np.asarray(f).tolist() for e, f in fits.items()},
            "mse": {str(e): float(v) for e, v in mse.items()}}


def summary(result: dict) -> str:
    """Table: epoch, half MSE on the training points."""
    lines = [f"1-3-1 sigmoid net, {result['n_points']} points of sin, per-sample SGD lr {result['learning_rate']}",
             f"{'epoch':>6} {'loss (half MSE)':>16}"]
    lines += [f"{e:>6} {v:>16.5f}" for e, v in result["mse"].items()]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Left: the fit every ``every`` epochs over sin. Right: loss per epoch (log)."""
    plt = plots.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax.plot(result["grid"], np.sin(result["grid"]), "k--", linewidth=1, label="sin x")
    cmap = plt.get_cmap("viridis")
    fits = result["fits"]
    for k, (e, f) in enumerate(fits.items()):
        ax.plot(result["grid"], f, color=cmap(k / max(1, len(fits) - 1)), label=f"epoch {e}")
    ax.scatter(result["x"], result["y"], s=10, color="k", zorder=3)
    ax.set(xlabel="x", ylabel="y", title="Fit of the 1-3-1 network")
    ax.legend(fontsize=8)
    ax2.plot(np.arange(1, result["epochs"] + 1), result["loss"])
    ax2.set(yscale="log", xlabel="epoch", ylabel="mean per-sample loss", title="Training loss")
    fig.tight_layout()
    plots.save_figure(fig, path)
