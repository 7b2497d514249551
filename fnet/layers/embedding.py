"""Word embeddings and the temporal affine layer as forward/backward pairs (cs231n assignment 3's
API): the input and output ends of a sequence model.

Embedding: ``out[n, t] = W[x[n, t]]``; its backward scatter-adds, so a token that occurs several
times gets the SUM of its rows' gradients. Token ids must be integers in [0, V) (a float array is
a TypeError; the range is checked when the ids are concrete).

Temporal affine: one affine layer applied at every time step of (N, T, D) inputs, i.e.
:func:`fnet.layers.affine_forward` on the (N*T, D) rows.
"""

from __future__ import annotations

import jax.numpy as jnp

from fnet import _checks
from fnet.layers.dense import affine_backward, affine_forward


def word_embedding_forward(x, W):
    """Look up the rows of ``W``: ``out[n, t] = W[x[n, t]]``.

    Args:
      x: integer token ids of shape (N, T) (any shape works), values in [0, V).
      W: (V, D), one row per token.

    Returns:
      out: (N, T, D) (``x.shape + (D,)``); cache: ``(x, W)`` (references, no copies).
    """
    fn = "word_embedding_forward"
    W = _checks.float_array(fn, "W", W, ndim=2)
    _checks.token_ids(fn, "x", x, W.shape[0])
    return W[x], (x, W)


def word_embedding_backward(dout, cache):
    """Backward of :func:`word_embedding_forward`, a scatter-add: ``dW[v] = sum over (n, t) with
    x[n, t] = v of dout[n, t]`` (a repeated id gets the sum of its gradients; an unused row 0).
    The ids are not differentiable, so there is no dx.

    Args:
      dout: (N, T, D).

    Returns:
      dW: (V, D).
    """
    x, W = cache
    _checks.upstream("word_embedding_backward", dout, (*jnp.shape(x), W.shape[1]))
    return jnp.zeros_like(W).at[x].add(dout)


def temporal_affine_forward(x, W, b):
    """An affine layer applied at every time step: ``out[n, t] = x[n, t] @ W + b``
    (:func:`fnet.layers.affine_forward` on the (N*T, D) rows).

    Args:
      x: (N, T, D); W: (D, M); b: (M,).

    Returns:
      out: (N, T, M); cache: ``(x, W)``.
    """
    fn = "temporal_affine_forward"
    x = _checks.float_array(fn, "x", x, ndim=3)
    W = _checks.float_array(fn, "W", W, ndim=2)
    b = _checks.float_array(fn, "b", b, ndim=1)
    if x.shape[2] != W.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(f"{fn}: W must have shape (D, M) = ({x.shape[2]}, M) and b (M,) for x of shape {x.shape}, "
                         f"got shapes W {W.shape}, b {b.shape}")
    n, t, d = x.shape
    out, _ = affine_forward(x.reshape(n * t, d), W, b)
    return out.reshape(n, t, -1), (x, W)


def temporal_affine_backward(dout, cache):
    """Backward of :func:`temporal_affine_forward`: ``dx = dout W^T``, ``dW = sum_{n,t}
    x[n, t]^T dout[n, t]``, ``db = sum_{n,t} dout[n, t]``.

    Returns:
      dx (N, T, D), dW (D, M), db (M,).
    """
    x, W = cache
    n, t, d = x.shape
    _checks.upstream("temporal_affine_backward", dout, (n, t, W.shape[1]))
    dx, dW, db = affine_backward(dout.reshape(n * t, -1), (x.reshape(n * t, d), W))
    return dx.reshape(x.shape), dW, db
