"""Inverted dropout as a forward/backward pair; ``rate`` is the DROP probability
(conventions: :mod:`fnet.layers`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnet import _checks


def dropout_forward(x, rate, key, *, train=True):
    """Inverted dropout.

    ``rate`` is the probability of DROPPING each unit. In train mode::

        mask = (u >= rate) / (1 - rate),  u ~ Uniform[0, 1) drawn from ``key``
        out = x * mask

    so that ``E[out] = x`` and eval mode (``train=False``) is the identity. ``rate = 0`` keeps
    every unit (the identity, bit for bit).

    Args:
      x: array of any shape.
      rate: drop probability in [0, 1), a float or a scalar array (may be traced, e.g. vmapped).
      key: a PRNG key (ignored, and may be None, in eval mode).
      train: a Python bool.

    Returns:
      out: array of x's shape; cache: the scaled mask (None in eval mode).
    """
    fn = "dropout_forward"
    x = _checks.float_array(fn, "x", x)
    _checks.rate(fn, "rate", rate)
    if not train:
        return x, None
    if key is None:
        raise ValueError(f"{fn}: key is None; train-mode dropout needs a PRNG key")
    u = jax.random.uniform(key, x.shape, dtype=x.dtype)
    mask = jnp.where(u >= rate, 1 / (1 - jnp.asarray(rate, x.dtype)), jnp.zeros((), x.dtype))
    return x * mask, mask


def dropout_backward(dout, cache):
    """Backward pass of :func:`dropout_forward`: ``dx = dout * mask`` (``dout`` in eval mode)."""
    mask = cache
    if mask is None:
        return dout
    _checks.upstream("dropout_backward", dout, mask.shape)
    return dout * mask
