"""Pieces shared by several experiments: MNIST subsets, scanned training loops, accuracy, smoothing.

The two loops are pure functions meant to be called inside ``jax.jit`` (and ``jax.vmap`` over
configurations); both reuse :mod:`fnet.train`'s step/epoch, so there is one training step in fnet:

- :func:`train_iterations`: the source's "iterations" loop (``batch_mask =
  np.random.choice(train_size, batch_size)`` each iteration), every iteration in one ``lax.scan``;
- :func:`train_epochs`: whole epochs (:func:`fnet.train.make_epoch`) in one ``lax.scan``, with
  per-epoch metrics such as train/test accuracy.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, nets, optim, plots, train


def mnist_subset(data_dir=None, n_train: int | None = None, n_test: int | None = None, *, flatten: bool = True,
                 name: str = "mnist"):
    """The first ``n_train`` MNIST training images and the first ``n_test`` test images.

    As the source does (``x_train[:300]``), the subsets are the first samples in file order
    (``val_fraction=0`` keeps all 60,000 training images in order). Files are found via
    ``data_dir`` or ``$FNET_DATA`` (see :func:`fnet.data.find_files`).

    Args:
      flatten: images as (N, 784) rows (default) or (N, 1, 28, 28) for a CNN.
      name: "mnist" or "fashion-mnist".

    Returns:
      ``(x_train, y_train, x_test, y_test)``: float32 arrays in [0, 1] and int32 (N,) labels;
      ``None`` keeps a whole part.
    """
    ds = _mnist(None if data_dir is None else str(data_dir), name)
    x, x_test = ds.x_train[:n_train], ds.x_test[:n_test]
    if not flatten:
        x, x_test = x.reshape(-1, 1, 28, 28), x_test.reshape(-1, 1, 28, 28)
    return tuple(a.copy() for a in (x, ds.y_train[:n_train], x_test, ds.y_test[:n_test]))


@functools.lru_cache(maxsize=2)
def _mnist(data_dir, name="mnist"):
    # Parsing the gzipped files takes seconds; experiments run in one process (the tests) share it.
    return data.load(name, data_dir=data_dir, val_fraction=0.0)


def accuracy(net, params, state, x, y):
    """Eval-mode accuracy of ``params`` on (x, y), traceable (``fnet.train.evaluate`` returns
    Python floats, so it cannot run inside a scan or vmap); see :func:`fnet.train.accuracy`.

    Args:
      x: array of shape (N, D); y: labels (N,) or 0/1 targets (N, 1).
    """
    return train.accuracy(net, net.apply(params, x, state=state), y)


def train_iterations(net, opt, x, y, *, iterations: int, batch_size: int | None, key, params, state=None,
                     record: Callable | None = None):
    """``iterations`` optimizer steps on random minibatches, in one ``lax.scan``.

    Each iteration draws ``batch_size`` indices uniformly WITH replacement from the N samples (the
    source's ``np.random.choice(train_size, batch_size)``); ``batch_size=None`` uses all N samples
    every iteration (full-batch gradient descent). The step is :func:`fnet.train.make_train_step`
    (manual gradients). Call this inside ``jax.jit``.

    Args:
      x: array of shape (N, D); y: labels (N,) or targets (N, C).
      key: PRNG key; iteration ``i`` uses ``split(key, iterations)[i]`` for its batch and dropout.
      params, state: the starting point (e.g. from ``net.init``).
      record: optional ``record(params_before, params_after) -> dict of scalars``, stored per
        iteration (e.g. the size of the update).

    Returns:
      ``(params, state, opt_state, trace)`` where ``trace["loss"]`` has shape (iterations,): the
      minibatch loss before each update, plus one (iterations,) array per ``record`` key.
    """
    n = x.shape[0]
    step = train.make_train_step(net, opt, jit=False)

    def body(carry, k):
        params, state, opt_state = carry
        k_batch, k_drop = jax.random.split(k)
        if batch_size is None:
            batch = (x, y)
        else:
            idx = jax.random.randint(k_batch, (batch_size,), 0, n)
            batch = (jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0))
        new_params, state, opt_state, metrics = step(params, state, opt_state, batch, k_drop)
        out = {"loss": metrics["loss"]}
        if record is not None:
            out.update(record(params, new_params))
        return (new_params, state, opt_state), out

    (params, state, opt_state), trace = jax.lax.scan(
        body, (params, {} if state is None else state, opt.init(params)), jax.random.split(key, iterations)
    )
    return params, state, opt_state, trace


def train_epochs(net, opt, x, y, *, epochs: int, batch_size: int, key, params, state=None,
                 metrics: Callable | None = None):
    """``epochs`` epochs of :func:`fnet.train.make_epoch` in one ``lax.scan``, with per-epoch metrics.

    Epoch ``e`` (0-based) shuffles with ``fold_in(key, e)``. Call this inside ``jax.jit``; it can be
    vmapped over hyperparameters: a ``net`` (weight decay, dropout, init scale) or an ``opt``
    (learning rate) built inside the vmapped function from traced values.

    Args:
      x: array of shape (N, D); y: labels (N,) or targets (N, C).
      metrics: optional ``metrics(params, state) -> dict of scalars``, evaluated after every epoch
        (e.g. train and test accuracy).

    Returns:
      ``(params, state, curves)`` where ``curves["loss"]`` has shape (epochs,): the mean minibatch
      loss of each epoch, plus one (epochs,) array per ``metrics`` key.
    """
    epoch = train.make_epoch(net, opt, batch_size=batch_size, jit=False)

    def body(carry, e):
        params, state, opt_state = carry
        params, state, opt_state, losses = epoch(params, state, opt_state, x, y, jax.random.fold_in(key, e))
        out = {"loss": jnp.mean(losses)}
        if metrics is not None:
            out.update(metrics(params, state))
        return (params, state, opt_state), out

    (params, state, _), curves = jax.lax.scan(
        body, (params, {} if state is None else state, opt.init(params)), jnp.arange(epochs)
    )
    return params, state, curves


def smooth_curve(values, window: int = 11) -> np.ndarray:
    """The source's ``smooth_curve``: a Kaiser-window (beta 2) moving average with reflected ends.

    Args:
      values: array of shape (T,), T >= 1.

    Returns:
      Array of shape (T,).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"smooth_curve: values must be a non-empty 1-D array, got shape {x.shape}")
    window = min(window, x.size) | 1  # odd, so that the output keeps the input's length
    half = window // 2
    padded = np.concatenate([x[half:0:-1], x, x[-2 : -half - 2 : -1]]) if half else x
    w = np.kaiser(window, 2)
    return np.convolve(padded, w / w.sum(), mode="valid")[: x.size]


def to_list(tree):
    """A pytree of arrays as nested lists of Python floats (for JSON)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a).tolist(), tree)


# ----------------------------------------------------------------------------------------------
# The two overfitting experiments (weight decay, dropout) share their run, table and figure.

OVERFIT_HIDDEN = (100,) * 6


def overfit_run(hparam: str, value: float, *, epochs: int, quick: bool, data_dir, seed: int) -> dict:
    """Train the source's overfitting setup without and with one regularizer, both vmapped.

    The setup (Deep Learning from Scratch, ch. 6): a 784-[100]*6-10 ReLU network (He init) on the
    first 300 MNIST training images, SGD lr 0.01, minibatches of 100; train and test accuracy
    (eval mode, the 10,000 test images) after every epoch. The two runs differ only in ``hparam``
    (0 vs ``value``): same init, same minibatches. ``quick``: 100 training images, minibatches
    of 25, 50 epochs, 1,000 test images.

    Args:
      hparam: "weight_decay" or "dropout" (an argument of :func:`fnet.mlp`, traced).
      value: its value in the regularized run.

    Returns:
      ``{"hparam", "value", "epochs", "n_train", "n_test", "runs": {"none"|"regularized":
      {"train_acc" (epochs,), "test_acc" (epochs,), "loss" (epochs,), "final_gap", "mean_gap"}}}``
      where ``final_gap`` is train minus test accuracy averaged over the last 10% of epochs and
      ``mean_gap`` the same averaged over all epochs.
    """
    n_train, n_test, batch_size = (100, 1000, 25) if quick else (300, None, 100)
    epochs = 50 if quick else epochs
    x, y, x_test, y_test = map(jnp.asarray, mnist_subset(data_dir, n_train, n_test))
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    params0, _ = nets.mlp(784, OVERFIT_HIDDEN, 10).init(init_key)

    def one(v):
        net = nets.mlp(784, OVERFIT_HIDDEN, 10, **{hparam: v})  # the same params tree for every value

        def metrics(p, s):
            return {"train_acc": accuracy(net, p, s, x, y), "test_acc": accuracy(net, p, s, x_test, y_test)}

        _, _, curves = train_epochs(net, optim.sgd(0.01), x, y, epochs=epochs, batch_size=batch_size,
                                    key=train_key, params=params0, metrics=metrics)
        return curves

    curves = jax.jit(jax.vmap(one))(jnp.asarray([0.0, value], jnp.float32))
    tail = max(1, epochs // 10)
    runs = {}
    for k, label in enumerate(("none", "regularized")):
        c = {name: np.asarray(a[k]) for name, a in curves.items()}
        runs[label] = {**{name: a.tolist() for name, a in c.items()},
                       "final_gap": float(np.mean(c["train_acc"][-tail:] - c["test_acc"][-tail:])),
                       "mean_gap": float(np.mean(c["train_acc"] - c["test_acc"]))}
    return {"hparam": hparam, "value": value, "epochs": epochs, "n_train": int(x.shape[0]),
            "n_test": int(x_test.shape[0]), "batch_size": batch_size, "hidden": list(OVERFIT_HIDDEN),
            "quick": quick, "runs": runs}


def overfit_summary(result: dict) -> str:
    """Table: run, final train and test accuracy, their gap at the end and averaged over all epochs."""
    lines = [f"784-{result['hidden']}-10 ReLU, SGD lr 0.01, {result['epochs']} epochs on {result['n_train']} MNIST "
             f"images ({result['n_test']} test)",
             f"{'run':<24} {'train acc':>9} {'test acc':>9} {'final gap':>9} {'mean gap':>9}"]
    for label, r in result["runs"].items():
        name = "unregularized" if label == "none" else f"{result['hparam']} {result['value']:g}"
        lines.append(f"{name:<24} {100 * r['train_acc'][-1]:>8.1f}% {100 * r['test_acc'][-1]:>8.1f}% "
                     f"{100 * r['final_gap']:>8.1f}% {100 * r['mean_gap']:>8.1f}%")
    return "\n".join(lines)


def overfit_plot(result: dict, path) -> None:
    """Two panels (unregularized, regularized): train and test accuracy vs epoch, as a PNG."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    epochs = np.arange(1, result["epochs"] + 1)
    for ax, (label, r) in zip(axes, result["runs"].items()):
        ax.plot(epochs, r["train_acc"], label="train")
        ax.plot(epochs, r["test_acc"], label="test")
        name = "no regularization" if label == "none" else f"{result['hparam']} = {result['value']:g}"
        ax.set(xlabel="epoch", title=f"{name} (gap: final {100 * r['final_gap']:.1f}%, mean {100 * r['mean_gap']:.1f}%)", ylim=(0, 1.02))
        ax.legend(loc="lower right")
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    plots.save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# Decision boundaries of 2-D binary classifiers (logistic-regression, shallow-net).

def decision_grid(net, params, x, n: int = 60, margin: float = 0.5) -> dict:
    """Predicted probability of class 1 on an ``n`` x ``n`` grid covering ``x`` (plus ``margin``).

    Args:
      net: a 2-input, 1-output network with loss "sigmoid_binary_cross_entropy".
      x: array of shape (N, 2), the points the grid must cover.

    Returns:
      ``{"x0": (n,), "x1": (n,), "prob": (n, n) with prob[i, j] at (x0[j], x1[i])}`` as lists,
      probabilities rounded to 3 decimals (they are only drawn).
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"decision_grid: x must have shape (N, 2), got {x.shape}")
    g0 = np.linspace(x[:, 0].min() - margin, x[:, 0].max() + margin, n)
    g1 = np.linspace(x[:, 1].min() - margin, x[:, 1].max() + margin, n)
    mesh = np.stack(np.meshgrid(g0, g1), axis=-1).reshape(-1, 2).astype(np.float32)
    prob = jax.nn.sigmoid(net.apply(params, jnp.asarray(mesh))).reshape(n, n)
    return {"x0": g0.tolist(), "x1": g1.tolist(), "prob": np.round(np.asarray(prob, np.float64), 3).tolist()}


def draw_boundary(ax, grid: dict, x, y, title: str) -> None:
    """Draw a :func:`decision_grid` (filled at p = 0.5) with the points ``x`` (N, 2) coloured by ``y`` (N,)."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    ax.contourf(grid["x0"], grid["x1"], np.asarray(grid["prob"]), levels=[0, 0.5, 1], colors=["#f4c7c3", "#c6dbef"])
    ax.contour(grid["x0"], grid["x1"], np.asarray(grid["prob"]), levels=[0.5], colors="k", linewidths=0.8)
    ax.scatter(x[:, 0], x[:, 1], c=np.where(y > 0.5, "#1f4e9a", "#b3261e"), s=6)
    ax.set_title(title, fontsize=9)
    ax.set(xticks=[], yticks=[])
