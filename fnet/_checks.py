"""Argument checks shared by fnet's public functions.

Every check raises at call or trace time with a message of the form
``"<function>: <argument> <what is wrong>"`` so that a user sees which call and which
argument failed instead of an XLA shape error deep inside a compiled program. Value checks
(label ranges, NaNs) run only when the values are concrete (eager calls, data loading);
under ``jit`` they are skipped, since the values are unknown at trace time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds actual values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def shape_of(x) -> tuple:
    return tuple(np.shape(x))


def float_array(fn: str, name: str, x, *, ndim: int | None = None, min_ndim: int | None = None):
    """Return ``x`` as a floating jax array, or raise a clear TypeError/ValueError."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = jnp.asarray(x)
        dtype = x.dtype
        # Python floats/lists become the default float type; ints are still rejected below.
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got dtype {dtype}")
    shape = shape_of(x)
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dimensions, got shape {shape}")
    if min_ndim is not None and len(shape) < min_ndim:
        raise ValueError(f"{fn}: {name} must have at least {min_ndim} dimensions, got shape {shape}")
    return x


def same_shape(fn: str, name: str, x, ref_name: str, ref) -> None:
    if shape_of(x) != shape_of(ref):
        raise ValueError(
            f"{fn}: {name} has shape {shape_of(x)} but {ref_name} has shape {shape_of(ref)}; they must match"
        )


def labels(fn: str, name: str, y, n: int, num_classes: int) -> None:
    """Check integer class labels: 1-D, length ``n``, values in [0, num_classes) when concrete."""
    dtype = getattr(y, "dtype", None)
    if dtype is None:  # a list or scalar; never call np.asarray on a tracer
        dtype = np.asarray(y).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{fn}: {name} must be integer class labels, got dtype {dtype}")
    shape = shape_of(y)
    if shape != (n,):
        raise ValueError(f"{fn}: {name} must have shape ({n},) to match {n} samples, got shape {shape}")
    if is_concrete(y) and n > 0:
        y_np = np.asarray(y)
        lo, hi = int(y_np.min()), int(y_np.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{fn}: {name} must lie in [0, {num_classes}) for {num_classes} classes, "
                f"got values in [{lo}, {hi}]"
            )


def rate(fn: str, name: str, p) -> None:
    """Check a probability in [0, 1) when it is concrete."""
    if is_concrete(p):
        p_np = np.asarray(p)
        if p_np.ndim == 0 and not (0.0 <= float(p_np) < 1.0):
            raise ValueError(f"{fn}: {name} must be in [0, 1), got {float(p_np)}")
        if p_np.ndim > 0 and (np.any(p_np < 0) or np.any(p_np >= 1)):
            raise ValueError(f"{fn}: {name} must be in [0, 1), got values in [{p_np.min()}, {p_np.max()}]")


def finite(fn: str, name: str, x) -> None:
    """Check that a concrete array holds no NaN or inf; name the first offending index."""
    if not is_concrete(x):
        return
    x_np = np.asarray(x)
    if not jnp.issubdtype(x_np.dtype, jnp.inexact):
        return  # integer arrays are always finite
    bad = ~np.isfinite(x_np)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{fn}: {name} must be finite, found {int(np.isnan(x_np).sum())} NaN and "
            f"{int(np.isinf(x_np).sum())} inf values (first at index {first}: {x_np[first]})"
        )
