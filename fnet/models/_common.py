"""What the ready networks' builders share: integer tuples of plain ints, and whether a rate or a
penalty (possibly a sweep's JAX array) needs its layers, and how a network's name shows it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnet import _checks
from fnet import init as initializers


def ints(fn: str, name: str, values, minimum: int = 1) -> tuple:
    """``values`` as a tuple of Python ints (NumPy integers accepted; see :func:`fnet._checks.integer`),
    so that a config holds plain ints and is JSON-serialisable."""
    return tuple(_checks.integer(fn, f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values))


def present(rate) -> bool:
    """Whether a rate needs its layers (or a penalty its term): a JAX array always (a sweep's
    value, traced or not: every network of a sweep gets one structure), a number when > 0."""
    return isinstance(rate, jax.Array) or rate > 0


def shown(value) -> str:
    """A hyperparameter in a network's name; a traced one (a sweep's) has no value to show."""
    return f"{float(value):g}" if isinstance(value, jax.Array) and _checks.is_concrete(value) else (
        f"{value}" if _checks.is_concrete(value) else "(traced)")


def check_common(fn: str, weight_decay, dtype, init) -> None:
    """The checks every configuration shares: ``weight_decay >= 0`` (when concrete), a floating
    ``dtype`` and a known initializer (None: the builder has no ``init`` option)."""
    if _checks.is_concrete(weight_decay) and not _checks.non_negative(weight_decay):
        raise ValueError(f"{fn}: weight_decay must be >= 0, got {weight_decay}")
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {dtype!r}")
    if init is not None:
        initializers.get(init)
