"""The source material's 2-D optimizer comparison (Deep Learning from Scratch, ch. 6).

Each optimizer minimizes ``f(x, y) = x**2 / 20 + y**2`` (a valley 20x flatter along x than along
y; minimum at the origin) from (-7, 2) for 30 steps; the paths are drawn over the contour plot.
The learning rates of SGD (0.95), Momentum (0.1), AdaGrad (1.5) and Adam (0.3) are the source's;
Nesterov uses Momentum's 0.1 (same momentum 0.9, so the two panels compare the look-ahead alone)
and RMSProp 0.15 (with decay 0.99 its first step, lr * g / sqrt((1 - 0.99) * g**2) = 10 lr, is
AdaGrad's first step at lr 1.5, so those two panels differ only in how the squared-gradient
accumulator forgets; larger rates overshoot out of the frame).
Other hyperparameters are fnet's defaults (momentum 0.9, AdaGrad eps 1e-7, RMSProp decay 0.99,
Adam b1 0.9, b2 0.999).

Module protocol (shared by every experiment): ``NAME``, ``DESCRIPTION``, ``run(*, quick, data_dir)
-> dict`` (JSON-serialisable), ``summary(result) -> str``, ``plot(result, path)``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fnet import gradcheck, optim, plots

NAME = "optimizer-paths"
DESCRIPTION = "Paths of SGD, Momentum, Nesterov, AdaGrad, RMSProp and Adam on f(x, y) = x**2/20 + y**2."

X0 = (-7.0, 2.0)
STEPS = 30
#: (optimizer constructor, learning rate) per panel, in plotting order.
SETTINGS = {
    "SGD": (optim.sgd, 0.95),
    "Momentum": (optim.momentum, 0.1),
    "Nesterov": (optim.nesterov, 0.1),
    "AdaGrad": (optim.adagrad, 1.5),
    "RMSProp": (optim.rmsprop, 0.15),
    "Adam": (optim.adam, 0.3),
}


def f(p):
    """The source's test function ``x**2 / 20 + y**2`` of ``p = (x, y)``, an array of shape (2,)."""
    return p[0] ** 2 / 20.0 + p[1] ** 2


def optimize_path(opt, f: Callable, x0, steps: int):
    """Run ``opt`` on ``f`` for ``steps`` updates inside one ``lax.scan``.

    Args:
      opt: an ``(init, update)`` optimizer (fnet or optax).
      f: scalar function of an array of shape (D,), differentiated with ``jax.grad``.
      x0: starting point, shape (D,) (converted to the default float dtype).
      steps: number of updates (a Python int).

    Returns:
      Array of shape (steps + 1, D): ``x0`` and the point after each update.
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))
    grad = jax.grad(f)

    def step(carry, _):
        x, state = carry
        updates, state = opt.update(grad(x), state, x)
        x = optim.apply_updates(x, updates)
        return (x, state), x

    _, path = jax.lax.scan(step, (x0, opt.init(x0)), length=steps)
    return jnp.concatenate([x0[None], path])


def numerical_descent(f: Callable, x0, lr: float, steps: int, h: float = 1e-4):
    """Plain gradient descent with central-difference gradients (the source's ``gradient_descent``)::

        g_i = (f(x + h e_i) - f(x - h e_i)) / (2 h)       (fnet.gradcheck.numerical_gradient)
        x   = x - lr * g

    Args:
      f: JAX-traceable scalar function of an array of shape (D,).
      x0: starting point, shape (D,) (converted to the default float dtype; with float32, h=1e-4
        gives gradients good to ~1e-3 only).
      lr, steps, h: learning rate, number of steps, finite-difference step (the source's 1e-4).

    Returns:
      Array of shape (steps + 1, D): ``x0`` and every iterate; ``path[-1]`` is the result. For
      ``x0**2 + x1**2`` from (-3, 4), lr 0.1, 100 steps, it ends at about (-6.1e-10, 8.1e-10).
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))

    def step(x, _):
        x = x - lr * gradcheck.numerical_gradient(f, x, h)
        return x, x

    _, path = jax.lax.scan(step, x0, length=steps)
    return jnp.concatenate([x0[None], path])


def run(*, quick: bool = False, data_dir=None) -> dict:
    """Compute every optimizer's path.

    ``quick`` and ``data_dir`` are accepted for the common protocol; the experiment needs no data
    and is already fast, so both are ignored.

    Returns:
      ``{"function", "x0", "steps", "optimizers": {name: {"learning_rate", "path" (steps+1 x 2),
      "final_value"}}}`` as plain lists and floats.
    """
    optimizers = {}
    for name, (make, lr) in SETTINGS.items():
        path = np.asarray(optimize_path(make(lr), f, X0, STEPS))
        optimizers[name] = {
            "learning_rate": lr,
            "path": path.tolist(),
            "final_value": float(f(path[-1])),
        }
    return {"function": "x**2/20 + y**2", "x0": list(X0), "steps": STEPS, "optimizers": optimizers}


def summary(result: dict) -> str:
    """A plain-text table: optimizer, learning rate, final point and f there."""
    lines = [
        f"f(x, y) = {result['function']} from {tuple(result['x0'])}, {result['steps']} steps",
        f"{'optimizer':<10} {'lr':>6} {'final x':>10} {'final y':>10} {'f(final)':>10}",
    ]
    for name, r in result["optimizers"].items():
        x, y = r["path"][-1]
        lines.append(f"{name:<10} {r['learning_rate']:>6g} {x:>10.4f} {y:>10.4f} {r['final_value']:>10.2e}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Save the paths over the contour plot of ``f`` as a PNG (a 2 x 3 grid of panels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is the optional "plot" extra
    from matplotlib.figure import Figure

    xs, ys = np.meshgrid(np.linspace(-10, 10, 201), np.linspace(-5, 5, 101))
    zs = f(np.stack([xs, ys]))
    fig = Figure(figsize=(13, 7), layout="constrained")
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    for ax, (name, r) in zip(fig.subplots(2, 3).ravel(), result["optimizers"].items()):
        p = np.asarray(r["path"])
        ax.contour(xs, ys, zs, levels=np.linspace(0.5, 25, 12), colors="0.75", linewidths=0.8)
        ax.plot(p[:, 0], p[:, 1], "o-", color="red", markersize=3, linewidth=1)
        ax.plot(0, 0, "+", color="black", markersize=10)
        ax.set(xlim=(-10, 10), ylim=(-5, 5), xlabel="x", ylabel="y", title=f"{name} (lr {r['learning_rate']:g})")
    plots.save_figure(fig, path)
