"""Without a nonlinearity, depth buys nothing: a deep network of identity activations is one
linear layer (Andrew Ng's "Neural Networks and Deep Learning", week 3, "why do you need
non-linear activation functions").

The deep network ``2 -> 4 -> 4 -> 4 -> 1`` (identity activations, a sigmoid output with binary
cross-entropy) computes ``sigmoid(x W_eff + b_eff)`` with

    W_eff = W1 W2 W3 W4,    b_eff = ((b1 W2 + b2) W3 + b3) W4 + b4,

so whatever its training, its decision boundary is a straight line, as logistic regression's. On
the planar flower (:func:`fnet.data.planar`, 400 points) both are trained by full-batch gradient
descent from Xavier weights (lr 0.1, 20,000 iterations), and compared: the deep network's
scores against ``x W_eff + b_eff`` (equal up to rounding), its training accuracy against
logistic regression's, and the collapsed layer ``(W_eff, b_eff)`` against the fitted single
layer's ``(W, b)`` (both approach the one minimizer of the convex logistic loss). A 2-4-1 tanh
network beside them shows what one nonlinearity adds. ``quick``: 2,000 iterations.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots
from fnet.experiments import _common

NAME = "linear-collapse"
DESCRIPTION = "A deep network without nonlinearity is one linear layer: same boundary as logistic regression."

HIDDEN, LEARNING_RATE, ITERATIONS = (4, 4, 4), 0.1, 20_000
MODELS = {"deep linear": (HIDDEN, "identity"), "logistic regression": ((), "identity"), "2-4-1 tanh": ((4,), "tanh")}


def collapse(params: dict, n_layers: int):
    """``(W_eff (D, C), b_eff (C,))`` of an identity-activation mlp's params ``dense1..denseL``."""
    w, b = params["dense1"]["W"], params["dense1"]["b"]
    for i in range(2, n_layers + 1):
        layer = params[f"dense{i}"]
        w, b = w @ layer["W"], b @ layer["W"] + layer["b"]
    return w, b


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train the three models; compare the deep linear network with its collapsed layer and with
    logistic regression.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"iterations", "models": {label: {"accuracy", "loss" (every 10th iteration), "grid"}},
      "collapse_max_diff": max |deep scores - (x W_eff + b_eff)|, "w_eff", "b_eff", "w_lr",
      "b_lr", "cosine": cos angle between W_eff and W_lr, "boundary_agreement": fraction of the
      decision grid classified alike by the two}``.
    """
    iterations = 2000 if quick else ITERATIONS
    ds = data.planar(400, val_fraction=0.0, test_fraction=0.0, seed=seed)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train[:, None].astype(np.float32))
    models, fitted = {}, {}
    for label, (hidden, activation) in MODELS.items():
        net = nets.mlp(2, list(hidden), 1, activation=activation, loss="sigmoid_binary_cross_entropy", init="xavier")
        params, _ = net.init(jax.random.PRNGKey(seed))
        train = functools.partial(_common.train_iterations, net, optim.sgd(LEARNING_RATE), x, y,
                                  iterations=iterations, batch_size=None, key=jax.random.PRNGKey(seed))
        params, _, _, trace = jax.jit(lambda p, train=train: train(params=p))(params)
        fitted[label] = (net, params)
        models[label] = {"hidden": list(hidden), "activation": activation,
                         "accuracy": float(_common.accuracy(net, params, {}, x, y)),
                         "loss": np.asarray(trace["loss"])[::10].tolist(),
                         "grid": _common.decision_grid(net, params, ds.x_train)}
    deep_net, deep = fitted["deep linear"]
    w_eff, b_eff = collapse(deep, len(HIDDEN) + 1)
    w_lr, b_lr = collapse(fitted["logistic regression"][1], 1)
    diff = float(jnp.max(jnp.abs(deep_net.apply(deep, x) - (x @ w_eff + b_eff))))
    cosine = float(jnp.vdot(w_eff, w_lr) / (jnp.linalg.norm(w_eff) * jnp.linalg.norm(w_lr)))
    same = np.mean((np.asarray(models["deep linear"]["grid"]["prob"]) > 0.5)
                   == (np.asarray(models["logistic regression"]["grid"]["prob"]) > 0.5))
    return {"n_samples": len(ds.x_train), "iterations": iterations, "learning_rate": LEARNING_RATE, "quick": quick,
            "x": np.round(ds.x_train, 4).tolist(), "y": ds.y_train.tolist(), "models": models,
            "collapse_max_diff": diff, "w_eff": np.asarray(w_eff)[:, 0].tolist(), "b_eff": float(b_eff[0]),
            "w_lr": np.asarray(w_lr)[:, 0].tolist(), "b_lr": float(b_lr[0]), "cosine": cosine,
            "boundary_agreement": float(same)}


def summary(result: dict) -> str:
    """Table: model, final loss, training accuracy; then the collapsed layer against logistic regression's."""
    lines = [f"planar flower, {result['n_samples']} points, full-batch GD lr {result['learning_rate']}, "
             f"{result['iterations']} iterations",
             f"{'model':<22} {'final loss':>11} {'accuracy':>9}"]
    for label, m in result["models"].items():
        lines.append(f"{label:<22} {m['loss'][-1]:>11.4f} {100 * m['accuracy']:>8.1f}%")
    w, wl = result["w_eff"], result["w_lr"]
    lines += [f"deep linear scores vs x W_eff + b_eff: max difference {result['collapse_max_diff']:.1e}",
              f"W_eff = ({w[0]:.4f}, {w[1]:.4f}), b_eff = {result['b_eff']:.4f}; logistic regression W = "
              f"({wl[0]:.4f}, {wl[1]:.4f}), b = {result['b_lr']:.4f}; cosine {result['cosine']:.6f}; "
              f"same class on {100 * result['boundary_agreement']:.1f}% of the grid"]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Decision regions of the three models over the data."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x, y = np.asarray(result["x"]), np.asarray(result["y"])
    for ax, (label, m) in zip(axes, result["models"].items()):
        g = m["grid"]
        ax.contourf(g["x0"], g["x1"], np.asarray(g["prob"]) > 0.5, levels=[-0.5, 0.5, 1.5], cmap="coolwarm",
                    alpha=0.35)
        ax.scatter(x[:, 0], x[:, 1], c=y, s=8, cmap="coolwarm")
        ax.set(title=f"{label}: {100 * m['accuracy']:.1f}%", xlabel="x1", ylabel="x2")
    fig.suptitle("A deep network without nonlinearity draws logistic regression's line")
    fig.tight_layout()
    plots.save_figure(fig, path)
