"""Recurrent layers as forward/backward pairs: vanilla RNN, LSTM, GRU (one step and a whole
sequence), in cs231n assignment 3's API (word embeddings and the temporal affine layer are in
:mod:`fnet.layers.embedding`).

Layouts (cs231n's, ``x @ W``): a sequence is batch-major, x (N, T, D) and hidden states h (N, T,
H); one step takes x (N, D) and prev_h (N, H). ``Wx`` is (D, G*H) and ``Wh`` (H, G*H) with the G
gates side by side in the columns, ``b`` (G*H,). Every backward returns the gradients in the
forward's argument order.

Conventions (documented once here):

- RNN: ``next_h = tanh(x @ Wx + prev_h @ Wh + b)``.
- LSTM, gate order **i, f, o, g** (cs231n): ``a = x @ Wx + prev_h @ Wh + b`` (N, 4H) is split into
  four (N, H) blocks, ``i, f, o = sigmoid(a_i, a_f, a_o)``, ``g = tanh(a_g)``,
  ``next_c = f * prev_c + i * g``, ``next_h = o * tanh(next_c)``. Other orders of the same blocks:
  PyTorch's ``nn.LSTM`` stores i, f, g, o in the ROWS of ``weight_ih_l0`` (4H, D), so
  ``Wx = weight_ih_l0.T`` with column blocks (0, 1, 3, 2) and ``b = b_ih + b_hh`` permuted alike;
  Deep Learning from Scratch 2's ``TimeLSTM`` uses f, g, i, o columns (its blocks (2, 0, 3, 1)
  give fnet's i, f, o, g). :func:`lstm_forward` starts from ``c0 = 0`` (cs231n);
  :func:`lstm_state_forward` takes ``c0`` and returns the last cell state, to carry the state
  from one batch to the next (truncated backpropagation through time).
- GRU, PyTorch's and flax's convention, gate order **r, z, n** (PyTorch's)::

      r = sigmoid(x Wx_r + b_r + h Wh_r)          z = sigmoid(x Wx_z + b_z + h Wh_z)
      n = tanh(x Wx_n + b_n + r * (h Wh_n + bh))  next_h = (1 - z) * n + z * h

  The reset gate multiplies AFTER the recurrent matmul (so ``h Wh`` is one matmul for all gates),
  which needs a second bias ``bh`` (H,) inside it; PyTorch's ``b_ih``/``b_hh`` map to
  ``b = b_ih + b_hh`` on r and z, ``b_n = b_ih_n`` and ``bh = b_hh_n`` (flax's ``GRUCell`` has
  exactly b and bh). ``z`` weights the OLD state. The other convention (Cho et al. 2014, Keras'
  ``reset_after=False``, Deep Learning from Scratch 2) resets BEFORE the matmul,
  ``n = tanh(x Wx_n + (r * h) Wh_n + b_n)``, a different function for the same weights, and
  DLFS2 also swaps the roles of z (``next_h = (1 - z) * h + z * n``, i.e. its z is our 1 - z).
Backpropagation through time: a sequence's forward is one ``lax.scan`` over time whose per-step
caches come out stacked, time-major (a fixed pytree of arrays); ``x @ Wx + b`` for every step is
one matmul before it. The backward is ONE reverse ``lax.scan`` carrying ``dh`` (and ``dc``): per
step it adds the upstream ``dh[:, t]`` to the carried gradient, goes back through the cell and
emits the gradient of the step's pre-activations. The weight gradients are sums over time of
per-step outer products; they are taken once after the scan over the stacked pre-activation
gradients (``dWh = sum_t h_{t-1}^T da_t`` as one (N*T)-row matmul: the same sum as accumulating
T small matmuls in the carry, faster), and so are ``dx`` and ``db``. No JAX autodiff anywhere.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fnet import _checks


def _time_major(a):
    """(N, T, ...) <-> (T, N, ...): ``lax.scan`` runs over the leading axis."""
    return jnp.swapaxes(a, 0, 1)


def _checked(fn: str, gates: int, seq: bool, **arrays) -> tuple:
    """The arrays (x first, then states, Wx, Wh, b[, bh]) as floating arrays, after checking x's
    rank, T >= 1 and every other shape against N, D (from x) and H (from Wh): states (N, H), Wx
    (D, G*H), Wh (H, G*H), b (G*H,), bh (H,)."""
    arrays = {name: _checks.float_array(fn, name, a) for name, a in arrays.items()}
    x, Wh = arrays["x"], arrays["Wh"]
    if x.ndim != (3 if seq else 2):
        raise ValueError(f"{fn}: x must have shape {'(N, T, D)' if seq else '(N, D)'}, got shape {x.shape}")
    if seq and x.shape[1] == 0:
        raise ValueError(f"{fn}: x must have at least one time step, got shape {x.shape} (T = 0)")
    if Wh.ndim != 2:
        raise ValueError(f"{fn}: Wh must have shape (H, {gates}H), got shape {Wh.shape}")
    n, d, hidden = x.shape[0], x.shape[-1], Wh.shape[0]
    want = {"Wx": (d, gates * hidden), "Wh": (hidden, gates * hidden), "b": (gates * hidden,), "bh": (hidden,)}
    for name, a in arrays.items():
        shape = x.shape if name == "x" else want.get(name, (n, hidden))
        if a.shape != shape:
            got = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
            raise ValueError(f"{fn}: {name} must have shape {shape} (N = {n}, D = {d} from x, H = {hidden} from Wh, "
                             f"{gates} gate{'s' * (gates > 1)} of H columns), got shapes {got}")
    return tuple(arrays.values())


def _tanh_grad(dy, y):
    """The gradient through ``y = tanh(a)``: ``da = dy * (1 - y**2)``."""
    return dy * (1 - y * y)


def _param_grads(x, h_prev, dax, dah, Wx):
    """``dx, dWx, db, dWh`` of ``a = x @ Wx + b`` (gradient ``dax``) and ``h_prev @ Wh`` (gradient
    ``dah``), summed over all leading axes ((N,) for a step, (N, T) for a sequence)."""
    lead = tuple(range(dax.ndim - 1))
    return (dax @ Wx.T, jnp.tensordot(x, dax, (lead, lead)), jnp.sum(dax, axis=lead),
            jnp.tensordot(h_prev, dah, (lead, lead)))


def _seq_grads(x, h0, h, dax, dah, Wx):
    """:func:`_param_grads` of a sequence from time-major hidden states ``h`` and pre-activation
    gradients (the scan's layout); ``h_{t-1}`` is h0 at t = 0."""
    h_prev = jnp.concatenate([h0[None], h[:-1]])
    return _param_grads(x, _time_major(h_prev), _time_major(dax), _time_major(dah), Wx)


# --------------------------------------------------------------------------------------------
# Vanilla RNN
# --------------------------------------------------------------------------------------------


class RNNStepCache(NamedTuple):
    """Cache of :func:`rnn_step_forward`: x (N, D), prev_h and next_h (N, H), Wx, Wh."""

    x: jax.Array
    prev_h: jax.Array
    next_h: jax.Array
    Wx: jax.Array
    Wh: jax.Array


class RNNCache(NamedTuple):
    """Cache of :func:`rnn_forward`: x (N, T, D), h0 (N, H), the hidden states TIME-major h (T,
    N, H), Wx, Wh."""

    x: jax.Array
    h0: jax.Array
    h: jax.Array
    Wx: jax.Array
    Wh: jax.Array


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step of a vanilla (tanh) RNN: ``next_h = tanh(x @ Wx + prev_h @ Wh + b)``.

    Args:
      x: (N, D); prev_h: (N, H); Wx: (D, H); Wh: (H, H); b: (H,).

    Returns:
      next_h: (N, H); cache: an :class:`RNNStepCache`.
    """
    x, prev_h, Wx, Wh, b = _checked("rnn_step_forward", 1, False, x=x, prev_h=prev_h, Wx=Wx, Wh=Wh, b=b)
    next_h = jnp.tanh(x @ Wx + b + prev_h @ Wh)
    return next_h, RNNStepCache(x, prev_h, next_h, Wx, Wh)


def rnn_step_backward(dnext_h, cache):
    """Backward of :func:`rnn_step_forward`: with ``da = dnext_h * (1 - next_h**2)``,
    ``dx = da Wx^T``, ``dprev_h = da Wh^T``, ``dWx = x^T da``, ``dWh = prev_h^T da``, ``db = sum_n da``.

    Returns:
      dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    x, prev_h, next_h, Wx, Wh = cache
    _checks.upstream("rnn_step_backward", dnext_h, next_h.shape, "dnext_h")
    da = _tanh_grad(dnext_h, next_h)
    dx, dWx, db, dWh = _param_grads(x, prev_h, da, da, Wx)
    return dx, da @ Wh.T, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """A vanilla RNN over a sequence: ``h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b)``, ``h_{-1} = h0``.

    Args:
      x: (N, T, D), T >= 1; h0: (N, H); Wx: (D, H); Wh: (H, H); b: (H,).

    Returns:
      h: (N, T, H), every hidden state (the last one is ``h[:, -1]``); cache: an :class:`RNNCache`.
    """
    x, h0, Wx, Wh, b = _checked("rnn_forward", 1, True, x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)

    def step(prev_h, xw_t):
        next_h = jnp.tanh(xw_t + prev_h @ Wh)
        return next_h, next_h

    _, h = lax.scan(step, h0, _time_major(x @ Wx + b))
    return _time_major(h), RNNCache(x, h0, h, Wx, Wh)


def rnn_backward(dh, cache):
    """Backpropagation through time of :func:`rnn_forward`. A reverse scan carries ``g``, the
    gradient reaching ``h_t`` from later steps: ``da_t = (dh_t + g) * (1 - h_t**2)``, then
    ``g = da_t Wh^T`` (which is ``dh0`` after step 0); ``dWh = sum_t h_{t-1}^T da_t``, ``dWx =
    sum_t x_t^T da_t``, ``db = sum_{n,t} da_t``, ``dx_t = da_t Wx^T``.

    Args:
      dh: (N, T, H), the upstream gradient of ALL hidden states (zeros where a state is unused).

    Returns:
      dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    x, h0, h, Wx, Wh = cache
    _checks.upstream("rnn_backward", dh, (*x.shape[:2], h0.shape[1]), "dh")

    def step(g, inputs):
        dh_t, h_t = inputs
        da = _tanh_grad(dh_t + g, h_t)
        return da @ Wh.T, da

    dh0, da = lax.scan(step, jnp.zeros_like(h0), (_time_major(dh), h), reverse=True)
    dx, dWx, db, dWh = _seq_grads(x, h0, h, da, da, Wx)
    return dx, dh0, dWx, dWh, db


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


class LSTMStepCache(NamedTuple):
    """Cache of :func:`lstm_step_forward`: x (N, D), prev_h, prev_c, next_c (N, H), the activated
    gates (i, f, o, g) side by side (N, 4H), Wx, Wh."""

    x: jax.Array
    prev_h: jax.Array
    prev_c: jax.Array
    next_c: jax.Array
    gates: jax.Array
    Wx: jax.Array
    Wh: jax.Array


class LSTMCache(NamedTuple):
    """Cache of :func:`lstm_state_forward`: x (N, T, D), h0 and c0 (N, H), and TIME-major the
    hidden states h and cell states c (T, N, H) and the activated gates (T, N, 4H); Wx, Wh."""

    x: jax.Array
    h0: jax.Array
    c0: jax.Array
    h: jax.Array
    c: jax.Array
    gates: jax.Array
    Wx: jax.Array
    Wh: jax.Array


def _lstm_cell(xw, prev_h, prev_c, Wh):
    """``(next_h, next_c, gates)`` from ``xw = x @ Wx + b``; gates (i, f, o, g) activated."""
    a = xw + prev_h @ Wh
    hidden = prev_c.shape[-1]
    gates = jnp.concatenate([jax.nn.sigmoid(a[..., :3 * hidden]), jnp.tanh(a[..., 3 * hidden:])], axis=-1)
    i, f, o, g = jnp.split(gates, 4, axis=-1)
    next_c = f * prev_c + i * g
    return o * jnp.tanh(next_c), next_c, gates


def _lstm_cell_backward(dnext_h, dnext_c, gates, prev_c, next_c):
    """``(da, dprev_c)``: the gradient of the pre-activations a (N, 4H) and of prev_c, with
    ``dc = dnext_c + dnext_h * o * (1 - tanh(next_c)**2)``."""
    i, f, o, g = jnp.split(gates, 4, axis=-1)
    tanh_c = jnp.tanh(next_c)
    dc = dnext_c + _tanh_grad(dnext_h * o, tanh_c)
    da = jnp.concatenate([dc * g * i * (1 - i), dc * prev_c * f * (1 - f), dnext_h * tanh_c * o * (1 - o),
                          _tanh_grad(dc * i, g)], axis=-1)
    return da, dc * f


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step (gate order i, f, o, g; see the module docstring)::

        a = x @ Wx + prev_h @ Wh + b;   i, f, o = sigmoid(a_i, a_f, a_o);   g = tanh(a_g)
        next_c = f * prev_c + i * g;    next_h = o * tanh(next_c)

    Args:
      x: (N, D); prev_h, prev_c: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,).

    Returns:
      next_h (N, H), next_c (N, H), cache (an :class:`LSTMStepCache`).
    """
    x, prev_h, prev_c, Wx, Wh, b = _checked("lstm_step_forward", 4, False, x=x, prev_h=prev_h, prev_c=prev_c,
                                            Wx=Wx, Wh=Wh, b=b)
    next_h, next_c, gates = _lstm_cell(x @ Wx + b, prev_h, prev_c, Wh)
    return next_h, next_c, LSTMStepCache(x, prev_h, prev_c, next_c, gates, Wx, Wh)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward of :func:`lstm_step_forward`: with ``dc = dnext_c + dnext_h * o * (1 -
    tanh(next_c)**2)``, the gates get ``di = dc g``, ``df = dc prev_c``, ``do = dnext_h
    tanh(next_c)``, ``dg = dc i`` (times their activations' derivatives: the pre-activation
    gradient da (N, 4H)), ``dprev_c = dc f``, ``dprev_h = da Wh^T``, ``dx = da Wx^T``.

    Returns:
      dx (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    x, prev_h, prev_c, next_c, gates, Wx, Wh = cache
    _checks.upstream("lstm_step_backward", dnext_h, next_c.shape, "dnext_h")
    _checks.upstream("lstm_step_backward", dnext_c, next_c.shape, "dnext_c")
    da, dprev_c = _lstm_cell_backward(dnext_h, dnext_c, gates, prev_c, next_c)
    dx, dWx, db, dWh = _param_grads(x, prev_h, da, da, Wx)
    return dx, da @ Wh.T, dprev_c, dWx, dWh, db


def _lstm_scan(fn, x, h0, c0, Wx, Wh, b):
    if c0 is None:  # lstm_forward: c0 = 0 (checked h0 gives its shape)
        x, h0, Wx, Wh, b = _checked(fn, 4, True, x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)
        c0 = jnp.zeros_like(h0)
    x, h0, c0, Wx, Wh, b = _checked(fn, 4, True, x=x, h0=h0, c0=c0, Wx=Wx, Wh=Wh, b=b)

    def step(carry, xw_t):
        next_h, next_c, gates = _lstm_cell(xw_t, *carry, Wh)
        return (next_h, next_c), (next_h, next_c, gates)

    (_, c_last), (h, c, gates) = lax.scan(step, (h0, c0), _time_major(x @ Wx + b))
    return _time_major(h), c_last, LSTMCache(x, h0, c0, h, c, gates, Wx, Wh)


def lstm_state_forward(x, h0, c0, Wx, Wh, b):
    """An LSTM over a sequence from the state ``(h0, c0)``, returning the last cell state too (to
    carry the state across batches); the step is :func:`lstm_step_forward`'s.

    Args:
      x: (N, T, D), T >= 1; h0, c0: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,).

    Returns:
      h (N, T, H), every hidden state (the last one is ``h[:, -1]``); c_last (N, H), the cell
      state after the last step; cache (an :class:`LSTMCache`).
    """
    return _lstm_scan("lstm_state_forward", x, h0, c0, Wx, Wh, b)


def lstm_state_backward(dh, dc_last, cache):
    """Backpropagation through time of :func:`lstm_state_forward`: a reverse scan carries the
    gradients reaching ``(h_t, c_t)`` from later steps (``(0, dc_last)`` after the last), adds
    ``dh[:, t]`` to the first and goes back through the step (:func:`lstm_step_backward`'s
    equations); the weight gradients are the sums over t.

    Args:
      dh: (N, T, H), the upstream gradient of all hidden states; dc_last: (N, H), of c_last.

    Returns:
      dx (N, T, D), dh0 (N, H), dc0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    return _lstm_bptt("lstm_state_backward", dh, dc_last, cache)


def _lstm_bptt(fn, dh, dc_last, cache: LSTMCache):
    x, h0, c0, h, c, gates, Wx, Wh = cache
    _checks.upstream(fn, dh, (*x.shape[:2], h0.shape[1]), "dh")
    _checks.upstream(fn, dc_last, c0.shape, "dc_last")

    def step(carry, inputs):
        dh_t, gates_t, prev_c, c_t = inputs
        da, dprev_c = _lstm_cell_backward(dh_t + carry[0], carry[1], gates_t, prev_c, c_t)
        return (da @ Wh.T, dprev_c), da

    c_prev = jnp.concatenate([c0[None], c[:-1]])
    (dh0, dc0), da = lax.scan(step, (jnp.zeros_like(h0), dc_last), (_time_major(dh), gates, c_prev, c), reverse=True)
    dx, dWx, db, dWh = _seq_grads(x, h0, h, da, da, Wx)
    return dx, dh0, dc0, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b):
    """An LSTM over a sequence from ``(h0, c0 = 0)`` (cs231n's ``lstm_forward``); the cell state
    is internal (:func:`lstm_state_forward` takes and returns it).

    Args:
      x: (N, T, D), T >= 1; h0: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,).

    Returns:
      h: (N, T, H), every hidden state; cache: an :class:`LSTMCache`.
    """
    h, _, cache = _lstm_scan("lstm_forward", x, h0, None, Wx, Wh, b)
    return h, cache


def lstm_backward(dh, cache):
    """Backpropagation through time of :func:`lstm_forward` (:func:`lstm_state_backward` with
    ``dc_last = 0``, without ``dc0``).

    Args:
      dh: (N, T, H), the upstream gradient of all hidden states.

    Returns:
      dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    dx, dh0, _, dWx, dWh, db = _lstm_bptt("lstm_backward", dh, jnp.zeros_like(cache.c0), cache)
    return dx, dh0, dWx, dWh, db


# --------------------------------------------------------------------------------------------
# GRU (PyTorch/flax convention: reset after the recurrent matmul, z weighting the old state)
# --------------------------------------------------------------------------------------------


class GRUGates(NamedTuple):
    """A GRU step's gates, each (N, H) (stacked time-major (T, N, H) in a sequence cache)."""

    r: jax.Array
    z: jax.Array
    n: jax.Array
    hn: jax.Array
    """``prev_h @ Wh_n + bh``, the operand of the reset gate."""


class GRUStepCache(NamedTuple):
    """Cache of :func:`gru_step_forward`: x (N, D), prev_h (N, H), the gates, Wx, Wh."""

    x: jax.Array
    prev_h: jax.Array
    gates: GRUGates
    Wx: jax.Array
    Wh: jax.Array


class GRUCache(NamedTuple):
    """Cache of :func:`gru_forward`: x (N, T, D), h0 (N, H), TIME-major h (T, N, H) and gates."""

    x: jax.Array
    h0: jax.Array
    h: jax.Array
    gates: GRUGates
    Wx: jax.Array
    Wh: jax.Array


def _gru_cell(xw, prev_h, Wh, bh):
    """``(next_h, gates)`` from ``xw = x @ Wx + b`` (N, 3H), blocks r, z, n."""
    hidden = prev_h.shape[-1]
    hw = prev_h @ Wh
    r, z = jnp.split(jax.nn.sigmoid(xw[..., :2 * hidden] + hw[..., :2 * hidden]), 2, axis=-1)
    hn = hw[..., 2 * hidden:] + bh
    n = jnp.tanh(xw[..., 2 * hidden:] + r * hn)
    return n + z * (prev_h - n), GRUGates(r, z, n, hn)


def _gru_cell_backward(dnext_h, prev_h, gates: GRUGates):
    """``(dax, dah, dprev_h_direct)``: the gradients of ``x @ Wx + b`` and of ``prev_h @ Wh``
    (with bh in its n block), each (N, 3H), and of prev_h through ``z * prev_h``."""
    r, z, n, hn = gates
    dan = _tanh_grad(dnext_h * (1 - z), n)
    dar = dan * hn * r * (1 - r)
    daz = dnext_h * (prev_h - n) * z * (1 - z)
    return jnp.concatenate([dar, daz, dan], axis=-1), jnp.concatenate([dar, daz, dan * r], axis=-1), dnext_h * z


def gru_step_forward(x, prev_h, Wx, Wh, b, bh):
    """One GRU step (PyTorch's convention, gates r, z, n; see the module docstring)::

        xw = x @ Wx + b;  hw = prev_h @ Wh;  r, z = sigmoid(xw_r + hw_r, xw_z + hw_z)
        n = tanh(xw_n + r * (hw_n + bh));    next_h = (1 - z) * n + z * prev_h

    Args:
      x: (N, D); prev_h: (N, H); Wx: (D, 3H); Wh: (H, 3H); b: (3H,); bh: (H,).

    Returns:
      next_h (N, H); cache (a :class:`GRUStepCache`).
    """
    x, prev_h, Wx, Wh, b, bh = _checked("gru_step_forward", 3, False, x=x, prev_h=prev_h, Wx=Wx, Wh=Wh, b=b, bh=bh)
    next_h, gates = _gru_cell(x @ Wx + b, prev_h, Wh, bh)
    return next_h, GRUStepCache(x, prev_h, gates, Wx, Wh)


def gru_step_backward(dnext_h, cache):
    """Backward of :func:`gru_step_forward`: ``dn = dnext_h (1 - z)``, ``dz = dnext_h (prev_h -
    n)``, ``da_n = dn (1 - n**2)``, ``dr = da_n * hn``; the x side gets (da_r, da_z, da_n), the
    h side (da_r, da_z, da_n * r), and ``dprev_h = dnext_h z + dah Wh^T``, ``dbh = sum da_n r``.

    Returns:
      dx (N, D), dprev_h (N, H), dWx (D, 3H), dWh (H, 3H), db (3H,), dbh (H,).
    """
    x, prev_h, gates, Wx, Wh = cache
    _checks.upstream("gru_step_backward", dnext_h, prev_h.shape, "dnext_h")
    dax, dah, direct = _gru_cell_backward(dnext_h, prev_h, gates)
    dx, dWx, db, dWh = _param_grads(x, prev_h, dax, dah, Wx)
    hidden = prev_h.shape[-1]
    return dx, direct + dah @ Wh.T, dWx, dWh, db, jnp.sum(dah[..., 2 * hidden:], axis=0)


def gru_forward(x, h0, Wx, Wh, b, bh):
    """A GRU over a sequence from h0; the step is :func:`gru_step_forward`'s.

    Args:
      x: (N, T, D), T >= 1; h0: (N, H); Wx: (D, 3H); Wh: (H, 3H); b: (3H,); bh: (H,).

    Returns:
      h (N, T, H), every hidden state; cache (a :class:`GRUCache`).
    """
    x, h0, Wx, Wh, b, bh = _checked("gru_forward", 3, True, x=x, h0=h0, Wx=Wx, Wh=Wh, b=b, bh=bh)

    def step(prev_h, xw_t):
        next_h, gates = _gru_cell(xw_t, prev_h, Wh, bh)
        return next_h, (next_h, gates)

    _, (h, gates) = lax.scan(step, h0, _time_major(x @ Wx + b))
    return _time_major(h), GRUCache(x, h0, h, gates, Wx, Wh)


def gru_backward(dh, cache):
    """Backpropagation through time of :func:`gru_forward`: a reverse scan carries the gradient
    reaching h_t from later steps, adds ``dh[:, t]`` and goes back through the step
    (:func:`gru_step_backward`'s equations); the parameter gradients are the sums over t.

    Args:
      dh: (N, T, H), the upstream gradient of all hidden states.

    Returns:
      dx (N, T, D), dh0 (N, H), dWx (D, 3H), dWh (H, 3H), db (3H,), dbh (H,).
    """
    x, h0, h, gates, Wx, Wh = cache
    _checks.upstream("gru_backward", dh, (*x.shape[:2], h0.shape[1]), "dh")
    h_prev = jnp.concatenate([h0[None], h[:-1]])

    def step(g, inputs):
        dh_t, prev_h, gates_t = inputs
        dax, dah, direct = _gru_cell_backward(dh_t + g, prev_h, gates_t)
        return direct + dah @ Wh.T, (dax, dah)

    dh0, (dax, dah) = lax.scan(step, jnp.zeros_like(h0), (_time_major(dh), h_prev, gates), reverse=True)
    dx, dWx, db, dWh = _seq_grads(x, h0, h, dax, dah, Wx)
    return dx, dh0, dWx, dWh, db, jnp.sum(dah[..., 2 * h0.shape[1]:], axis=(0, 1))
