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

import functools
import itertools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnet import _checks, combinators, losses, modules, nets
from fnet.modules import Module

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
#: computation, ~1e-15 * S in a deep composition, which the absolute floors alone would call a
#: relative error of 1e-7; a real error of any element above 1e-6 * S is still caught.
AUTODIFF_SCALE_FLOOR = 1e-6
NUMERICAL_SCALE_FLOOR = 1e-4


def numerical_gradient(f: Callable, x, h: float = 1e-5, *, batch_size: int = 4096):
    """Central-difference gradient of a scalar function over every element of ``x``::

        df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)

    Args:
      f: JAX-traceable function of ``x`` returning a scalar.
      x: an array or a pytree of arrays (use float64 for meaningful results).
      h: step (default 1e-5, good for float64; use ~1e-3 in float32).
      batch_size: number of elements perturbed at once: the 2 * batch_size evaluations of ``f``
        run as one vmapped batch (``jax.lax.map`` over batches when there are more elements).
        Works eagerly and under ``jit`` (where the whole difference quotient is one program).

    Returns:
      A pytree like ``x`` with the numerical gradient.
    """
    flat, unravel = ravel_pytree(x)
    if flat.size == 0:
        return x

    def partial_derivative(i):
        e = jnp.zeros_like(flat).at[i].set(h)
        return (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * h)

    grad = jax.lax.map(partial_derivative, jnp.arange(flat.size), batch_size=min(batch_size, flat.size))
    return unravel(grad.astype(flat.dtype))


def rel_error(a, b, *, floor: float = 1e-8) -> float:
    """Largest elementwise relative error between two arrays or pytrees (cs231n's ``rel_error``)::

        max |a - b| / max(floor, |a| + |b|)        (floor = 1e-8 by default)

    A NaN or infinite element (in either) gives ``inf``: it never passes a threshold.

    Raises:
      ValueError: if the trees or shapes differ.
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
    return _compiled_check(name, lambda p: (lambda q, ctx: scalar_fn(q), p, lambda q, ctx: manual_fn(q), ()),
                           (inputs,), h)


def _compiled_check(name: str, build: Callable, args: tuple, h: float) -> CheckResult:
    """Run a check as ONE compiled program: ``build(*args) -> (scalar_fn, inputs, manual_fn,
    context)`` is traced inside it, so the set-up (initial parameters, random inputs), the manual
    gradient ``manual_fn(inputs, context)``, ``jax.grad`` of ``scalar_fn(inputs, context)`` and
    the central differences of ``scalar_fn`` compile together, once: compiling is what a check
    costs. (XLA's lowest optimization level would halve that, but it miscompiled softmax's
    gradient to inf on XLA:CPU, jaxlib 0.10.2.) The finite differences are one loop over the
    perturbed inputs, which compiles faster than a vmapped batch of them."""

    def program(*args):
        scalar_fn, inputs, manual_fn, context = build(*args)
        scalar = functools.partial(lambda ctx, q: scalar_fn(q, ctx), context)
        return (inputs, manual_fn(inputs, context), jax.grad(scalar)(inputs),
                numerical_gradient(scalar, inputs, h, batch_size=1))

    with jax.enable_x64(True):
        lowered = jax.jit(program).lower(*args)
        inputs_spec, manual_spec = lowered.out_info[:2]
        _checks.tree("three_way", f"the manual gradient of {name}", manual_spec, "the inputs", inputs_spec)
        _, got, auto, num = lowered.compile()(*args)
    scale = max((float(np.max(np.abs(a))) for a in jax.tree_util.tree_leaves(auto) if np.size(a)), default=0.0)
    floor = max(1e-8, AUTODIFF_SCALE_FLOOR * scale)
    num_floor = max(NUMERICAL_FLOOR, NUMERICAL_SCALE_FLOOR * scale)
    leaves = {}
    for (path, m), a, n in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree_util.tree_leaves(auto),
                               jax.tree_util.tree_leaves(num)):
        leaves[leaf_name(path)] = LeafErrors(rel_error(m, a, floor=floor), rel_error(m, n, floor=num_floor),
                                             rel_error(a, n, floor=num_floor))
    return CheckResult(name, leaves)


def _check_key(seed: int):
    """The key of a check: XLA's RngBitGenerator ("unsafe_rbg"), one HLO op, where the default
    threefry unrolls into code that dominates a small check's compilation (statistical quality
    does not matter for a gradient check)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def _float64(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _generic_point(params, key):
    """``params`` plus 0.1 * N(0, 1) noise on every element: a check at a generic point. Biases
    start at exactly 0, so a row that a ReLU or dropout zeroes entirely would give the next layer
    a pre-activation of exactly 0, ReLU's kink, where central differences are wrong. (One draw
    for the whole tree: each random draw adds much compilation to a small check.)"""
    flat, unravel = ravel_pytree(params)
    return unravel(flat + 0.1 * jax.random.normal(key, flat.shape, flat.dtype)) if flat.size else params


def _normal_like(key, spec):
    """Standard normal float64 arrays shaped like the pytree of shapes ``spec``, in one draw."""
    leaves, treedef = jax.tree_util.tree_flatten(spec)
    sizes = [math.prod(a.shape) for a in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float64)
    parts = jnp.split(flat, list(itertools.accumulate(sizes))[:-1]) if leaves else []
    return jax.tree_util.tree_unflatten(treedef, [p.reshape(a.shape) for p, a in zip(parts, leaves)])


def check_module(module: Module, input_shape, *, seed: int = 0, train: bool = True, name: str | None = None,
                 x=None, h: float = 1e-5) -> CheckResult:
    """Three-way check of a module's hand-written ``backward`` (a user's own module too).

    The scalar ``sum(forward(params, state, x)[0] * dy)`` for a random ``dy`` is differentiated
    with respect to ``x`` and every parameter: ``module.backward(params, cache, dy)`` against
    ``jax.grad`` of the forward and against central differences, in float64, with one fixed
    dropout key, at a generic point: the initial parameters plus 0.1 * N(0, 1) noise (so that no
    bias sits at exactly 0, see :func:`_generic_point`). Print the result with :func:`format_report`.

    Args:
      module: a :class:`~fnet.modules.Module`.
      input_shape: a concrete input shape with the batch axis, e.g. ``(4, 3)`` or ``(2, 1, 6, 6)``
        (a tuple of shapes for a module that takes branches).
      train: check the train-mode (True) or eval-mode pass.
      x: the input to use (default: standard normal values).
      h: the finite-difference step.

    Returns:
      A :class:`CheckResult` with leaves "x..." and "params...".

    Raises:
      ValueError: ``backward`` returned a ``dx``/``dparams`` of the wrong structure or shapes.
    """
    single = combinators.is_shape(input_shape)

    def build(key, x):
        k_init, k_x, k_dy, k_drop = jax.random.split(key, 4)
        params, state, _ = module.init(k_init, input_shape)
        params, state = _float64((params, state))
        params = _generic_point(params, jax.random.fold_in(k_init, 1))
        if x is None:
            shapes = [input_shape] if single else list(input_shape)
            x = _normal_like(k_x, [jax.ShapeDtypeStruct(s, jnp.float64) for s in shapes])
            x = x[0] if single else tuple(x)

        dy = _normal_like(k_dy, jax.eval_shape(lambda p, x: module.forward(p, state, x, train=train, key=k_drop)[0],
                                               params, x))
        return _module_scalar, {"x": x, "params": params}, _module_manual, {"state": state, "dy": dy, "key": k_drop}

    def _module_scalar(inputs, ctx):
        out = module.forward(inputs["params"], ctx["state"], inputs["x"], train=train, key=ctx["key"])[0]
        return sum(jnp.sum(a * b) for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ctx["dy"])))

    def _module_manual(inputs, ctx):
        _, _, cache = module.forward(inputs["params"], ctx["state"], inputs["x"], train=train, key=ctx["key"])
        dx, dparams = module.backward(inputs["params"], cache, ctx["dy"])
        return {"x": dx, "params": dparams}

    with jax.enable_x64(True):
        return _compiled_check(name or module.name, build, (_check_key(seed), None if x is None else _float64(x)), h)


def check_network(net: nets.Net, x, y, *, seed: int = 0, name: str | None = None) -> CheckResult:
    """Three-way check of ``net.loss_and_grad`` against ``jax.grad(net.loss)`` and finite
    differences, per parameter leaf, with the same dropout key, at the initial parameters plus
    0.1 * N(0, 1) noise (a generic point, as in :func:`check_module`).

    Args:
      net: a float64 network (``dtype="float64"``).
      x: float64 inputs of shape (N, *net.input_shape); y: targets for the net's loss.
    """

    def build(key, x, y):
        key_init, key_drop = jax.random.split(key)
        params, state = net.init(key_init)
        params = _generic_point(params, jax.random.fold_in(key_init, 1))
        return scalar, params, manual, {"x": x, "y": y, "state": state, "key": key_drop}

    def scalar(p, ctx):
        return net.loss(p, ctx["x"], ctx["y"], state=ctx["state"], key=ctx["key"])[0]

    def manual(p, ctx):
        return net.loss_and_grad(p, ctx["x"], ctx["y"], state=ctx["state"], key=ctx["key"])[1]

    return _compiled_check(name or net.name, build, (_check_key(seed), x, y), 1e-5)


# --------------------------------------------------------------------------------------------
# What `fnet gradcheck` checks: every leaf module and loss, every combinator, networks.


def _away_from_zero(key, shape):
    """Standard normal values kept away from ReLU's kink, so that finite differences are exact."""
    x = jax.random.normal(key, shape, jnp.float64)
    return jnp.where(jnp.abs(x) < 1e-2, 0.5, x)


def check_layers(seed: int = 0) -> list[CheckResult]:
    """Three-way check of every leaf module (each wraps one :mod:`fnet.layers` pair; the
    convolutional ones on tiny images) and every loss, in float64 on small random inputs."""
    with jax.enable_x64(True):
        k = map(functools.partial(jax.random.fold_in, jax.random.PRNGKey(seed)), itertools.count())
        n, d = 6, 5
        rows = [
            check_module(modules.dense(d), (n, 2, 3), seed=seed, name="dense (affine)"),
            check_module(modules.relu(), (n, d), x=_away_from_zero(next(k), (n, d)), seed=seed),
            check_module(modules.leaky_relu(0.1), (n, d), x=_away_from_zero(next(k), (n, d)), seed=seed),
            check_module(modules.sigmoid(), (n, d), seed=seed),
            check_module(modules.tanh(), (n, d), seed=seed),
            check_module(modules.identity(), (n, d), seed=seed),
            check_module(modules.softmax(), (n, d), seed=seed),
            check_module(modules.batchnorm(), (n, d), x=3 * jax.random.normal(next(k), (n, d)) + 2, seed=seed,
                         name="batchnorm (train)"),
            check_module(modules.batchnorm(), (n, d), train=False, seed=seed, name="batchnorm (eval)"),
            check_module(modules.layernorm(), (n, d), x=3 * jax.random.normal(next(k), (n, d)) - 1, seed=seed),
            check_module(modules.dropout(0.4), (n, d), seed=seed),
            check_module(modules.flatten(), (n, 2, 3), seed=seed),
        ]
        img = (2, 2, 5, 5)  # tiny images (N, C, H, W): finite differences perturb every pixel
        rows += [
            check_module(modules.conv2d(3, 3, pad=1), img, seed=seed, name="conv2d (3x3, pad 1)"),
            check_module(modules.conv2d(2, (2, 3), stride=2), img, seed=seed, name="conv2d (2x3, stride 2: floor rule)"),
            check_module(modules.max_pool(2), img, seed=seed, name="max_pool (2x2, stride 2)"),
            check_module(modules.max_pool(3, stride=1), img, seed=seed, name="max_pool (3x3, stride 1: overlapping)"),
            check_module(modules.avg_pool(2, stride=1), img, seed=seed, name="avg_pool (2x2, stride 1)"),
            check_module(modules.global_avg_pool(), img, seed=seed),
            check_module(modules.batchnorm(), img, x=3 * jax.random.normal(next(k), img) + 1, seed=seed,
                         name="batchnorm (images, train)"),
            check_module(modules.groupnorm(2), (2, 4, 3, 3), seed=seed, name="groupnorm (2 groups)"),
        ]
        f64 = jnp.float64
        rows += [
            _loss_check("softmax_cross_entropy", losses.softmax_cross_entropy, jax.random.normal(next(k), (n, d), f64),
                        jax.random.randint(next(k), (n,), 0, d)),
            _loss_check("mean_squared_error", losses.mean_squared_error, jax.random.normal(next(k), (n, 3), f64),
                        jax.random.normal(next(k), (n, 3), f64)),
            _loss_check("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy,
                        jax.random.normal(next(k), (n, 2), f64), (jax.random.uniform(next(k), (n, 2)) > 0.5).astype(f64)),
        ]
        ws = {"W1": jax.random.normal(next(k), (4, 3), f64), "W2": jax.random.normal(next(k), (3, 2), f64)}
        rows.append(three_way("l2_weight_decay", lambda p: losses.l2_weight_decay(p, 0.3)[0], ws,
                              losses.l2_weight_decay(ws, 0.3)[1]))
        return rows


def _loss_check(name, loss_fn, scores, y):
    _, dscores = loss_fn(scores, y)
    return three_way(name, lambda p: loss_fn(p["scores"], y)[0], {"scores": scores}, {"scores": dscores})


def check_combinators(seed: int = 0) -> list[CheckResult]:
    """Three-way check of every combinator, each around small dense/tanh blocks in float64."""
    from fnet.combinators import fan_in_concat, fan_in_sum, fan_out, parallel, residual, serial
    from fnet.modules import dense, tanh

    with jax.enable_x64(True):
        n, d = 5, 4
        branches = parallel(serial(dense(3), tanh()), dense(3))
        return [
            check_module(serial(dense(6), tanh(), dense(3)), (n, d), seed=seed, name="serial"),
            check_module(parallel(dense(3), serial(tanh(), dense(2))), ((n, d), (n, 2)), seed=seed, name="parallel"),
            check_module(serial(fan_out(3), parallel(dense(3), tanh(), dense(3)), fan_in_sum()), (n, 3), seed=seed,
                         name="fan_out + fan_in_sum"),
            check_module(serial(fan_out(2), branches, fan_in_concat()), (n, d), seed=seed, name="fan_in_concat"),
            check_module(residual(serial(dense(d), tanh(), dense(d))), (n, d), seed=seed, name="residual"),
        ]


def check_networks(seed: int = 0) -> list[CheckResult]:
    """Three-way check of small float64 MLPs that use every activation and every normalization
    (each activation once, the norms in turn), each with dropout and weight decay (every branch
    of the derived chain), an MSE and a BCE head, a residual MLP and a two-branch network written as compositions, and a small CNN (fnet's
    ``cnn``: convolutions, batch norm on images, pooling, dropout)."""
    from fnet.combinators import fan_in_concat, fan_out, parallel, residual, serial
    from fnet.modules import batchnorm, dense, dropout, relu, tanh

    with jax.enable_x64(True):
        kx, ky = jax.random.split(jax.random.PRNGKey(seed + 1))
        n, d, c = 8, 5, 3
        x = jax.random.normal(kx, (n, d), jnp.float64)
        y = jax.random.randint(ky, (n,), 0, c)
        rows = []
        # Every activation and every norm once: the chain between them is serial's, the same for
        # any pair, so the full product would check nothing more, at 3x the time.
        for activation, norm in zip(modules.ACTIVATIONS, itertools.cycle(nets.NORMS[::-1])):
            net = nets.mlp(d, [6, 6], c, activation=activation, norm=norm, dropout=0.3, weight_decay=0.1,
                           dtype="float64")
            rows.append(check_network(net, x, y, seed=seed))
        targets = jax.random.normal(ky, (n, c), jnp.float64)
        for loss, t in (("mse", targets), ("sigmoid_binary_cross_entropy", (targets > 0).astype(jnp.float64))):
            net = nets.mlp(d, [6], c, activation="tanh", loss=loss, dtype="float64")
            rows.append(check_network(net, x, t, seed=seed, name=f"{net.name} {loss}"))
        block = serial(dense(6), batchnorm(), relu(), dense(6))
        res = nets.network(serial(dense(6), residual(block), relu(), dropout(0.2), dense(c)), (d,), weight_decay=0.1,
                           dtype="float64", name="residual MLP")
        rows.append(check_network(res, x, y, seed=seed))
        two = nets.network(serial(fan_out(2), parallel(serial(dense(4), tanh()), serial(dense(3), relu())),
                                  fan_in_concat(), dense(c)), (d,), dtype="float64", name="two-branch network")
        rows.append(check_network(two, x, y, seed=seed))
        images = jax.random.normal(kx, (4, 1, 6, 6), jnp.float64)
        small_cnn = nets.cnn("cnn", (1, 6, 6), c, filters=(2, 3), hidden=4, weight_decay=0.1, dtype="float64")
        rows.append(check_network(small_cnn, images, y[:4], seed=seed, name=f"small {small_cnn.name}"))
        return rows


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
