"""Vanishing gradients through time: how much of the loss at the last step reaches each earlier
hidden state, for a vanilla tanh RNN, an LSTM and a GRU (Bengio, Simard & Frasconi 1994;
Hochreiter & Schmidhuber 1997; the figure of cs231n's RNN lecture).

Set-up: B windows of T characters of tiny-shakespeare go through an embedding (N(0, 1), dim E) and
one recurrent layer of H units from ``h_0 = 0`` (fnet's modules with their default initialization:
Wx ~ N(0, 1/D), Wh ~ N(0, 1/H), biases 0), then a temporal affine layer to the V scores. The loss
is the softmax cross-entropy of the LAST step only (``temporal_softmax_loss`` with a mask that is
True at t = T), so everything that reaches an earlier state h_t came back through time. Measured:
``||dL/dh_t||`` (Frobenius norm over the batch and the units) for t = T, T-1, ..., 0. The LSTM is
drawn twice: with the forget-gate bias at 1 (Gers, Schmidhuber & Cummins 2000; Jozefowicz et al.
2015; Keras' ``unit_forget_bias``), the usual choice and the "LSTM" of the table, and with fnet's
(and PyTorch's) zero bias, whose forget gates start near sigmoid(0) = 1/2 and so halve the
gradient along the cell at every step, about as fast as the RNN loses it.

Each norm is computed two ways, side by side:

- manual: the hand-written step backward functions (:func:`fnet.layers.rnn_step_backward`,
  ``lstm_step_backward``, ``gru_step_backward``) run as a reverse ``lax.scan`` over the step caches
  cut from the sequence cache; the upstream gradient is nonzero only at t = T (from
  :func:`fnet.layers.temporal_affine_backward`), and the gradient carried into each step IS
  ``dL/dh_t``. Its last carry, ``dL/dh_0``, is checked against the module's own backpropagation
  through time (the ``initial_state`` module's ``dh0``).
- autodiff: ``jax.grad`` of the loss with respect to perturbations ``e_t`` added to every hidden
  state, ``h_t = cell(x_t, h_{t-1}) + e_t`` at ``e = 0`` (the step forward functions in a scan):
  ``dL/de_t`` is exactly the gradient with respect to h_t through all later steps.

The two agree to float32 rounding (the table's last columns). What the full run (T = 50, H = 64,
32 windows, E = 64) shows: the RNN's gradient shrinks by a factor of about 0.63 per step (to 1e-10
of its size at t = T by t = 0), the LSTM's with forget bias 1 by about 0.8 (to 4e-5): the cell
state's additive path ``c_t = f * c_{t-1} + ...`` carries it. At initialization the GRU's update
gate sits near 1/2 and the zero-bias LSTM's forget gate too, so both lose the gradient nearly as
fast as the RNN; training (or a bias) opens those gates.

``quick``: T = 20, H = E = 32, 8 windows.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, layers, losses, modules, plots

NAME = "vanishing-gradients"
DESCRIPTION = "||dL_T/dh_t|| back through time for a tanh RNN, an LSTM and a GRU, manual BPTT beside jax.grad."


class _Cell(NamedTuple):
    """A recurrent layer as this experiment drives it: its module (built with ``initial_state``,
    for the sequence forward and the backpropagation through time), its step cache, and its
    step forward and backward over the tuple of states, (h,) or (h, c)."""

    module: Callable
    states: int
    step_cache: type
    step_forward: Callable
    """``(params, x_t, states) -> next states``."""
    step_backward: Callable
    """``(dnext_states, step cache) -> dprev_states``."""
    forget_bias: float | None = None
    """The LSTM's forget-gate bias (the module's default, 0, when None)."""


_RNN = _Cell(modules.rnn, 1, layers.RNNStepCache,
             lambda p, x, s: (layers.rnn_step_forward(x, s[0], p["Wx"], p["Wh"], p["b"])[0],),
             lambda d, cache: (layers.rnn_step_backward(d[0], cache)[1],))
_LSTM = _Cell(modules.lstm, 2, layers.LSTMStepCache,
              lambda p, x, s: layers.lstm_step_forward(x, *s, p["Wx"], p["Wh"], p["b"])[:2],
              lambda d, cache: layers.lstm_step_backward(*d, cache)[1:3], forget_bias=1.0)
_GRU = _Cell(modules.gru, 1, layers.GRUStepCache,
             lambda p, x, s: (layers.gru_step_forward(x, s[0], p["Wx"], p["Wh"], p["b"], p["bh"])[0],),
             lambda d, cache: (layers.gru_step_backward(d[0], cache)[1],))

#: Curve name -> cell, in the order of the table and the legend.
CELLS = {"RNN": _RNN, "LSTM": _LSTM, "GRU": _GRU, "LSTM, forget bias 0": _LSTM._replace(forget_bias=None)}


def _step_fields(seq_cache) -> dict:
    """The per-step cache fields, time-major (T, ...), cut from a sequence cache (RNNCache,
    LSTMCache, GRUCache): step t's ``prev_h`` is ``h_{t-1}`` (``h0`` at t = 0), and so on."""
    def shifted(first, seq):
        return jnp.concatenate([first[None], seq[:-1]])

    fields = {"x": jnp.swapaxes(seq_cache.x, 0, 1), "prev_h": shifted(seq_cache.h0, seq_cache.h),
              "next_h": seq_cache.h}
    if hasattr(seq_cache, "c"):
        fields.update(prev_c=shifted(seq_cache.c0, seq_cache.c), next_c=seq_cache.c)
    if hasattr(seq_cache, "gates"):
        fields["gates"] = seq_cache.gates
    return fields


def manual_state_grads(cell: _Cell, seq_cache, dh):
    """``dL/dh_t`` for t = 0..T from the hand-written step backward functions in a reverse scan.

    Args:
      cell: the recurrent layer (a value of :data:`CELLS`).
      seq_cache: the cache of its sequence forward (x (N, T, D), h0 (N, H), time-major states).
      dh: (N, T, H), the upstream gradient of the hidden states h_1..h_T (from the loss).

    Returns:
      (T + 1, N, H): row t is the gradient with respect to h_t, ``dh[:, t-1]`` plus what the
      later steps carry back into it (row 0 is ``dh0``).
    """
    names = cell.step_cache._fields
    fields = {k: v for k, v in _step_fields(seq_cache).items() if k in names}
    shared = {k: getattr(seq_cache, k) for k in names if k not in fields}  # Wx, Wh

    def step(dstates, inputs):
        dh_t, xs = inputs
        dstates = (dstates[0] + dh_t, *dstates[1:])
        step_cache = cell.step_cache(**{k: xs[k] if k in xs else shared[k] for k in names})
        return cell.step_backward(dstates, step_cache), dstates[0]

    start = (jnp.zeros_like(seq_cache.h0),) * cell.states
    (dh0, *_), dh_seq = jax.lax.scan(step, start, (jnp.swapaxes(dh, 0, 1), fields), reverse=True)
    return jnp.concatenate([dh0[None], dh_seq])


def last_step_loss(h, head, y):
    """The softmax cross-entropy of the last step's scores (``temporal_softmax_loss`` masked to
    t = T) and its hand-written gradient with respect to every hidden state.

    Args:
      h: (N, T, H); head: ``{"W": (H, V), "b": (V,)}``; y: int (N, T) targets.

    Returns:
      loss (scalar); dh (N, T, H), zero except at t = T.
    """
    scores, cache = layers.temporal_affine_forward(h, head["W"], head["b"])
    mask = jnp.zeros(y.shape, bool).at[:, -1].set(True)
    loss, dscores = losses.temporal_softmax_loss(scores, y, mask)
    return loss, layers.temporal_affine_backward(dscores, cache)[0]


def autodiff_state_grads(cell: _Cell, params, x, head, y):
    """``dL/dh_t`` for t = 0..T by ``jax.grad``: the gradient with respect to perturbations
    ``e_t`` added to the hidden states, ``h_0 = e_0``, ``h_t = cell(x_t, h_{t-1}) + e_t``, at e = 0.

    Args:
      x: (N, T, D) inputs; params, head, y: as in :func:`last_step_loss` and the cell's module.

    Returns:
      (T + 1, N, H), the rows of :func:`manual_state_grads`.
    """
    n, t = x.shape[:2]
    hidden = params["Wh"].shape[0]

    def loss(e):
        def step(states, inputs):
            x_t, e_t = inputs
            h, *rest = cell.step_forward(params, x_t, states)
            return (h + e_t, *rest), h + e_t

        start = (e[0], *[jnp.zeros_like(e[0])] * (cell.states - 1))
        _, h = jax.lax.scan(step, start, (jnp.swapaxes(x, 0, 1), e[1:]))
        return last_step_loss(jnp.swapaxes(h, 0, 1), head, y)[0]

    return jax.grad(loss)(jnp.zeros((t + 1, n, hidden), x.dtype))


def init_cell(cell: _Cell, x, hidden: int, key):
    """The cell's parameters for inputs x (N, T, D) and H = ``hidden``: its module's
    initialization, then the forget bias, if the cell has one."""
    n, t, d = x.shape
    params, _, _ = cell.module(hidden, initial_state=True).init(key, ((n, t, d),) + ((n, hidden),) * cell.states)
    if cell.forget_bias is not None:  # gate order i, f, o, g: the f block is columns H..2H
        params["b"] = params["b"].at[hidden:2 * hidden].set(cell.forget_bias)
    return params


@functools.partial(jax.jit, static_argnums=0)
def state_grads(cell: _Cell, params, x, head, y):
    """``dL/dh_t`` of one cell three ways, jit-compiled (``cell`` is static).

    Args:
      cell: a value of :data:`CELLS`; params: its module's (:func:`init_cell`); x: (N, T, D);
      head, y: as in :func:`last_step_loss`.

    Returns:
      ``(manual, autodiff, dh0, loss)``: :func:`manual_state_grads` and
      :func:`autodiff_state_grads`, each (T+1, N, H); the module's own BPTT ``dh0`` (N, H); the loss.
    """
    n, hidden = x.shape[0], head["W"].shape[0]
    module = cell.module(hidden, initial_state=True)
    h, _, cache = module.forward(params, {}, (x,) + (jnp.zeros((n, hidden), x.dtype),) * cell.states, train=False)
    loss, dh = last_step_loss(h, head, y)
    (_, dh0, *_), _ = module.backward(params, cache, dh)
    return manual_state_grads(cell, cache, dh), autodiff_state_grads(cell, params, x, head, y), dh0, loss


def _norms(g) -> np.ndarray:
    """Frobenius norm over (N, H) of each row of a (T+1, N, H) gradient, in float64."""
    return np.linalg.norm(np.asarray(g, np.float64).reshape(g.shape[0], -1), axis=1)


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """The gradient norms of every cell, manual and autodiff.

    ``data_dir``: where tiny-shakespeare is read (the bundled copy otherwise).

    Returns:
      ``{"T", "hidden", "embed", "batch", "vocab_size", "quick", "cells": {name: {"manual",
      "autodiff" (T+1,): ||dL/dh_t|| for t = 0..T, "rel_diff" (T+1,): ||manual_t - autodiff_t||
      / ||autodiff_t||, "dh0_rel_diff": manual dh_0 against the module's BPTT, "factor_per_step":
      (||dL/dh_0|| / ||dL/dh_T||) ** (1/T), "loss"}}}``.
    """
    steps, hidden, embed, batch = (20, 32, 32, 8) if quick else (50, 64, 64, 32)
    ds = data.load_text("shakespeare", data_dir=data_dir)
    k_data, k_emb, k_head, k_cell = jax.random.split(jax.random.PRNGKey(seed), 4)
    ids, y = data.random_windows(k_data, jnp.asarray(ds.train), batch, steps)
    emb, _, _ = modules.embedding(ds.vocab_size, embed).init(k_emb, ids.shape)
    x = emb["W"][ids]
    head, _, _ = modules.temporal_dense(ds.vocab_size).init(k_head, (batch, steps, hidden))
    cells = {}
    for name, cell in CELLS.items():
        params = init_cell(cell, x, hidden, k_cell)
        # The forget bias lives in params: both LSTMs share one compiled program.
        manual, auto, dh0, loss = state_grads(cell._replace(forget_bias=None), params, x, head, y)
        m, a = _norms(manual), _norms(auto)
        diff = _norms(manual - auto) / np.maximum(a, np.finfo(np.float64).tiny)
        cells[name] = {"manual": m.tolist(), "autodiff": a.tolist(), "rel_diff": diff.tolist(),
                       "dh0_rel_diff": float(_norms((manual[0] - dh0)[None])[0] / _norms(dh0[None])[0]),
                       "factor_per_step": float((m[0] / m[-1]) ** (1 / steps)), "loss": float(loss)}
    return {"T": steps, "hidden": hidden, "embed": embed, "batch": batch, "vocab_size": ds.vocab_size,
            "quick": quick, "cells": cells}


def summary(result: dict) -> str:
    """Table: cell, ||dL/dh_t|| at t = T, T/2 and 0, the mean factor per step, and the largest
    relative differences manual vs autodiff and manual dh_0 vs the module's BPTT."""
    t = result["T"]
    lines = [f"loss at step T = {t} of {result['batch']} Shakespeare windows, embedding {result['embed']}, "
             f"H = {result['hidden']}; ||dL/dh_t|| (manual BPTT)",
             f"{'cell':<20} {'t = T':>9} {f't = {t // 2}':>9} {'t = 0':>9} {'per step':>9} "
             f"{'vs autodiff':>11} {'dh0 vs BPTT':>11}"]
    for name, r in result["cells"].items():
        m = r["manual"]
        lines.append(f"{name:<20} {m[t]:>9.2e} {m[t // 2]:>9.2e} {m[0]:>9.2e} {r['factor_per_step']:>9.3f} "
                     f"{max(r['rel_diff']):>11.1e} {r['dh0_rel_diff']:>11.1e}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Left: ||dL/dh_t|| against t on a log scale, manual BPTT as lines, autodiff as open
    markers; right: their relative difference per step."""
    plt = plots.pyplot()
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    ts = np.arange(result["T"] + 1)
    every = max(1, result["T"] // 25)
    for k, (name, r) in enumerate(result["cells"].items()):
        style = "--" if "forget bias 0" in name else "-"
        ax.semilogy(ts, r["manual"], style, color=f"C{k}", label=f"{name} (manual)")
        ax.semilogy(ts[::every], r["autodiff"][::every], "o", color=f"C{k}", mfc="none", ms=5,
                    label=f"{name} (jax.grad)")
        ax_diff.semilogy(ts, np.maximum(r["rel_diff"], 1e-12), style, color=f"C{k}", label=name)
    ax.set(xlabel="t (the loss is at t = T)", ylabel="||dL / dh_t||",
           title=f"Gradient reaching h_t from the loss at T = {result['T']} (H = {result['hidden']})")
    ax.legend(fontsize=7, ncol=2)
    ax_diff.set(xlabel="t", ylabel="||manual - autodiff|| / ||autodiff||", title="manual BPTT vs jax.grad")
    fig.tight_layout()
    plots.save_figure(fig, path)
