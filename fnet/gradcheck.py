"""Gradient checking: central differences, relative errors, and the three-way check.

The three-way check compares, for every layer, loss and network configuration:

1. the MANUAL gradient (fnet's hand-written backward functions),
2. JAX's AUTODIFF gradient (``jax.grad`` of the same forward code),
3. float64 central-difference NUMERICAL gradients,

and reports the three pairwise relative errors per parameter leaf. ``fnet gradcheck`` prints
the report and exits non-zero when any error exceeds its threshold.
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fnet import layers, losses, nets

#: Thresholds of the float64 check: manual vs autodiff, and anything vs finite differences.
AUTODIFF_TOL = 1e-7
NUMERICAL_TOL = 1e-5
#: Denominator floor used against finite differences. Their absolute error in float64 is about
#: eps * |f| / h ~ 1e-11..1e-10, so a gradient that is exactly 0 (a bias feeding batch norm) would
#: show a "relative" error of 1e-2 under the usual 1e-8 floor; with this floor, gradients below
#: 1e-5 are in effect compared absolutely (|a - b| < NUMERICAL_TOL * 1e-5 = 1e-10).
NUMERICAL_FLOOR = 1e-5


def numerical_gradient(f: Callable, x, h: float = 1e-5, *, batch_size: int = 256):
    """Central-difference gradient of a scalar function over every element of ``x``::

        df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)

    Args:
      f: JAX-traceable function of ``x`` returning a scalar.
      x: an array or a pytree of arrays (use float64 for meaningful results).
      h: step (default 1e-5, good for float64; use ~1e-3 in float32).
      batch_size: number of elements perturbed at once (the 2 * batch_size function
        evaluations are vmapped and jit-compiled together).

    Returns:
      A pytree like ``x`` with the numerical gradient.
    """
    flat, unravel = ravel_pytree(x)
    if flat.size == 0:
        return x

    def partial_derivative(i):
        e = jnp.zeros_like(flat).at[i].set(h)
        return (f(unravel(flat + e)) - f(unravel(flat - e))) / (2 * h)

    # Eager vmap over chunks of perturbations: compiling a jitted loop costs more than it saves
    # at the sizes gradient checks use.
    batched = jax.vmap(partial_derivative)
    grad = jnp.concatenate([batched(jnp.arange(i, min(i + batch_size, flat.size))) for i in range(0, flat.size, batch_size)])
    return unravel(grad.astype(flat.dtype))


def rel_error(a, b, *, floor: float = 1e-8) -> float:
    """Largest elementwise relative error between two arrays or pytrees (cs231n's ``rel_error``)::

        max |a - b| / max(floor, |a| + |b|)        (floor = 1e-8 by default)

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
            worst = max(worst, float(np.max(np.abs(x - y) / np.maximum(floor, np.abs(x) + np.abs(y)))))
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
      leaves: ``{argument or parameter name: LeafErrors}``.
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


def three_way(name: str, scalar_fn: Callable, inputs: dict, manual: dict) -> CheckResult:
    """Compare a manual gradient with ``jax.grad`` and central differences.

    Args:
      name: row name.
      scalar_fn: ``inputs -> scalar``, the function whose gradient ``manual`` claims to be.
      inputs: dict of float64 arrays to differentiate with respect to.
      manual: dict with the same keys, the hand-written gradient.
    """
    auto = jax.grad(scalar_fn)(inputs)
    num = numerical_gradient(scalar_fn, inputs)
    leaves = {
        k: LeafErrors(
            rel_error(manual[k], auto[k]),
            rel_error(manual[k], num[k], floor=NUMERICAL_FLOOR),
            rel_error(auto[k], num[k], floor=NUMERICAL_FLOOR),
        )
        for k in inputs
    }
    return CheckResult(name, leaves)


def _layer_check(name, forward, backward, inputs, key):
    """Check ``backward`` against the gradient of ``sum(forward(**inputs)[0] * dout)``."""
    out, cache = forward(**inputs)
    dout = jax.random.normal(key, out.shape, out.dtype)
    manual = dict(zip(inputs, backward(dout, cache) if len(inputs) > 1 else (backward(dout, cache),)))
    return three_way(name, lambda p: jnp.sum(forward(**p)[0] * dout), inputs, manual)


def _loss_check(name, loss_fn, scores, y):
    _, dscores = loss_fn(scores, y)
    return three_way(name, lambda p: loss_fn(p["scores"], y)[0], {"scores": scores}, {"scores": dscores})


def check_layers(seed: int = 0) -> list[CheckResult]:
    """Three-way check of every layer and loss in float64 on small random inputs."""
    with jax.enable_x64(True):
        k = map(functools.partial(jax.random.fold_in, jax.random.PRNGKey(seed)), itertools.count())
        f64 = jnp.float64

        def rnd(*shape, scale=1.0):
            return scale * jax.random.normal(next(k), shape, f64)

        # Keep pre-activations away from ReLU's kink so finite differences are exact enough.
        def away_from_zero(*shape):
            x = rnd(*shape)
            return jnp.where(jnp.abs(x) < 1e-2, 0.5, x)

        n, d = 6, 5
        running = (rnd(d), jnp.abs(rnd(d)) + 0.5)
        drop_key = next(k)
        rows = [
            _layer_check("affine", layers.affine_forward, layers.affine_backward,
                         {"x": rnd(n, 2, 3), "W": rnd(6, d), "b": rnd(d)}, next(k)),
            _layer_check("relu", layers.relu_forward, layers.relu_backward, {"x": away_from_zero(n, d)}, next(k)),
            _layer_check("leaky_relu", lambda x: layers.leaky_relu_forward(x, 0.1), layers.leaky_relu_backward,
                         {"x": away_from_zero(n, d)}, next(k)),
            _layer_check("sigmoid", layers.sigmoid_forward, layers.sigmoid_backward, {"x": rnd(n, d)}, next(k)),
            _layer_check("tanh", layers.tanh_forward, layers.tanh_backward, {"x": rnd(n, d)}, next(k)),
            _layer_check("batchnorm (train)",
                         lambda x, gamma, beta: _drop_running(layers.batchnorm_forward(x, gamma, beta, running)),
                         layers.batchnorm_backward,
                         {"x": rnd(n, d, scale=3.0) + 2.0, "gamma": rnd(d), "beta": rnd(d)}, next(k)),
            _layer_check("batchnorm (eval)",
                         lambda x, gamma, beta: _drop_running(layers.batchnorm_forward(x, gamma, beta, running, train=False)),
                         layers.batchnorm_backward,
                         {"x": rnd(n, d), "gamma": rnd(d), "beta": rnd(d)}, next(k)),
            _layer_check("layernorm", layers.layernorm_forward, layers.layernorm_backward,
                         {"x": rnd(n, d, scale=3.0) - 1.0, "gamma": rnd(d), "beta": rnd(d)}, next(k)),
            _layer_check("dropout", lambda x: layers.dropout_forward(x, 0.4, drop_key), layers.dropout_backward,
                         {"x": rnd(n, d)}, next(k)),
            _layer_check("softmax", layers.softmax_forward, layers.softmax_backward, {"x": rnd(n, d)}, next(k)),
            _loss_check("softmax_cross_entropy", losses.softmax_cross_entropy, rnd(n, d),
                        jax.random.randint(next(k), (n,), 0, d)),
            _loss_check("mean_squared_error", losses.mean_squared_error, rnd(n, 3), rnd(n, 3)),
            _loss_check("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy, rnd(n, 2),
                        (jax.random.uniform(next(k), (n, 2)) > 0.5).astype(f64)),
        ]
        ws = {"W1": rnd(4, 3), "W2": rnd(3, 2)}
        rows.append(three_way("l2_weight_decay", lambda p: losses.l2_weight_decay(p, 0.3)[0], ws,
                              losses.l2_weight_decay(ws, 0.3)[1]))
        return rows


def _drop_running(result):
    out, _, cache = result
    return out, cache


def check_network(net: nets.Net, x, y, *, seed: int = 0, name: str | None = None) -> CheckResult:
    """Three-way check of ``net.loss_and_grad`` against ``jax.grad(net.loss)`` and finite
    differences, per parameter leaf, with the same dropout key.

    Args:
      net: a float64 network from :func:`fnet.mlp` (``dtype="float64"``).
      x: float64 inputs of shape (N, D); y: targets for the net's loss.
    """
    key_init, key_drop = jax.random.split(jax.random.PRNGKey(seed))
    params, state = net.init(key_init)

    def scalar(p):
        return net.loss(p, x, y, state=state, key=key_drop)[0]

    _, manual, _ = net.loss_and_grad(params, x, y, state=state, key=key_drop)
    return three_way(name or nets.describe(net.config), scalar, params, manual)


def check_networks(seed: int = 0) -> list[CheckResult]:
    """Three-way check of one small float64 MLP per activation x normalization, each with
    dropout and weight decay (the manual chain's every branch), plus an MSE and a BCE head."""
    with jax.enable_x64(True):
        kx, ky = jax.random.split(jax.random.PRNGKey(seed + 1))
        n, d, c = 8, 5, 3
        x = jax.random.normal(kx, (n, d), jnp.float64)
        y = jax.random.randint(ky, (n,), 0, c)
        rows = []
        for activation, norm in itertools.product(layers.ACTIVATIONS, nets.NORMS):
            net = nets.mlp(d, [6, 6], c, activation=activation, norm=norm, dropout=0.3, weight_decay=0.1,
                           dtype="float64")
            rows.append(check_network(net, x, y, seed=seed))
        targets = jax.random.normal(ky, (n, c), jnp.float64)
        for loss, t in (("mse", targets), ("sigmoid_binary_cross_entropy", (targets > 0).astype(jnp.float64))):
            net = nets.mlp(d, [6], c, activation="tanh", loss=loss, dtype="float64")
            rows.append(check_network(net, x, t, seed=seed, name=f"{nets.describe(net.config)} {loss}"))
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
