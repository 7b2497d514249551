"""Sequence modules: the layers of :mod:`fnet.layers.recurrent` and :mod:`fnet.layers.embedding`
under the module contract of :mod:`fnet.modules` (``init``, ``forward``, ``backward``), so that
they compose with :mod:`fnet.combinators` (stacked LSTMs with dropout between them, residual
blocks) and get a derived backward chain:

>>> from fnet import combinators, modules
>>> lm = combinators.serial(modules.embedding(65, 64), modules.lstm(256), modules.dropout(0.2), modules.lstm(256),
...                         modules.temporal_dense(65))
>>> params, state, out_shape = modules.init_shapes(lm, (None, 32))   # int ids (N, T) -> scores (N, T, 65)
>>> out_shape, params["lstm1"]["Wx"].shape, params["lstm2"]["Wh"].shape
((None, 32, 65), (64, 1024), (256, 1024))

- :func:`embedding`: integer token ids (N, T) -> (N, T, dim). The ids are not differentiable:
  its backward returns ``dx = None`` (so it must come first, or first in its branch; JAX's
  float0 cotangent plays the same role).
- :func:`rnn`, :func:`lstm`, :func:`gru`: (N, T, D) -> every hidden state (N, T, H)
  (``return_sequences=True``, the default) or the last one (N, H). The initial state is zeros,
  or, with ``initial_state=True``, taken from the input: the module then takes a tuple
  ``(x, h0)`` (``(x, h0, c0)`` for the LSTM) and returns ``(dx, dh0[, dc0])`` from its backward.
  With ``return_state=True`` the output is ``(y, h_last)`` (``(y, h_last, c_last)``), so that the
  state can be carried to the next batch (truncated backpropagation through time); the backward
  then takes ``(dy, dh_last[, dc_last])``. Params ``{"Wx": (D, G*H), "Wh": (H, G*H), "b":
  (G*H,)}`` (the GRU also ``"bh": (H,)``; G = 1, 4 (i, f, o, g), 3 (r, z, n)), Wx and Wh from
  ``init`` ("xavier" by default: N(0, 1/D) and N(0, 1/H), cs231n's scales), biases zeros.
- :func:`temporal_dense`: (N, T, D) -> (N, T, units), the same affine map at every step
  (:func:`fnet.modules.dense` flattens (N, T, D) to (N, T*D), a different layer).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fnet import _checks
from fnet import layers
from fnet import init as initializers
from fnet.modules.base import Module, shape_error


def embedding(vocab_size: int, dim: int, *, init=1.0) -> Module:
    """Token embedding (:func:`fnet.layers.word_embedding_forward`): integer ids of any shape
    (N, T) -> (N, T, dim), one row of ``W`` per token. Params ``{"W": (vocab_size, dim)}``, from
    ``init`` (default N(0, 1), PyTorch's ``nn.Embedding``; any :func:`fnet.init.get` spec).
    ``backward`` returns ``dx = None`` (the ids have no gradient) and the scatter-added ``dW``."""
    fn = "embedding"
    vocab_size = _checks.integer(fn, "vocab_size", vocab_size, minimum=1)
    dim = _checks.integer(fn, "dim", dim, minimum=1)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 1:
            raise shape_error(fn, input_shape, "(N, T) of integer token ids")
        return {"W": w_init(key, (vocab_size, dim), jnp.float32)}, {}, (*input_shape, dim)

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.word_embedding_forward(x, params["W"])
        return y, state, cache

    def backward(params, cache, dy):
        del params
        return None, {"W": layers.word_embedding_backward(dy, cache)}

    return Module(init_fn, forward, backward, fn, f"{vocab_size} tokens, dim {dim}")


def temporal_dense(units: int, *, init="xavier") -> Module:
    """The same affine map at every time step, ``y[n, t] = x[n, t] @ W + b``
    (:func:`fnet.layers.temporal_affine_forward`): (N, T, D) -> (N, T, units), e.g. the scores
    of a language model. Params ``{"W": (D, units), "b": (units,)}``: W from ``init`` ("xavier"
    by default, cs231n's ``W_vocab`` scale), b zeros."""
    fn = "temporal_dense"
    units = _checks.integer(fn, "units", units, minimum=1)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise shape_error(fn, input_shape, "(N, T, D)")
        params = {"W": w_init(key, (input_shape[2], units), jnp.float32), "b": jnp.zeros((units,), jnp.float32)}
        return params, {}, (*input_shape[:2], units)

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.temporal_affine_forward(x, params["W"], params["b"])
        return y, state, cache

    def backward(params, cache, dy):
        del params
        dx, dW, db = layers.temporal_affine_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    return Module(init_fn, forward, backward, fn, f"{units} units")


class _Cell(NamedTuple):
    """A recurrent layer family as the generic module sees it."""

    gates: int
    states: int
    """1 (h) or 2 (h, c)."""
    run: Callable
    """``(params, x, states) -> (h (N, T, H), last states, cache)``."""
    grad: Callable
    """``(cache, dh (N, T, H), gradients of the last states after h) -> (dx, dstates, dparams)``."""
    hidden_bias: bool = False
    """The GRU's second bias ``bh`` (H,), inside the reset gate."""


def _rnn_run(params, x, states):
    h, cache = layers.rnn_forward(x, states[0], params["Wx"], params["Wh"], params["b"])
    return h, (h[:, -1],), cache


def _rnn_grad(cache, dh, _):
    dx, dh0, dWx, dWh, db = layers.rnn_backward(dh, cache)
    return dx, (dh0,), {"Wx": dWx, "Wh": dWh, "b": db}


def _lstm_run(params, x, states):
    h, c_last, cache = layers.lstm_state_forward(x, *states, params["Wx"], params["Wh"], params["b"])
    return h, (h[:, -1], c_last), cache


def _lstm_grad(cache, dh, rest):
    (dc_last,) = rest
    dx, dh0, dc0, dWx, dWh, db = layers.lstm_state_backward(dh, dc_last, cache)
    return dx, (dh0, dc0), {"Wx": dWx, "Wh": dWh, "b": db}


def _gru_run(params, x, states):
    h, cache = layers.gru_forward(x, states[0], params["Wx"], params["Wh"], params["b"], params["bh"])
    return h, (h[:, -1],), cache


def _gru_grad(cache, dh, _):
    dx, dh0, dWx, dWh, db, dbh = layers.gru_backward(dh, cache)
    return dx, (dh0,), {"Wx": dWx, "Wh": dWh, "b": db, "bh": dbh}


def _recurrent(fn: str, cell: _Cell, hidden, *, return_sequences, initial_state, return_state, init) -> Module:
    """The module of a recurrent layer family (see the module docstring for the options)."""
    hidden = _checks.integer(fn, "hidden", hidden, minimum=1)
    w_init = initializers.get(init)
    k = cell.states
    inputs = "(x, h0, c0)" if k == 2 else "(x, h0)"

    def init_fn(key, input_shape):
        input_shape = tuple(input_shape)
        x_shape, state_shapes = (input_shape[0], input_shape[1:]) if initial_state else (input_shape, ())
        if initial_state and (len(input_shape) != k + 1 or not all(isinstance(s, tuple) for s in input_shape)):
            raise ValueError(f"{fn}: with initial_state=True the input is a tuple {inputs}, got shape {input_shape}")
        if len(x_shape) != 3:
            raise shape_error(fn, x_shape, "(N, T, D)")
        n, t, d = x_shape
        for name, s in zip(("h0", "c0"), state_shapes):
            if tuple(s) != (n, hidden):
                raise ValueError(f"{fn}: {name} must have shape (N, H) = {(n, hidden)} for x of shape {x_shape}, "
                                 f"got shape {tuple(s)}")
        k_x, k_h = jax.random.split(key)
        g = cell.gates * hidden
        params = {"Wx": w_init(k_x, (d, g), jnp.float32), "Wh": w_init(k_h, (hidden, g), jnp.float32),
                  "b": jnp.zeros((g,), jnp.float32)}
        if cell.hidden_bias:
            params["bh"] = jnp.zeros((hidden,), jnp.float32)
        y = (n, t, hidden) if return_sequences else (n, hidden)
        return params, {}, ((y,) + ((n, hidden),) * k if return_state else y)

    def forward(params, state, x, *, train, key=None):
        del train, key
        if initial_state:
            x, *states = x
        else:
            states = [jnp.zeros((x.shape[0], hidden), x.dtype)] * k
        h, last, cache = cell.run(params, x, tuple(states))
        y = h if return_sequences else h[:, -1]
        return ((y, *last) if return_state else y), state, cache

    def backward(params, cache, dy):
        del params
        n, t = cache.x.shape[:2]
        dy, *dlast = dy if return_state else (dy,) + (None,) * k
        dh = dy if return_sequences else jnp.zeros((n, t, hidden), dy.dtype).at[:, -1].set(dy)
        if dlast[0] is not None:
            dh = dh.at[:, -1].add(dlast[0])
        rest = tuple(jnp.zeros((n, hidden), dh.dtype) if d is None else d for d in dlast[1:])
        dx, dstates, dparams = cell.grad(cache, dh, rest)
        return ((dx, *dstates) if initial_state else dx), dparams

    info = ", ".join([f"{hidden} units", "all states" if return_sequences else "last state",
                      *(["initial state from the input"] if initial_state else []),
                      *(["returns the state"] if return_state else [])])
    return Module(init_fn, forward, backward, fn, info)


def rnn(hidden: int, *, return_sequences: bool = True, initial_state: bool = False, return_state: bool = False,
        init="xavier") -> Module:
    """A vanilla tanh RNN over (N, T, D) (:func:`fnet.layers.rnn_forward`):
    ``h_t = tanh(x_t @ Wx + h_{t-1} @ Wh + b)``; params ``{"Wx": (D, H), "Wh": (H, H), "b": (H,)}``.

    Args:
      hidden: H, the number of units.
      return_sequences: output every hidden state (N, T, H) (default) or the last one (N, H).
      initial_state: take the initial state from the input, a tuple ``(x, h0)``, instead of zeros.
      return_state: also output the last state: ``(y, h_last)``.
      init: the initializer of Wx and Wh (any :func:`fnet.init.get` spec; "xavier" by default).
    """
    return _recurrent("rnn", _Cell(1, 1, _rnn_run, _rnn_grad), hidden, return_sequences=return_sequences,
                      initial_state=initial_state, return_state=return_state, init=init)


def lstm(hidden: int, *, return_sequences: bool = True, initial_state: bool = False, return_state: bool = False,
         init="xavier") -> Module:
    """An LSTM over (N, T, D) (:func:`fnet.layers.lstm_state_forward`; gate order i, f, o, g),
    from ``h0 = c0 = 0`` unless ``initial_state``; params ``{"Wx": (D, 4H), "Wh": (H, 4H), "b": (4H,)}``.

    Args:
      hidden: H, the number of units.
      return_sequences: output every hidden state (N, T, H) (default) or the last one (N, H).
      initial_state: take the initial state from the input, a tuple ``(x, h0, c0)``, instead of zeros.
      return_state: also output the last state: ``(y, h_last, c_last)``.
      init: the initializer of Wx and Wh (any :func:`fnet.init.get` spec; "xavier" by default).
    """
    return _recurrent("lstm", _Cell(4, 2, _lstm_run, _lstm_grad), hidden, return_sequences=return_sequences,
                      initial_state=initial_state, return_state=return_state, init=init)


def gru(hidden: int, *, return_sequences: bool = True, initial_state: bool = False, return_state: bool = False,
        init="xavier") -> Module:
    """A GRU over (N, T, D) (:func:`fnet.layers.gru_forward`; PyTorch's convention, gates r, z,
    n, the reset gate after the recurrent matmul); params ``{"Wx": (D, 3H), "Wh": (H, 3H),
    "b": (3H,), "bh": (H,)}``.

    Args:
      hidden: H, the number of units.
      return_sequences: output every hidden state (N, T, H) (default) or the last one (N, H).
      initial_state: take the initial state from the input, a tuple ``(x, h0)``, instead of zeros.
      return_state: also output the last state: ``(y, h_last)``.
      init: the initializer of Wx and Wh (any :func:`fnet.init.get` spec; "xavier" by default).
    """
    cell = _Cell(3, 1, _gru_run, _gru_grad, hidden_bias=True)
    return _recurrent("gru", cell, hidden, return_sequences=return_sequences, initial_state=initial_state,
                      return_state=return_state, init=init)
