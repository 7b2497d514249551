"""fnet.modules and fnet.combinators: the module contract (shapes from init, one return shape,
dparams shaped like params), every leaf module and combinator against jax.vjp of its forward,
the naming of children, the errors of a bad composition (naming its position), fnet.summary,
and a network of any shape trained by fit."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnet
from fnet import gradcheck, nets, optim
from fnet import train as fnet_train
from fnet.combinators import fan_in_concat, fan_out, parallel, residual, serial
from fnet.modules import (BatchNormState, Module, avg_pool, batchnorm, conv2d, dense, dropout, flatten, groupnorm,
                          identity, init_shapes, layernorm, leaky_relu, max_pool, relu, sigmoid, softmax, tanh)

N = 4

LEAVES = {
    "dense": (dense(3), (N, 2, 3), (None, 3)),
    "relu": (relu(), (N, 5), (None, 5)),
    "leaky_relu": (leaky_relu(0.1), (N, 5), (None, 5)),
    "sigmoid": (sigmoid(), (N, 5), (None, 5)),
    "tanh": (tanh(), (N, 5), (None, 5)),
    "identity": (identity(), (N, 5), (None, 5)),
    "softmax": (softmax(), (N, 5), (None, 5)),
    "batchnorm": (batchnorm(), (N, 5), (None, 5)),
    "layernorm": (layernorm(), (N, 5), (None, 5)),
    "dropout": (dropout(0.5), (N, 5), (None, 5)),
    "flatten": (flatten(), (N, 2, 3), (None, 6)),
}


@pytest.mark.parametrize("name", list(LEAVES))
def test_leaf_module_contract(name):
    """(Each leaf's gradient is checked by `fnet gradcheck`, run in tests/test_cli_gradcheck.py.)"""
    module, shape, out_shape = LEAVES[name]
    assert isinstance(module, Module) and module.name == name
    params, state, out = module.init(jax.random.PRNGKey(0), (None, *shape[1:]))
    assert out == out_shape  # shapes are known from init, before any data (batch axis: None)
    # eval mode: one return shape, the state unchanged
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    y, new_state, _ = module.forward(params, state, x, train=False)
    assert y.shape == (N, *out_shape[1:])
    chex.assert_trees_all_equal(new_state, state)


def test_batchnorm_keeps_running_statistics_in_its_state():
    module = batchnorm(momentum=0.8)
    params, state, _ = module.init(jax.random.PRNGKey(0), (None, 3))
    assert isinstance(state, BatchNormState) and set(params) == {"gamma", "beta"}
    x = jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    _, new_state, _ = module.forward(params, state, x, train=True)
    np.testing.assert_allclose(new_state.mean, 0.2 * np.array([2.0, 2.0, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(new_state.var, 0.8 + 0.2 * np.array([1.0, 0.0, 1.0]), rtol=1e-6)


def test_dropout_without_a_key_in_train_mode_is_a_clear_error():
    with pytest.raises(ValueError, match=r"dropout: key is None in train mode; dropout \(rate 0.5\) needs a PRNG key"):
        dropout(0.5).forward({}, {}, jnp.ones((2, 3)), train=True)
    y, _, _ = dropout(0.5).forward({}, {}, jnp.ones((2, 3)), train=False)  # eval: no key needed
    np.testing.assert_array_equal(y, 1.0)


def test_nested_combinators_backward_is_derived_from_the_children():
    """(Each combinator alone is checked by `fnet gradcheck`; random compositions in
    tests/test_compositions.py.)"""
    module = serial(residual(serial(dense(4), tanh())), dropout(0.3), residual(layernorm()),
                    fan_out(2), parallel(dense(2), sigmoid()), fan_in_concat())
    row = gradcheck.check_module(module, (N, 4))
    assert row.passed, gradcheck.format_report([row], verbose=True)
    assert set(row.leaves) == {"x", "params.residual1.branches.block.dense1.W", "params.residual1.branches.block.dense1.b",
                               "params.residual2.branches.block.gamma", "params.residual2.branches.block.beta",
                               "params.parallel1.dense1.W", "params.parallel1.dense1.b"}


def test_children_are_named_by_kind_and_parameter_free_ones_have_no_entry():
    module = serial(dense(4), relu(), dropout(0.1), dense(4), ("head", dense(2)))
    params, state, out = module.init(jax.random.PRNGKey(0), (None, 3))
    assert [n for n, _ in module.children] == ["dense1", "relu1", "dropout1", "dense2", "head"]
    assert set(params) == {"dense1", "dense2", "head"} and state == {} and out == (None, 2)
    # inserting a parameter-free module never changes the parameter tree
    plain = serial(dense(4), relu(), dense(4), ("head", dense(2)))
    chex.assert_trees_all_equal_structs(plain.init(jax.random.PRNGKey(0), (None, 3))[0], params)
    res = residual(serial(dense(3), relu()))
    p, _, _ = res.init(jax.random.PRNGKey(0), (None, 3))
    assert jax.tree_util.tree_map(jnp.shape, p) == {"branches": {"block": {"dense1": {"W": (3, 3), "b": (3,)}}}}


@pytest.mark.parametrize("build, shape, message", [
    (lambda: serial(dense(4), residual(dense(3))), (None, 5),
     r"serial\[1\] \(residual1\): residual\[2\] \(merge\): fan_in_sum: the branches' shapes differ: \(None, 3\) vs "
     r"\(None, 4\)"),
    (lambda: serial(tanh(), batchnorm(), dense(2)), (None, 2, 3),
     r"serial\[1\] \(batchnorm1\): batchnorm: expects input of shape \(N, D\) or \(N, C, H, W\), got \(None, 2, 3\)"),
    (lambda: serial(dense(3), parallel(dense(2), dense(2))), (None, 5),
     r"serial\[1\] \(parallel1\): parallel: input shape must be a tuple of 2 shapes .* put fan_out\(2\) before parallel"),
    (lambda: serial(fan_out(2), parallel(dense(2), dense(3)), fan_in_concat(axis=0)), (None, 5),
     r"serial\[2\] \(fan_in_concat1\): fan_in_concat: axis 0 must be a non-batch axis"),
    (lambda: serial(layernorm()), (None, 2, 3), r"serial\[0\] \(layernorm1\): layernorm: expects input of shape \(N, D\), got"),
], ids=["residual-shape", "batchnorm-rank", "parallel-without-fan-out", "concat-batch-axis", "layernorm-rank"])
def test_a_bad_composition_names_the_position(build, shape, message):
    with pytest.raises(ValueError, match=message):
        build().init(jax.random.PRNGKey(0), shape)


def test_bad_children_and_names_are_refused():
    with pytest.raises(TypeError, match=r"serial: child 1 must be a Module .* got function; did you mean relu\(\)"):
        serial(dense(3), relu)
    with pytest.raises(ValueError, match=r"serial: child names must be unique .*repeated: \['a'\]"):
        serial(("a", dense(3)), ("a", dense(3)))
    with pytest.raises(ValueError, match="serial: needs at least one child"):
        serial()
    with pytest.raises(ValueError, match="dense: units must be a positive int, got 0"):
        dense(0)
    with pytest.raises(ValueError, match=r"dropout: rate must be in \[0, 1\), got 1.5"):
        dropout(1.5)


IMAGES = (None, 4, 8, 8)
#: Every integer argument of a module or combinator constructor:
#: name -> (build from the value, function, argument as the message names it, minimum, input shape).
SIZE_ARGUMENTS = {
    "dense units": (lambda v: dense(v), "dense", "units", 1, (None, 5)),
    "conv2d filters": (lambda v: conv2d(v, 3), "conv2d", "filters", 1, IMAGES),
    "conv2d kernel_size": (lambda v: conv2d(2, v), "conv2d", "kernel_size", 1, IMAGES),
    "conv2d kernel_size pair": (lambda v: conv2d(2, (3, v)), "conv2d", r"kernel_size\[1\]", 1, IMAGES),
    "conv2d stride": (lambda v: conv2d(2, 3, stride=v), "conv2d", "stride", 1, IMAGES),
    "conv2d pad": (lambda v: conv2d(2, 3, pad=v), "conv2d", "pad", 0, IMAGES),
    "max_pool pool_size": (lambda v: max_pool(v), "max_pool", "pool_size", 1, IMAGES),
    "avg_pool stride": (lambda v: avg_pool(2, stride=(v, 2)), "avg_pool", r"stride\[0\]", 1, IMAGES),
    "groupnorm groups": (lambda v: groupnorm(v), "groupnorm", "groups", 1, IMAGES),
    "fan_out n": (lambda v: fan_out(v), "fan_out", "n", 1, (None, 5)),
    "fan_in_concat axis": (lambda v: serial(fan_out(2), fan_in_concat(v)), "fan_in_concat", "axis", None, IMAGES),
}


@pytest.mark.parametrize("to_numpy", [np.int64, np.int32, np.uint8, np.array], ids=["int64", "int32", "uint8", "0-d"])
@pytest.mark.parametrize("name", list(SIZE_ARGUMENTS))
def test_integer_arguments_take_numpy_integers_as_python_ints(name, to_numpy):
    build, _, _, _, input_shape = SIZE_ARGUMENTS[name]
    python, numpy = build(2), build(to_numpy(2))
    assert numpy.info == python.info
    shape = init_shapes(numpy, input_shape)[2]
    assert shape == init_shapes(python, input_shape)[2]
    assert all(type(d) is int for d in jax.tree_util.tree_leaves(shape))  # no NumPy scalar leaks into shapes


@pytest.mark.parametrize("name, bad", [(name, bad) for name, case in SIZE_ARGUMENTS.items()
                                       for bad in ("bool", "float", "numpy float", "string", "below minimum")
                                       if bad != "below minimum" or case[3] is not None])
def test_integer_arguments_refuse_bools_floats_and_out_of_range_naming_the_argument(name, bad):
    build, fn, arg, minimum, _ = SIZE_ARGUMENTS[name]
    if bad == "below minimum":
        bound = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        with pytest.raises(ValueError, match=rf"{fn}: {arg} must be {bound}, got {minimum - 1}"):
            build(minimum - 1)
        return
    value = {"bool": True, "float": 2.0, "numpy float": np.float32(2), "string": "2"}[bad]
    with pytest.raises(TypeError, match=rf"{fn}: {arg} must be an int, got (True|.*2)"):
        build(value)


def test_a_wrong_backward_is_caught_by_the_gradient_check_with_a_clear_message():
    honest = dense(3)
    shapes_wrong = honest._replace(backward=lambda p, c, dy: (honest.backward(p, c, dy)[0], {"W": p["W"]}))
    with pytest.raises(ValueError, match=r"three_way: the manual gradient of mine does not match the inputs: "
                                         r"missing \['params'\]\['b'\]"):
        gradcheck.check_module(shapes_wrong, (N, 2), name="mine")
    values_wrong = honest._replace(backward=lambda p, c, dy: (lambda dx, dp: (dx, {**dp, "b": 2 * dp["b"]}))(
        *honest.backward(p, c, dy)))
    row = gradcheck.check_module(values_wrong, (N, 2), name="mine")
    assert not row.passed and row.leaves["params.b"].manual_autodiff > 0.1 and row.leaves["params.W"].manual_autodiff < 1e-7


def test_a_users_own_module_gets_the_three_way_table():
    """A module written from scratch (forward + hand-written backward), checked like fnet's own."""

    def init(key, input_shape):
        return {"a": jnp.ones(input_shape[1:])}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        y = params["a"] * x**2  # y = a * x^2
        return y, state, x

    def backward(params, x, dy):
        return 2 * params["a"] * x * dy, {"a": jnp.sum(dy * x**2, axis=0)}

    row = gradcheck.check_module(Module(init, forward, backward, "square"), (N, 3))
    report = gradcheck.format_report([row], verbose=True)
    assert row.passed and "square" in report and "params.a" in report and "PASS" in report


def test_check_module_takes_the_parameters_of_a_module_with_a_domain():
    """The default point draws every parameter from N(0, 0.25): a module defined only for positive
    parameters (y = sqrt(s) * x) is checked at parameters the caller gives."""

    def init(key, input_shape):
        return {"s": jnp.ones(input_shape[1:])}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        return jnp.sqrt(params["s"]) * x, state, x

    def backward(params, x, dy):
        return jnp.sqrt(params["s"]) * dy, {"s": jnp.sum(dy * x, axis=0) / (2 * jnp.sqrt(params["s"]))}

    module = Module(init, forward, backward, "sqrt_scale")
    assert not gradcheck.check_module(module, (N, 3)).passed  # some s < 0: NaN, which never passes
    row = gradcheck.check_module(module, (N, 3), params={"s": jnp.array([0.5, 1.0, 2.0])})
    assert row.passed and set(row.leaves) == {"params.s", "x"}


def test_summary_lists_modules_shapes_and_parameter_counts():
    net = fnet.network(serial(dense(100), batchnorm(), relu(), residual(serial(dense(100), tanh())), dense(10)), (784,))
    text = fnet.summary(net)
    lines = text.splitlines()
    assert lines[0] == net.name and lines[1].split() == ["module", "type", "output", "shape", "params"]
    row = next(line for line in lines if line.strip().startswith("dense1"))
    assert "(N, 100)" in row and row.rstrip().endswith("78,500")
    assert any(line.strip().startswith("residual1") and "10,100" in line for line in lines)
    total = 78_500 + 200 + 10_100 + 1_010
    assert lines[-1] == f"total: {total:,} parameters"
    assert total == sum(a.size for a in jax.tree_util.tree_leaves(net.init(jax.random.PRNGKey(0)).params))


def test_a_residual_and_a_two_branch_network_train_with_fit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32)  # XOR of signs: needs the hidden layers
    shapes = {
        "residual": serial(dense(32), relu(), residual(serial(dense(32), relu(), dense(32))), dense(2)),
        "two-branch": serial(fan_out(2), parallel(serial(dense(16), tanh()), serial(dense(16), relu())),
                             fan_in_concat(), dense(2)),
    }
    for name, module in shapes.items():
        net = fnet.network(module, (8,), weight_decay=1e-4, name=name)
        result = fnet_train.fit(net, optim.adam(1e-2), x, y, epochs=30, batch_size=64, progress=False)
        scores = net.apply(result.variables, x)
        assert float(jnp.mean(jnp.argmax(scores, 1) == y)) > 0.9, name


def test_network_rejects_bad_modules_losses_and_shapes():
    with pytest.raises(TypeError, match="network: module must be a fnet.modules.Module, got int"):
        nets.network(3, (4,))
    with pytest.raises(ValueError, match=r"network: input_shape must be the shape of one sample"):
        nets.network(dense(2), (None, 4))
    with pytest.raises(ValueError, match=r"network: softmax_cross_entropy needs scores of shape \(N, C\)"):
        nets.network(identity(), (2, 3))
    with pytest.raises(ValueError, match=r"network: unknown loss 'hinge'"):
        nets.network(dense(2), (4,), loss="hinge")
    with pytest.raises(ValueError, match=r"serial\[0\] \(layernorm1\): layernorm: expects input of shape \(N, D\)"):
        nets.network(serial(layernorm(), flatten(), dense(2)), (2, 3))
    # A network takes no sweep keywords (a sweep builds one network per trial, see fnet.fit_trials).
    net = nets.network(dense(2), (4,))
    with pytest.raises(TypeError, match="unexpected keyword argument 'dropout'"):
        net.apply(net.init(jax.random.PRNGKey(0)), jnp.ones((1, 4)), dropout=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'std'"):
        net.init(jax.random.PRNGKey(0), std=0.1)
