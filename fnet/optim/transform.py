"""The building blocks: per-leaf update rules, and the transformations that stand on their own
(:func:`add_weight_decay`, :func:`clip_by_global_norm`).

A rule is ``rule(h, g, p, *slots) -> (u, *new_slots)``: ``g`` is one leaf of the gradients, ``p``
the same leaf of the params (None unless the rule needs them), ``slots`` the same leaf of each
state buffer, and ``h`` the hyperparameters resolved at the step (``h["t"] = count + 1``), all in
the leaf's compute dtype. :func:`fnet.optim.base.transformation` lifts a rule to pytrees; the
named optimizers in :mod:`fnet.optim.alias` pick a rule and document its equations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.tree_util import tree_map

from fnet import _checks, losses, modules
from fnet.optim.base import GradientTransformation, check_hparams, check_state, transformation
from fnet.schedules import value_at


class CountState(NamedTuple):
    """State of the stateless transformations (:func:`add_weight_decay`, :func:`clip_by_global_norm`)."""

    count: jax.Array
    """int32 scalar: number of updates done so far (the step at which schedules are evaluated)."""


# ----------------------------------------------------------------------------- per-leaf rules


def sgd_rule(h, g, p):
    """``u = -lr * g``."""
    return (-h["learning_rate"] * g,)


def momentum_rule(h, g, p, v):
    """Heavy-ball momentum with the rate inside the velocity: ``v = mu * v - lr * g; u = v``."""
    v = h["momentum"] * v - h["learning_rate"] * g
    return v, v


def ema_momentum_rule(h, g, p, v):
    """Momentum as a moving average of the gradients: ``v = rho * v + (1 - rho) * g; u = -lr * v``."""
    rho = h["momentum"]
    v = rho * v + (1 - rho) * g
    return -h["learning_rate"] * v, v


def nesterov_rule(h, g, p, v):
    """Bengio et al.'s Nesterov momentum: ``v = mu * v - lr * g; u = mu * v - lr * g`` (new ``v``)."""
    mu, lr = h["momentum"], h["learning_rate"]
    v = mu * v - lr * g
    return mu * v - lr * g, v


def _root(s, eps, eps_in_sqrt):
    """AdaGrad's and RMSProp's denominator: ``sqrt(s) + eps``, or ``sqrt(s + eps)`` with ``eps_in_sqrt``."""
    return jnp.sqrt(s + eps) if eps_in_sqrt else jnp.sqrt(s) + eps


def adagrad_rule(eps_in_sqrt: bool):
    """The rule ``s = s + g * g; u = -lr * g / root(s)`` (root: see ``_root``; a Python bool picks it)."""

    def rule(h, g, p, s):
        s = s + g * g
        return -h["learning_rate"] * g / _root(s, h["eps"], eps_in_sqrt), s

    return rule


def rmsprop_rule(eps_in_sqrt: bool):
    """The rule ``s = d * s + (1 - d) * g * g; u = -lr * g / root(s)``."""

    def rule(h, g, p, s):
        d = h["decay"]
        s = d * s + (1 - d) * g * g
        return -h["learning_rate"] * g / _root(s, h["eps"], eps_in_sqrt), s

    return rule


def adam_moments(h, g, m, v):
    """Adam's new moments ``m``, ``v`` and bias-corrected direction ``m_hat / (sqrt(v_hat) + eps)``."""
    b1, b2, t = h["b1"], h["b2"], h["t"]
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return m_hat / (jnp.sqrt(v_hat) + h["eps"]), m, v


def adam_rule(h, g, p, m, v):
    """Kingma & Ba's Adam: ``u = -lr * m_hat / (sqrt(v_hat) + eps)``."""
    direction, m, v = adam_moments(h, g, m, v)
    return -h["learning_rate"] * direction, m, v


def adam_dlfs_rule(h, g, p, m, v):
    """Deep Learning from Scratch's Adam: the corrections folded into the rate, eps against ``sqrt(v)``."""
    # Line by line as the book's common/optimizer.py writes it (its incremental moment updates
    # equal the standard ones up to rounding).
    b1, b2, t = h["b1"], h["b2"], h["t"]
    lr_t = h["learning_rate"] * jnp.sqrt(1 - b2**t) / (1 - b1**t)
    m = m + (1 - b1) * (g - m)
    v = v + (1 - b2) * (g * g - v)
    return -lr_t * m / (jnp.sqrt(v) + h["eps"]), m, v


def adamw_rule(h, g, p, m, v):
    """Adam with decoupled decay: ``u = -lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`` (``p`` None:
    masked out, no decay)."""
    direction, m, v = adam_moments(h, g, m, v)
    if p is not None:
        direction = direction + h["weight_decay"] * p
    return -h["learning_rate"] * direction, m, v


def weight_decay_rule(h, g, p):
    """Coupled L2: ``u = g + wd * p``, the gradient of :func:`fnet.losses.l2_weight_decay`'s penalty
    added (``p`` None: masked out, ``u = g``)."""
    return (g if p is None else g + losses.l2_weight_decay_grad(p, h["weight_decay"]),)


# ----------------------------------------------------------------------------- transformations


def add_weight_decay(weight_decay, mask=None) -> GradientTransformation:
    """Add the gradient of the L2 penalty ``wd/2 * sum(p**2)`` to the gradients (coupled L2, as
    cs231n adds ``reg * W`` to ``dW``)::

        u = g + wd * p                                 (leaves where mask is True)
        u = g                                          (elsewhere)

    Put it BEFORE an optimizer in :func:`fnet.optim.chain`. Same as optax's ``add_decayed_weights``;
    the gradient is :func:`fnet.losses.l2_weight_decay_grad`, the one a network's L2 penalty has.
    ``update`` needs ``params``.

    Args:
      weight_decay: ``wd``, a float, array or schedule.
      mask: None (every leaf), a pytree of Python bools like params, or a callable
        ``params -> such a pytree``. fnet's parameters are nested per layer
        (``{"dense1": {"W", "b"}, "batchnorm1": {"gamma", "beta"}, ...}``); ``mask=weights_only``
        decays only the "W" leaves, as the source material does.

    State: :class:`CountState`.
    """
    return transformation(
        "add_weight_decay", CountState, weight_decay_rule, {"weight_decay": weight_decay}, needs_params=True, mask=mask
    )


weights_only = modules.weight_mask
"""Mask for :func:`add_weight_decay` / :func:`fnet.optim.adamw` that selects the weights: True at
leaves whose innermost key starts with "W" (``{"dense1": {"W": True, "b": False}, ...}``), False for
biases, normalization parameters and leaves without a name. It is
:func:`fnet.modules.weight_mask`, fnet's one definition of a weight."""


def global_norm(tree) -> jax.Array:
    """``sqrt(sum over leaves of sum(x**2))``, accumulated in at least float32."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)))) for x in leaves))


def clip_by_global_norm(max_norm) -> GradientTransformation:
    """Rescale the gradients so that their global norm is at most ``max_norm``::

        n = sqrt(sum_leaves sum(g**2))
        u = g * max_norm / n   if n > max_norm   else   g

    Same as optax's ``clip_by_global_norm``; PyTorch's ``clip_grad_norm_`` adds 1e-6 to ``n``.
    ``max_norm`` (> 0) may be a float, array or schedule. State: :class:`CountState`.
    """
    fn = "clip_by_global_norm"
    check_hparams(fn, {"max_norm": max_norm})

    def init(params):
        return CountState(count=jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        check_state(fn, state, CountState)
        if params is not None:
            _checks.tree(fn, "grads", grads, "params", params)
        limit = value_at(max_norm, state.count)
        norm = global_norm(grads)
        scale = jnp.where(norm > limit, limit / norm, 1.0)
        updates = tree_map(lambda g: (g * scale.astype(jnp.promote_types(g.dtype, jnp.float32))).astype(g.dtype), grads)
        return updates, CountState(count=state.count + 1)

    return GradientTransformation(init, update)
