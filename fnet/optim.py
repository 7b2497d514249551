"""Optimizers as ``(init, update)`` pairs with explicit state, call-compatible with optax.

Every optimizer is a :class:`GradientTransformation` (a NamedTuple of two pure functions), so it
works in code written for optax (``optax.chain``, ``optax.apply_updates``) and optax's
transformations work in fnet's loops; fnet never imports optax::

    opt = fnet.optim.adam(learning_rate=1e-3)
    state = opt.init(params)                              # params: any pytree of float arrays
    updates, state = opt.update(grads, state, params)     # grads: same tree as params
    params = fnet.optim.apply_updates(params, updates)    # p + u, cast back to p's dtype
    fnet.optim.current_learning_rate(state)               # the rate the last update used

Conventions (shared by all optimizers here):

- ``updates`` are ADDED to the parameters (``p += u``), as in optax; gradient descent is built in,
  so ``u = -lr * ...``.
- Equations follow the source material (cs231n assignment 2 ``optim.py``, "Deep Learning from
  Scratch" ``common/optimizer.py``), which keeps the learning rate INSIDE the momentum buffer
  (``v = mu*v - lr*g``). Each docstring states the equations and where optax/PyTorch differ.
  Where the source material teaches more than one form, the others are selectable:
  ``momentum(form="ema")`` (Andrew Ng's ``v = rho*v + (1-rho)*g; p -= lr*v``),
  ``adagrad``/``rmsprop(eps_in_sqrt=True)`` (``g / sqrt(h + eps)``) and ``adam(form="dlfs")``
  (Deep Learning from Scratch's Adam, which is NOT the standard one with another eps: see
  :func:`adam`). ``docs/source_errata.md`` lists the errors of widely copied versions that fnet
  does not reproduce, each with the test that pins it.
- Hyperparameters (learning rate, momentum, decays, eps, weight decay) may be Python floats, jax
  arrays or schedules (``step -> value``, see :mod:`fnet.schedules`), evaluated at ``count``, the
  number of updates done BEFORE this one (the first update sees ``count = 0``, as in optax). A
  hyperparameter passed as a traced array (an argument of a jitted or vmapped function that
  builds the optimizer) does not recompile when its value changes and can be vmapped::

      @jax.jit
      def step(lr, params, state, grads):        # lr: a jax scalar; one compilation for all values
          updates, state = fnet.optim.adam(lr).update(grads, state, params)
          return fnet.optim.apply_updates(params, updates), state

- State buffers (velocities, moments) are created in each parameter's dtype. The arithmetic of
  each leaf runs in ``promote_types(dtype, float32)`` (bfloat16/float16 leaves are computed in
  float32, then rounded once), and ``updates`` have the gradients' dtypes.
- Each optimizer's state records ``count`` (int32) and ``learning_rate`` (a scalar of the default
  float dtype: the rate used by the most recent update; after ``init``, the rate the first update
  will use); :func:`current_learning_rate` reads it from any fnet state, a :func:`chain` of states,
  or an ``optax.inject_hyperparams`` state.
- Hyperparameters given as Python numbers or concrete arrays are checked when the optimizer is
  built: ``learning_rate >= 0`` (0 is allowed: it freezes the parameters), ``b1``, ``b2``,
  ``decay`` and the EMA form's ``momentum`` in [0, 1), the other momenta in [0, 1] (1 is
  undamped but well defined), ``eps > 0``, ``weight_decay >= 0``, ``max_norm > 0``; a value
  outside raises ``ValueError("adagrad: eps must be > 0, got -1e-07")``, a value that is not a
  real number ``TypeError``. Schedules and traced values are not known at construction and are
  not checked.
- Mismatched trees raise ``ValueError`` naming the offending paths (``jax.tree_util.keystr``).

Parameters in fnet's MLP are a flat cs231n-style dict ``{"W1", "b1", "gamma1", "beta1", ...,
"WL", "bL"}``: weights are the keys starting with "W". :func:`weights_only` is the mask that
selects them, for weight decay on weights only (as the source material does)::

    opt = fnet.optim.chain(fnet.optim.add_weight_decay(1e-4, mask=fnet.optim.weights_only),
                           fnet.optim.momentum(1e-2))
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

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


class CountState(NamedTuple):
    """State of the stateless transformations (:func:`add_weight_decay`, :func:`clip_by_global_norm`)."""

    count: jax.Array
    """int32 scalar: number of updates done so far (the step at which schedules are evaluated)."""


class SGDState(NamedTuple):
    """State of :func:`sgd`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""


class MomentumState(NamedTuple):
    """State of :func:`momentum` (both forms) and :func:`nesterov`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    velocity: Any
    """Pytree like params: ``v``, starting at 0. In the standard form (and :func:`nesterov`), the
    last update direction INCLUDING the learning rate (cs231n's ``config['velocity']``); equals
    ``-lr * trace`` of optax's ``sgd(momentum=...)``. In the EMA form (``momentum(form="ema")``),
    the moving average of the gradients, WITHOUT the rate (optax ``ema(debias=False)``'s ``ema``)."""


class AdaGradState(NamedTuple):
    """State of :func:`adagrad` (either eps placement)."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    sum_of_squares: Any
    """Pytree like params: ``h``, the running sum of squared gradients. Starts at 0."""


class RMSPropState(NamedTuple):
    """State of :func:`rmsprop` (either eps placement)."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    mean_square: Any
    """Pytree like params: ``h``, the exponential moving average of squared gradients (cs231n's
    ``config['cache']``). Starts at 0."""


class AdamState(NamedTuple):
    """State of :func:`adam` (both forms) and :func:`adamw`."""

    count: jax.Array
    """int32 scalar: number of updates done so far (Adam's ``t`` after the update)."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    mu: Any
    """Pytree like params: ``m``, the first moment (EMA of gradients), not bias-corrected. Starts at 0."""
    nu: Any
    """Pytree like params: ``v``, the second moment (EMA of squared gradients), not bias-corrected.
    Starts at 0."""


# ----------------------------------------------------------------------------- tree checks


def _check_tree(fn: str, name: str, tree, ref_name: str, ref, *, shapes: bool = True) -> None:
    _checks.tree(fn, name, tree, ref_name, ref, shapes=shapes)


def _check_state(fn: str, state, state_cls) -> None:
    if not isinstance(state, state_cls):
        raise ValueError(
            f"{fn}: state must be a {state_cls.__name__} (as returned by {fn}(...).init), got "
            f"{type(state).__name__}; was it the state of another optimizer, or of a chain in a different order?"
        )


def _mask_params(fn: str, mask, params):
    """``params`` with the leaves that ``mask`` excludes replaced by None."""
    if mask is None:
        return params
    m = mask(params) if callable(mask) else mask
    _check_tree(fn, "mask", m, "params", params, shapes=False)
    return tree_map(lambda p, keep: p if keep else None, params, m)


# ----------------------------------------------------------------------------- hyperparameter checks

# The valid range of each hyperparameter, by name; a constructor may override one (the EMA
# momentum excludes 1). Rates in [0, 1) exclude 1 where it breaks the method: b1 = 1 or b2 = 1
# divides by 1 - b**t = 0, decay = 1 keeps h at 0, an EMA with rho = 1 never moves.
_BOUNDS = {
    "learning_rate": ">= 0",
    "momentum": "in [0, 1]",
    "decay": "in [0, 1)",
    "b1": "in [0, 1)",
    "b2": "in [0, 1)",
    "eps": "> 0",
    "weight_decay": ">= 0",
    "max_norm": "> 0",
}
# Written so that NaN fails every test.
_IN_BOUNDS = {
    ">= 0": lambda x: x >= 0,
    "> 0": lambda x: x > 0,
    "in [0, 1)": lambda x: (x >= 0) & (x < 1),
    "in [0, 1]": lambda x: (x >= 0) & (x <= 1),
}


def _check_hparams(fn: str, hparams: dict, bounds: dict | None = None) -> None:
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


def _check_choice(fn: str, name: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (of the same type: 1 is not True)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{fn}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# ----------------------------------------------------------------------------- the builder

_FLOAT = jnp.float64  # canonicalized to float32 unless jax_enable_x64


def _default_float(x):
    return jnp.asarray(x, dtype=dtypes.canonicalize_dtype(_FLOAT))


def _transformation(
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
    _check_hparams(fn, hparams, bounds)
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
        _check_state(fn, state, state_cls)
        slots = [getattr(state, name) for name in slot_names]
        for name, slot in zip(slot_names, slots):
            _check_tree(fn, "grads", grads, f"state.{name}", slot)
        if params is not None:
            _check_tree(fn, "grads", grads, "params", params)
        elif needs_params:
            raise ValueError(f"{fn}: update needs params (call update(grads, state, params))")
        count = state.count
        h = {k: value_at(v, count) for k, v in hparams.items()}
        h["t"] = count + 1
        p_tree = _mask_params(fn, mask, params) if needs_params else tree_map(lambda _: None, grads)

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


# ----------------------------------------------------------------------------- optimizers


def sgd(learning_rate=1e-2) -> GradientTransformation:
    """Vanilla stochastic gradient descent::

        u = -lr * g                                   (p += u)

    Default ``learning_rate=1e-2`` (cs231n, Deep Learning from Scratch). optax's ``sgd`` has no
    default rate; PyTorch's ``SGD`` default is 1e-3. State: :class:`SGDState`.
    """
    return _transformation("sgd", SGDState, lambda h, g, p: (-h["learning_rate"] * g,), {"learning_rate": learning_rate})


def _momentum_standard(h, g, p, v):
    v = h["momentum"] * v - h["learning_rate"] * g
    return v, v


def _momentum_ema(h, g, p, v):
    rho = h["momentum"]
    v = rho * v + (1 - rho) * g
    return -h["learning_rate"] * v, v


_MOMENTUM_FORMS = {"standard": _momentum_standard, "ema": _momentum_ema}


def momentum(learning_rate=1e-2, momentum=0.9, form="standard") -> GradientTransformation:
    """SGD with (heavy-ball) momentum, in the source material's form or as a moving average.

    ``form="standard"`` (cs231n's ``sgd_momentum``, Deep Learning from Scratch's ``Momentum``)
    keeps the learning rate INSIDE the velocity::

        v = mu * v - lr * g
        u = v                                         (p += v)

    ``form="ema"`` (Andrew Ng's deeplearning.ai course) keeps an exponential moving average of
    the gradients, ``rho`` being the ``momentum`` argument, and scales it by the rate::

        v = rho * v + (1 - rho) * g
        u = -lr * v                                   (p -= lr * v)

    In both, ``v`` starts at 0 (the EMA is not bias-corrected, as in the course). The two forms
    are one method at different rates: at a constant rate, ``form="ema"`` with ``(lr, rho)``
    takes exactly the steps of ``form="standard"`` with ``(lr * (1 - rho), rho)``, so at the same
    ``lr`` and ``rho = 0.9`` its steps are 10x smaller; with a changing rate they differ, as the
    EMA form applies today's rate to the whole history. The form is a keyword rather than a
    second function so that one name covers the method and ``MomentumState`` serves both.

    Defaults ``learning_rate=1e-2``, ``momentum=0.9`` in both forms. ``momentum`` may be in
    [0, 1] in the standard form (1 is undamped: ``v`` sums all past steps) and in [0, 1) in the
    EMA form (``rho = 1`` would keep ``v`` at 0).

    optax (``sgd(lr, momentum=mu)``) and PyTorch (``SGD(momentum=mu)``, dampening 0) keep the rate
    outside the buffer: ``b = mu * b + g; p -= lr * b``. At a constant rate that equals the
    standard form (``v = -lr * b``); with a changing rate they differ, because here past steps
    keep the rate they were taken with. The EMA form is optax's
    ``chain(ema(rho, debias=False), scale(-lr))``; PyTorch's ``SGD(momentum=rho, dampening=rho)``
    differs from it at the first step only (its buffer starts at ``g``, not ``(1 - rho) * g``).

    Raises ``ValueError`` for an unknown ``form`` or a concrete hyperparameter out of range.
    State: :class:`MomentumState`.
    """
    _check_choice("momentum", "form", form, tuple(_MOMENTUM_FORMS))
    bounds = {"momentum": "in [0, 1)"} if form == "ema" else None
    return _transformation(
        "momentum", MomentumState, _MOMENTUM_FORMS[form], {"learning_rate": learning_rate, "momentum": momentum},
        bounds=bounds,
    )


def nesterov(learning_rate=1e-2, momentum=0.9) -> GradientTransformation:
    """Nesterov momentum in Bengio et al.'s reformulation (cs231n's "Nesterov momentum" notes),
    with ``v_old`` the velocity BEFORE this step::

        u     = mu**2 * v_old - (1 + mu) * lr * g      (p += u)
        v_new = mu * v_old - lr * g

    equivalently ``u = -mu * v_old + (1 + mu) * v_new = mu * v_new - lr * g``; fnet computes the
    last form (``v_new`` first), which needs no copy of ``v_old`` when the state buffers are
    donated (with the old-v form XLA copies ``v`` so that it can overwrite it in place; that made
    the update 2.5x slower on CPU). Defaults ``learning_rate=1e-2``, ``momentum=0.9``.

    A widely copied variant (e.g. Deep Learning from Scratch's ``Nesterov``) updates ``v`` first
    and then uses the NEW ``v`` in the ``mu**2`` term (``u = mu**2 * v_new - (1 + mu) * lr * g``);
    that is not Nesterov's method and is not what fnet computes (see ``docs/source_errata.md``).
    At a constant rate this form equals optax's ``sgd(lr, momentum=mu, nesterov=True)`` and
    PyTorch's ``SGD(nesterov=True)`` (``b = mu * b + g; p -= lr * (g + mu * b)``), with
    ``v = -lr * b``. State: :class:`MomentumState`.
    """

    def rule(h, g, p, v):
        mu, lr = h["momentum"], h["learning_rate"]
        v = mu * v - lr * g
        return mu * v - lr * g, v

    return _transformation("nesterov", MomentumState, rule, {"learning_rate": learning_rate, "momentum": momentum})


def _root(h, eps, eps_in_sqrt):
    """AdaGrad's and RMSProp's denominator: ``sqrt(h) + eps``, or ``sqrt(h + eps)`` with ``eps_in_sqrt``."""
    return jnp.sqrt(h + eps) if eps_in_sqrt else jnp.sqrt(h) + eps


def adagrad(learning_rate=1e-2, eps=1e-7, eps_in_sqrt=False) -> GradientTransformation:
    """AdaGrad, with eps outside the root (Deep Learning from Scratch's ``AdaGrad``) or inside::

        h = h + g * g                                  (h starts at 0)
        u = -lr * g / (sqrt(h) + eps)                  (eps_in_sqrt=False, the default)
        u = -lr * g / sqrt(h + eps)                    (eps_in_sqrt=True)

    Defaults ``learning_rate=1e-2``, ``eps=1e-7`` (the source's, and optax's). Inside the root,
    eps acts like ``sqrt(eps)`` outside it (3.2e-4 for 1e-7): gradients much smaller than that
    take steps much smaller than ``lr``, where the default form gives them nearly ``lr``.

    ``eps_in_sqrt=True`` is optax's ``adagrad(lr, initial_accumulator_value=0.0, eps=eps)``;
    optax's default starts ``h`` at 0.1. PyTorch's ``Adagrad`` starts at 0 with eps outside,
    eps=1e-10. ``eps_in_sqrt`` must be a Python bool (it selects the formula when tracing).
    State: :class:`AdaGradState`.
    """
    _check_choice("adagrad", "eps_in_sqrt", eps_in_sqrt, (False, True))

    def rule(h, g, p, s):
        s = s + g * g
        return -h["learning_rate"] * g / _root(s, h["eps"], eps_in_sqrt), s

    return _transformation("adagrad", AdaGradState, rule, {"learning_rate": learning_rate, "eps": eps})


def rmsprop(learning_rate=1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False) -> GradientTransformation:
    """RMSProp, with eps outside the root (cs231n's ``rmsprop``) or inside::

        h = d * h + (1 - d) * g * g                    (h starts at 0)
        u = -lr * g / (sqrt(h) + eps)                  (eps_in_sqrt=False, the default)
        u = -lr * g / sqrt(h + eps)                    (eps_in_sqrt=True)

    Defaults ``learning_rate=1e-2``, ``decay=0.99``, ``eps=1e-8`` (cs231n; Deep Learning from
    Scratch uses eps=1e-7 outside the root). PyTorch's ``RMSprop`` matches the default form
    (alpha=0.99, eps outside). ``eps_in_sqrt=True`` is optax's ``rmsprop(lr, decay, eps)``
    (optax's default placement; its default decay is 0.9). Inside the root, eps acts like
    ``sqrt(eps)`` outside it (1e-4 for 1e-8). ``eps_in_sqrt`` must be a Python bool.
    State: :class:`RMSPropState`.
    """
    _check_choice("rmsprop", "eps_in_sqrt", eps_in_sqrt, (False, True))

    def rule(h, g, p, s):
        d = h["decay"]
        s = d * s + (1 - d) * g * g
        return -h["learning_rate"] * g / _root(s, h["eps"], eps_in_sqrt), s

    return _transformation(
        "rmsprop", RMSPropState, rule, {"learning_rate": learning_rate, "decay": decay, "eps": eps}
    )


def _adam_direction(h, g, m, v):
    """Adam's new moments and bias-corrected direction ``m_hat / (sqrt(v_hat) + eps)``."""
    b1, b2, t = h["b1"], h["b2"], h["t"]
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return m_hat / (jnp.sqrt(v_hat) + h["eps"]), m, v


def _adam_standard(h, g, p, m, v):
    direction, m, v = _adam_direction(h, g, m, v)
    return -h["learning_rate"] * direction, m, v


def _adam_dlfs(h, g, p, m, v):
    # Line by line as the book's common/optimizer.py writes it (its incremental moment updates
    # equal the standard ones up to rounding).
    b1, b2, t = h["b1"], h["b2"], h["t"]
    lr_t = h["learning_rate"] * jnp.sqrt(1 - b2**t) / (1 - b1**t)
    m = m + (1 - b1) * (g - m)
    v = v + (1 - b2) * (g * g - v)
    return -lr_t * m / (jnp.sqrt(v) + h["eps"]), m, v


# Each form's rule and default eps.
_ADAM_FORMS = {"standard": (_adam_standard, 1e-8), "dlfs": (_adam_dlfs, 1e-7)}


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=None, form="standard") -> GradientTransformation:
    """Adam, in the standard form or Deep Learning from Scratch's; in both the step ``t`` is
    incremented BEFORE use (``t = count + 1``, so the first update has ``t = 1``).

    ``form="standard"``: Kingma & Ba's Algorithm 1, as cs231n's ``adam``::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t);  v_hat = v / (1 - b2**t)
        u = -lr * m_hat / (sqrt(v_hat) + eps)          (eps against the CORRECTED sqrt(v_hat))

    ``form="dlfs"``: Deep Learning from Scratch's ``Adam`` (``common/optimizer.py``), which folds
    both corrections into the rate (the reordering in Section 2 of Kingma & Ba, with its
    "epsilon hat")::

        lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (1 - b1) * (g - m)                     (= b1 * m + (1 - b1) * g)
        v = v + (1 - b2) * (g * g - v)                 (= b2 * v + (1 - b2) * g * g)
        u = -lr_t * m / (sqrt(v) + eps)                (eps against the UNcorrected sqrt(v))

    The moments are the same; the forms differ in what eps is added to. Dividing the dlfs step's
    numerator and denominator by ``sqrt(1 - b2**t)``::

        u_dlfs = -lr * m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2**t))

    so the dlfs form is the standard one with eps replaced by ``eps_t = eps / sqrt(1 - b2**t)``,
    which is LARGER than eps and shrinks to it as ``t`` grows: with ``b2 = 0.999``, 31.6 eps at
    ``t = 1``, 10 eps at ``t = 10``, 3.2 eps at ``t = 100``, 1.26 eps at ``t = 1000``. Where
    gradients are large against eps the two agree (relative difference about
    ``(eps_t - eps) / |g|``); for small gradients the dlfs steps are smaller early on: with
    eps=1e-7 and ``|g|`` near 1e-4, about 3% at ``t = 1`` and 1% at ``t = 10``; near 1e-6, a
    factor of about 4 at ``t = 1``. The two are not one algorithm with different eps defaults.

    Args:
      learning_rate, b1, b2: defaults 1e-3, 0.9, 0.999 (cs231n, Deep Learning from Scratch,
        optax, PyTorch).
      eps: None (default) picks the form's: 1e-8 for "standard" (cs231n, optax, PyTorch), 1e-7
        for "dlfs" (the book's, which it writes inline).
      form: "standard" or "dlfs".

    The standard form is optax's ``adam`` (with ``eps_root=0``) and PyTorch's ``Adam``. Raises
    ``ValueError`` for an unknown ``form`` or a concrete hyperparameter out of range.
    State: :class:`AdamState` (``mu`` and ``nu`` are the uncorrected ``m`` and ``v`` in both forms).
    """
    _check_choice("adam", "form", form, tuple(_ADAM_FORMS))
    rule, default_eps = _ADAM_FORMS[form]
    hparams = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": default_eps if eps is None else eps}
    return _transformation("adam", AdamState, rule, hparams)


def adamw(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, mask=None) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter)::

        m, v, m_hat, v_hat as in :func:`adam`'s standard form
        u = -lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)

    The decay term bypasses the moments (unlike L2 regularization, :func:`add_weight_decay`
    before :func:`adam`) and is scaled by the (scheduled) learning rate, as in optax and PyTorch
    (PyTorch's ``p *= 1 - lr * wd`` is the same update). ``update`` needs ``params``.

    Defaults as :func:`adam` plus ``weight_decay=1e-2`` (PyTorch's default; optax's is 1e-4).

    Args:
      mask: None (decay every leaf), a pytree of Python bools like params, or a callable
        ``params -> such a pytree``; only leaves marked True are decayed. Use
        :func:`weights_only` to decay fnet's "W" weights and not biases or norm parameters.

    State: :class:`AdamState`.
    """

    def rule(h, g, p, m, v):
        direction, m, v = _adam_direction(h, g, m, v)
        if p is not None:  # None: masked out
            direction = direction + h["weight_decay"] * p
        return -h["learning_rate"] * direction, m, v

    hparams = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}
    return _transformation("adamw", AdamState, rule, hparams, needs_params=True, mask=mask)


# ----------------------------------------------------------------------------- transformations


def add_weight_decay(weight_decay, mask=None) -> GradientTransformation:
    """Add the gradient of the L2 penalty ``wd/2 * sum(p**2)`` to the gradients (coupled L2, as
    cs231n adds ``reg * W`` to ``dW``)::

        u = g + wd * p                                 (leaves where mask is True)
        u = g                                          (elsewhere)

    Put it BEFORE an optimizer in :func:`chain`. Same as optax's ``add_decayed_weights``.
    ``update`` needs ``params``.

    Args:
      weight_decay: ``wd``, a float, array or schedule.
      mask: None (every leaf), a pytree of Python bools like params, or a callable
        ``params -> such a pytree``. fnet's MLP names its weights "W1", "W2", ... (a flat
        ``{"W1", "b1", "gamma1", "beta1", ...}`` dict); ``mask=weights_only`` decays only
        those, as the source material does.

    State: :class:`CountState`.
    """

    def rule(h, g, p):
        return (g if p is None else g + h["weight_decay"] * p,)

    return _transformation(
        "add_weight_decay", CountState, rule, {"weight_decay": weight_decay}, needs_params=True, mask=mask
    )


def weights_only(params):
    """Mask for :func:`add_weight_decay` / :func:`adamw`: True for leaves whose (innermost) dict
    key or attribute name starts with "W" (fnet's "W1", "W2", ...), False for biases,
    batch-norm gamma/beta and leaves without a name."""

    def is_weight(path, _):
        names = [k.key if hasattr(k, "key") else getattr(k, "name", None) for k in path]
        names = [n for n in names if isinstance(n, str)]
        return bool(names) and names[-1].startswith("W")

    return jax.tree_util.tree_map_with_path(is_weight, params)


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
    _check_hparams(fn, {"max_norm": max_norm})

    def init(params):
        return CountState(count=jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        _check_state(fn, state, CountState)
        if params is not None:
            _check_tree(fn, "grads", grads, "params", params)
        limit = value_at(max_norm, state.count)
        norm = global_norm(grads)
        scale = jnp.where(norm > limit, limit / norm, 1.0)
        updates = tree_map(lambda g: (g * scale.astype(jnp.promote_types(g.dtype, jnp.float32))).astype(g.dtype), grads)
        return updates, CountState(count=state.count + 1)

    return GradientTransformation(init, update)


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
    _check_tree("apply_updates", "updates", updates, "params", params)
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
