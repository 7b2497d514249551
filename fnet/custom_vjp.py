"""The hand-written backward passes as ``jax.custom_vjp`` rules, so that ``jax.grad`` runs them.

:func:`manual_vjp` turns an fnet forward/backward pair (``out, cache = forward(*args)``,
``grads = backward(dout, cache)``) into a function ``f(*args) -> out`` whose VJP is ``backward``.
Any JAX program written with such functions (``jax.grad``, ``jax.vjp``, under ``jit`` or
``vmap``) then differentiates through fnet's hand-derived rules instead of JAX's autodiff of the
forward. :func:`module_vjp` is the one bridge for modules, leaf or composed, and :data:`LOSSES`
wraps the losses of :mod:`fnet.losses`. ``jax.grad`` then gives exactly the hand-written chain:

>>> import jax, jax.numpy as jnp
>>> from fnet import combinators, custom_vjp, losses, modules
>>> net = combinators.serial(modules.dense(8), modules.relu(), modules.dense(3))
>>> params, state, _ = net.init(jax.random.PRNGKey(0), (None, 5))
>>> x, y = jax.random.normal(jax.random.PRNGKey(1), (4, 5)), jnp.array([0, 2, 1, 2])
>>> f = custom_vjp.module_vjp(net)
>>> def loss(params, x, y):
...     return custom_vjp.LOSSES["softmax_cross_entropy"](f(params, x)[0], y)
>>> grads = jax.grad(loss)(params, x, y)     # runs serial's derived backward and the loss's dscores
>>> scores, _, cache = net.forward(params, state, x, train=True)
>>> _, manual = net.backward(params, cache, losses.softmax_cross_entropy(scores, y)[1])
>>> jax.tree.all(jax.tree.map(jnp.array_equal, grads, manual))
True

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
from collections.abc import Iterable
from typing import Callable

import jax

from fnet import _checks, losses
from fnet.modules import Module


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
      nondiff_argnums: an index, or a sequence of indices, of positional arguments that are not
        differentiated: ints >= 0, Python or NumPy.

    Returns:
      ``f(*args, **options) -> out``; jit-able and vmappable like ``forward``.

    Raises:
      TypeError: if ``forward``/``backward`` are not callable or ``nondiff_argnums`` holds
        something other than ints (a bool, a float).
      ValueError: if ``nondiff_argnums`` holds a negative index.
    """
    fn = "manual_vjp"
    for name, value in (("forward", forward), ("backward", backward)):
        if not callable(value):
            raise TypeError(f"{fn}: {name} must be callable, got {type(value).__name__}")
    if not isinstance(nondiff_argnums, Iterable):
        nondiff_argnums = (nondiff_argnums,)
    nondiff = frozenset(_checks.integer(fn, "nondiff_argnums", i, minimum=0) for i in nondiff_argnums)
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
# Modules: one bridge for every module, leaf or composed


def module_vjp(module) -> Callable:
    """A module as one function whose ``jax.grad``/``jax.vjp`` runs its hand-written backward::

        f = module_vjp(module)
        y, new_state = f(params, x, state=state, train=True, key=key)
        jax.grad(lambda p, x: loss(f(p, x, state=state)[0]), argnums=(0, 1))   # runs module.backward

    The VJP with respect to ``params`` and ``x`` is ``module.backward(params, cache, dy)``; for a
    composition it is the chain the combinators derive, so ``jax.grad`` of any program written
    with such functions differentiates through fnet's rules instead of autodiff of the forward.
    ``state``, ``key`` and ``train`` are closed over (not differentiable; a cotangent given for
    ``new_state`` is ignored, the state being an auxiliary output).

    Args:
      module: a :class:`fnet.modules.Module`.

    Returns:
      ``f(params, x, *, state=None, train=True, key=None) -> (y, new_state)``; jit-able and
      vmappable.
    """
    if not isinstance(module, Module):
        raise TypeError(f"module_vjp: module must be a fnet.modules.Module, got {type(module).__name__}")

    def forward(params, x, state, key, *, train):
        y, new_state, cache = module.forward(params, state, x, train=train, key=key)
        return (y, new_state), (params, cache)

    def backward(dout, residuals):
        params, cache = residuals
        dx, dparams = module.backward(params, cache, dout[0])
        return dparams, dx

    forward.__name__ = f"{module.name}.forward"
    backward.__name__ = f"{module.name}.backward"
    f = manual_vjp(forward, backward, nondiff_argnums=(2, 3))

    def apply(params, x, *, state=None, train=True, key=None):
        return f(params, x, {} if state is None else state, key, train=train)

    return apply


# --------------------------------------------------------------------------------------------
# Losses: the "cache" is the loss's own dscores; the VJP scales it by the incoming cotangent.


def _scale_dscores(dloss, dscores):
    return dloss * dscores


#: The losses of :data:`fnet.losses.LOSSES`, by the same names, as functions ``(scores, y) ->
#: loss`` whose VJP with respect to ``scores`` is the hand-derived ``dloss * dscores`` (``y`` is
#: closed over: no gradient for targets).
LOSSES = {name: manual_vjp(loss, _scale_dscores, nondiff_argnums=(1,)) for name, loss in losses.LOSSES.items()}
