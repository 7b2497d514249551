"""Attention as forward/backward pairs (cs231n's transformer assignment, in its conventions): scaled
dot-product attention, multi-head attention with its four projections, sinusoidal positional
encodings, and GELU.

Shapes: N a batch, h heads, S query positions, T key positions, d = E / h the width of a head, E
the model's width. Weights are x @ W: every projection ``W`` is (E, E) and ``b`` is (E,).

Masks: ``mask`` is boolean, broadcastable to (N, h, S, T), True where a query may attend to a key
(cs231n's ``attn_mask`` convention; PyTorch's ``attn_mask`` of booleans means the opposite, and
its float masks are added to the scores). A masked score is replaced by the dtype's most negative
finite number, never -inf, so a row with every key masked gives uniform weights (the mean of the
values), never NaN; its gradient with respect to q and k is zero, as masked scores do not depend
on them.

Dropout acts on the attention weights (after the softmax), as in cs231n and PyTorch's
``nn.MultiheadAttention``; ``dropout`` is the DROP probability (see :mod:`fnet.layers.dropout`).

Store or recompute: by default the forward's cache keeps the attention weights (N, h, S, T) and,
with dropout, the scaled dropout mask of the same shape, and the backward reads them. With
``recompute=True`` the cache keeps neither: the backward recomputes the weights from q, k and the
mask (one more (S, T, d) product per head and a softmax) and regenerates the dropout mask from the
kept PRNG key, bit for bit, so both forms give the same gradients. Recomputing trades that time for
the O(N h S T) memory that lives from the forward to the backward (the (N, h, T, T) weights of every
layer of a transformer during its backward pass). The default stores: where the forward and the
backward are compiled into one step on XLA's CPU backend, the compiler merges the recomputation
with the forward's identical product (its CPU pipeline expands the optimization barrier that
forbids this before its last common-subexpression pass), so both forms compile to the same program,
same time and same peak memory (measured in ``benchmarks/transformer_step.py``); the saving is real
where the cache crosses a program boundary (forward and backward called separately) and on backends
that keep the barrier.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from fnet import _checks

PROJECTIONS = ("Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo")
"""The parameters of :func:`multi_head_attention_forward`, in the order they are listed."""


class AttentionCache(NamedTuple):
    """What :func:`attention_backward` needs: the inputs, the boolean mask as given (None without
    one), and either (stored form) the attention weights after the softmax (N, h, S, T) and the
    dropout mask scaled by 1 / (1 - rate) (None without dropout), or (``recompute=True``)
    ``weights`` and ``dropout_mask`` None and, with dropout, the PRNG key and rate that regenerate
    the dropout mask."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    weights: jax.Array | None
    dropout_mask: jax.Array | None
    mask: jax.Array | None
    dropout_key: jax.Array | None = None
    dropout_rate: jax.Array | None = None


def _check_mask(fn: str, mask, shape: tuple):
    if mask is None:
        return None
    dtype = getattr(mask, "dtype", None)
    if dtype is None or dtype != jnp.bool_:
        raise TypeError(f"{fn}: mask must be a boolean array (True where attention is allowed), got "
                        f"{type(mask).__name__} of dtype {dtype}")
    try:
        fits = jnp.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{fn}: mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape (N, h, S, T) "
                         f"= {shape}") from None
    return jnp.asarray(mask)  # as given: a (T, T) causal mask is not copied N * h times into the cache


def _weights(q, k, mask):
    """softmax(q k^T / sqrt(d)) over the keys, masked scores at the dtype's most negative finite number."""
    scores = jnp.einsum("nhsd,nhtd->nhst", q, k) / math.sqrt(q.shape[3])
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


def _dropout_mask(key, rate, like):
    """The inverted-dropout mask of the weights ``like``: 1 / (1 - rate) where kept, 0 where dropped;
    a function of ``key``, so the recomputing backward regenerates the forward's mask exactly."""
    rate = jnp.asarray(rate, like.dtype)
    return jnp.where(jax.random.uniform(key, like.shape, like.dtype) >= rate, 1 / (1 - rate), 0)


def attention_forward(q, k, v, *, mask=None, dropout=0.0, key=None, recompute: bool = False):
    """Scaled dot-product attention::

        scores = q k^T / sqrt(d),  scores[mask == False] = most negative finite number
        weights = softmax(scores) over the keys,  out = dropout(weights) v

    Args:
      q: (N, h, S, d); k: (N, h, T, d); v: (N, h, T, d_v).
      mask: optional boolean, broadcastable to (N, h, S, T), True where allowed.
      dropout: drop probability of the weights in [0, 1); ``key`` a PRNG key when it is > 0.
      recompute: False (default) keeps the weights (and the dropout mask) in the cache; True keeps
        only q, k, v, the mask and the dropout key, and the backward recomputes the weights (see
        the module's docstring for the trade).

    Returns:
      out (N, h, S, d_v) and an :class:`AttentionCache`.
    """
    fn = "attention_forward"
    q = _checks.float_array(fn, "q", q, ndim=4)
    k = _checks.float_array(fn, "k", k, ndim=4)
    v = _checks.float_array(fn, "v", v, ndim=4)
    n, h, s, d = q.shape
    if k.shape[:2] != (n, h) or k.shape[3] != d or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"{fn}: q (N, h, S, d), k (N, h, T, d) and v (N, h, T, d_v) must agree, got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    _checks.rate(fn, "dropout", dropout)
    mask = _check_mask(fn, mask, (n, h, s, k.shape[2]))
    weights = _weights(q, k, mask)
    dropout_mask = None
    if not (_checks.is_concrete(dropout) and dropout == 0):
        if key is None:
            raise ValueError(f"{fn}: dropout {dropout} > 0 needs a PRNG key")
        dropout_mask = _dropout_mask(key, dropout, weights)
    out = jnp.einsum("nhst,nhtd->nhsd", weights if dropout_mask is None else weights * dropout_mask, v)
    if not recompute:
        return out, AttentionCache(q, k, v, weights, dropout_mask, mask)
    if dropout_mask is None:
        return out, AttentionCache(q, k, v, None, None, mask)
    return out, AttentionCache(q, k, v, None, None, mask, key, jnp.asarray(dropout, weights.dtype))


def attention_backward(dout, cache: AttentionCache):
    """Backward of :func:`attention_forward`. With P the weights and P' = dropout(P)::

        dv = P'^T dout,  dP = (dout v^T) * dropout_mask
        dscores = P * (dP - sum_t(dP * P)),  zero where masked     (the softmax's Jacobian)
        dq = dscores k / sqrt(d),  dk = dscores^T q / sqrt(d)

    P and the dropout mask come from the cache, or are recomputed from q, k, the mask and the
    dropout key when the forward ran with ``recompute=True`` (the same numbers).

    Returns:
      (dq, dk, dv) of the shapes of q, k, v.
    """
    q, k, v, weights, dropout_mask, mask, dropout_key, dropout_rate = cache
    _checks.upstream("attention_backward", dout, (*q.shape[:3], v.shape[3]))
    if weights is None:
        # In a step compiled with its forward, XLA's common-subexpression elimination would reuse
        # the forward's identical softmax(q k^T), keeping the weights alive after all; the barrier
        # forbids that and, tying q and k to dout, schedules the recomputation in the backward.
        # (XLA's CPU pipeline drops barriers before its last CSE pass: see the module docstring.)
        q, k, dout = jax.lax.optimization_barrier((q, k, dout))
        weights = _weights(q, k, mask)
        if dropout_key is not None:
            dropout_mask = _dropout_mask(dropout_key, dropout_rate, weights)
    dropped = weights if dropout_mask is None else weights * dropout_mask
    dv = jnp.einsum("nhst,nhsd->nhtd", dropped, dout)
    dweights = jnp.einsum("nhsd,nhtd->nhst", dout, v)
    if dropout_mask is not None:
        dweights = dweights * dropout_mask
    dscores = weights * (dweights - jnp.sum(dweights * weights, axis=-1, keepdims=True))
    if mask is not None:
        dscores = jnp.where(mask, dscores, 0)
    scale = 1 / math.sqrt(q.shape[3])
    dq = jnp.einsum("nhst,nhtd->nhsd", dscores, k) * scale
    dk = jnp.einsum("nhst,nhsd->nhtd", dscores, q) * scale
    return dq, dk, dv


class MultiHeadCache(NamedTuple):
    """What :func:`multi_head_attention_backward` needs."""

    query: jax.Array
    key: jax.Array
    value: jax.Array
    heads: jax.Array  # the attention's output, merged: (N, S, E)
    attention: AttentionCache
    params: dict


def _split_heads(x, num_heads: int):
    """(N, L, E) -> (N, h, L, E / h): head i takes features i*d ... (i+1)*d - 1 (PyTorch's split)."""
    n, length, e = x.shape
    return x.reshape(n, length, num_heads, e // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(N, h, L, d) -> (N, L, h*d), the inverse of :func:`_split_heads`."""
    n, h, length, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, length, h * d)


def multi_head_attention_forward(query, key, value, params, *, num_heads: int, mask=None, dropout=0.0, rng=None,
                                 recompute: bool = False):
    """Multi-head attention (Vaswani et al.; cs231n's ``MultiHeadAttention``)::

        Q = query Wq + bq,  K = key Wk + bk,  V = value Wv + bv          (N, S|T, E)
        heads = merge(attention(split(Q), split(K), split(V)))            (N, S, E)
        out = heads Wo + bo

    where split cuts the E features into ``num_heads`` heads of d = E / h consecutive features.

    Args:
      query: (N, S, E); key, value: (N, T, E) (the same array as query for self-attention).
      params: {"Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"}, each W (E, E), each b (E,).
      num_heads: h, dividing E.
      mask: boolean, broadcastable to (N, h, S, T), True where allowed (e.g. a causal
        ``tril(ones((S, T), bool))``).
      dropout, rng: dropout of the attention weights and its PRNG key.
      recompute: whether the backward recomputes the attention weights instead of reading them
        from the cache (:func:`attention_forward`).

    Returns:
      out (N, S, E) and a :class:`MultiHeadCache`.
    """
    fn = "multi_head_attention_forward"
    query = _checks.float_array(fn, "query", query, ndim=3)
    key = _checks.float_array(fn, "key", key, ndim=3)
    value = _checks.float_array(fn, "value", value, ndim=3)
    n, s, e = query.shape
    if key.shape[0] != n or key.shape[2] != e or value.shape != key.shape:
        raise ValueError(f"{fn}: query (N, S, E), key and value (N, T, E) must agree, got query {query.shape}, key "
                         f"{key.shape}, value {value.shape}")
    num_heads = _checks.integer(fn, "num_heads", num_heads, minimum=1)
    if e % num_heads:
        raise ValueError(f"{fn}: num_heads {num_heads} does not divide the width E = {e}")
    expected = {name: (e, e) if name.startswith("W") else (e,) for name in PROJECTIONS}
    _checks.tree(fn, "params", params, f"the projections of width E = {e}",
                 {k: jax.ShapeDtypeStruct(shape, query.dtype) for k, shape in expected.items()})
    p = params
    q, k_, v = (_split_heads(x @ p[f"W{c}"] + p[f"b{c}"], num_heads) for x, c in ((query, "q"), (key, "k"), (value, "v")))
    attended, attention = attention_forward(q, k_, v, mask=mask, dropout=dropout, key=rng, recompute=recompute)
    heads = _merge_heads(attended)
    return heads @ p["Wo"] + p["bo"], MultiHeadCache(query, key, value, heads, attention, params)


def multi_head_attention_backward(dout, cache: MultiHeadCache):
    """Backward of :func:`multi_head_attention_forward`: the output projection, the attention
    (:func:`attention_backward`) per head, then each input projection's (x @ W + b) backward.

    Returns:
      (dquery, dkey, dvalue, dparams), dparams with the keys of ``params``. For self-attention
      (the same array as query, key and value) the input's gradient is the sum of the three. The
      key bias's gradient ``dbk`` is zero in exact arithmetic (the softmax is invariant to adding
      one number to a whole row of scores) and rounding-small in floating point.
    """
    query, key, value, heads, attention, p = cache
    _checks.upstream("multi_head_attention_backward", dout, query.shape)
    grads = {"Wo": jnp.einsum("nse,nsf->ef", heads, dout), "bo": jnp.sum(dout, axis=(0, 1))}
    dheads = _split_heads(dout @ p["Wo"].T, attention.q.shape[1])
    dq, dk, dv = (_merge_heads(g) for g in attention_backward(dheads, attention))
    inputs = {}
    for c, x, dproj in (("q", query, dq), ("k", key, dk), ("v", value, dv)):
        grads[f"W{c}"] = jnp.einsum("nle,nlf->ef", x, dproj)
        grads[f"b{c}"] = jnp.sum(dproj, axis=(0, 1))
        inputs[c] = dproj @ p[f"W{c}"].T
    return inputs["q"], inputs["k"], inputs["v"], {name: grads[name] for name in PROJECTIONS}


def positional_encoding(length: int, dim: int, dtype=jnp.float32):
    """cs231n's sinusoidal position table (Vaswani et al.), P of shape (length, dim)::

        P[i, j] = sin(i * 10000 ** (-j / dim))          for even j
        P[i, j] = cos(i * 10000 ** (-(j - 1) / dim))    for odd j

    Add it to the token embeddings (``x + P[:T]``); it has no parameters (learned position
    embeddings are an embedding of the positions 0 ... T - 1).
    """
    fn = "positional_encoding"
    length = _checks.integer(fn, "length", length, minimum=1)
    dim = _checks.integer(fn, "dim", dim, minimum=1)
    i, j = np.arange(length, dtype=np.float64)[:, None], np.arange(dim)
    angle = i * np.power(10000.0, -(j - j % 2) / dim)  # column j's exponent: j if even, j - 1 if odd
    return jnp.asarray(np.where(j % 2 == 0, np.sin(angle), np.cos(angle)), dtype)  # a constant, in float64 first


GELU_FORMS = ("erf", "tanh")


def gelu_forward(x, *, approximate: str = "erf"):
    """GELU, ``x * Phi(x)`` with Phi the standard normal CDF::

        erf (exact, PyTorch's default):  Phi(x) = (1 + erf(x / sqrt(2))) / 2
        tanh (GPT-2's, PyTorch's approximate="tanh", jax.nn.gelu's default):
                                          Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2

    Returns:
      out of x's shape, and the cache ``(x, approximate)``.
    """
    fn = "gelu_forward"
    x = _checks.float_array(fn, "x", x)
    if approximate not in GELU_FORMS:
        raise ValueError(f"{fn}: approximate must be one of {GELU_FORMS}, got {approximate!r}")
    return x * _gelu_cdf(x, approximate), (x, approximate)


def _gelu_cdf(x, approximate: str):
    if approximate == "erf":
        return 0.5 * (1 + erf(x / math.sqrt(2)))
    return 0.5 * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_backward(dout, cache):
    """Backward of :func:`gelu_forward`::

        erf:   d/dx [x Phi(x)] = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        tanh:  Phi~(x) + x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2,  t = tanh(...)
    """
    x, approximate = cache
    _checks.upstream("gelu_backward", dout, x.shape)
    if approximate == "erf":
        return dout * (_gelu_cdf(x, "erf") + x * jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
    c = math.sqrt(2 / math.pi)
    t = jnp.tanh(c * (x + 0.044715 * x ** 3))
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))
