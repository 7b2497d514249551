"""The optimizer interface and its plumbing: :class:`GradientTransformation`, the builder that
lifts a per-leaf rule to pytrees, the checks of trees, states and hyperparameters, :func:`chain`,
:func:`apply_updates` and :func:`current_learning_rate`.

A per-leaf rule (:mod:`fnet.optim.transform`) is a function ``rule(h, g, p, *slots) ->
(u, *new_slots)`` of one leaf of the gradients, of the params and of each state buffer;
:func:`transformation` applies it to every leaf in one ``tree_map`` and keeps the state's
``count`` and ``learning_rate``. The named optimizers (:mod:`fnet.optim.alias`) are such rules with
their hyperparameters and state records.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import dtypes
from jax.tree_util import tree_map, tree_structure, tree_transpose

from fnet import _checks
from fnet.schedules import value_at


class GradientTransformation(NamedTuple):
    """An optimizer: ``init(params) -> state`` and ``update(grads, state, params=None) -> (updates,
    state)``; the same call convention as ``optax.GradientTransformation``."""

    init: Callable
    update: Callable


# ----------------------------------------------------------------------------- checks


def check_state(fn: str, state, state_cls) -> None:
    """Raise ``ValueError`` unless ``state`` is a ``state_cls`` (the state of ``fn``'s optimizer)."""
    if not isinstance(state, state_cls):
        raise ValueError(
            f"{fn}: state must be a {state_cls.__name__} (as returned by {fn}(...).init), got "
            f"{type(state).__name__}; was it the state of another optimizer, or of a chain in a different order?"
        )


def mask_params(fn: str, mask, params):
    """``params`` with the leaves that ``mask`` excludes replaced by None."""
    if mask is None:
        return params
    m = mask(params) if callable(mask) else mask
    _checks.tree(fn, "mask", m, "params", params, shapes=False)
    return tree_map(lambda p, keep: p if keep else None, params, m)


# The valid range of each hyperparameter, by name; a constructor may override one (the EMA
# momentum excludes 1). Rates in [0, 1) exclude 1 where it breaks the method: b1 = 1 or b2 = 1
# divides by 1 - b**t = 0, decay = 1 keeps h at 0, an EMA with rho = 1 never moves. Every range is
# finite: an infinite rate, eps or decay would only show up as NaN parameters after the update.
_BOUNDS = {
    "learning_rate": "a finite number >= 0",
    "momentum": "in [0, 1]",
    "decay": "in [0, 1)",
    "b1": "in [0, 1)",
    "b2": "in [0, 1)",
    "eps": "a finite number > 0",
    "weight_decay": "a finite number >= 0",
    "max_norm": "a finite number > 0",
}
# Written so that NaN fails every test.
_IN_BOUNDS = {
    "a finite number >= 0": lambda x: np.isfinite(x) & (x >= 0),
    "a finite number > 0": lambda x: np.isfinite(x) & (x > 0),
    "in [0, 1)": lambda x: (x >= 0) & (x < 1),
    "in [0, 1]": lambda x: (x >= 0) & (x <= 1),
}


def check_hparams(fn: str, hparams: dict, bounds: dict | None = None) -> None:
    """Raise ``ValueError`` for a concrete hyperparameter outside its range (``_BOUNDS``, updated by
    ``bounds``). Schedules and traced values are skipped: their values are unknown here."""
    bounds = {**_BOUNDS, **(bounds or {})}
    for name, value in hparams.items():
        if name not in bounds or callable(value) or not _checks.is_concrete(value):
            continue
        x = np.asarray(value)
        if not (jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)):
            raise TypeError(f"{fn}: {name} must be a real number or array or a schedule (step -> value), got {value!r}")
        if not np.all(_IN_BOUNDS[bounds[name]](x)):
            got = float(x) if x.ndim == 0 else f"values in [{x.min()}, {x.max()}]"
            raise ValueError(f"{fn}: {name} must be {bounds[name]}, got {got}")


def check_choice(fn: str, name: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (of the same type: 1 is not True)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# ----------------------------------------------------------------------------- the builder


_FLOAT = jnp.float64  # canonicalized to float32 unless jax_enable_x64


def _default_float(x):
    return jnp.asarray(x, dtype=dtypes.canonicalize_dtype(_FLOAT))


def transformation(
    fn: str, state_cls, rule: Callable, hparams: dict, *, needs_params=False, mask=None, bounds=None
):
    """Lift a per-leaf rule to a :class:`GradientTransformation` over pytrees.

    ``rule(h, g, p, *slots) -> (u, *new_slots)`` gets one leaf of the gradients ``g``, of the
    params ``p`` (None when not needed, not given or masked out), of each state buffer, and ``h``:
    the hyperparameters resolved at ``count`` plus ``t = count + 1``, all cast to the leaf's
    compute dtype. ONE tree_map computes the update and the new buffers of a leaf together from
    the same inputs (no intermediate trees between stages, as optax's chained stages have), which
    leaves XLA the fewest passes over memory to schedule.

    The concrete ``hparams`` are checked against ``_BOUNDS`` (updated by ``bounds``) here, at
    construction, so that a bad value fails where it is written.
    """
    check_hparams(fn, hparams, bounds)
    slot_names = [f for f in state_cls._fields if f not in ("count", "learning_rate")]
    records_lr = "learning_rate" in state_cls._fields

    def make_state(count, learning_rate, slots):
        extra = {"learning_rate": _default_float(learning_rate)} if records_lr else {}
        return state_cls(count=count, **extra, **dict(zip(slot_names, slots)))

    def init(params):
        count = jnp.zeros((), jnp.int32)
        # One fresh buffer per slot: shared buffers could not be donated to a jitted step.
        slots = [tree_map(jnp.zeros_like, params) for _ in slot_names]
        return make_state(count, value_at(hparams.get("learning_rate"), count), slots)

    def update(grads, state, params=None):
        check_state(fn, state, state_cls)
        slots = [getattr(state, name) for name in slot_names]
        for name, slot in zip(slot_names, slots):
            _checks.tree(fn, "grads", grads, f"state.{name}", slot)
        if params is not None:
            _checks.tree(fn, "grads", grads, "params", params)
        elif needs_params:
            raise ValueError(f"{fn}: update needs params (call update(grads, state, params))")
        count = state.count
        h = {k: value_at(v, count) for k, v in hparams.items()}
        h["t"] = count + 1
        p_tree = mask_params(fn, mask, params) if needs_params else tree_map(lambda _: None, grads)

        def leaf(g, p, *s):
            cdtype = jnp.promote_types(g.dtype, jnp.float32)
            hc = {k: jnp.asarray(v, cdtype) for k, v in h.items()}
            out = rule(hc, g.astype(cdtype), None if p is None else p.astype(cdtype), *(x.astype(cdtype) for x in s))
            return (out[0].astype(g.dtype), *(new.astype(old.dtype) for new, old in zip(out[1:], s)))

        per_leaf = tree_map(leaf, grads, p_tree, *slots)
        n_out = 1 + len(slot_names)
        updates, *new_slots = tree_transpose(tree_structure(grads), tree_structure((0,) * n_out), per_leaf)
        return updates, make_state(count + 1, h.get("learning_rate"), new_slots)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- combining and applying


def chain(*transforms) -> GradientTransformation:
    """Apply transformations in sequence: the updates of one are the gradients of the next.

    ``init`` returns a plain tuple with one state per transformation (in order); ``update``
    raises ``ValueError`` if the state is not such a tuple of the right length, and prefixes the
    position to any error of a transformation. Works with optax transformations too.
    """

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        if type(state) is not tuple or len(state) != len(transforms):
            got = f"a {type(state).__name__}" + (f" of length {len(state)}" if isinstance(state, tuple) else "")
            raise ValueError(
                f"chain: state must be the tuple of {len(transforms)} states returned by chain(...).init, got {got}"
            )
        new_states = []
        for i, (t, s) in enumerate(zip(transforms, state)):
            try:
                grads, s = t.update(grads, s, params)
            except ValueError as e:
                raise ValueError(f"chain: transformation {i} (state[{i}]): {e}") from e
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def apply_updates(params, updates):
    """``p + u`` for every leaf, cast back to ``p``'s dtype (a float32 param stays float32 even
    if its update is float64). Raises ``ValueError`` naming the paths if the trees differ."""
    _checks.tree("apply_updates", "updates", updates, "params", params)
    return tree_map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def current_learning_rate(opt_state) -> jax.Array:
    """The learning rate recorded in an optimizer state: the rate used by the most recent update
    (after ``init``: the rate the first update will use). Works under jit and vmap (a vmapped
    state gives one rate per batch entry); call ``float(...)`` on it for logging.

    Accepts any fnet optimizer state, a :func:`chain` state (the first transformation that
    records a rate), and ``optax.inject_hyperparams`` states (their ``hyperparams["learning_rate"]``).
    Raises ``ValueError`` when the state records no rate (e.g. a plain optax state).
    """
    found = _find_learning_rate(opt_state)
    if found is None:
        raise ValueError(
            f"current_learning_rate: the optimizer state ({type(opt_state).__name__}) records no learning rate; "
            "for an optax optimizer, build it with optax.inject_hyperparams"
        )
    return found


def _find_learning_rate(state):
    if hasattr(state, "learning_rate"):
        return state.learning_rate
    hyper = getattr(state, "hyperparams", None)
    if isinstance(hyper, dict) and "learning_rate" in hyper:
        return hyper["learning_rate"]
    if isinstance(state, (tuple, list)):
        for s in state:
            if (found := _find_learning_rate(s)) is not None:
                return found
    return None
