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


def integer(fn: str, name: str, value, *, minimum: int | None = None, maximum: int | None = None,
            what: str = "") -> int:
    """``value`` as a Python int: Python and NumPy integers (anything with ``__index__``) are
    accepted, floats and bools are not; optionally within [minimum, maximum]. ``what`` explains
    the bound in the message, e.g. "(the number of training samples)"."""
    if isinstance(value, bool) or not hasattr(value, "__index__") or np.ndim(value) != 0:
        raise TypeError(f"{fn}: {name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value.__index__())
    low = -np.inf if minimum is None else minimum
    high = np.inf if maximum is None else maximum
    if not low <= value <= high:
        bounds = ("a positive int" if (minimum, maximum) == (1, None) else f"an int >= {minimum}" if maximum is None
                  else f"an int <= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]")
        raise ValueError(f"{fn}: {name} must be {bounds}{' ' + what if what else ''}, got {value}")
    return value


def prefixed(prefix: str, call):
    """Run ``call()``; a ValueError or TypeError it raises is re-raised with ``prefix`` in front
    (e.g. a composition's position "serial[3] (dense2)" or a Net's function name), the cause
    suppressed so the user sees one message with the whole path."""
    try:
        return call()
    except ValueError as e:
        raise ValueError(f"{prefix}: {e}") from None
    except TypeError as e:
        raise TypeError(f"{prefix}: {e}") from None


def is_concrete(x) -> bool:
    """True when ``x`` holds actual values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def non_negative(value) -> bool:
    """True for a concrete finite number >= 0 (Python, NumPy or a 0-d JAX array; not a bool)."""
    return (not isinstance(value, bool) and np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.number)
            and bool(np.isfinite(value)) and value >= 0)


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


def upstream(fn: str, dout, out_shape, name: str = "dout") -> None:
    """Check that the upstream gradient ``dout`` of a backward pass has the forward output's shape
    (broadcasting a wrong shape would give silently wrong gradients); ``name`` is the argument's
    name in messages (e.g. "dnext_c" for a layer with two outputs)."""
    dtype = getattr(dout, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got {type(dout).__name__} of dtype {dtype}")
    if shape_of(dout) != tuple(out_shape):
        raise ValueError(f"{fn}: {name} has shape {shape_of(dout)} but the forward output has shape "
                         f"{tuple(out_shape)}; {name} must have the output's shape")


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


def finite_tree(fn: str, name: str, tree) -> None:
    """:func:`finite` for every leaf of ``tree``, in flatten order; the message names the first
    offending leaf by its path, e.g. "evaluate: best_params['dense1']['W'] must be finite, ..."."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        finite(fn, f"{name}{jax.tree_util.keystr(path)}", leaf)


def tree_mismatch(tree, ref, shapes: bool = True) -> str:
    """Describe how ``tree`` differs from ``ref`` (paths, and leaf shapes if ``shapes``), or ""."""
    shape = jnp.shape if shapes else (lambda _: ())
    if jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(ref) and all(
        shape(a) == shape(b) for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(ref))
    ):
        return ""
    got = {jax.tree_util.keystr(p): shape(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    want = {jax.tree_util.keystr(p): shape(x) for p, x in jax.tree_util.tree_flatten_with_path(ref)[0]}
    parts = []
    if missing := [k for k in want if k not in got]:
        parts.append("missing " + ", ".join(missing))
    if extra := [k for k in got if k not in want]:
        parts.append("unexpected " + ", ".join(extra))
    if differ := [f"{k}: {got[k]} vs {want[k]}" for k in got if k in want and got[k] != want[k]]:
        parts.append("shapes differ at " + ", ".join(differ))
    # Same paths and shapes but a different treedef (e.g. a tuple vs a list container).
    return "; ".join(parts) or f"tree structures differ: {jax.tree_util.tree_structure(tree)} vs {jax.tree_util.tree_structure(ref)}"


def tree(fn: str, name: str, value, ref_name: str, ref, *, shapes: bool = True) -> None:
    """Raise a ValueError naming the paths (and shapes) where the pytree ``value`` differs from ``ref``."""
    if msg := tree_mismatch(value, ref, shapes):
        raise ValueError(f"{fn}: {name} does not match {ref_name}: {msg}")


def token_ids(fn: str, name: str, x, vocab_size: int) -> None:
    """Check integer token ids (any shape): an integer dtype, and values in [0, vocab_size) when
    concrete (a float array of ids is a TypeError: rounding would pick the wrong rows)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:  # a list or scalar; never call np.asarray on a tracer
        dtype = np.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{fn}: {name} must be integer token ids, got dtype {dtype} (shape {shape_of(x)})")
    if is_concrete(x) and np.size(x) > 0:
        x_np = np.asarray(x)
        lo, hi = int(x_np.min()), int(x_np.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{fn}: {name} must lie in [0, {vocab_size}) for a vocabulary of {vocab_size}, "
                             f"got values in [{lo}, {hi}] (shape {shape_of(x)})")
