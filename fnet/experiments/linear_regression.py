"""Linear regression four ways (Hands-On Machine Learning, ch. 4): the normal equation and batch,
mini-batch and stochastic gradient descent on a noisy linear problem, and what the normal equation
costs as the number of features grows.

Data: 1,000 samples ``y = 2 x1 - 3.4 x2 + 4.2 + eps`` with ``x ~ N(0, I)``, ``eps ~ N(0, 1)``
(:func:`fnet.data.linear`, noise 1). The model is ``fnet.mlp(2, [], 1, loss="mse")`` (a linear
layer, half mean squared error), started at zero. Batch GD uses all samples every step at lr 0.1;
mini-batch GD (32 samples) and SGD (1 sample) use random samples each step and a decaying rate
``0.1 / (1 + 0.01 t)`` (:func:`fnet.schedules.inverse_time`), as the source's learning schedule
does, so that their noise settles; 1,000 steps each. Per step: the distance of the parameters
``(w, b)`` from the normal equation's, and the loss on all 1,000 samples.

The normal equation ``theta = (X^T X)^-1 X^T y`` (with a column of ones for the bias) is solved in
float64 with ``numpy.linalg.solve``; its cost, O(N D^2 + D^3), is timed for D features and N = 2D
samples against one batch gradient step, O(N D): the median of 5 runs each (single runs on a
shared machine are not even monotonic in D). ``quick``: 300 steps; D up to 256.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots, schedules
from fnet.experiments import _common

NAME = "linear-regression"
DESCRIPTION = "Normal equation vs batch, mini-batch and stochastic gradient descent on noisy linear data."

N_SAMPLES, NOISE, LEARNING_RATE = 1000, 1.0, 0.1
#: Method -> (batch size or None for all samples, learning rate or schedule).
METHODS = {
    "batch GD": (None, LEARNING_RATE),
    "mini-batch GD": (32, schedules.inverse_time(LEARNING_RATE, 0.01)),
    "SGD": (1, schedules.inverse_time(LEARNING_RATE, 0.01)),
}


def normal_equation(x, y):
    """Least-squares fit with a bias: ``theta = solve(Xb^T Xb, Xb^T y)``, ``Xb = [X, 1]``.

    Args:
      x: array of shape (N, D); y: array of shape (N,) or (N, 1).

    Returns:
      ``(w, b)``: float64 arrays of shape (D,) and a float.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(y) != len(x):
        raise ValueError(f"normal_equation: x must have shape (N, D) and y N rows, got {x.shape} and {np.shape(y)}")
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    theta = np.linalg.solve(xb.T @ xb, xb.T @ np.asarray(y, np.float64).reshape(len(x)))
    return theta[:-1], float(theta[-1])


def _timing(dims, repeats: int = 5, seed: int = 0):
    """Median seconds of the normal equation and of one batch gradient step for D features, N = 2D."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in dims:
        x, y = rng.standard_normal((2 * d, d)), rng.standard_normal(2 * d)
        theta = np.zeros(d + 1)

        def ne():
            normal_equation(x, y)

        def gd_step():
            err = x @ theta[:-1] + theta[-1] - y
            return np.concatenate([x.T @ err, [err.sum()]]) / len(x)

        t = {}
        for name, f in (("normal_equation_s", ne), ("gd_step_s", gd_step)):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            t[name] = float(np.median(times))
        rows.append({"features": d, "samples": 2 * d, **t})
    return rows


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Fit by the normal equation and by the three gradient-descent variants; time the normal equation.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"true_w", "true_b", "normal_equation": {"w", "b", "loss"}, "methods": {name: {"batch_size",
      "param_error" (steps,), "loss" (steps,), "w", "b", "final_param_error"}}, "timing": [{"features",
      "samples", "normal_equation_s", "gd_step_s"}]}``.
    """
    steps = 300 if quick else 1000
    ds = data.linear(N_SAMPLES, noise=NOISE, val_fraction=0.0, test_fraction=0.0, seed=seed)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    w_ne, b_ne = normal_equation(ds.x_train, ds.y_train)
    theta_ne = jnp.asarray(np.append(w_ne, b_ne), jnp.float32)
    net = nets.mlp(2, [], 1, loss="mse", init="zeros")
    params0, _ = net.init(jax.random.PRNGKey(seed))

    def record(_, after):
        theta = jnp.concatenate([after["dense1"]["W"][:, 0], after["dense1"]["b"]])
        return {"param_error": jnp.linalg.norm(theta - theta_ne), "full_loss": net.loss(after, x, y)[0]}

    methods = {}
    for name, (batch_size, lr) in METHODS.items():
        params, _, _, trace = jax.jit(lambda p: _common.train_iterations(
            net, optim.sgd(lr), x, y, iterations=steps, batch_size=batch_size, key=jax.random.PRNGKey(seed + 1),
            params=p, record=record))(params0)
        err = np.asarray(trace["param_error"])
        methods[name] = {"batch_size": batch_size or N_SAMPLES, "param_error": err.tolist(),
                         "loss": np.asarray(trace["full_loss"]).tolist(), "w": np.asarray(params["dense1"]["W"][:, 0]).tolist(),
                         "b": float(params["dense1"]["b"][0]), "final_param_error": float(err[-1])}
    ne_loss = float(net.loss({"dense1": {"W": theta_ne[:-1, None], "b": theta_ne[-1:]}}, x, y)[0])
    dims = [16, 64, 256] if quick else [16, 64, 256, 512, 1024, 2048]
    return {"n_samples": N_SAMPLES, "noise": NOISE, "steps": steps, "quick": quick,
            "true_w": ds.info["w"].tolist(), "true_b": float(ds.info["b"]),
            "normal_equation": {"w": w_ne.tolist(), "b": b_ne, "loss": ne_loss},
            "methods": methods, "timing": _timing(dims)}


def summary(result: dict) -> str:
    """Tables: fitted parameters and distance from the normal equation; timing by feature count."""
    ne = result["normal_equation"]
    lines = [f"{result['n_samples']} samples, noise {result['noise']}, {result['steps']} gradient steps; "
             f"true w {np.round(result['true_w'], 3).tolist()}, b {result['true_b']:.3f}",
             f"{'method':<16} {'w':>20} {'b':>8} {'|theta - theta_NE|':>19} {'loss':>8}",
             f"{'normal equation':<16} {str(np.round(ne['w'], 4).tolist()):>20} {ne['b']:>8.4f} {0:>19.2e} {ne['loss']:>8.4f}"]
    for name, r in result["methods"].items():
        lines.append(f"{name:<16} {str(np.round(r['w'], 4).tolist()):>20} {r['b']:>8.4f} "
                     f"{r['final_param_error']:>19.2e} {r['loss'][-1]:>8.4f}")
    lines.append(f"{'features':>8} {'samples':>8} {'normal eq (s)':>14} {'GD step (s)':>12}")
    for t in result["timing"]:
        lines.append(f"{t['features']:>8} {t['samples']:>8} {t['normal_equation_s']:>14.2e} {t['gd_step_s']:>12.2e}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Three panels: distance from the normal equation, full-data loss (both per step), timing."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, r in result["methods"].items():
        axes[0].plot(r["param_error"], label=f"{name} (batch {r['batch_size']})")
        axes[1].plot(r["loss"], label=name)
    axes[1].axhline(result["normal_equation"]["loss"], color="k", linestyle=":", label="normal equation")
    axes[0].set(yscale="log", xlabel="step", ylabel="||theta - theta_NE||", title="Distance from the normal equation")
    axes[1].set(yscale="log", xlabel="step", ylabel="loss on all samples (half MSE)", title="Loss")
    for ax in axes[:2]:
        ax.legend()
    d = [t["features"] for t in result["timing"]]
    axes[2].loglog(d, [t["normal_equation_s"] for t in result["timing"]], "o-", label="normal equation")
    axes[2].loglog(d, [t["gd_step_s"] for t in result["timing"]], "s-", label="one batch GD step")
    axes[2].set(xlabel="features D (samples N = 2D)", ylabel="seconds", title="Cost as features grow")
    axes[2].legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
