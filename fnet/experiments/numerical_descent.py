"""The source material's numerical gradient descent (Deep Learning from Scratch, ch. 4,
``gradient_method.py``): gradient descent on ``f(x0, x1) = x0**2 + x1**2`` from (-3, 4), lr 0.1,
100 steps, with central-difference gradients ``(f(x + h e_i) - f(x - h e_i)) / 2h``, h = 1e-4.
Each step multiplies x by 0.8, so it ends at ``0.8**100 * (-3, 4)``, about (-6.1e-10, 8.1e-10):
each coordinate within 1e-9 of 0, as the source prints (the Euclidean distance is 1.02e-9).

The descent is :func:`fnet.experiments.optimizer_paths.numerical_descent` (one ``lax.scan``),
run in float64 (``jax.enable_x64``): in float32 the central difference is good to ~1e-3 only.
``quick`` is the same computation (it takes milliseconds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import plots
from fnet.experiments.optimizer_paths import numerical_descent

NAME = "numerical-descent"
DESCRIPTION = "Gradient descent with central-difference gradients on x0**2 + x1**2 from (-3, 4): 100 steps to ~1e-9."

X0, LEARNING_RATE, STEPS = (-3.0, 4.0), 0.1, 100


def f(x):
    """``x0**2 + x1**2`` of x, an array of shape (2,)."""
    return x[0] ** 2 + x[1] ** 2


def run(*, quick: bool = False, data_dir=None) -> dict:
    """Run the descent in float64.

    ``quick`` and ``data_dir`` are accepted for the common protocol and ignored.

    Returns:
      ``{"x0", "learning_rate", "steps", "path" (steps+1 x 2), "final", "max_abs" (the largest
      |coordinate| of the final point: each is within 1e-9 of 0), "distance" (its Euclidean
      distance from the origin, 1.02e-9), "exact" (0.8**steps * x0)}``.
    """
    with jax.enable_x64(True):
        path = np.asarray(numerical_descent(f, jnp.asarray(X0, jnp.float64), LEARNING_RATE, STEPS))
    return {"x0": list(X0), "learning_rate": LEARNING_RATE, "steps": STEPS, "dtype": str(path.dtype),
            "path": path.tolist(), "final": path[-1].tolist(), "max_abs": float(np.abs(path[-1]).max()), "distance": float(np.linalg.norm(path[-1])),
            "exact": (np.asarray(X0) * (1 - 2 * LEARNING_RATE) ** STEPS).tolist()}


def summary(result: dict) -> str:
    """The final point, its distance from the origin, and the exact value."""
    x, e = result["final"], result["exact"]
    return "\n".join([
        f"x0**2 + x1**2 from {tuple(result['x0'])}, lr {result['learning_rate']}, {result['steps']} steps "
        f"({result['dtype']}, central differences)",
        f"final point   [{x[0]: .8e} {x[1]: .8e}]",
        f"exact 0.8**{result['steps']} x0 [{e[0]: .8e} {e[1]: .8e}]",
        f"largest |coordinate| {result['max_abs']:.3e}; distance from the origin {result['distance']:.3e}",
    ])


def plot(result: dict, path) -> None:
    """The path over the contours of f, and the distance from the origin per step (log)."""
    plt = plots.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    p = np.asarray(result["path"])
    g = np.linspace(-5, 5, 201)
    xs, ys = np.meshgrid(g, g)
    ax.contour(xs, ys, xs**2 + ys**2, levels=[1, 4, 9, 16, 25], colors="0.75", linewidths=0.8)
    ax.plot(p[:, 0], p[:, 1], "o-", color="C0", markersize=3)
    ax.plot(0, 0, "k+", markersize=10)
    ax.set(xlim=(-4, 4), ylim=(-1, 5), aspect="equal", xlabel="x0", ylabel="x1", title="Path")
    ax2.semilogy(np.abs(p).max(axis=1))
    ax2.axhline(1e-9, color="k", linestyle=":", label="1e-9")
    ax2.set(xlabel="step", ylabel="largest |coordinate|", title="Convergence")
    ax2.legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
