"""fnet.custom_vjp: jax.grad through the wrapped layers and losses runs the hand-written rules
(bit for bit equal to the manual backward, within 1e-7 of JAX's autodiff of the plain forward in
float64), the wrapped functions compose into a network whose jax.grad equals fnet.mlp's manual
loss_and_grad, they work under jit and vmap, and a wrong backward really makes jax.grad wrong."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnet
from fnet import custom_vjp as cv
from fnet import layers, losses
from fnet.gradcheck import rel_error

AUTODIFF_TOL = 1e-7  # float64, custom VJP vs JAX's autodiff of the plain forward


class Case(NamedTuple):
    wrapped: Callable  # the fnet.custom_vjp function
    forward: Callable  # the fnet forward: (*args, **options) -> (out, [running,] cache)
    backward: Callable  # (dout, cache) -> grads of the differentiable args
    args: tuple
    diff: tuple  # indices of the differentiable positional args
    options: dict = {}


def _rnd(rng, shape, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape))


def _away_from_zero(rng, shape):
    x = rng.standard_normal(shape)
    return jnp.asarray(np.where(np.abs(x) < 0.05, 0.5, x))


def _scale(dloss, dscores):
    return dloss * dscores


def _cases():
    r = np.random.default_rng(0)
    key = jax.random.PRNGKey(3)
    running = (_rnd(r, (5,)), jnp.asarray(r.uniform(0.5, 2.0, 5)))
    norm_args = (_rnd(r, (6, 5), 2.0), _rnd(r, (5,)), _rnd(r, (5,)))
    return {
        "affine": Case(cv.affine, layers.affine_forward, layers.affine_backward,
                       (_rnd(r, (4, 2, 3)), _rnd(r, (6, 5)), _rnd(r, (5,))), (0, 1, 2)),
        "relu": Case(cv.relu, layers.relu_forward, layers.relu_backward, (_away_from_zero(r, (4, 5)),), (0,)),
        "leaky_relu_positional": Case(cv.leaky_relu, layers.leaky_relu_forward, layers.leaky_relu_backward,
                                      (_away_from_zero(r, (4, 5)), 0.2), (0,)),
        "leaky_relu_default": Case(cv.leaky_relu, layers.leaky_relu_forward, layers.leaky_relu_backward,
                                   (_away_from_zero(r, (4, 5)),), (0,)),
        "sigmoid": Case(cv.sigmoid, layers.sigmoid_forward, layers.sigmoid_backward, (_rnd(r, (4, 5), 3.0),), (0,)),
        "tanh": Case(cv.tanh, layers.tanh_forward, layers.tanh_backward, (_rnd(r, (4, 5)),), (0,)),
        "batchnorm_train": Case(cv.batchnorm, layers.batchnorm_forward, layers.batchnorm_backward,
                                (*norm_args, running), (0, 1, 2), dict(momentum=0.8, eps=1e-3)),
        "batchnorm_eval": Case(cv.batchnorm, layers.batchnorm_forward, layers.batchnorm_backward,
                               (*norm_args, running), (0, 1, 2), dict(train=False)),
        "layernorm": Case(cv.layernorm, layers.layernorm_forward, layers.layernorm_backward, norm_args, (0, 1, 2)),
        "dropout_train": Case(cv.dropout, layers.dropout_forward, layers.dropout_backward,
                              (_rnd(r, (6, 5)), 0.4, key), (0,)),
        "dropout_eval": Case(cv.dropout, layers.dropout_forward, layers.dropout_backward,
                             (_rnd(r, (6, 5)), 0.4, None), (0,), dict(train=False)),
        "softmax": Case(cv.softmax, layers.softmax_forward, layers.softmax_backward, (_rnd(r, (3, 4, 5), 5.0),), (0,)),
        "softmax_cross_entropy": Case(cv.softmax_cross_entropy, losses.softmax_cross_entropy, _scale,
                                      (_rnd(r, (6, 4), 10.0), jnp.asarray(r.integers(0, 4, 6))), (0,)),
        "mean_squared_error": Case(cv.mean_squared_error, losses.mean_squared_error, _scale,
                                   (_rnd(r, (6, 3)), _rnd(r, (6, 3))), (0,)),
        "sigmoid_binary_cross_entropy": Case(cv.sigmoid_binary_cross_entropy, losses.sigmoid_binary_cross_entropy, _scale,
                                             (_rnd(r, (6, 3), 10.0), jnp.asarray(r.integers(0, 2, (6, 3)), jnp.float64)), (0,)),
    }


CASES = _cases()


def _with(case, diff_args):
    """case.args with the differentiable positions replaced by ``diff_args``."""
    full = list(case.args)
    for i, a in zip(case.diff, diff_args):
        full[i] = a
    return full


def _as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


def _cotangent(out, rng):
    """A random cotangent for ``out``; for batch norm's ``(out, running)`` the running statistics
    get a random one too, which the rule must ignore."""
    return jax.tree_util.tree_map(lambda o: _rnd(rng, np.shape(o)), out)


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_is_the_manual_backward_and_matches_autodiff(name):
    case = CASES[name]
    diff_args = [case.args[i] for i in case.diff]
    out, vjp = jax.vjp(lambda *d: case.wrapped(*_with(case, d), **case.options), *diff_args)
    dout = _cotangent(out, np.random.default_rng(1))
    got = vjp(dout)

    # The forward value is the layer's own output (and, for batch norm, its new running stats).
    results = case.forward(*case.args, **case.options)
    cache = results[-1]
    chex.assert_trees_all_equal(out, results[0] if len(results) == 2 else results[:2])

    # Exactly the hand-written backward ...
    dmain = dout[0] if isinstance(out, tuple) else dout
    chex.assert_trees_all_equal(got, _as_tuple(case.backward(dmain, cache)))

    # ... and within 1e-7 of JAX's autodiff of the plain forward's main output (compiled: one
    # small compile is faster than dispatching the linearized forward op by op).
    @jax.jit
    def autodiff(diff_args, dmain):
        return jax.vjp(lambda *d: case.forward(*_with(case, d), **case.options)[0], *diff_args)[1](dmain)

    assert rel_error(got, autodiff(diff_args, dmain)) < AUTODIFF_TOL


def test_grad_of_wrapped_loss_is_dscores():
    scores, y = CASES["softmax_cross_entropy"].args
    chex.assert_trees_all_equal(jax.grad(cv.softmax_cross_entropy)(scores, y), losses.softmax_cross_entropy(scores, y)[1])


# --------------------------------------------------------------------------------------------
# Composition: a 2-layer network written with the wrapped functions
# --------------------------------------------------------------------------------------------


def _wrapped_mlp_loss(cfg, params, x, y, state, key):
    """fnet.mlp's train-mode loss for one hidden layer, written with fnet.custom_vjp."""
    act = cv.ACTIVATIONS[cfg.activation]
    if cfg.activation == "leaky_relu":
        act = functools.partial(act, alpha=cfg.leaky_alpha)
    new_state = dict(state)
    h = cv.affine(x, params["W1"], params["b1"])
    if cfg.norm == "batchnorm":
        h, (new_state["running_mean1"], new_state["running_var1"]) = cv.batchnorm(
            h, params["gamma1"], params["beta1"], (state["running_mean1"], state["running_var1"]),
            momentum=cfg.bn_momentum, eps=cfg.norm_eps,
        )
    elif cfg.norm == "layernorm":
        h = cv.layernorm(h, params["gamma1"], params["beta1"], eps=cfg.norm_eps)
    h = act(h)
    if cfg.dropout > 0:
        h = cv.dropout(h, cfg.dropout, jax.random.fold_in(key, 1))  # the key fnet.mlp uses for layer 1
    value = cv.LOSSES[cfg.loss](cv.affine(h, params["W2"], params["b2"]), y)
    if cfg.weight_decay:
        value = value + losses.l2_weight_decay({k: params[k] for k in ("W1", "W2")}, cfg.weight_decay)[0]
    return value, new_state


NET_CASES = [
    dict(activation="relu", norm=None, dropout=0.0, weight_decay=0.0, loss="softmax_cross_entropy"),
    dict(activation="leaky_relu", norm="batchnorm", dropout=0.3, weight_decay=0.1, loss="softmax_cross_entropy"),
    dict(activation="tanh", norm="layernorm", dropout=0.3, weight_decay=0.0, loss="mse"),
    dict(activation="sigmoid", norm="batchnorm", dropout=0.0, weight_decay=0.05, loss="sigmoid_binary_cross_entropy"),
]


def _net_problem(kw):
    net = fnet.mlp(6, [5], 3, dtype="float64", **kw)
    params, state = net.init(jax.random.PRNGKey(0))
    r = np.random.default_rng(2)
    x = _rnd(r, (8, 6))
    if kw["loss"] == "softmax_cross_entropy":
        y = jnp.asarray(r.integers(0, 3, 8))
    elif kw["loss"] == "mse":
        y = _rnd(r, (8, 3))
    else:
        y = jnp.asarray(r.integers(0, 2, (8, 3)), jnp.float64)
    return net, params, state, x, y, jax.random.PRNGKey(7)


@pytest.mark.parametrize("kw", NET_CASES, ids=lambda kw: f"{kw['activation']}-{kw['norm']}-{kw['loss']}")
def test_composed_network_under_jit_equals_mlp_loss_and_grad(kw):
    net, params, state, x, y, key = _net_problem(kw)
    loss = functools.partial(_wrapped_mlp_loss, net.config)
    # Both sides compiled: one small compile each is faster than many eager op dispatches.
    (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, x, y, state, key)
    ref_value, ref_grads, ref_state = jax.jit(net.loss_and_grad)(params, x, y, state=state, key=key)
    chex.assert_trees_all_close(value, ref_value, rtol=1e-12)
    chex.assert_trees_all_close(new_state, ref_state, rtol=1e-12)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-10, atol=1e-14)


def test_traced_non_differentiable_arguments_under_jit_and_vmap():
    x = CASES["dropout_train"].args[0]
    key = jax.random.PRNGKey(5)

    def grad_x(rate, alpha):
        return jax.grad(lambda x: jnp.sum(cv.leaky_relu(cv.dropout(x, rate, key), alpha) ** 2))(x)

    def manual(rate, alpha):
        h, c_drop = layers.dropout_forward(x, rate, key)
        out, c_act = layers.leaky_relu_forward(h, alpha)
        return layers.dropout_backward(layers.leaky_relu_backward(2 * out, c_act), c_drop)

    rates, alphas = jnp.array([0.0, 0.25, 0.5]), jnp.array([0.1, 0.2, 0.3])
    got = jax.jit(jax.vmap(grad_x))(rates, alphas)
    for i in range(3):
        chex.assert_trees_all_close(got[i], manual(rates[i], alphas[i]), rtol=1e-12, atol=1e-14)


def test_a_wrong_backward_makes_jax_grad_wrong():
    x = CASES["tanh"].args[0]
    wrong = cv.manual_vjp(layers.tanh_forward, lambda dout, cache: 2 * layers.tanh_backward(dout, cache))
    right = jax.grad(lambda x: jnp.sum(jnp.tanh(x)))(x)
    got = jax.grad(lambda x: jnp.sum(wrong(x)))(x)
    chex.assert_trees_all_close(got, 2 * right, rtol=1e-14)
    chex.assert_trees_all_close(jax.jit(jax.grad(lambda x: jnp.sum(wrong(x))))(x), 2 * right, rtol=1e-14)
    # The forward value is still the layer's.
    chex.assert_trees_all_equal(wrong(x), jnp.tanh(x))


def test_differentiating_a_closed_over_argument_is_an_error():
    x = CASES["leaky_relu_positional"].args[0]
    with pytest.raises(TypeError, match=r"manual_vjp\(leaky_relu_forward\): cannot differentiate .*\(positions \[1\]"):
        jax.grad(lambda alpha: jnp.sum(cv.leaky_relu(x, alpha)))(0.2)
    scores, y = CASES["mean_squared_error"].args
    with pytest.raises(TypeError, match="cannot differentiate"):
        jax.grad(lambda y: cv.mean_squared_error(scores, y))(y)


def test_bad_arguments():
    with pytest.raises(TypeError, match="manual_vjp: forward must be callable"):
        cv.manual_vjp(None, layers.relu_backward)
    with pytest.raises(TypeError, match="manual_vjp: nondiff_argnums must be non-negative ints"):
        cv.manual_vjp(layers.relu_forward, layers.relu_backward, nondiff_argnums=(-1,))
    too_few = cv.manual_vjp(layers.affine_forward, lambda dout, cache: layers.affine_backward(dout, cache)[:2])
    x, W, b = CASES["affine"].args
    with pytest.raises(ValueError, match=r"manual_vjp\(affine_forward\): backward returned 2 gradient\(s\) but there are 3"):
        jax.grad(lambda W: jnp.sum(too_few(x, W, b)))(W)
    # The layers' own argument checks still run, naming the layer.
    with pytest.raises(ValueError, match="affine_forward: x has shape"):
        cv.affine(x, W[:3], b)
