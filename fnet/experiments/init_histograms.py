"""The source material's activation histograms (Deep Learning from Scratch, ch. 6,
``weight_init_activation_histogram.py``).

1,000 standard-normal inputs of 100 features pass through 5 affine layers of 100 units (no bias)
with the weights drawn at std 1, std 0.01, Xavier (``sqrt(1/100)``) and He (``sqrt(2/100)``),
under sigmoid, tanh and ReLU; each layer's activations are binned in 30 bins (range (0, 1) for
sigmoid and ReLU as in the source, (-1, 1) for tanh; ReLU panels clip the spike of zeros in the
first bin, as the source's ``ylim`` does). What the source shows:

- std 1 with sigmoid: the activations pile up at 0 and 1 (saturation: vanishing gradients);
- std 0.01: the activations collapse (to 0.5 under sigmoid, to 0 under tanh/ReLU): every unit
  says the same thing, so the layers lose expressiveness;
- Xavier keeps sigmoid/tanh activations spread over all 5 layers, He keeps ReLU's spread.

The forward passes are fnet's layer functions (``affine_forward`` and the activations).
``quick`` is the same computation (it takes well under a second).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fnet import layers, plots

NAME = "init-histograms"
DESCRIPTION = "Per-layer activation histograms of a 5-layer net for weight std 1, 0.01, Xavier and He."

N_SAMPLES, WIDTH, DEPTH, BINS = 1000, 100, 5, 30
#: Init name -> weight std for a layer with fan-in WIDTH.
STDS = {"std=1": 1.0, "std=0.01": 0.01, "Xavier": math.sqrt(1.0 / WIDTH), "He": math.sqrt(2.0 / WIDTH)}
ACTIVATIONS = ("sigmoid", "tanh", "relu")
RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, 1.0)}


def activations(x, stds, activation: str, key):
    """Activations of each layer of a bias-free stack of affine + ``activation`` layers.

    Args:
      x: input of shape (N, D).
      stds: weight std of each layer, a sequence of length L (layer i's W has shape (D, D)).
      activation: a key of :data:`fnet.layers.ACTIVATIONS`.
      key: PRNG key for the weights.

    Returns:
      Array of shape (L, N, D): ``a_i = act(a_{i-1} @ W_i)``, ``a_0 = x``.
    """
    forward = layers.ACTIVATIONS[activation][0]
    out, h = [], x
    d = x.shape[1]
    for i, std in enumerate(stds):
        w = std * jax.random.normal(jax.random.fold_in(key, i), (d, d), x.dtype)
        h, _ = layers.affine_forward(h, w, jnp.zeros((d,), x.dtype))
        h, _ = forward(h)
        out.append(h)
    return jnp.stack(out)


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Histograms and statistics of every (init, activation, layer).

    ``quick`` and ``data_dir`` are accepted for the common protocol (no data; already fast).

    Returns:
      ``{"n_samples", "width", "depth", "bins", "results": {activation: {init: {"std",
      "range", "counts" (depth x bins, fractions of all activations), "layer_std" (depth,),
      "saturated" (depth,): fraction within 2% of the range's width of either end (for ReLU this
      counts the units that output 0 and those at >= 0.98)}}}}``.
    """
    key = jax.random.PRNGKey(seed)
    x = jax.random.normal(jax.random.fold_in(key, 1000), (N_SAMPLES, WIDTH), jnp.float32)
    results = {}
    for act in ACTIVATIONS:
        lo, hi = RANGES[act]
        results[act] = {}
        for name, std in STDS.items():
            a = np.asarray(activations(x, [std] * DEPTH, act, key), dtype=np.float64)
            counts = [np.histogram(layer, BINS, range=(lo, hi))[0] / layer.size for layer in a]
            margin = 0.02 * (hi - lo)
            saturated = [float(np.mean((layer <= lo + margin) | (layer >= hi - margin))) for layer in a]
            results[act][name] = {
                "std": std,
                "range": [lo, hi],
                "counts": np.round(np.array(counts), 6).tolist(),
                "layer_std": a.reshape(DEPTH, -1).std(axis=1).tolist(),
                "saturated": saturated,
            }
    return {"n_samples": N_SAMPLES, "width": WIDTH, "depth": DEPTH, "bins": BINS, "quick": quick, "results": results}


def summary(result: dict) -> str:
    """Table: activation, init, activation std in layers 1 and 5, saturated fraction in layer 5."""
    lines = [f"{result['n_samples']} x {result['width']} N(0,1) input, {result['depth']} layers of {result['width']} units",
             f"{'activation':<10} {'init':<9} {'std L1':>9} {'std L5':>9} {'at ends L5':>10}"]
    for act, by_init in result["results"].items():
        for name, r in by_init.items():
            lines.append(f"{act:<10} {name:<9} {r['layer_std'][0]:>9.2e} {r['layer_std'][-1]:>9.2e} "
                         f"{100 * r['saturated'][-1]:>9.1f}%")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """One row per (activation, init), one column per layer: the 30-bin histograms, as a PNG."""
    plt = plots.pyplot()
    rows = [(act, name, r) for act, by_init in result["results"].items() for name, r in by_init.items()]
    depth = result["depth"]
    fig, axes = plt.subplots(len(rows), depth, figsize=(2.2 * depth, 1.35 * len(rows)), squeeze=False)
    for (act, name, r), row in zip(rows, axes):
        lo, hi = r["range"]
        edges = np.linspace(lo, hi, result["bins"] + 1)
        for i, ax in enumerate(row):
            ax.bar(edges[:-1], r["counts"][i], width=edges[1] - edges[0], align="edge", color="C0")
            ax.set(xlim=(lo, hi), yticks=[])
            if act == "relu":  # clip the spike of zeros at the first bin, as the source's ylim does
                ax.set_ylim(0, 1.15 * max(max(r["counts"][i][1:]), 1e-6))
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_ylabel(f"{act}\n{name}", fontsize=8)
            if row is axes[0]:
                ax.set_title(f"layer {i + 1}", fontsize=9)
    fig.suptitle("Activation histograms (fraction of activations per bin)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    plots.save_figure(fig, path, dpi=90)
