"""Evaluation: a network's eval-mode loss and accuracy over a whole data set.

:func:`evaluate` is the checked entry point (``fnet.evaluate``); :func:`evaluate_checked` the same
for data checked already (``fit`` evaluates every epoch); :func:`dataset_metrics` the traceable
form that runs inside another program (the trials of :mod:`fnet.trials`). All cut the data into
fixed-size batches, the last one padded, so one compiled program per network and batch size
serves data sets of every size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, losses, nets
from fnet.nets import Net


def _eval_sums(net: Net, params, state, xb, yb, valid):
    """Eval-mode sums over one padded batch: (sum of the per-sample data losses, number of correct
    predictions), counting only the rows where ``valid`` (bool, shape (B,)) is True."""
    loss_fn = losses.LOSSES[net.loss_name]
    scores = net.apply(params, xb, state=state)

    def per_sample(f):
        return jax.vmap(lambda s, t: f(s[None], t[None]))(scores, yb)

    sample_loss = per_sample(lambda s, t: loss_fn(s, t)[0])
    sample_acc = per_sample(lambda s, t: accuracy(net, s, t))
    return jnp.sum(jnp.where(valid, sample_loss, 0.0)), jnp.sum(jnp.where(valid, sample_acc, 0.0))


def _padded_batches(x, batch_size: int, xp=jnp):
    """x padded with zero rows to a multiple of ``batch_size`` and reshaped to (batches,
    batch_size, ...), with the array module ``xp`` (jax.numpy in a trace, NumPy on the host)."""
    pad = -x.shape[0] % batch_size
    padded = xp.concatenate([x, xp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return padded.reshape(-1, batch_size, *x.shape[1:])


def dataset_metrics(net: Net, batch_size: int):
    """``(params, state, x, y) -> (mean loss, accuracy)`` over a whole data set, traceable (the
    trials program evaluates inside its own trace): a loop over padded batches of ``batch_size``."""

    def run(params, state, x, y):
        n = x.shape[0]
        valid = _padded_batches(jnp.ones(n, bool), batch_size)
        batches = (_padded_batches(x, batch_size), _padded_batches(y, batch_size), valid)
        loss, correct = jax.lax.map(lambda b: _eval_sums(net, params, state, *b), batches)
        return jnp.sum(loss) / n, jnp.sum(correct) / n

    return run


@functools.lru_cache(maxsize=64)
def _eval_batch_program(net: Net, batch_size: int):
    """:func:`_eval_sums` jit-compiled for batches of ``batch_size``: one program per network and
    batch size, shared by every data set it evaluates (training, validation, test)."""
    return jax.jit(functools.partial(_eval_sums, net))


def accuracy(net: Net, scores, y):
    """Fraction of correct predictions, traceable (usable inside jit, scan and vmap).

    Args:
      scores: the net's outputs, shape (N, C) (or (N, K) for a binary head; (N, T, V) for a
        sequence model).
      y: labels of shape (N,) for softmax cross-entropy (correct = argmax), the next token ids
        (N, T) for the temporal one (token accuracy: the fraction of the N*T tokens whose
        argmax is right), 0/1 targets of scores' shape for sigmoid binary cross-entropy (a
        score > 0 predicts 1).

    Returns:
      Scalar accuracy; NaN for a regression (MSE) net.
    """
    if net.loss_name in nets.CLASSIFICATION_LOSSES:
        return jnp.mean(jnp.argmax(scores, axis=-1) == y)
    if net.loss_name == "sigmoid_binary_cross_entropy":
        return jnp.mean((scores > 0) == (y > 0.5))
    return jnp.nan


def evaluate(net: Net, params, state, x, y, *, batch_size: int = 1000) -> dict:
    """Eval-mode loss and accuracy over a whole data set, in fixed-size batches under jit.

    The loss is the data loss only (no weight decay), averaged over all N samples; accuracy is
    the fraction of correct argmax predictions (softmax cross-entropy), of correct signs
    (binary cross-entropy), or NaN (regression). For a sequence model
    (``temporal_softmax_cross_entropy``) the loss is the mean token loss in nats (every sample
    has T tokens, so the mean of the samples' means is the mean over all N*T tokens) and the
    accuracy the token accuracy. The data is cut into batches of
    ``batch_size`` rows, the last one padded (the padding is not counted), so that one compiled
    program per network and batch size evaluates data sets of every size.

    Args:
      x: array of shape (N, D) (token ids (N, T) for a network of token input); y: labels
        (N,), targets (N, C), or the next token ids (N, T).

    Returns:
      ``{"loss": float, "accuracy": float}``.

    Raises:
      ValueError: bad shapes, non-finite data, or non-finite ``params`` or ``state`` (naming the
        first such leaf, e.g. "evaluate: params['dense2']['W'] must be finite, ...").

    Example (a network whose scores are all 0 predicts class 0 and has loss log 3 on 3 classes):

    >>> import jax
    >>> import numpy as np
    >>> import fnet
    >>> net = fnet.mlp(4, [], 3)
    >>> params, state = net.init(jax.random.PRNGKey(0))
    >>> params = jax.tree_util.tree_map(np.zeros_like, params)
    >>> x, y = np.ones((10, 4), np.float32), np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], np.int32)
    >>> m = fnet.evaluate(net, params, state, x, y, batch_size=4)   # batches of 4, 4 and 2 (padded)
    >>> round(m["accuracy"], 6), round(m["loss"], 6), round(float(np.log(3)), 6)
    (0.4, 1.098612, 1.098612)
    """
    fn = "evaluate"
    if net.input_dtype is None:
        x = _checks.float_array(fn, "x", x, min_ndim=2)
    else:
        x = nets.check_input(fn, x, net.input_shape, input_dtype=net.input_dtype, vocab_size=net.vocab_size)
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1)
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: x is empty (shape {tuple(x.shape)}); there is nothing to evaluate")
    _checks.finite(fn, "x", x)
    nets.check_targets(fn, net, "y", x.shape[0], y)
    # A NaN network would still get an accuracy (argmax of NaN scores is 0): never score one.
    _checks.finite_tree(fn, "params", params)
    _checks.finite_tree(fn, "state", state)
    return evaluate_checked(net, params, state, x, y, batch_size)


def evaluate_checked(net: Net, params, state, x, y, batch_size: int = 1000) -> dict:
    """:func:`evaluate` without the checks, for data that was checked already (``fit``)."""
    program = _eval_batch_program(net, batch_size)
    # Batches cut on the host (a view on the CPU): slicing device arrays of each size would
    # compile a program per size, as would a program taking the whole data set.
    x, y = np.asarray(x), np.asarray(y)
    n = x.shape[0]
    batches = (_padded_batches(a, batch_size, np) for a in (x, y, np.ones(n, bool)))
    loss, correct = 0.0, 0.0
    for xb, yb, vb in zip(*batches):
        batch_loss, batch_correct = program(params, state, xb, yb, vb)
        loss, correct = loss + batch_loss, correct + batch_correct
    return {"loss": float(loss) / n, "accuracy": float(correct) / n}
