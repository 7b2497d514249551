"""Loops against vectorization (Andrew Ng's "Neural Networks and Deep Learning", week 2): one
forward and backward pass of logistic regression over m samples of n features,

    z = X w + b,   a = sigmoid(z),   J = -mean(y log a + (1 - y) log(1 - a)),
    dz = a - y,    dw = X^T dz / m,   db = mean(dz),

written three ways and timed side by side on the same float64 data:

- ``python loops``: a loop over the samples and, inside it, over the features, on Python floats
  (the lesson's first version);
- ``numpy vectorized``: the equations above as NumPy array operations;
- ``jax jit``: the same operations in ``jax.numpy`` under ``jax.jit`` (compiled once, before the
  timing; the compile time is reported separately).

The three must agree (loss and gradients to 1e-9 relative). Times are the median of 25 runs
(the loops: of 3). The lesson is the first ratio (loops / vectorized, two to three orders of
magnitude); jit adds nothing to one pass this small on a CPU (NumPy's matrix-vector products
are as fast as XLA's, and a jitted call pays ~0.1 ms to dispatch) - it pays off when whole
training loops are compiled into one program (see the other experiments). Sizes: m in (1,000, 10,000) samples of n = 100 features; ``quick``: m = 200,
n = 20.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from fnet import plots

NAME = "loop-vs-vectorized"
DESCRIPTION = "One logistic-regression forward/backward with Python loops, NumPy vectorized and jitted JAX, timed."

IMPLEMENTATIONS = ("python loops", "numpy vectorized", "jax jit")


def loops(x: list, y: list, w: list, b: float):
    """The pass with explicit loops. x: m lists of n floats; y: m floats; w: n floats.
    Returns ``(J, dw (n floats), db)``."""
    m, n = len(x), len(w)
    cost, dw, db = 0.0, [0.0] * n, 0.0
    for i in range(m):
        z = b
        for j in range(n):
            z += w[j] * x[i][j]
        a = 1.0 / (1.0 + math.exp(-z))
        cost -= y[i] * math.log(a) + (1.0 - y[i]) * math.log(1.0 - a)
        dz = a - y[i]
        for j in range(n):
            dw[j] += x[i][j] * dz
        db += dz
    return cost / m, [g / m for g in dw], db / m


def vectorized(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float):
    """The pass as NumPy array operations. x: (m, n); y: (m,); w: (n,). Returns ``(J, dw (n,), db)``."""
    a = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    cost = -np.mean(y * np.log(a) + (1.0 - y) * np.log(1.0 - a))
    dz = a - y
    return cost, x.T @ dz / len(x), np.mean(dz)


@jax.jit
def jitted(x, y, w, b):
    """:func:`vectorized` in ``jax.numpy``, compiled."""
    a = jax.nn.sigmoid(x @ w + b)
    cost = -jnp.mean(y * jnp.log(a) + (1.0 - y) * jnp.log(1.0 - a))
    dz = a - y
    return cost, x.T @ dz / x.shape[0], jnp.mean(dz)


def _median_time(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Time the three implementations at each size and check that they agree.

    ``data_dir`` is accepted for the common protocol (the data are synthetic).

    Returns:
      ``{"features", "rows": [{"samples", "seconds": {implementation: median seconds},
      "max_rel_diff": largest relative difference of J, dw, db from the loops' result,
      "jit_compile_s"}]}``.
    """
    n, sizes = (20, (200,)) if quick else (100, (1000, 10000))
    rng = np.random.default_rng(seed)
    rows = []
    with jax.enable_x64(True):
        for m in sizes:
            x = rng.standard_normal((m, n))
            w_true = rng.standard_normal(n)
            y = (x @ w_true + rng.standard_normal(m) > 0).astype(np.float64)
            w, b = 0.1 * rng.standard_normal(n), 0.1
            xl, yl, wl = x.tolist(), y.tolist(), w.tolist()
            xj, yj, wj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)
            t0 = time.perf_counter()
            jax.block_until_ready(jitted(xj, yj, wj, b))
            compile_s = time.perf_counter() - t0
            results = {"python loops": loops(xl, yl, wl, b), "numpy vectorized": vectorized(x, y, w, b),
                       "jax jit": jitted(xj, yj, wj, b)}
            ref = np.concatenate([[results["python loops"][0]], results["python loops"][1], [results["python loops"][2]]])
            diff = 0.0
            for cost, dw, db in results.values():
                got = np.concatenate([[float(cost)], np.asarray(dw, np.float64), [float(db)]])
                diff = max(diff, float(np.max(np.abs(got - ref) / np.maximum(1e-12, np.abs(ref)))))
            seconds = {"python loops": _median_time(lambda: loops(xl, yl, wl, b), 3),
                       "numpy vectorized": _median_time(lambda: vectorized(x, y, w, b), 25),
                       "jax jit": _median_time(lambda: jitted(xj, yj, wj, b), 25)}
            rows.append({"samples": m, "seconds": seconds, "max_rel_diff": diff, "jit_compile_s": compile_s})
    return {"features": n, "rows": rows, "quick": quick}


def summary(result: dict) -> str:
    """Table: milliseconds per forward/backward pass of each implementation, and the speed-ups."""
    lines = [f"logistic regression forward + backward, {result['features']} features, float64 (median ms)",
             f"{'samples':>8} " + " ".join(f"{name:>17}" for name in IMPLEMENTATIONS)
             + f" {'loops / numpy':>14} {'numpy / jit':>12} {'agree to':>9}"]
    for r in result["rows"]:
        s = r["seconds"]
        lines.append(f"{r['samples']:>8} " + " ".join(f"{1e3 * s[name]:>17.3f}" for name in IMPLEMENTATIONS)
                     + f" {s['python loops'] / s['numpy vectorized']:>13.0f}x {s['numpy vectorized'] / s['jax jit']:>11.1f}x"
                     + f" {r['max_rel_diff']:>9.0e}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Bars (log scale): milliseconds per pass of each implementation, per number of samples."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = result["rows"]
    width = 0.8 / len(IMPLEMENTATIONS)
    for k, name in enumerate(IMPLEMENTATIONS):
        ms = [1e3 * r["seconds"][name] for r in rows]
        bars = ax.bar(np.arange(len(rows)) + k * width, ms, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(np.arange(len(rows)) + width, [f"{r['samples']:,} samples" for r in rows])
    ax.set(yscale="log", ylabel="ms per forward + backward",
           title=f"Logistic regression, {result['features']} features: loops vs vectorized")
    ax.legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
