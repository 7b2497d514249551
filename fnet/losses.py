"""Losses: each returns ``(loss, dscores)`` in one call, like cs231n's ``softmax_loss``.

``dscores`` is the hand-derived gradient of the returned (scalar) loss with respect to the
scores; no autodiff is involved. All losses are means over the batch, stable for large scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnet import _checks


def softmax_cross_entropy(scores, y):
    """Softmax cross-entropy with integer labels, averaged over the batch::

        loss = 1/N * sum_n (logsumexp(scores[n]) - scores[n, y[n]])
        dscores = (softmax(scores) - onehot(y)) / N

    The log-sum-exp is taken after subtracting each row's maximum, so scores of any magnitude
    give finite values.

    Args:
      scores: array of shape (N, C).
      y: integer array of shape (N,) with values in [0, C) (checked when concrete).

    Returns:
      loss: scalar; dscores: array of shape (N, C).

    >>> import jax.numpy as jnp
    >>> from fnet import losses
    >>> loss, dscores = losses.softmax_cross_entropy(jnp.zeros((2, 2)), jnp.array([0, 1]))
    >>> print(f"{float(loss):.4f}")        # log(2): both classes equally likely
    0.6931
    >>> print(dscores)                     # (softmax - onehot) / N
    [[-0.25  0.25]
     [ 0.25 -0.25]]
    """
    fn = "softmax_cross_entropy"
    scores = _checks.float_array(fn, "scores", scores, ndim=2)
    n, c = scores.shape
    _checks.labels(fn, "y", y, n, c)
    log_probs, probs = _log_softmax(scores)
    onehot = jax.nn.one_hot(y, c, dtype=scores.dtype)
    loss = -jnp.sum(log_probs * onehot) / n
    dscores = (probs - onehot) / n
    return loss, dscores


def _log_softmax(scores):
    """``(log_probs, probs)`` over the last axis, after subtracting each row's maximum (finite
    for scores of any magnitude)."""
    shifted = scores - jnp.max(scores, axis=-1, keepdims=True)
    exp = jnp.exp(shifted)
    sum_exp = jnp.sum(exp, axis=-1, keepdims=True)
    return shifted - jnp.log(sum_exp), exp / sum_exp


def mean_squared_error(scores, y):
    """Half mean squared error (the "1/2" convention, so the gradient has no factor 2)::

        loss = 1/(2N) * sum_{n,k} (scores[n, k] - y[n, k])**2
        dscores = (scores - y) / N

    i.e. half the squared error summed over outputs, averaged over the N samples.

    Args:
      scores: array of shape (N,) or (N, K).
      y: array of the same shape.

    Returns:
      loss: scalar; dscores: array of scores' shape.
    """
    fn = "mean_squared_error"
    scores = _checks.float_array(fn, "scores", scores, min_ndim=1)
    y = _checks.float_array(fn, "y", y)
    _checks.same_shape(fn, "y", y, "scores", scores)
    n = scores.shape[0]
    diff = scores - y
    return 0.5 * jnp.sum(diff * diff) / n, diff / n


def sigmoid_binary_cross_entropy(scores, y):
    """Binary cross-entropy on logits, averaged over all elements::

        loss = mean( max(s, 0) - s * y + log(1 + exp(-|s|)) )     (= -y log p - (1-y) log(1-p))
        dscores = (sigmoid(s) - y) / size

    where ``p = sigmoid(s)``; this form never takes the log of 0 or overflows ``exp``.

    Args:
      scores: logits of shape (N,) or (N, K).
      y: targets in [0, 1] (usually 0/1), same shape as scores.

    Returns:
      loss: scalar; dscores: array of scores' shape.
    """
    fn = "sigmoid_binary_cross_entropy"
    scores = _checks.float_array(fn, "scores", scores, min_ndim=1)
    y = jnp.asarray(y, scores.dtype)
    _checks.same_shape(fn, "y", y, "scores", scores)
    size = scores.size
    loss = jnp.sum(jnp.maximum(scores, 0) - scores * y + jnp.log1p(jnp.exp(-jnp.abs(scores)))) / size
    return loss, (jax.nn.sigmoid(scores) - y) / size


def l2_weight_decay(weights, lam, mask=None):
    """L2 penalty on weights and its gradient::

        penalty = 0.5 * lam * sum_W sum(W**2),   dW = lam * W

    fnet's convention, the source material's: only weights are decayed, not biases or
    normalization parameters. Pass the weights alone, or a whole parameter tree with
    ``mask=fnet.modules.weight_mask(params)`` (what a network's loss does).

    Args:
      weights: a pytree of arrays (e.g. a network's ``{"dense1": {"W": ..., "b": ...}, ...}``).
      lam: decay strength, a float or a scalar array (may be traced).
      mask: None (every leaf is decayed) or a pytree of Python bools like ``weights``; leaves
        marked False add nothing to the penalty and get a zero gradient.

    Returns:
      penalty: scalar; grads: a pytree like ``weights`` (see :func:`l2_weight_decay_grad`).

    >>> import jax.numpy as jnp
    >>> from fnet import losses, modules
    >>> params = {"dense1": {"W": jnp.array([[1.0, 2.0]]), "b": jnp.array([3.0, 4.0])}}
    >>> penalty, grads = losses.l2_weight_decay(params, 0.5, mask=modules.weight_mask(params))
    >>> print(float(penalty), grads["dense1"]["W"], grads["dense1"]["b"])   # 0.25 * (1 + 4); the bias is not decayed
    1.25 [[0.5 1. ]] [0. 0.]
    """
    grads = l2_weight_decay_grad(weights, lam, mask)
    leaves = jax.tree_util.tree_leaves(weights)
    flags = [True] * len(leaves) if mask is None else jax.tree_util.tree_leaves(mask)
    penalty = 0.5 * lam * sum(jnp.sum(w * w) for w, m in zip(leaves, flags) if m)
    return penalty, grads


def l2_weight_decay_grad(weights, lam, mask=None):
    """The gradient of :func:`l2_weight_decay`'s penalty alone: ``lam * W`` in ``W``'s dtype where
    ``mask`` is True (everywhere for ``mask=None``), zeros elsewhere. ``weights`` may be a single
    array; :func:`fnet.optim.add_weight_decay` adds this to each gradient leaf."""

    def grad(w):
        return (lam * w).astype(w.dtype)

    if mask is None:
        return jax.tree_util.tree_map(grad, weights)
    _checks.tree("l2_weight_decay", "mask", mask, "weights", weights, shapes=False)
    return jax.tree_util.tree_map(lambda w, m: grad(w) if m else jnp.zeros_like(w), weights, mask)


#: How :func:`temporal_softmax_loss` divides its sum over the unmasked tokens.
TEMPORAL_NORMALIZATIONS = ("batch", "tokens")


def temporal_softmax_loss(scores, y, mask, *, normalize="batch"):
    """Softmax cross-entropy at every time step of a sequence, masked (cs231n assignment 3)::

        loss = 1/Z * sum_{n,t} mask[n, t] * (logsumexp(scores[n, t]) - scores[n, t, y[n, t]])
        dscores[n, t] = mask[n, t] * (softmax(scores[n, t]) - onehot(y[n, t])) / Z

    with ``Z = N`` for ``normalize="batch"`` (cs231n's convention, the default: summed over time,
    averaged over the batch, so the loss grows with T) or ``Z = sum(mask)`` for
    ``normalize="tokens"`` (Deep Learning from Scratch 2's ``TimeSoftmaxWithLoss``: the mean over
    the unmasked tokens, in nats per token; Z = 1 when every token is masked, giving a loss of 0).
    Masked tokens contribute nothing, whatever their label.

    Args:
      scores: (N, T, V).
      y: integer labels (N, T) in [0, V) (checked when concrete).
      mask: (N, T), boolean (True: the token counts) or 0/1 numbers.
      normalize: "batch" or "tokens".

    Returns:
      loss: scalar; dscores: (N, T, V).
    """
    fn = "temporal_softmax_loss"
    if normalize not in TEMPORAL_NORMALIZATIONS:
        raise ValueError(f"{fn}: normalize must be one of {TEMPORAL_NORMALIZATIONS}, got {normalize!r}")
    scores = _checks.float_array(fn, "scores", scores, ndim=3)
    n, t, v = scores.shape
    for name, a in (("y", y), ("mask", mask)):
        if _checks.shape_of(a) != (n, t):
            raise ValueError(f"{fn}: {name} must have shape (N, T) = {(n, t)} for scores of shape {scores.shape}, "
                             f"got shape {_checks.shape_of(a)}")
    _checks.token_ids(fn, "y", y, v)
    mask = jnp.asarray(mask, scores.dtype)
    z = n if normalize == "batch" else jnp.maximum(jnp.sum(mask), 1)
    log_probs, probs = _log_softmax(scores)
    onehot = jax.nn.one_hot(y, v, dtype=scores.dtype)
    loss = -jnp.sum(mask * jnp.sum(log_probs * onehot, axis=-1)) / z
    return loss, (probs - onehot) * (mask / z)[..., None]


def temporal_softmax_cross_entropy(scores, y):
    """Softmax cross-entropy at every time step, the mean over all N*T tokens, in nats per token
    (a language model's loss with the ``(scores, y)`` signature of :data:`LOSSES`)::

        loss = 1/(N*T) * sum_{n,t} (logsumexp(scores[n, t]) - scores[n, t, y[n, t]])
        dscores[n, t] = (softmax(scores[n, t]) - onehot(y[n, t])) / (N*T)

    It is :func:`temporal_softmax_loss` with every token counted and ``normalize="tokens"``
    (DLFS2's ``TimeSoftmaxWithLoss``, nanoGPT's loss), i.e. cs231n's default (summed over time,
    divided by N) divided by T. A mean per token does not grow with the window length, so the
    same learning rate fits every T and the value reads as nats (or /ln 2, bits) per character.

    Args:
      scores: (N, T, V).
      y: integer labels (N, T) in [0, V) (checked when concrete).

    Returns:
      loss: scalar; dscores: (N, T, V).

    >>> import jax.numpy as jnp
    >>> from fnet import losses
    >>> loss, dscores = losses.temporal_softmax_cross_entropy(jnp.zeros((1, 3, 4)), jnp.array([[0, 1, 2]]))
    >>> print(f"{float(loss):.4f}")        # log(4) nats per token: 4 symbols equally likely
    1.3863
    """
    return temporal_softmax_loss(scores, y, jnp.ones(_checks.shape_of(y), bool), normalize="tokens")


#: The losses by name, as accepted by :func:`fnet.network` (``loss=...``) and ``fnet.mlp``.
LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mean_squared_error,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
    "temporal_softmax_cross_entropy": temporal_softmax_cross_entropy,
}
