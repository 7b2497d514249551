"""The source material's weight-initialization comparison on MNIST (Deep Learning from Scratch,
ch. 6, ``weight_init_compare.py``), plus the all-zeros init the material warns about.

A 784-[100]*4-10 ReLU network is trained with SGD (lr 0.01) for 2,000 iterations on random
minibatches of 128 MNIST training images, starting from weights drawn at std 0.01, Xavier
(``sqrt(1/n_in)``) and He (``sqrt(2/n_in)``). With std 0.01 the signal vanishes in the deep layers
and the loss barely moves; Xavier learns, He learns fastest.

All-zeros weights: every hidden unit of a layer computes the same function, receives the same
gradient and so stays identical forever (the symmetry problem). It is measured as the spread
between units' incoming weights, ``mean_i std_j W[i, j]`` (0 when all columns are equal), next to
how far the weights moved from their init. With ReLU the zero network is stuck completely (ReLU(0)
= 0 and its derivative at 0 is 0, so nothing but the last bias moves); with sigmoid the hidden
weights do move but stay identical across units, which is the material's point. He's spread is
shown for comparison.

The four ReLU runs (std 0.01, Xavier, He, zeros) are one vmapped program over stacked initial
weights; all runs see the same minibatches. ``quick``: 500 training images, 100 iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnet import nets, optim, plots
from fnet.experiments import _common

NAME = "init-compare"
DESCRIPTION = "Loss curves of a 784-[100]*4-10 ReLU net on MNIST from std 0.01, Xavier and He init; zero init's symmetry."

HIDDEN = (100, 100, 100, 100)
BATCH_SIZE, LEARNING_RATE = 128, 0.01
#: Curve label -> init spec of fnet.mlp, for the ReLU network.
INITS = {"std=0.01": 0.01, "Xavier": "xavier", "He": "he", "zeros": "zeros"}


def unit_spread(w):
    """Spread between the units of a layer: ``mean_i std_j W[i, j]``.

    Args:
      w: weights of shape (n_in, n_units); column j holds unit j's incoming weights.

    Returns:
      Scalar, 0 exactly when every unit has the same incoming weights.
    """
    return jnp.mean(jnp.std(w, axis=1))


def _layer_stats(params0, params, n_hidden):
    """Per hidden layer: unit spread after training and the norm of the change of W."""
    return {
        "unit_spread": [float(unit_spread(params[f"dense{i}"]["W"])) for i in range(1, n_hidden + 1)],
        "weight_change": [float(jnp.linalg.norm(params[f"dense{i}"]["W"] - params0[f"dense{i}"]["W"])) for i in range(1, n_hidden + 1)],
    }


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train the four ReLU inits together (vmapped) and the zero-init sigmoid net.

    Returns:
      ``{"iterations", "batch_size", "learning_rate", "n_train", "runs": {label: {"activation",
      "loss" (iterations,), "smoothed_loss", "final_loss" (mean of the last 10%), "test_accuracy",
      "unit_spread" (per hidden layer), "weight_change" (per hidden layer)}}}``; labels are the
      :data:`INITS` keys plus "zeros (sigmoid)".
    """
    iterations, n_train, n_test = (100, 500, 500) if quick else (2000, None, None)
    x, y, x_test, y_test = map(jnp.asarray, _common.mnist_subset(data_dir, n_train, n_test))
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    opt = optim.sgd(LEARNING_RATE)

    def train(net, params):
        params, _, _, trace = _common.train_iterations(
            net, opt, x, y, iterations=iterations, batch_size=BATCH_SIZE, key=train_key, params=params)
        return params, trace["loss"], _common.accuracy(net, params, {}, x_test, y_test)

    relu_nets = {label: nets.mlp(784, HIDDEN, 10, init=spec) for label, spec in INITS.items()}
    inits = [net.init(init_key)[0] for net in relu_nets.values()]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *inits)
    net = relu_nets["He"]  # same architecture for all four; only the initial weights differ
    final, losses, accs = jax.jit(jax.vmap(lambda p: train(net, p)))(stacked)
    runs = {}
    for k, label in enumerate(INITS):
        params_k = jax.tree_util.tree_map(lambda a: a[k], final)
        runs[label] = _run_record("relu", np.asarray(losses[k]), accs[k], inits[k], params_k, len(HIDDEN))

    sig = nets.mlp(784, HIDDEN, 10, activation="sigmoid", init="zeros")
    p0 = sig.init(init_key)[0]
    p, loss, acc = jax.jit(lambda p: train(sig, p))(p0)
    runs["zeros (sigmoid)"] = _run_record("sigmoid", np.asarray(loss), acc, p0, p, len(HIDDEN))
    return {"iterations": iterations, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
            "n_train": int(x.shape[0]), "n_test": int(x_test.shape[0]), "hidden": list(HIDDEN), "quick": quick,
            "runs": runs}


def _run_record(activation, loss, acc, params0, params, n_hidden):
    tail = max(1, loss.size // 10)
    return {"activation": activation, "loss": loss.tolist(), "smoothed_loss": _common.smooth_curve(loss).tolist(),
            "final_loss": float(loss[-tail:].mean()), "test_accuracy": float(acc),
            **_layer_stats(params0, params, n_hidden)}


def summary(result: dict) -> str:
    """Table: init, activation, final loss, test accuracy, unit spread and weight change of layers 1 and 4."""
    lines = [f"784-{result['hidden']}-10, SGD lr {result['learning_rate']}, {result['iterations']} iterations "
             f"of batch {result['batch_size']} on {result['n_train']} MNIST images",
             f"{'init':<16} {'act':<8} {'final loss':>10} {'test acc':>9} {'spread W1':>10} {'spread W4':>10} {'|dW1|':>9} {'|dW4|':>9}"]
    for label, r in result["runs"].items():
        lines.append(f"{label:<16} {r['activation']:<8} {r['final_loss']:>10.4f} {100 * r['test_accuracy']:>8.2f}% "
                     f"{r['unit_spread'][0]:>10.2e} {r['unit_spread'][-1]:>10.2e} {r['weight_change'][0]:>9.2e} {r['weight_change'][-1]:>9.2e}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Left: smoothed loss curves per init. Right: spread between units per hidden layer (log)."""
    plt = plots.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for label, r in result["runs"].items():
        ax.plot(r["smoothed_loss"], label=label, linewidth=1.2)
    ax.set(xlabel="iteration", ylabel="training loss (smoothed)", ylim=(0, 2.5), title="Weight init on MNIST (SGD 0.01)")
    ax.legend()
    layers_ = np.arange(1, len(result["hidden"]) + 1)
    floor = 1e-12  # zeros have spread exactly 0; draw them on the floor of the log axis
    for k, (label, r) in enumerate(result["runs"].items()):
        ax2.bar(layers_ + (k - 2) * 0.16, np.maximum(r["unit_spread"], floor), width=0.16, label=label)
    ax2.set(yscale="log", ylim=(floor / 2, 1e3), xticks=layers_, xlabel="hidden layer",
            ylabel="spread between units' weights", title="Symmetry after training (0 = identical units)")
    ax2.legend(fontsize=8, loc="upper right", ncol=3)
    fig.tight_layout()
    plots.save_figure(fig, path)
