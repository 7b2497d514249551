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
from jax import dtypes
from jax.tree_util import keystr, tree_flatten_with_path, tree_map, tree_structure, tree_transpose

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
    """State of :func:`momentum` and :func:`nesterov`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    velocity: Any
    """Pytree like params: ``v``, the last update direction INCLUDING the learning rate (cs231n's
    ``config['velocity']``); equals ``-lr * trace`` of optax's ``sgd(momentum=...)``. Starts at 0."""


class AdaGradState(NamedTuple):
    """State of :func:`adagrad`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    sum_of_squares: Any
    """Pytree like params: ``h``, the running sum of squared gradients. Starts at 0."""


class RMSPropState(NamedTuple):
    """State of :func:`rmsprop`."""

    count: jax.Array
    """int32 scalar: number of updates done so far."""
    learning_rate: jax.Array
    """Scalar: the learning rate used by the last update (after init: the one the first update uses)."""
    mean_square: Any
    """Pytree like params: ``h``, the exponential moving average of squared gradients (cs231n's
    ``config['cache']``). Starts at 0."""


class AdamState(NamedTuple):
    """State of :func:`adam` and :func:`adamw`."""

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


def _tree_mismatch(tree, ref, shapes: bool) -> str:
    """Describe how ``tree`` differs from ``ref`` (paths, and leaf shapes if ``shapes``), or ""."""
    shape = jnp.shape if shapes else (lambda _: ())
    if tree_structure(tree) == tree_structure(ref) and all(
        shape(a) == shape(b) for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(ref))
    ):
        return ""
    got = {keystr(p): shape(x) for p, x in tree_flatten_with_path(tree)[0]}
    want = {keystr(p): shape(x) for p, x in tree_flatten_with_path(ref)[0]}
    parts = []
    if missing := [k for k in want if k not in got]:
        parts.append("missing " + ", ".join(missing))
    if extra := [k for k in got if k not in want]:
        parts.append("unexpected " + ", ".join(extra))
    if differ := [f"{k}: {got[k]} vs {want[k]}" for k in got if k in want and got[k] != want[k]]:
        parts.append("shapes differ at " + ", ".join(differ))
    # Same paths and shapes but a different treedef (e.g. a tuple vs a list container).
    return "; ".join(parts) or f"tree structures differ: {tree_structure(tree)} vs {tree_structure(ref)}"


def _check_tree(fn: str, name: str, tree, ref_name: str, ref, *, shapes: bool = True) -> None:
    if msg := _tree_mismatch(tree, ref, shapes):
        raise ValueError(f"{fn}: {name} does not match {ref_name}: {msg}")


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


# ----------------------------------------------------------------------------- the builder

_FLOAT = jnp.float64  # canonicalized to float32 unless jax_enable_x64


def _default_float(x):
    return jnp.asarray(x, dtype=dtypes.canonicalize_dtype(_FLOAT))


def _transformation(fn: str, state_cls, rule: Callable, hparams: dict, *, needs_params=False, mask=None):
    """Lift a per-leaf rule to a :class:`GradientTransformation` over pytrees.

    ``rule(h, g, p, *slots) -> (u, *new_slots)`` gets one leaf of the gradients ``g``, of the
    params ``p`` (None when not needed, not given or masked out), of each state buffer, and ``h``:
    the hyperparameters resolved at ``count`` plus ``t = count + 1``, all cast to the leaf's
    compute dtype. ONE tree_map computes the update and the new buffers of a leaf together from
    the same inputs (no intermediate trees between stages, as optax's chained stages have), which
    leaves XLA the fewest passes over memory to schedule.
    """
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


def momentum(learning_rate=1e-2, momentum=0.9) -> GradientTransformation:
    """SGD with (heavy-ball) momentum, in the source material's form::

        v = mu * v - lr * g
        u = v                                         (p += v)

    with ``v`` starting at 0. Defaults ``learning_rate=1e-2``, ``momentum=0.9`` (cs231n's
    ``sgd_momentum``; Deep Learning from Scratch's ``Momentum``).

    optax (``sgd(lr, momentum=mu)``) and PyTorch (``SGD(momentum=mu)``, dampening 0) keep the rate
    outside the buffer: ``b = mu * b + g; p -= lr * b``. At a constant rate the two forms give
    identical parameters (``v = -lr * b``); with a changing rate they differ, because here past
    steps keep the rate they were taken with. State: :class:`MomentumState`.
    """

    def rule(h, g, p, v):
        v = h["momentum"] * v - h["learning_rate"] * g
        return v, v

    return _transformation("momentum", MomentumState, rule, {"learning_rate": learning_rate, "momentum": momentum})


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
    that is not Nesterov's method and is not what fnet computes. At a constant rate this form
    equals optax's ``sgd(lr, momentum=mu, nesterov=True)`` and PyTorch's ``SGD(nesterov=True)``
    (``b = mu * b + g; p -= lr * (g + mu * b)``), with ``v = -lr * b``. State: :class:`MomentumState`.
    """

    def rule(h, g, p, v):
        mu, lr = h["momentum"], h["learning_rate"]
        v = mu * v - lr * g
        return mu * v - lr * g, v

    return _transformation("nesterov", MomentumState, rule, {"learning_rate": learning_rate, "momentum": momentum})


def adagrad(learning_rate=1e-2, eps=1e-7) -> GradientTransformation:
    """AdaGrad (Deep Learning from Scratch's ``AdaGrad``)::

        h = h + g * g                                  (h starts at 0)
        u = -lr * g / (sqrt(h) + eps)

    Defaults ``learning_rate=1e-2``, ``eps=1e-7`` (the source's). optax's ``adagrad`` starts ``h``
    at 0.1 and puts eps INSIDE the root (``g / sqrt(h + eps)``, eps=1e-7); PyTorch's ``Adagrad``
    starts at 0 with eps outside, eps=1e-10. State: :class:`AdaGradState`.
    """

    def rule(h, g, p, s):
        s = s + g * g
        return -h["learning_rate"] * g / (jnp.sqrt(s) + h["eps"]), s

    return _transformation("adagrad", AdaGradState, rule, {"learning_rate": learning_rate, "eps": eps})


def rmsprop(learning_rate=1e-2, decay=0.99, eps=1e-8) -> GradientTransformation:
    """RMSProp (cs231n's ``rmsprop``)::

        h = d * h + (1 - d) * g * g                    (h starts at 0)
        u = -lr * g / (sqrt(h) + eps)

    Defaults ``learning_rate=1e-2``, ``decay=0.99``, ``eps=1e-8`` (cs231n; Deep Learning from
    Scratch uses eps=1e-7). PyTorch's ``RMSprop`` matches (alpha=0.99, eps outside the root);
    optax's ``rmsprop`` defaults to decay=0.9 and eps INSIDE the root (``eps_in_sqrt=True``).
    State: :class:`RMSPropState`.
    """

    def rule(h, g, p, s):
        d = h["decay"]
        s = d * s + (1 - d) * g * g
        return -h["learning_rate"] * g / (jnp.sqrt(s) + h["eps"]), s

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


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8) -> GradientTransformation:
    """Adam with bias correction (cs231n's ``adam``), the step ``t`` incremented BEFORE use::

        t = count + 1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t);  v_hat = v / (1 - b2**t)
        u = -lr * m_hat / (sqrt(v_hat) + eps)          (eps outside the root)

    Defaults ``learning_rate=1e-3``, ``b1=0.9``, ``b2=0.999``, ``eps=1e-8`` (cs231n, optax and
    PyTorch; Deep Learning from Scratch uses eps=1e-7). Identical to optax's ``adam`` (with
    ``eps_root=0``) and PyTorch's ``Adam``. State: :class:`AdamState`.
    """

    def rule(h, g, p, m, v):
        direction, m, v = _adam_direction(h, g, m, v)
        return -h["learning_rate"] * direction, m, v

    return _transformation("adam", AdamState, rule, {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps})


def adamw(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, mask=None) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter)::

        m, v, m_hat, v_hat as in :func:`adam`
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
    ``max_norm`` may be a float, array or schedule. State: :class:`CountState`.
    """
    fn = "clip_by_global_norm"

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
