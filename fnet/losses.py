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
    """
    fn = "softmax_cross_entropy"
    scores = _checks.float_array(fn, "scores", scores, ndim=2)
    n, c = scores.shape
    _checks.labels(fn, "y", y, n, c)
    shifted = scores - jnp.max(scores, axis=1, keepdims=True)
    exp = jnp.exp(shifted)
    sum_exp = jnp.sum(exp, axis=1, keepdims=True)
    log_probs = shifted - jnp.log(sum_exp)
    onehot = jax.nn.one_hot(y, c, dtype=scores.dtype)
    loss = -jnp.sum(log_probs * onehot) / n
    dscores = (exp / sum_exp - onehot) / n
    return loss, dscores


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


def l2_weight_decay(weights, lam):
    """L2 penalty on weights and its gradient::

        penalty = 0.5 * lam * sum_W sum(W**2),   dW = lam * W

    Pass only the weight matrices (fnet's convention, the source material's: biases and
    normalization parameters are not decayed).

    Args:
      weights: a pytree of arrays (e.g. ``{"W1": ..., "W2": ...}``).
      lam: decay strength, a float or a scalar array (may be traced).

    Returns:
      penalty: scalar; grads: a pytree like ``weights`` holding ``lam * W``.
    """
    leaves = jax.tree_util.tree_leaves(weights)
    penalty = 0.5 * lam * sum(jnp.sum(w * w) for w in leaves)
    grads = jax.tree_util.tree_map(lambda w: (lam * w).astype(w.dtype), weights)
    return penalty, grads


#: The losses by name, as accepted by ``fnet.mlp(loss=...)``.
LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mean_squared_error,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
}
