"""Learning-rate schedules: pure functions ``step -> value``.

A schedule maps the optimizer's update count ``step`` (an int, or an int array, possibly traced;
the first update sees ``step = 0``) to a value of the default float dtype (float32, or float64
with ``jax_enable_x64``). All schedules are elementwise in ``step``, jit-able and vmappable, and
their constructor arguments may themselves be jax arrays (e.g. a traced initial rate in a vmapped
sweep). Any fnet optimizer hyperparameter accepts a schedule in place of a float; the optimizer
evaluates it with :func:`value_at` at its update count.

Schedules here (with ``s = step``):

======================  ================================================================
``constant(v)``         ``v``
``step_decay``          ``v * r ** floor(s / steps_per_epoch)``   (cs231n's per-epoch lr_decay)
``exponential``         ``v * r ** (s / transition_steps)``        (``staircase`` floors it)
``inverse_time``        ``v / (1 + r * s / decay_steps)``
``cosine``              ``v * ((1 - alpha) * (1 + cos(pi * min(s, T) / T)) / 2 + alpha)``
``warmup``              ``v0 + (peak - v0) * s / W`` for ``s < W``, then ``schedule(s - W)``
======================  ================================================================
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
from jax import dtypes

from fnet import _checks

Schedule = Callable[[object], object]


def value_at(hparam, step):
    """The value of a hyperparameter at update count ``step``.

    ``hparam`` may be a Python number or an array (returned unchanged, so Python floats stay
    weakly typed and never promote a float32 computation) or a schedule (called as
    ``hparam(step)``). This is the one place where fnet resolves hyperparameters.
    """
    return hparam(step) if callable(hparam) else hparam


def _float_step(step):
    return jnp.asarray(step).astype(dtypes.canonicalize_dtype(jnp.float64))


def _check(fn: str, name: str, steps, **values) -> int:
    """``steps`` as a positive int (NumPy ints accepted) after checking that every concrete value
    is finite: a NaN or infinite rate would only show up as a NaN loss many steps later."""
    for key, value in values.items():
        if not callable(value):
            _checks.finite(fn, key, value)
    return _checks.integer(fn, name, steps, minimum=1)


def constant(value) -> Schedule:
    """``lr(s) = value`` for every step; shape of the output = shape of ``step``."""

    def schedule(step):
        return jnp.full(jnp.shape(step), value, dtype=dtypes.canonicalize_dtype(jnp.float64))

    return schedule


def step_decay(init_value, decay_rate, steps_per_epoch: int) -> Schedule:
    """cs231n's Solver ``lr_decay``: the rate is multiplied by ``decay_rate`` after every epoch::

        lr(s) = init_value * decay_rate ** floor(s / steps_per_epoch)

    so every update of epoch ``e`` (0-based) uses ``init_value * decay_rate**e``.

    Args:
      init_value: rate of the first epoch (float or array).
      decay_rate: factor per epoch, e.g. 0.95 (cs231n's default is 1.0, no decay).
      steps_per_epoch: updates per epoch (positive int), e.g. ``N // batch_size``.

    >>> from fnet import schedules
    >>> lr = schedules.step_decay(0.1, 0.5, steps_per_epoch=10)
    >>> [round(float(lr(step)), 6) for step in (0, 9, 10, 25)]
    [0.1, 0.1, 0.05, 0.025]
    """
    steps_per_epoch = _check("step_decay", "steps_per_epoch", steps_per_epoch, init_value=init_value,
                             decay_rate=decay_rate)

    def schedule(step):
        epoch = jnp.floor(_float_step(step) / steps_per_epoch)
        return init_value * decay_rate**epoch

    return schedule


def exponential(init_value, decay_rate, transition_steps: int, *, staircase: bool = False) -> Schedule:
    """Exponential decay (optax's ``exponential_decay`` without its begin/end options)::

        lr(s) = init_value * decay_rate ** (s / transition_steps)        (staircase=False)
        lr(s) = init_value * decay_rate ** floor(s / transition_steps)   (staircase=True)

    With ``staircase=True`` this equals :func:`step_decay`.
    """
    transition_steps = _check("exponential", "transition_steps", transition_steps, init_value=init_value,
                              decay_rate=decay_rate)

    def schedule(step):
        p = _float_step(step) / transition_steps
        return init_value * decay_rate ** (jnp.floor(p) if staircase else p)

    return schedule


def inverse_time(init_value, decay_rate, decay_steps: int = 1) -> Schedule:
    """Inverse-time decay::

        lr(s) = init_value / (1 + decay_rate * s / decay_steps)
    """
    decay_steps = _check("inverse_time", "decay_steps", decay_steps, init_value=init_value, decay_rate=decay_rate)

    def schedule(step):
        return init_value / (1 + decay_rate * _float_step(step) / decay_steps)

    return schedule


def cosine(init_value, decay_steps: int, alpha=0.0) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps`` (SGDR without
    restarts; optax's ``cosine_decay_schedule``), constant afterwards::

        lr(s) = init_value * ((1 - alpha) * (1 + cos(pi * min(s, T) / T)) / 2 + alpha),  T = decay_steps
    """
    decay_steps = _check("cosine", "decay_steps", decay_steps, init_value=init_value, alpha=alpha)

    def schedule(step):
        frac = jnp.minimum(_float_step(step), decay_steps) / decay_steps
        return init_value * ((1 - alpha) * 0.5 * (1 + jnp.cos(math.pi * frac)) + alpha)

    return schedule


def warmup(schedule, warmup_steps: int, init_value=0.0) -> Schedule:
    """Linear warmup, then any schedule (or constant) shifted by the warmup::

        lr(s) = init_value + (peak - init_value) * s / W    for s < W,   peak = value_at(schedule, 0)
        lr(s) = value_at(schedule, s - W)                   for s >= W,  W = warmup_steps

    The rate is continuous at ``s = W``. ``warmup_steps = 0`` returns ``schedule`` unchanged
    (a float becomes :func:`constant`).

    >>> from fnet import schedules
    >>> lr = schedules.warmup(schedules.cosine(1.0, decay_steps=4), warmup_steps=2)
    >>> [round(float(lr(step)), 6) for step in range(8)]
    [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    """
    _checks.finite("warmup", "init_value", init_value)
    if not callable(schedule):
        _checks.finite("warmup", "schedule", schedule)
    warmup_steps = _checks.integer("warmup", "warmup_steps", warmup_steps, minimum=0)
    after = schedule if callable(schedule) else constant(schedule)
    if warmup_steps == 0:
        return after

    def warm(step):
        s = _float_step(step)
        peak = after(jnp.zeros_like(step))
        ramp = init_value + (peak - init_value) * s / warmup_steps
        # The `after` branch is evaluated at s - W < 0 during warmup but masked out by the where.
        return jnp.where(s < warmup_steps, ramp, after(jnp.asarray(step) - warmup_steps))

    return warm
