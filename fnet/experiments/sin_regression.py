"""A 1-3-1 network fit to sin (the classic "approximate a function with a tiny network" exercise):
one input, 3 sigmoid hidden units, one linear output, half mean squared error, per-sample SGD
(minibatches of 1, reshuffled every epoch) at lr 0.1 for 3,000 epochs, the loss and the fit
recorded every 500 epochs, in two set-ups:

- ``source``: as the exercise sets it up: the 63 points ``x = arange(0, 2 pi, 0.1)``, ``y = sin
  x``, weights drawn from a standard normal (biases 0);
- ``uniform``: fnet's variant: 50 points ``x ~ Uniform[0, 2 pi)`` (:func:`fnet.data.sin`, no
  noise), Xavier weights.

Each 500-epoch stretch is one compiled call (a scan over epochs of :func:`fnet.train.make_epoch`).
``quick``: 600 epochs, recorded every 100, on a third of the points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots
from fnet.experiments import _common

NAME = "sin-regression"
DESCRIPTION = "A 1-3-1 sigmoid network fit to sin on [0, 2pi) by per-sample SGD, the source's set-up and fnet's."

N_POINTS, EPOCHS, EVERY, LEARNING_RATE = 50, 3000, 500, 0.1


def _setups(quick: bool, seed: int) -> dict:
    """``{name: (x (n, 1), y (n, 1), init)}``: the source's grid with N(0, 1) weights, fnet's
    uniform points with Xavier weights."""
    grid = np.arange(0, 2 * np.pi, 0.1, dtype=np.float32)[:, None]
    ds = data.sin(N_POINTS, val_fraction=0.0, test_fraction=0.0, seed=seed)
    setups = {"source": (grid, np.sin(grid), 1.0), "uniform": (ds.x_train, ds.y_train, "xavier")}
    return {k: (x[::3], y[::3], init) if quick else (x, y, init) for k, (x, y, init) in setups.items()}


def _fit(x, y, init, *, epochs: int, every: int, seed: int, grid) -> dict:
    net = nets.mlp(1, [3], 1, activation="sigmoid", loss="mse", init=init)
    x, y = jnp.asarray(x), jnp.asarray(y)
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
    return {"x": np.asarray(x)[:, 0].tolist(), "y": np.asarray(y)[:, 0].tolist(),
            "loss": np.concatenate(losses).tolist(),
            "fits": {str(e): np.asarray(f).tolist() for e, f in fits.items()},
            "mse": {str(e): float(v) for e, v in mse.items()}}


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train both set-ups; record the loss per epoch and the fitted curve every ``EVERY`` epochs.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"epochs", "every", "learning_rate", "grid" (200,), "setups": {"source" | "uniform": {"x",
      "y", "loss" (epochs,): mean per-sample loss of each epoch, "fits": {epoch: prediction on
      grid}, "mse": {epoch: half MSE on the points}}}}``.
    """
    epochs, every = (600, 100) if quick else (EPOCHS, EVERY)
    grid = np.linspace(0, 2 * np.pi, 200, dtype=np.float32)[:, None]
    setups = {name: dict(_fit(x, y, init, epochs=epochs, every=every, seed=seed, grid=grid), init=str(init))
              for name, (x, y, init) in _setups(quick, seed).items()}
    return {"epochs": epochs, "every": every, "learning_rate": LEARNING_RATE, "quick": quick,
            "grid": grid[:, 0].tolist(), "setups": setups}


def summary(result: dict) -> str:
    """Table: epoch, half MSE on the training points, per set-up (the source prints it every 500)."""
    s = result["setups"]
    lines = [f"1-3-1 sigmoid net fit to sin, per-sample SGD lr {result['learning_rate']}",
             f"{'epoch':>6} {'source (' + str(len(s['source']['x'])) + ' grid points, N(0,1))':>34} "
             f"{'uniform (' + str(len(s['uniform']['x'])) + ' points, Xavier)':>30}"]
    lines += [f"{e:>6} {v:>34.5f} {s['uniform']['mse'][e]:>30.5f}" for e, v in s["source"]["mse"].items()]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Per set-up: the fit every ``every`` epochs over sin; last panel: loss per epoch (log)."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    cmap = plt.get_cmap("viridis")
    for ax, (name, r) in zip(axes, result["setups"].items()):
        ax.plot(result["grid"], np.sin(result["grid"]), "k--", linewidth=1, label="sin x")
        fits = r["fits"]
        for k, (e, f) in enumerate(fits.items()):
            ax.plot(result["grid"], f, color=cmap(k / max(1, len(fits) - 1)), label=f"epoch {e}")
        ax.scatter(r["x"], r["y"], s=10, color="k", zorder=3)
        ax.set(xlabel="x", ylabel="y", title=f"{name} set-up (init {r['init']})")
        ax.legend(fontsize=7)
        axes[2].plot(np.arange(1, result["epochs"] + 1), r["loss"], label=name)
    axes[2].set(yscale="log", xlabel="epoch", ylabel="mean per-sample loss", title="Training loss")
    axes[2].legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
