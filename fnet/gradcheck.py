"""Gradient checking: central differences, relative errors, and the three-way check.

The three-way check compares, for every leaf module (layer), loss, combinator and network:

1. the MANUAL gradient (fnet's hand-written backward functions),
2. JAX's AUTODIFF gradient (``jax.grad`` of the same forward code),
3. float64 central-difference NUMERICAL gradients,

and reports the three pairwise relative errors per leaf (the input and every parameter).
:func:`check_module` checks any module, a user's own included; ``fnet gradcheck`` prints the
report of :func:`check_layers`, :func:`check_combinators` and :func:`check_networks` and exits
non-zero when any error exceeds its threshold.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnet import _checks, combinators, layers, losses, models, modules, nets, xla_options
from fnet.modules import Module, recurrent

#: Thresholds of the float64 check: manual vs autodiff, and anything vs finite differences.
AUTODIFF_TOL = 1e-7
NUMERICAL_TOL = 1e-5
#: Denominator floor used against finite differences. Their absolute error in float64 is about
#: eps * |f| / h ~ 1e-11..1e-10, so a gradient that is exactly 0 (a bias feeding batch norm) would
#: show a "relative" error of 1e-2 under the usual 1e-8 floor; with this floor, gradients below
#: 1e-5 are in effect compared absolutely (|a - b| < NUMERICAL_TOL * 1e-5 = 1e-10).
NUMERICAL_FLOOR = 1e-5
#: The floors also scale with the check's largest gradient S (its largest autodiff element):
#: elements below AUTODIFF_SCALE_FLOOR * S (NUMERICAL_SCALE_FLOOR * S against finite
#: differences) are compared absolutely against that. A gradient that is exactly 0 by structure
#: (any per-feature shift that a later batch norm removes) carries the rounding noise of the whole
#: computation: ~1e-15 * S in a deep composition, but each batch norm's backward multiplies it by
#: its 1 / sqrt(var + eps), up to 1 / sqrt(1e-5) ~ 316 for a feature of small batch variance (a
#: layer norm's output over a batch of 4), ~1e-13 * S seen. Elements above 1e-4 * S are still
#: compared relatively (1e-7), the others to 1e-11 * S absolutely.
AUTODIFF_SCALE_FLOOR = 1e-4
NUMERICAL_SCALE_FLOOR = 1e-4


def numerical_gradient(f: Callable, x, h: float = 1e-5, *, batch_size: int = 4096):
    """Central-difference gradient of a scalar function over every element of ``x``::

        df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)

    Args:
      f: JAX-traceable function of ``x`` returning a scalar.
      x: an array or a pytree of arrays (use float64 for meaningful results).
      h: step (default 1e-5, good for float64; use ~1e-3 in float32).
      batch_size: number of elements perturbed at once (a positive int, Python or NumPy): the
        2 * batch_size evaluations of ``f`` run as one vmapped batch (``jax.lax.map`` over
        batches when there are more elements). Works eagerly and under ``jit`` (where the whole
        difference quotient is one program).

    Returns:
      A pytree like ``x`` with the numerical gradient.
    """
    batch_size = _checks.integer("numerical_gradient", "batch_size", batch_size, minimum=1)
    flat, unravel = ravel_pytree(x)
    if flat.size == 0:
        return x

    def partial_derivative(i):
        e = jnp.zeros_like(flat).at[i].set(h)
        # f(x + h e_i) and f(x - h e_i) as one vmapped pair: one copy of f in the program.
        up, down = jax.vmap(lambda step: f(unravel(flat + step)))(jnp.stack([e, -e]))
        return (up - down) / (2 * h)

    grad = jax.lax.map(partial_derivative, jnp.arange(flat.size), batch_size=min(batch_size, flat.size))
    return unravel(grad.astype(flat.dtype))


def rel_error(a, b, *, floor: float = 1e-8) -> float:
    """Largest elementwise relative error between two arrays or pytrees (cs231n's ``rel_error``)::

        max |a - b| / max(floor, |a| + |b|)        (floor = 1e-8 by default)

    A NaN or infinite element (in either) gives ``inf``: it never passes a threshold.

    Raises:
      ValueError: if the trees or shapes differ.

    >>> import numpy as np
    >>> from fnet import gradcheck
    >>> print(f"{gradcheck.rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.000002])):.1e}")  # 2e-6 / 4
    5.0e-07
    >>> gradcheck.rel_error(np.array([1.0]), np.array([np.nan]))
    inf
    """
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        raise ValueError(f"rel_error: the two trees differ: {ta} vs {tb}")
    worst = 0.0
    for x, y in zip(la, lb):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"rel_error: shapes differ: {x.shape} vs {y.shape}")
        if x.size:
            with np.errstate(invalid="ignore"):
                err = np.abs(x - y) / np.maximum(floor, np.abs(x) + np.abs(y))
            # A NaN or an infinity is never "close": it counts as an infinite error.
            worst = max(worst, float(np.max(np.where(np.isnan(err), np.inf, err))))
    return worst


class LeafErrors(NamedTuple):
    """Relative errors of one parameter leaf: manual vs autodiff, manual vs numerical,
    autodiff vs numerical."""

    manual_autodiff: float
    manual_numerical: float
    autodiff_numerical: float


class CheckResult(NamedTuple):
    """One row of a gradient-check report.

    Fields:
      name: the layer, loss or network configuration checked.
      leaves: ``{leaf name (e.g. "x", "params.dense1.W"): LeafErrors}``.
    """

    name: str
    leaves: dict

    @property
    def worst(self) -> LeafErrors:
        """The largest error of each kind over the leaves."""
        return LeafErrors(*(max(e[k] for e in self.leaves.values()) for k in range(3)))

    @property
    def passed(self) -> bool:
        w = self.worst
        return w.manual_autodiff < AUTODIFF_TOL and max(w.manual_numerical, w.autodiff_numerical) < NUMERICAL_TOL


def leaf_name(path) -> str:
    """A readable name for a pytree path: ``params.dense1.W``, ``x.0`` (tuple inputs)."""
    parts = []
    for k in path:
        parts.append(str(k.key if hasattr(k, "key") else k.idx if hasattr(k, "idx") else getattr(k, "name", k)))
    return ".".join(parts) or "value"


def three_way(name: str, scalar_fn: Callable, inputs, manual, *, h: float = 1e-5) -> CheckResult:
    """Compare a manual gradient with ``jax.grad`` and central differences.

    Args:
      name: row name.
      scalar_fn: ``inputs -> scalar``, the function whose gradient ``manual`` claims to be.
      inputs: a pytree of float64 arrays to differentiate with respect to.
      manual: the hand-written gradient, a pytree like ``inputs`` (or a function ``inputs ->
        gradient``, which is then compiled into the same program as the references).
      h: the finite-difference step.

    Raises:
      ValueError: the manual gradient does not have the structure and shapes of ``inputs`` (e.g.
        a backward that returns the wrong shapes), naming the paths.
    """
    manual_fn = manual if callable(manual) else (lambda _: manual)
    return _compiled_check(name, lambda q, ctx: scalar_fn(q), inputs, lambda q, ctx: manual_fn(q), (), h)


#: Scale of the parameters of a check's generic point (see :func:`check_module`).
PARAM_SCALE = 0.5


def _compiled_check(name: str, scalar_fn: Callable, inputs, manual_fn: Callable, context, h: float) -> CheckResult:
    """Run a check as ONE compiled program: the manual gradient ``manual_fn(inputs, context)``,
    ``jax.grad`` of ``scalar_fn(inputs, context)`` and its central differences (one loop over
    the perturbed inputs, which compiles faster than a vmapped batch of them) compile together,
    once, with :data:`fnet.xla_options.CHECK_COMPILER_OPTIONS` on a CPU. ``inputs`` and
    ``context`` are concrete: the callers draw them with NumPy, since every random draw in the
    program would add to what a check costs, its compilation."""

    def program(inputs, context):
        scalar = partial(lambda ctx, q: scalar_fn(q, ctx), context)
        return manual_fn(inputs, context), jax.grad(scalar)(inputs), numerical_gradient(scalar, inputs, h, batch_size=1)

    with jax.enable_x64(True):
        lowered = jax.jit(program).lower(inputs, context)
        inputs_spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), inputs)
        _checks.tree("three_way", f"the manual gradient of {name}", lowered.out_info[0], "the inputs", inputs_spec)
        got, auto, num = lowered.compile(xla_options.check_compiler_options())(inputs, context)
    scale = max((float(np.max(np.abs(a))) for a in jax.tree_util.tree_leaves(auto) if np.size(a)), default=0.0)
    floor = max(1e-8, AUTODIFF_SCALE_FLOOR * scale)
    num_floor = max(NUMERICAL_FLOOR, NUMERICAL_SCALE_FLOOR * scale)
    leaves = {}
    for (path, m), a, n in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree_util.tree_leaves(auto),
                               jax.tree_util.tree_leaves(num)):
        leaves[leaf_name(path)] = LeafErrors(rel_error(m, a, floor=floor), rel_error(m, n, floor=num_floor),
                                             rel_error(a, n, floor=num_floor))
    return CheckResult(name, leaves)


def _normal_like(rng: np.random.Generator, spec, scale: float = 1.0):
    """``scale`` times standard normal float64 NumPy arrays shaped like the float leaves of the
    pytree ``spec`` (arrays or shape/dtype structs); other leaves are kept as they are."""

    def draw(a):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            return a
        return scale * rng.standard_normal(a.shape)

    return jax.tree_util.tree_map(draw, spec)


def _generic_point(rng: np.random.Generator, init: Callable, key):
    """The variables ``(params, state)`` of a check: every parameter a NumPy draw of
    ``PARAM_SCALE`` * N(0, 1), the state as ``init(key)`` makes it (running statistics must stay
    valid: a variance below zero would give NaNs). Random parameters, not the initial ones: a bias
    starting at exactly 0 puts units at ReLU's kink, where central differences are wrong, and
    drawing the initial values would compile ``init``'s random draws (the state alone compiles to
    constants)."""
    params_spec, state_spec = jax.eval_shape(init, key)
    state = jax.jit(lambda k: init(k)[1])(key) if jax.tree_util.tree_leaves(state_spec) else state_spec
    return _normal_like(rng, params_spec, PARAM_SCALE), jax.tree_util.tree_map(np.asarray, state)


def check_module(module: Module, input_shape, *, seed: int = 0, train: bool = True, name: str | None = None,
                 x=None, params=None, h: float = 1e-5) -> CheckResult:
    """Three-way check of a module's hand-written ``backward`` (a user's own module too).

    The scalar ``sum(forward(params, state, x)[0] * dy)`` for a random ``dy`` is differentiated
    with respect to ``x`` and every parameter: ``module.backward(params, cache, dy)`` against
    ``jax.grad`` of the forward and against central differences, in float64, with one fixed
    dropout key, at a generic point: by default every parameter a standard normal draw times
    :data:`PARAM_SCALE` (0.5) and the state as ``module.init`` makes it. Print the result with
    :func:`format_report`.

    Args:
      module: a :class:`~fnet.modules.Module`.
      input_shape: a concrete input shape with the batch axis, e.g. ``(4, 3)`` or ``(2, 1, 6, 6)``
        (a tuple of shapes for a module that takes branches).
      train: check the train-mode (True) or eval-mode pass.
      x: the input to use (default: standard normal values). Integer leaves (token ids) are held
        fixed and not checked; ``backward`` must return None in their place.
      params: the parameters to check at (default: random ones, see above); pass them for a module
        whose parameters must lie in a domain, e.g. a positive scale.
      h: the finite-difference step.

    Returns:
      A :class:`CheckResult` with leaves "x..." and "params...".

    Raises:
      ValueError: ``backward`` returned a ``dx``/``dparams`` of the wrong structure or shapes.

    >>> from fnet import gradcheck, modules
    >>> result = gradcheck.check_module(modules.dense(3), (4, 5))
    >>> result.passed, list(result.leaves)
    (True, ['params.W', 'params.b', 'x'])
    """
    rng = np.random.default_rng(_checks.integer("check_module", "seed", seed, minimum=0))
    key = _check_key(seed)
    with jax.enable_x64(True):
        random_params, state = _generic_point(rng, lambda k: module.init(k, input_shape)[:2], key)
        params = random_params if params is None else _float64(params)
        if x is None:
            single = combinators.is_shape(input_shape)
            shapes = [input_shape] if single else list(input_shape)
            x = _normal_like(rng, [jax.ShapeDtypeStruct(s, jnp.float64) for s in shapes])
            x = x[0] if single else tuple(x)
        x = _float64(x)
        out = jax.eval_shape(lambda p, x: module.forward(p, state, x, train=train, key=key)[0], params, x)
        # Integer leaves of x (token ids) have no gradient: they stay fixed in the context, and
        # backward returns None in their place, so its dx leaves are x's float leaves, in order.
        leaves, treedef = jax.tree_util.tree_flatten(x)
        fixed = [not jnp.issubdtype(jnp.result_type(a), jnp.floating) for a in leaves]
        diff_x = tuple(a for a, f in zip(leaves, fixed) if not f) if any(fixed) else x
        context = {"state": state, "dy": _normal_like(rng, out), "key": key,
                   "ids": tuple(a for a, f in zip(leaves, fixed) if f)}

        def module_input(inputs, ctx):
            if not any(fixed):
                return inputs["x"]
            floats, ids = iter(inputs["x"]), iter(ctx["ids"])
            return jax.tree_util.tree_unflatten(treedef, [next(ids) if f else next(floats) for f in fixed])

        def forward(inputs, ctx):
            return module.forward(inputs["params"], ctx["state"], module_input(inputs, ctx), train=train,
                                  key=ctx["key"])

        def scalar(inputs, ctx):
            leaves = zip(jax.tree_util.tree_leaves(forward(inputs, ctx)[0]), jax.tree_util.tree_leaves(ctx["dy"]))
            return sum(jnp.sum(a * b) for a, b in leaves)

        def manual(inputs, ctx):
            dx, dparams = module.backward(inputs["params"], forward(inputs, ctx)[2], ctx["dy"])
            return {"x": tuple(jax.tree_util.tree_leaves(dx)) if any(fixed) else dx, "params": dparams}

        return _compiled_check(name or module.name, scalar, {"x": diff_x, "params": params}, manual, context, h)


def check_network(net: nets.Net, x, y, *, seed: int = 0, name: str | None = None) -> CheckResult:
    """Three-way check of ``net.loss_and_grad`` against ``jax.grad(net.loss)`` and finite
    differences, per parameter leaf, with one fixed dropout key, at a generic point (random
    parameters and the initial state, as in :func:`check_module`).

    Args:
      net: a float64 network (``dtype="float64"``).
      x: float64 inputs of shape (N, *net.input_shape) (token ids for a network of token
        input: they are held fixed); y: targets for the net's loss.
    """
    key = _check_key(_checks.integer("check_network", "seed", seed, minimum=0))
    with jax.enable_x64(True):
        params, state = _generic_point(np.random.default_rng(seed), lambda k: tuple(net.init(k)), key)
        context = {"x": x, "y": y, "state": state, "key": key}

        def scalar(p, ctx):
            return net.loss(p, ctx["x"], ctx["y"], state=ctx["state"], key=ctx["key"])[0]

        def manual(p, ctx):
            return net.loss_and_grad(p, ctx["x"], ctx["y"], state=ctx["state"], key=ctx["key"])[1]

        return _compiled_check(name or net.name, scalar, params, manual, context, 1e-5)


def _check_key(seed: int):
    """The dropout key of a check: XLA's RngBitGenerator ("unsafe_rbg"), one HLO op, where the
    default threefry unrolls into code that dominates a small check's compilation (statistical
    quality does not matter for a gradient check)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def _float64(tree):
    def cast(a):
        return np.asarray(a, np.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    return jax.tree_util.tree_map(cast, tree)


# --------------------------------------------------------------------------------------------
# What `fnet gradcheck` checks: every leaf module and loss, every combinator, networks.


def _run(checks: list[Callable[[], CheckResult]]) -> list[CheckResult]:
    """Run checks two at a time, keeping their order: while one traces its program (Python,
    holding the GIL) the other compiles (XLA, which releases it), so that the cores are busy."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda check: check(), checks))


def _away_from_zero(rng: np.random.Generator, shape):
    """Standard normal values kept away from ReLU's kink, so that finite differences are exact."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 1e-2, 0.5, x)


def check_layers(seed: int = 0) -> list[CheckResult]:
    """Three-way check of every leaf module (each wraps one :mod:`fnet.layers` pair; the
    convolutional ones on tiny images, the recurrent ones on tiny sequences), the recurrent
    steps, and every loss, in float64 on small random inputs."""
    rng = np.random.default_rng(_checks.integer("check_layers", "seed", seed, minimum=0))
    normal = rng.standard_normal
    n, d = 6, 5
    checks = [
        partial(check_module, modules.dense(d), (n, 2, 3), seed=seed, name="dense (affine)"),
        partial(check_module, modules.relu(), (n, d), x=_away_from_zero(rng, (n, d)), seed=seed),
        partial(check_module, modules.leaky_relu(0.1), (n, d), x=_away_from_zero(rng, (n, d)), seed=seed),
        partial(check_module, modules.sigmoid(), (n, d), seed=seed),
        partial(check_module, modules.tanh(), (n, d), seed=seed),
        partial(check_module, modules.identity(), (n, d), seed=seed),
        partial(check_module, modules.softmax(), (n, d), seed=seed),
        partial(check_module, modules.batchnorm(), (n, d), x=3 * normal((n, d)) + 2, seed=seed,
                name="batchnorm (train)"),
        partial(check_module, modules.batchnorm(), (n, d), train=False, seed=seed, name="batchnorm (eval)"),
        partial(check_module, modules.layernorm(), (n, d), x=3 * normal((n, d)) - 1, seed=seed),
        partial(check_module, modules.dropout(0.4), (n, d), seed=seed),
        partial(check_module, modules.flatten(), (n, 2, 3), seed=seed),
    ]
    img = (2, 2, 5, 5)  # tiny images (N, C, H, W): finite differences perturb every pixel
    checks += [
        partial(check_module, modules.conv2d(3, 3, pad=1), img, seed=seed, name="conv2d (3x3, pad 1)"),
        partial(check_module, modules.conv2d(2, (2, 3), stride=2), img, seed=seed,
                name="conv2d (2x3, stride 2: floor rule)"),
        partial(check_module, modules.max_pool(2), img, seed=seed, name="max_pool (2x2, stride 2)"),
        partial(check_module, modules.max_pool(3, stride=1), img, seed=seed,
                name="max_pool (3x3, stride 1: overlapping)"),
        partial(check_module, modules.avg_pool(2, stride=1), img, seed=seed, name="avg_pool (2x2, stride 1)"),
        partial(check_module, modules.global_avg_pool(), img, seed=seed),
        partial(check_module, modules.batchnorm(), img, x=3 * normal(img) + 1, seed=seed,
                name="batchnorm (images, train)"),
        partial(check_module, modules.groupnorm(2), (2, 4, 3, 3), seed=seed, name="groupnorm (2 groups)"),
    ]
    checks += _recurrent_checks(rng, seed)
    checks += _attention_checks(seed)
    checks += [
        partial(_loss_check, "softmax_cross_entropy", losses.softmax_cross_entropy, normal((n, d)),
                rng.integers(0, d, n)),
        partial(_loss_check, "mean_squared_error", losses.mean_squared_error, normal((n, 3)), normal((n, 3))),
        partial(_loss_check, "sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy, normal((n, 2)),
                (rng.uniform(size=(n, 2)) > 0.5).astype(np.float64)),
        partial(three_way, "l2_weight_decay", lambda p: losses.l2_weight_decay(p, 0.3)[0],
                {"W1": normal((4, 3)), "W2": normal((3, 2))}, lambda p: losses.l2_weight_decay(p, 0.3)[1]),
    ]
    return _run(checks)


def _attention_checks(seed: int) -> list[Callable[[], CheckResult]]:
    """The transformer modules on tiny sequences (N = 2, T = 4, E = 6): causal self-attention,
    self-attention with dropout on the weights, cross-attention, learned positions, GELU in both
    forms, and layer norm over the last axis of (N, T, E)."""
    seq = (2, 4, 6)
    return [
        partial(check_module, modules.self_attention(2), seq, seed=seed, name="self_attention (2 heads, causal)"),
        partial(check_module, modules.self_attention(3, causal=False, dropout=0.3), seq, seed=seed,
                name="self_attention (3 heads, dropout)"),
        partial(check_module, modules.cross_attention(2), (seq, (2, 5, 6)), seed=seed, name="cross_attention"),
        partial(check_module, modules.position_embedding(5), seq, seed=seed),
        partial(check_module, modules.gelu(), seq, seed=seed, name="gelu (erf)"),
        partial(check_module, modules.gelu("tanh"), seq, seed=seed, name="gelu (tanh)"),
        partial(check_module, modules.layernorm(), seq, seed=seed, name="layernorm (N, T, E)"),
    ]


def _recurrent_checks(rng: np.random.Generator, seed: int) -> list[Callable[[], CheckResult]]:
    """The steps of :mod:`fnet.layers.recurrent` as layer pairs, the sequences through their modules (with
    the initial state from the input and the last state out), and temporal_softmax_loss in both
    normalizations; tiny sizes (N = 2, T = 3, D = 2, H = 3), since finite differences perturb
    every weight."""
    normal = rng.standard_normal
    rm = recurrent
    n, t, d, h, v = 2, 3, 2, 3, 5
    seq = (n, t, d)

    def weights(gates):
        return {"Wx": PARAM_SCALE * normal((d, gates * h)), "Wh": PARAM_SCALE * normal((h, gates * h)),
                "b": PARAM_SCALE * normal(gates * h)}

    step = {"x": normal((n, d)), "prev_h": normal((n, h))}
    ids = np.array([[0, 3, 3], [1, 3, 0]])  # repeated ids: their rows' gradients add up
    y, mask = rng.integers(0, v, (n, t)), np.array([[True, True, False], [True, False, False]])
    return [
        partial(_pair_check, "rnn_step", layers.rnn_step_forward, layers.rnn_step_backward,
                {**step, **weights(1)}, (normal((n, h)),)),
        partial(_pair_check, "lstm_step", layers.lstm_step_forward, layers.lstm_step_backward,
                {**step, "prev_c": normal((n, h)), **weights(4)}, (normal((n, h)), normal((n, h)))),
        partial(_pair_check, "gru_step", layers.gru_step_forward, layers.gru_step_backward,
                {**step, **weights(3), "bh": PARAM_SCALE * normal(h)}, (normal((n, h)),)),
        partial(_pair_check, "lstm_forward (c0 = 0)", layers.lstm_forward, layers.lstm_backward,
                {"x": normal(seq), "h0": normal((n, h)), **weights(4)}, (normal((n, t, h)),)),
        partial(check_module, rm.rnn(h, initial_state=True, return_sequences=False), (seq, (n, h)), seed=seed,
                name="rnn (h0 from the input, last state)"),
        partial(check_module, rm.lstm(h, initial_state=True, return_state=True), (seq, (n, h), (n, h)), seed=seed,
                name="lstm (h0, c0 from the input; states and last c out)"),
        partial(check_module, rm.gru(h), seq, seed=seed, name="gru (all states)"),
        partial(check_module, rm.embedding(v, d), ids.shape, x=ids, seed=seed, name="embedding (repeated ids)"),
        partial(check_module, rm.temporal_dense(v), seq, seed=seed, name="temporal_dense (temporal affine)"),
        *(partial(_loss_check, f"temporal_softmax_loss ({norm})",
                  partial(losses.temporal_softmax_loss, mask=mask, normalize=norm), normal((n, t, v)), y)
          for norm in losses.TEMPORAL_NORMALIZATIONS),
    ]


def _pair_check(name, forward, backward, inputs: dict, douts: tuple):
    """Three-way check of a layer pair ``(*outs, cache) = forward(*args)``, ``grads =
    backward(*douts, cache)``, with ``inputs`` the arguments by name in the forward's order."""
    names = list(inputs)

    def outputs(a):
        out = forward(*(a[k] for k in names))  # not a.values(): a traced dict has sorted keys
        return out[:-1], out[-1]

    def scalar(a):
        return sum(jnp.sum(o * g) for o, g in zip(outputs(a)[0], douts))

    def manual(a):
        return dict(zip(names, backward(*douts, outputs(a)[1])))

    return three_way(name, scalar, inputs, manual)


def _loss_check(name, loss_fn, scores, y):
    return three_way(name, lambda p: loss_fn(p["scores"], y)[0], {"scores": scores},
                     lambda p: {"scores": loss_fn(p["scores"], y)[1]})


def check_combinators(seed: int = 0) -> list[CheckResult]:
    """Three-way check of every combinator, each around small dense/tanh blocks in float64 (the
    tied embedding around a temporal dense/tanh body, on token ids), and a pre-norm transformer
    block composed from them (residual attention and MLP branches)."""
    from fnet.combinators import fan_in_concat, fan_in_sum, fan_out, parallel, residual, serial, tied_embedding
    from fnet.modules import dense, gelu, layernorm, self_attention, tanh, temporal_dense

    seed = _checks.integer("check_combinators", "seed", seed, minimum=0)
    n, d = 5, 4
    branches = parallel(serial(dense(3), tanh()), dense(3))
    block = serial(residual(serial(layernorm(), self_attention(2))),
                   residual(serial(layernorm(), temporal_dense(16), gelu(), temporal_dense(8))))
    ids = np.random.default_rng(seed).integers(0, 5, (2, 3))  # repeated ids: the table's two uses add
    return _run([
        partial(check_module, serial(dense(6), tanh(), dense(3)), (n, d), seed=seed, name="serial"),
        partial(check_module, parallel(dense(3), serial(tanh(), dense(2))), ((n, d), (n, 2)), seed=seed,
                name="parallel"),
        partial(check_module, serial(fan_out(3), parallel(dense(3), tanh(), dense(3)), fan_in_sum()), (n, 3),
                seed=seed, name="fan_out + fan_in_sum"),
        partial(check_module, serial(fan_out(2), branches, fan_in_concat()), (n, d), seed=seed, name="fan_in_concat"),
        partial(check_module, residual(serial(dense(d), tanh(), dense(d))), (n, d), seed=seed, name="residual"),
        partial(check_module, tied_embedding(5, 4, serial(temporal_dense(4), tanh())), ids.shape, x=ids, seed=seed,
                name="tied_embedding"),
        partial(check_module, block, (2, 4, 8), seed=seed, name="pre-norm transformer block"),
    ])


def check_networks(seed: int = 0) -> list[CheckResult]:
    """Three-way check of small float64 MLPs that use every activation and every normalization
    (each activation once, the norms in turn), each with dropout and weight decay (every branch
    of the derived chain), an MSE and a BCE head, a residual MLP and a two-branch network written
    as compositions, and a small CNN (fnet's ``cnn``: convolutions, batch norm on images,
    pooling, dropout), and a 2-layer LSTM language model (:func:`fnet.models.char_lm`: embedding,
    LSTM, dropout, LSTM, dropout, temporal dense, the temporal softmax cross-entropy, weight decay
    on the embedding and recurrent weights too), and a 2-layer GPT (:func:`fnet.models.gpt`:
    token and position embeddings, pre-norm blocks of causal attention and a GELU MLP, dropout
    wherever it applies)."""
    from fnet.combinators import fan_in_concat, fan_out, parallel, residual, serial
    from fnet.modules import batchnorm, dense, dropout, relu, tanh

    rng = np.random.default_rng(_checks.integer("check_networks", "seed", seed, minimum=0) + 1)
    n, d, c = 8, 5, 3
    x, y = rng.standard_normal((n, d)), rng.integers(0, c, n)
    checks = []
    # Every activation and every norm once: the chain between them is serial's, the same for
    # any pair, so the full product would check nothing more, at 3x the time.
    for activation, norm in zip(modules.ACTIVATIONS, itertools.cycle(models.NORMS[::-1])):
        net = models.mlp(d, [6, 6], c, activation=activation, norm=norm, dropout=0.3, weight_decay=0.1, dtype="float64")
        checks.append(partial(check_network, net, x, y, seed=seed))
    targets = rng.standard_normal((n, c))
    for loss, t in (("mse", targets), ("sigmoid_binary_cross_entropy", (targets > 0).astype(np.float64))):
        net = models.mlp(d, [6], c, activation="tanh", loss=loss, dtype="float64")
        checks.append(partial(check_network, net, x, t, seed=seed, name=f"{net.name} {loss}"))
    block = serial(dense(6), batchnorm(), relu(), dense(6))
    res = nets.network(serial(dense(6), residual(block), relu(), dropout(0.2), dense(c)), (d,), weight_decay=0.1,
                       dtype="float64", name="residual MLP")
    checks.append(partial(check_network, res, x, y, seed=seed))
    two = nets.network(serial(fan_out(2), parallel(serial(dense(4), tanh()), serial(dense(3), relu())),
                              fan_in_concat(), dense(c)), (d,), dtype="float64", name="two-branch network")
    checks.append(partial(check_network, two, x, y, seed=seed))
    small_cnn = models.cnn("small_cnn", (1, 6, 6), c, filters=(2, 3), dense_width=4, weight_decay=0.1, dtype="float64")
    checks.append(partial(check_network, small_cnn, rng.standard_normal((4, 1, 6, 6)), y[:4], seed=seed,
                          name=small_cnn.name))
    v = 5
    lm = models.char_lm(v, embed=3, hidden=4, layers=2, dropout=0.3, context=3, weight_decay=0.1, dtype="float64")
    tokens = rng.integers(0, v, (2, 4))
    checks.append(partial(check_network, lm, tokens[:, :-1], tokens[:, 1:], seed=seed,
                          name="2-layer LSTM language model"))
    small_gpt = models.gpt(v, 3, layers=2, heads=2, width=4, dropout=0.2, weight_decay=0.1, dtype="float64")
    checks.append(partial(check_network, small_gpt, tokens[:, :-1], tokens[:, 1:], seed=seed, name="2-layer GPT"))
    return _run(checks)


def format_report(rows: list[CheckResult], *, verbose: bool = False) -> str:
    """A plain-text table: one row per check (per leaf with ``verbose``), the three relative
    errors and PASS/FAIL against :data:`AUTODIFF_TOL` and :data:`NUMERICAL_TOL`."""
    header = f"{'check':<58} {'manual~autodiff':>16} {'manual~numeric':>15} {'autodiff~numeric':>17}  result"
    lines = [header, "-" * len(header)]
    for row in rows:
        w = row.worst
        lines.append(f"{row.name:<58} {w[0]:>16.2e} {w[1]:>15.2e} {w[2]:>17.2e}  {'PASS' if row.passed else 'FAIL'}")
        if verbose:
            for leaf, e in row.leaves.items():
                lines.append(f"{'    ' + leaf:<58} {e[0]:>16.2e} {e[1]:>15.2e} {e[2]:>17.2e}")
    lines.append(f"thresholds: manual~autodiff < {AUTODIFF_TOL:.0e}, vs numerical < {NUMERICAL_TOL:.0e} (float64)")
    return "\n".join(lines)
