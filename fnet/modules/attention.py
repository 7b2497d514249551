"""Transformer modules: the layers of :mod:`fnet.layers.attention` under the module contract of
:mod:`fnet.modules`, so that a transformer block is a composition whose backward is derived:

>>> from fnet import combinators as c, modules as m
>>> block = c.serial(c.residual(c.serial(m.layernorm(), m.self_attention(4))),
...                  c.residual(c.serial(m.layernorm(), m.temporal_dense(128), m.gelu(), m.temporal_dense(32))))
>>> params, _, out_shape = m.init_shapes(block, (None, 16, 32))     # (N, T, E) -> (N, T, E)
>>> out_shape, params["residual1"]["branches"]["block"]["self_attention1"]["Wq"].shape
((None, 16, 32), (32, 32))

- :func:`self_attention`: (N, T, E) -> (N, T, E), multi-head attention of the sequence to itself,
  causal by default (position t attends to positions <= t: a language model's mask); its
  backward sums the gradients of the query, key and value paths into dx.
- :func:`cross_attention`: a tuple ``(x, context)`` of (N, S, E) and (N, T, E) -> (N, S, E), the
  queries from x, the keys and values from context (an encoder's output); backward returns
  ``(dx, dcontext)``.
- :func:`position_embedding`: learned positions, ``y[n, t] = x[n, t] + P[t]`` with P (T, E).
- :func:`gelu`: elementwise GELU (exact erf form by default).

Projection weights are (E, E) from ``init`` ("xavier": N(0, 1/E)), biases zeros. The attention
modules take ``recompute``: False (the default) keeps each layer's attention weights (N, h, T, T)
from the forward to the backward; True keeps only q, k, v (and the dropout key) and recomputes the
weights in the backward, one more (T, T, d) product per head for O(N h T^2) less memory (see
:mod:`fnet.layers.attention` for when the compiler keeps that trade, and
``benchmarks/transformer_step.py`` for the measurement).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnet import _checks, layers
from fnet import init as initializers
from fnet.modules.base import Module, Static, one_shape, shape_error
from fnet.modules.dense import elementwise


def gelu(approximate: str = "erf") -> Module:
    """``y = x * Phi(x)`` (:func:`fnet.layers.gelu_forward`; ``approximate="tanh"`` is GPT-2's)."""
    if approximate not in layers.GELU_FORMS:
        raise ValueError(f"gelu: approximate must be one of {layers.GELU_FORMS}, got {approximate!r}")
    return elementwise("gelu", layers.gelu_forward, layers.gelu_backward, approximate=approximate,
                       info="" if approximate == "erf" else "tanh")


def _projections(fn, num_heads, w_init, key, width: int) -> dict:
    if width % num_heads:
        raise ValueError(f"{fn}: num_heads {num_heads} does not divide the width E = {width}")
    keys = iter(jax.random.split(key, 4))
    return {name: (w_init(next(keys), (width, width), jnp.float32) if name.startswith("W")
                   else jnp.zeros((width,), jnp.float32)) for name in layers.PROJECTIONS}


def _info(dropout: float, recompute: bool) -> str:
    return (f", dropout {dropout}" if dropout else "") + (", recompute" if recompute else "")


def _sequence_shape(fn: str, input_shape) -> tuple:
    input_shape = one_shape(fn, input_shape)
    if len(input_shape) != 3:
        raise shape_error(fn, input_shape, "(N, T, E)")
    return input_shape


def self_attention(num_heads: int, *, causal: bool = True, dropout: float = 0.0, init="xavier",
                   recompute: bool = False) -> Module:
    """Multi-head self-attention of (N, T, E) (:func:`fnet.layers.multi_head_attention_forward`
    with query = key = value = x), causal (a lower-triangular mask) unless ``causal=False``;
    ``dropout`` on the attention weights in train mode; ``recompute=True``: the backward recomputes
    the attention weights instead of keeping them (less memory, one more product). Params Wq, bq,
    Wk, bk, Wv, bv, Wo, bo."""
    fn = "self_attention"
    num_heads = _checks.integer(fn, "num_heads", num_heads, minimum=1)
    _checks.rate(fn, "dropout", dropout)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = _sequence_shape(fn, input_shape)
        return _projections(fn, num_heads, w_init, key, input_shape[2]), {}, input_shape

    def forward(params, state, x, *, train, key=None):
        t = x.shape[1]
        mask = jnp.tril(jnp.ones((t, t), bool)) if causal else None
        y, cache = layers.multi_head_attention_forward(x, x, x, params, num_heads=num_heads, mask=mask,
                                                       dropout=dropout if train else 0.0, rng=key, recompute=recompute)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        dq, dk, dv, dparams = layers.multi_head_attention_backward(dy, cache)
        return dq + dk + dv, dparams

    info = f"{num_heads} heads" + (", causal" if causal else "") + _info(dropout, recompute)
    return Module(init_fn, forward, backward, fn, info)


def cross_attention(num_heads: int, *, dropout: float = 0.0, init="xavier", recompute: bool = False) -> Module:
    """Multi-head attention of x (N, S, E) to a context (N, T, E): takes the tuple ``(x,
    context)``, returns (N, S, E); backward returns ``(dx, dcontext)`` (the key and value paths
    summed). Params and ``recompute`` as :func:`self_attention`'s."""
    fn = "cross_attention"
    num_heads = _checks.integer(fn, "num_heads", num_heads, minimum=1)
    _checks.rate(fn, "dropout", dropout)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        if len(input_shape) != 2 or not all(isinstance(s, tuple) for s in input_shape):
            raise ValueError(f"{fn}: takes a tuple (x, context) of shapes (N, S, E) and (N, T, E), got {input_shape}")
        x_shape, context_shape = (_sequence_shape(fn, s) for s in input_shape)
        if x_shape[2] != context_shape[2]:
            raise ValueError(f"{fn}: x and context must have the same width E, got shapes {x_shape} and {context_shape}")
        return _projections(fn, num_heads, w_init, key, x_shape[2]), {}, x_shape

    def forward(params, state, inputs, *, train, key=None):
        x, context = inputs
        y, cache = layers.multi_head_attention_forward(x, context, context, params, num_heads=num_heads,
                                                       dropout=dropout if train else 0.0, rng=key, recompute=recompute)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        dq, dk, dv, dparams = layers.multi_head_attention_backward(dy, cache)
        return (dq, dk + dv), dparams

    return Module(init_fn, forward, backward, fn, f"{num_heads} heads" + _info(dropout, recompute))


def position_embedding(context: int, *, init=0.02) -> Module:
    """Learned position embeddings (GPT-2's ``wpe``): ``y[n, t] = x[n, t] + P[t]`` for x (N, T, E)
    with T <= ``context``; params ``{"P": (context, E)}`` from ``init`` (default N(0, 0.02^2),
    GPT-2's). Backward: ``dx = dy``, ``dP[t] = sum_n dy[n, t]`` (rows past T zero)."""
    fn = "position_embedding"
    context = _checks.integer(fn, "context", context, minimum=1)
    p_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = _sequence_shape(fn, input_shape)
        if input_shape[1] is not None and input_shape[1] > context:
            raise ValueError(f"{fn}: sequences of {input_shape[1]} positions are longer than the context {context}")
        return {"P": p_init(key, (context, input_shape[2]), jnp.float32)}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        t = x.shape[1]
        return x + params["P"][:t], state, Static(t)

    def backward(params, cache, dy):
        dP = jnp.zeros_like(params["P"]).at[:cache.value].set(jnp.sum(dy, axis=0).astype(params["P"].dtype))
        return dy, {"P": dP}

    return Module(init_fn, forward, backward, fn, f"context {context}")
