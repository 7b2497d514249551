"""The source material's remark on AdaGrad (Deep Learning from Scratch, ch. 6): AdaGrad divides
by the root of the SUM of all past squared gradients, ``h += g*g; p -= lr * g / sqrt(h)``, so
as ``h`` grows its steps shrink towards 0 (like ``1/sqrt(t)`` for gradients of steady size) and
learning can stall; RMSProp (a decaying average of ``g*g``) and Adam do not shrink this way.

The setup is the optimizer-mnist one: a 784-[100]*4-10 ReLU network (He init) trained for 2,000
iterations on random minibatches of 128 MNIST images, AdaGrad (lr 0.01), RMSProp (lr 0.01) and
Adam (lr 0.001) from the same init on the same minibatches. Recorded per step: the size of the
update, ``||p_after - p_before||`` over all parameters. ``quick``: 10,000 images (a smaller set
is memorized within the run, and then every optimizer's steps shrink with the vanishing
gradients), 200 iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import nets, optim, plots
from fnet.experiments import _common

NAME = "adagrad-decay"
DESCRIPTION = "Per-step update size of AdaGrad (shrinking like 1/sqrt(t)) vs RMSProp and Adam on MNIST."

HIDDEN = (100, 100, 100, 100)
BATCH_SIZE = 128
SETTINGS = {"AdaGrad": (optim.adagrad, 0.01), "RMSProp": (optim.rmsprop, 0.01), "Adam": (optim.adam, 0.001)}


def update_norm(before, after):
    """``{"update_norm": ||after - before||}``, the global L2 norm over all parameter arrays."""
    return {"update_norm": optim.global_norm(jax.tree_util.tree_map(jnp.subtract, after, before))}


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train with each optimizer and record the update size of every step.

    Returns:
      ``{"iterations", "batch_size", "n_train", "optimizers": {name: {"learning_rate",
      "update_norm" (iterations,), "loss" (iterations,), "decay_ratio"}}}`` where ``decay_ratio``
      is the mean update size of the last 10% of steps over that of the second 10% (the first
      steps are a transient: the accumulators start at 0).
    """
    iterations, n_train = (200, 10000) if quick else (2000, None)
    x, y, _, _ = map(jnp.asarray, _common.mnist_subset(data_dir, n_train, 0))
    net = nets.mlp(784, HIDDEN, 10)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params0, _ = net.init(init_key)
    tenth = max(1, iterations // 10)
    out = {}
    for name, (make, lr) in SETTINGS.items():
        trace = jax.jit(lambda p: _common.train_iterations(
            net, make(lr), x, y, iterations=iterations, batch_size=BATCH_SIZE, key=train_key, params=p,
            record=update_norm)[3])(params0)
        norms = np.asarray(trace["update_norm"], np.float64)
        out[name] = {"learning_rate": lr, "update_norm": norms.tolist(), "loss": np.asarray(trace["loss"]).tolist(),
                     "decay_ratio": float(norms[-tenth:].mean() / norms[tenth : 2 * tenth].mean())}
    return {"iterations": iterations, "batch_size": BATCH_SIZE, "n_train": int(x.shape[0]), "hidden": list(HIDDEN),
            "quick": quick, "optimizers": out}


def summary(result: dict) -> str:
    """Table: optimizer, update size at a few steps, and the ratio of the last 10% of steps to the second 10%."""
    n = result["iterations"]
    steps = [s for s in (1, 10, 100, 1000, n) if s <= n]
    lines = [f"update size ||p_t - p_(t-1)|| on MNIST, {n} iterations of batch {result['batch_size']}",
             f"{'optimizer':<9} {'lr':>6} " + " ".join(f"{'step ' + str(s):>10}" for s in steps) + f" {'last/early':>11}"]
    for name, r in result["optimizers"].items():
        lines.append(f"{name:<9} {r['learning_rate']:>6g} " + " ".join(f"{r['update_norm'][s - 1]:>10.2e}" for s in steps)
                     + f" {r['decay_ratio']:>11.3f}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Update size per step (log-log, with a 1/sqrt(t) guide through AdaGrad's start) and the loss."""
    plt = plots.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    t = np.arange(1, result["iterations"] + 1)
    for name, r in result["optimizers"].items():
        ax.plot(t, _common.smooth_curve(r["update_norm"]), label=f"{name} (lr {r['learning_rate']:g})")
        ax2.plot(t, _common.smooth_curve(r["loss"]), label=name)
    start = np.mean(result["optimizers"]["AdaGrad"]["update_norm"][:10])
    ax.plot(t, start / np.sqrt(t), "k:", label="1/sqrt(t)")
    ax.set(xscale="log", yscale="log", xlabel="iteration", ylabel="||update|| (smoothed)",
           title="Update size per step")
    ax.legend()
    ax2.set(xlabel="iteration", ylabel="training loss (smoothed)", ylim=(0, 1), title="Training loss")
    ax2.legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
