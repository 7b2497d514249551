"""Helpers for the tests of hand-written backward passes (layers, losses, modules): the float64
tolerances they share, random data drawn with NumPy, and the manual backward beside ``jax.vjp``.

The tolerances: in float64 a backward pass and JAX's autodiff of the forward compute the same
sums in other orders, so they agree to rounding (far below 1e-7 at these sizes); central
differences with a step of 1e-6 carry a truncation error of about step**2 and a rounding error of
about eps / step, so 1e-5 relative (entries below :data:`fnet.gradcheck.NUMERICAL_FLOOR` compared
absolutely, as ``fnet gradcheck`` does)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

AUTODIFF_TOL = 1e-7  # float64, manual vs jax.vjp / jax.grad
NUMERICAL_TOL = 1e-5  # float64, manual vs central differences


def rnd(rng, shape, scale=1.0, shift=0.0, dtype=jnp.float64):
    """``scale * N(0, 1) + shift`` of ``shape`` from the NumPy generator ``rng`` (a jax.random
    call would compile once per new shape)."""
    return jnp.asarray(scale * rng.standard_normal(shape) + shift, dtype)


def manual_and_vjp(forward, backward, args, dout):
    """``(out, manual grads, jax.vjp grads)`` of ``forward(*args) -> (out, cache)`` and
    ``backward(dout, cache)``; both gradients as tuples in the order of ``args``."""
    out, cache = forward(*args)
    manual = backward(dout, cache)
    manual = manual if isinstance(manual, tuple) else (manual,)
    _, vjp = jax.vjp(lambda *a: forward(*a)[0], *args)
    return out, manual, vjp(dout)
