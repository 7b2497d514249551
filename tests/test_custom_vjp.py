"""fnet.custom_vjp: one bridge for every module. jax.grad through ``module_vjp(module)`` runs the
module's hand-written backward (equal to calling it directly, within 1e-7 of JAX's autodiff of the
plain forward in float64), for leaf modules and compositions alike; a network written with it
equals the Net's loss_and_grad; traced closed-over arguments work under jit and vmap; a wrong
backward really makes jax.grad wrong; manual_vjp's own contract for layer pairs."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import custom_vjp as cv
from fnet import layers, losses, nets
from fnet.combinators import fan_in_concat, fan_out, parallel, residual, serial
from fnet.gradcheck import rel_error
from fnet.modules import batchnorm, dense, dropout, layernorm, leaky_relu, relu, sigmoid, tanh

AUTODIFF_TOL = 1e-7  # float64, the bridge vs JAX's autodiff of the plain forward
N, D = 6, 5
X = jax.random.normal(jax.random.PRNGKey(0), (N, D), jnp.float64)
KEY = jax.random.PRNGKey(3)

MODULES = {
    "dense": dense(4),
    "leaky_relu": leaky_relu(0.2),
    "batchnorm": batchnorm(),
    "dropout": dropout(0.4),
    "serial": serial(dense(7), layernorm(), tanh(), dropout(0.3), dense(3)),
    "residual": residual(serial(dense(D), batchnorm(), relu(), dense(D))),
    "two branches": serial(fan_out(2), parallel(serial(dense(4), sigmoid()), dense(2)), fan_in_concat(), dense(3)),
}


def _setup(module):
    params, state, _ = module.init(jax.random.PRNGKey(1), (N, D))
    params, state = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), (params, state))
    y, _, _ = module.forward(params, state, X, train=True, key=KEY)
    dy = jax.random.normal(jax.random.PRNGKey(2), y.shape, jnp.float64)
    return params, state, dy


@pytest.mark.parametrize("name", list(MODULES))
def test_jax_grad_through_the_bridge_runs_the_hand_written_backward(name):
    module = MODULES[name]
    params, state, dy = _setup(module)
    f = cv.module_vjp(module)

    def objective(p, x):
        y, _ = f(p, x, state=state, key=KEY)
        return jnp.sum(y * dy)

    got = jax.jit(jax.grad(objective, argnums=(0, 1)))(params, X)
    _, _, cache = module.forward(params, state, X, train=True, key=KEY)
    dx, dparams = module.backward(params, cache, dy)
    # The same rule, compiled (atol: the bias before batch norm has an exact zero gradient; its
    # rounding noise, ~1e-16, differs between jit and eager).
    chex.assert_trees_all_close(got, (dparams, dx), rtol=1e-12, atol=1e-13)
    plain = jax.grad(lambda p, x: jnp.sum(module.forward(p, state, x, train=True, key=KEY)[0] * dy), argnums=(0, 1))
    assert rel_error(got, plain(params, X)) < AUTODIFF_TOL
    # The forward value and the new state are the module's.
    y, new_state = f(params, X, state=state, key=KEY)
    y_ref, state_ref, _ = module.forward(params, state, X, train=True, key=KEY)
    chex.assert_trees_all_equal((y, new_state), (y_ref, state_ref))


def test_a_network_written_with_the_bridge_equals_the_nets_loss_and_grad():
    module = serial(dense(6), batchnorm(), relu(), dropout(0.3), dense(3))
    net = nets.network(module, (D,), dtype="float64")
    params, state = net.init(jax.random.PRNGKey(0))
    y = jnp.arange(N) % 3
    f = cv.module_vjp(module)

    def loss(p):
        scores, new_state = f(p, X, state=state, key=KEY)
        return cv.LOSSES["softmax_cross_entropy"](scores, y), new_state

    (value, new_state), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    ref_value, ref_grads, ref_state = jax.jit(net.loss_and_grad)(params, X, y, state=state, key=KEY)
    chex.assert_trees_all_close((value, new_state, grads), (ref_value, ref_state, ref_grads), rtol=1e-12, atol=1e-15)


def test_wrapped_losses_have_the_hand_derived_dscores():
    scores = jax.random.normal(jax.random.PRNGKey(4), (N, 3), jnp.float64)
    y = jnp.arange(N) % 3
    assert set(cv.LOSSES) == set(losses.LOSSES)
    chex.assert_trees_all_equal(jax.grad(cv.LOSSES["softmax_cross_entropy"])(scores, y),
                                losses.softmax_cross_entropy(scores, y)[1])
    t = jax.random.normal(jax.random.PRNGKey(5), (N, 3), jnp.float64)
    chex.assert_trees_all_close(jax.grad(lambda s: 3.0 * cv.LOSSES["mse"](s, t))(scores),
                                3.0 * losses.mean_squared_error(scores, t)[1], rtol=1e-15)


def test_traced_closed_over_arguments_under_jit_and_vmap():
    """A dropout rate and a leaky slope built inside a vmapped function: no recompilation per
    value, and each entry equals the manual chain at that value."""

    def grad_x(rate, alpha):
        f = cv.module_vjp(serial(dropout(rate), leaky_relu(alpha)))
        return jax.grad(lambda x: jnp.sum(f({}, x, key=KEY)[0] ** 2))(X)

    def manual(rate, alpha):
        h, c_drop = layers.dropout_forward(X, rate, jax.random.fold_in(KEY, 0))
        out, c_act = layers.leaky_relu_forward(h, alpha)
        return layers.dropout_backward(layers.leaky_relu_backward(2 * out, c_act), c_drop)

    rates, alphas = jnp.array([0.0, 0.25, 0.5]), jnp.array([0.1, 0.2, 0.3])
    got = jax.jit(jax.vmap(grad_x))(rates, alphas)
    for i in range(3):
        chex.assert_trees_all_close(got[i], manual(rates[i], alphas[i]), rtol=1e-12, atol=1e-14)


def test_a_wrong_backward_makes_jax_grad_wrong():
    honest = tanh()
    wrong = honest._replace(backward=lambda params, cache, dy: (2 * honest.backward(params, cache, dy)[0], {}))
    right = jax.grad(lambda x: jnp.sum(jnp.tanh(x)))(X)
    got = jax.jit(jax.grad(lambda x: jnp.sum(cv.module_vjp(wrong)({}, x)[0])))(X)
    chex.assert_trees_all_close(got, 2 * right, rtol=1e-14)
    chex.assert_trees_all_equal(cv.module_vjp(wrong)({}, X)[0], jnp.tanh(X))  # the forward is still tanh


def test_differentiating_a_closed_over_argument_is_an_error():
    f = cv.module_vjp(batchnorm())
    params, state, _ = batchnorm().init(KEY, (N, D))
    with pytest.raises(TypeError, match=r"manual_vjp\(batchnorm.forward\): cannot differentiate with respect to a "
                                         r"non-differentiable argument"):
        jax.grad(lambda s: jnp.sum(f(params, X, state=s)[0]))(state)
    scores, y = X, X
    with pytest.raises(TypeError, match="cannot differentiate"):
        jax.grad(lambda y: cv.LOSSES["mse"](scores, y))(y)


def test_manual_vjp_turns_a_layer_pair_into_a_function():
    affine = cv.manual_vjp(layers.affine_forward, layers.affine_backward)
    W, b = jax.random.normal(KEY, (D, 3), jnp.float64), jnp.zeros(3, jnp.float64)
    dout = jnp.ones((N, 3), jnp.float64)
    got = jax.grad(lambda x, W, b: jnp.sum(affine(x, W, b)), argnums=(0, 1, 2))(X, W, b)
    chex.assert_trees_all_close(got, layers.affine_backward(dout, (X, W)), rtol=1e-15)


def test_nondiff_argnums_accepts_numpy_ints():
    grads = [jax.grad(lambda x: jnp.sum(cv.manual_vjp(layers.leaky_relu_forward, layers.leaky_relu_backward,
                                                      nondiff_argnums=argnums)(x, 0.1)))(X)
             for argnums in (1, (1,), np.int64(1), [np.int32(1)])]
    for g in grads[1:]:
        chex.assert_trees_all_equal(g, grads[0])


def test_bad_arguments():
    with pytest.raises(TypeError, match="manual_vjp: forward must be callable"):
        cv.manual_vjp(None, layers.relu_backward)
    with pytest.raises(ValueError, match=r"manual_vjp: nondiff_argnums must be an int >= 0, got -1"):
        cv.manual_vjp(layers.relu_forward, layers.relu_backward, nondiff_argnums=(-1,))
    for bad, shown in ((True, r"True \(bool\)"), ((0, 1.0), r"1.0 \(float\)"), (np.float64(1), "np.float64")):
        with pytest.raises(TypeError, match=rf"manual_vjp: nondiff_argnums must be an int, got {shown}"):
            cv.manual_vjp(layers.leaky_relu_forward, layers.leaky_relu_backward, nondiff_argnums=bad)
    too_few = cv.manual_vjp(layers.affine_forward, lambda dout, cache: layers.affine_backward(dout, cache)[:2])
    W, b = jnp.ones((D, 3)), jnp.zeros(3)
    with pytest.raises(ValueError, match=r"manual_vjp\(affine_forward\): backward returned 2 gradient\(s\) but there are 3"):
        jax.grad(lambda W: jnp.sum(too_few(X, W, b)))(W)
    with pytest.raises(TypeError, match="module_vjp: module must be a fnet.modules.Module, got function"):
        cv.module_vjp(relu)
    with pytest.raises(ValueError, match="affine_forward: x has shape"):  # the layers' own checks still run
        cv.module_vjp(dense(3))({"W": jnp.ones((4, 3)), "b": jnp.zeros(3)}, X)
    np.testing.assert_array_equal(cv.module_vjp(relu())({}, jnp.array([[-1.0, 2.0]]))[0], [[0.0, 2.0]])
