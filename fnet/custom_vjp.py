"""The hand-written backward passes as ``jax.custom_vjp`` rules, so that ``jax.grad`` runs them.

:func:`manual_vjp` turns an fnet forward/backward pair (``out, cache = forward(*args)``,
``grads = backward(dout, cache)``) into a function ``f(*args) -> out`` whose VJP is ``backward``.
Any JAX program written with such functions (``jax.grad``, ``jax.vjp``, under ``jit`` or
``vmap``) then differentiates through fnet's hand-derived rules instead of JAX's autodiff of the
forward. The module wraps every layer of :mod:`fnet.layers` and the three losses of
:mod:`fnet.losses`::

    from fnet import custom_vjp as cv
    def loss(params, x, y):
        h = cv.relu(cv.affine(x, params["W1"], params["b1"]))
        return cv.softmax_cross_entropy(cv.affine(h, params["W2"], params["b2"]), y)
    grads = jax.grad(loss)(params, x, y)     # runs affine_backward, relu_backward, dscores

Non-differentiable arguments (one design for all): every keyword argument, and every positional
argument listed in ``nondiff_argnums`` (leaky ReLU's ``alpha``, dropout's ``rate`` and ``key``,
batch norm's running statistics, the losses' targets), is *closed over*: it is passed to the
forward as is and is not an input of the custom-VJP function. So it may be a Python value
(``train=False``), an integer array (labels, PRNG keys) or a traced array under ``jit``/``vmap``
(a vmapped dropout rate), and it needs no cotangent. Differentiating with respect to it is an
error (``TypeError``) rather than a silent zero: the hand-written rules give no gradient for
hyperparameters or targets.
"""

from __future__ import annotations

import functools

import jax

from fnet import layers, losses


def manual_vjp(forward, backward, *, nondiff_argnums=()):
    """Expose a forward/backward pair to JAX as one function with a ``jax.custom_vjp`` rule.

    For ``f = manual_vjp(forward, backward, nondiff_argnums=S)``::

        f(*args, **options) = forward(*args, **options)[0]
        vjp of f at args:  dout -> backward(dout, cache)   (cache = forward(*args, **options)[1])

    where the VJP is taken with respect to the positional arguments whose index is not in ``S``
    (the differentiable arguments, in order); ``backward`` must return one gradient per
    differentiable argument, as a tuple, or a bare array when there is exactly one. ``out`` and
    ``dout`` may be pytrees (``dout`` has ``out``'s structure). Keyword ``options`` and the
    arguments in ``S`` are closed over (see the module docstring): JAX does not differentiate
    with respect to them, and trying to raises a ``TypeError``.

    Args:
      forward: ``forward(*args, **options) -> (out, cache)``, pure and jit-able.
      backward: ``backward(dout, cache) -> grads`` for the differentiable arguments.
      nondiff_argnums: indices (non-negative ints) of positional arguments that are not
        differentiated.

    Returns:
      ``f(*args, **options) -> out``; jit-able and vmappable like ``forward``.

    Raises:
      TypeError: if ``forward``/``backward`` are not callable or ``nondiff_argnums`` holds
        something other than non-negative ints.
    """
    fn = "manual_vjp"
    for name, value in (("forward", forward), ("backward", backward)):
        if not callable(value):
            raise TypeError(f"{fn}: {name} must be callable, got {type(value).__name__}")
    if isinstance(nondiff_argnums, int):
        nondiff_argnums = (nondiff_argnums,)
    nondiff = frozenset(nondiff_argnums)
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in nondiff):
        raise TypeError(f"{fn}: nondiff_argnums must be non-negative ints, got {tuple(nondiff_argnums)!r}")
    name = getattr(forward, "__name__", repr(forward))

    @functools.wraps(forward)
    def wrapped(*args, **options):
        diff_pos = [i for i in range(len(args)) if i not in nondiff]

        def full_args(diff_args):
            full = list(args)
            for i, a in zip(diff_pos, diff_args):
                full[i] = a
            return full

        def fwd(*diff_args):
            return forward(*full_args(diff_args), **options)

        def bwd(cache, dout):
            grads = backward(dout, cache)
            if not isinstance(grads, tuple):
                grads = (grads,)
            if len(grads) != len(diff_pos):
                raise ValueError(
                    f"{fn}({name}): backward returned {len(grads)} gradient(s) but there are {len(diff_pos)} "
                    f"differentiable arguments (positions {diff_pos}; non-differentiable: {sorted(nondiff)})"
                )
            return grads

        # A fresh custom_vjp per call: the closure binds this call's non-differentiable values.
        f = jax.custom_vjp(lambda *diff_args: fwd(*diff_args)[0])
        f.defvjp(fwd, bwd)
        try:
            return f(*(args[i] for i in diff_pos))
        except jax.errors.UnexpectedTracerError as err:
            # The usual cause: jax.grad/jvp w.r.t. a closed-over argument, whose tracer then
            # "leaks" into the custom_vjp function. Say so, if one of them is indeed traced.
            closed = [args[i] for i in sorted(nondiff) if i < len(args)] + list(options.values())
            if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(closed)):
                raise
            raise TypeError(
                f"{fn}({name}): cannot differentiate with respect to a non-differentiable argument "
                f"(positions {sorted(nondiff)} and keyword options {sorted(options)}); the hand-written "
                f"backward gives gradients only for positions {diff_pos}"
            ) from err

    wrapped.__doc__ = (
        f"``{name}`` with ``{getattr(backward, '__name__', repr(backward))}`` as its jax.custom_vjp rule; "
        f"returns only ``out`` (see :func:`fnet.custom_vjp.manual_vjp`)."
    )
    return wrapped


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

_affine = manual_vjp(layers.affine_forward, layers.affine_backward)
_relu = manual_vjp(layers.relu_forward, layers.relu_backward)
_leaky_relu = manual_vjp(layers.leaky_relu_forward, layers.leaky_relu_backward, nondiff_argnums=(1,))
_sigmoid = manual_vjp(layers.sigmoid_forward, layers.sigmoid_backward)
_tanh = manual_vjp(layers.tanh_forward, layers.tanh_backward)
_layernorm = manual_vjp(layers.layernorm_forward, layers.layernorm_backward)
_dropout = manual_vjp(layers.dropout_forward, layers.dropout_backward, nondiff_argnums=(1, 2))
_softmax = manual_vjp(layers.softmax_forward, layers.softmax_backward)


def _batchnorm_forward(x, gamma, beta, running, **options):
    out, new_running, cache = layers.batchnorm_forward(x, gamma, beta, running, **options)
    return (out, new_running), cache


def _batchnorm_backward(dout, cache):
    # The running statistics are state, not a differentiable output: their cotangent is dropped.
    return layers.batchnorm_backward(dout[0], cache)


_batchnorm = manual_vjp(_batchnorm_forward, _batchnorm_backward, nondiff_argnums=(3,))


def affine(x, W, b):
    """``out = x_flat @ W + b`` (:func:`fnet.layers.affine_forward`) with
    :func:`~fnet.layers.affine_backward` as its VJP.

    Args:
      x: array of shape (N, d1, ..., dk), flattened to (N, D); W: (D, M); b: (M,).

    Returns:
      out: array of shape (N, M). Differentiable in x, W and b.
    """
    return _affine(x, W, b)


def relu(x):
    """``out = max(x, 0)`` with :func:`fnet.layers.relu_backward` as its VJP (derivative 0 at 0).

    Args:
      x: array of any shape.

    Returns:
      out: array of x's shape.
    """
    return _relu(x)


def leaky_relu(x, alpha=layers.LEAKY_RELU_ALPHA):
    """``out = x if x > 0 else alpha * x`` with :func:`fnet.layers.leaky_relu_backward` as its VJP.

    Args:
      x: array of any shape (differentiable).
      alpha: slope for negative inputs, a float or scalar array (closed over, not differentiable).

    Returns:
      out: array of x's shape.
    """
    return _leaky_relu(x, alpha)


def sigmoid(x):
    """``out = 1 / (1 + exp(-x))`` with :func:`fnet.layers.sigmoid_backward` as its VJP.

    Args:
      x: array of any shape.

    Returns:
      out: array of x's shape.
    """
    return _sigmoid(x)


def tanh(x):
    """``out = tanh(x)`` with :func:`fnet.layers.tanh_backward` as its VJP.

    Args:
      x: array of any shape.

    Returns:
      out: array of x's shape.
    """
    return _tanh(x)


def batchnorm(x, gamma, beta, running, **options):
    """Batch norm (:func:`fnet.layers.batchnorm_forward`, train or eval mode) with
    :func:`~fnet.layers.batchnorm_backward` as its VJP::

        out = gamma * (x - mean) / sqrt(var + eps) + beta

    with the batch statistics in train mode and ``running`` in eval mode.

    Args:
      x: array of shape (N, D); gamma, beta: arrays of shape (D,) (differentiable).
      running: pair ``(running_mean, running_var)`` of shape (D,) (state: closed over).
      **options: ``train`` (default True), ``momentum``, ``eps``, as in
        :func:`fnet.layers.batchnorm_forward`.

    Returns:
      ``(out, new_running)``: out of shape (N, D) and the updated running statistics. The
      statistics are state, not a differentiable output: a cotangent given for them is ignored
      (as in ``fnet.mlp``, where they are the loss's auxiliary output).
    """
    return _batchnorm(x, gamma, beta, running, **options)


def layernorm(x, gamma, beta, **options):
    """Layer norm (:func:`fnet.layers.layernorm_forward`) with
    :func:`~fnet.layers.layernorm_backward` as its VJP::

        out = gamma * (x - mean_d x) / sqrt(var_d x + eps) + beta       (per sample)

    Args:
      x: array of shape (N, D); gamma, beta: arrays of shape (D,) (differentiable).
      **options: ``eps``, as in :func:`fnet.layers.layernorm_forward`.

    Returns:
      out: array of shape (N, D).
    """
    return _layernorm(x, gamma, beta, **options)


def dropout(x, rate, key, **options):
    """Inverted dropout (:func:`fnet.layers.dropout_forward`) with
    :func:`~fnet.layers.dropout_backward` as its VJP: ``out = x * mask``, ``dx = dout * mask``,
    ``mask = (u >= rate) / (1 - rate)``.

    Args:
      x: array of any shape (differentiable).
      rate: the DROP probability in [0, 1), a float or scalar array (closed over; may be traced).
      key: a PRNG key (closed over; may be None in eval mode).
      **options: ``train`` (default True; eval mode is the identity).

    Returns:
      out: array of x's shape.
    """
    return _dropout(x, rate, key, **options)


def softmax(x):
    """Stable softmax over the last axis (:func:`fnet.layers.softmax_forward`) with
    :func:`~fnet.layers.softmax_backward` as its VJP: ``dx = out * (dout - sum(dout * out))``.

    Args:
      x: array of shape (..., C).

    Returns:
      out: array of x's shape, rows summing to 1.
    """
    return _softmax(x)


# --------------------------------------------------------------------------------------------
# Losses: the "cache" is the loss's own dscores; the VJP scales it by the incoming cotangent.
# --------------------------------------------------------------------------------------------


def _scale_dscores(dloss, dscores):
    return dloss * dscores


_softmax_cross_entropy = manual_vjp(losses.softmax_cross_entropy, _scale_dscores, nondiff_argnums=(1,))
_mean_squared_error = manual_vjp(losses.mean_squared_error, _scale_dscores, nondiff_argnums=(1,))
_sigmoid_binary_cross_entropy = manual_vjp(losses.sigmoid_binary_cross_entropy, _scale_dscores, nondiff_argnums=(1,))


def softmax_cross_entropy(scores, y):
    """Mean softmax cross-entropy (:func:`fnet.losses.softmax_cross_entropy`) whose VJP is
    ``dscores = dloss * (softmax(scores) - onehot(y)) / N``.

    Args:
      scores: array of shape (N, C) (differentiable).
      y: integer labels of shape (N,) in [0, C) (closed over).

    Returns:
      loss: scalar.
    """
    return _softmax_cross_entropy(scores, y)


def mean_squared_error(scores, y):
    """Half mean squared error ``1/(2N) sum (scores - y)**2`` (:func:`fnet.losses.mean_squared_error`)
    whose VJP is ``dscores = dloss * (scores - y) / N``.

    Args:
      scores: array of shape (N,) or (N, K) (differentiable).
      y: targets of scores' shape (closed over: no gradient for the targets).

    Returns:
      loss: scalar.
    """
    return _mean_squared_error(scores, y)


def sigmoid_binary_cross_entropy(scores, y):
    """Binary cross-entropy on logits (:func:`fnet.losses.sigmoid_binary_cross_entropy`) whose
    VJP is ``dscores = dloss * (sigmoid(scores) - y) / size``.

    Args:
      scores: logits of shape (N,) or (N, K) (differentiable).
      y: targets in [0, 1] of scores' shape (closed over).

    Returns:
      loss: scalar.
    """
    return _sigmoid_binary_cross_entropy(scores, y)


#: The wrapped activations by name, mirroring :data:`fnet.layers.ACTIVATIONS`.
ACTIVATIONS = {"relu": relu, "leaky_relu": leaky_relu, "sigmoid": sigmoid, "tanh": tanh}

#: The wrapped losses by name, mirroring :data:`fnet.losses.LOSSES`.
LOSSES = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mean_squared_error,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
}
