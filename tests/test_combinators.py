"""fnet.combinators: gradient truth for compositions (hypothesis builds random networks of depth,
widths, residual and branch blocks, norms, dropout and activations, and the derived hand-written
backward chain must equal jax.grad (< 1e-7) and central differences (< 1e-5) in float64, for the
input and every parameter, through fnet.gradcheck.check_module: one compiled check per example);
nested combinators; the naming of children; the errors of a bad composition, naming its
position."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from fnet import gradcheck, nets
from fnet.combinators import fan_in_concat, fan_in_sum, fan_out, parallel, residual, serial
from fnet.modules import batchnorm, dense, dropout, identity, layernorm, leaky_relu, relu, sigmoid, tanh

N = 4
ACTIVATIONS = {"relu": relu, "leaky_relu": lambda: leaky_relu(0.1), "sigmoid": sigmoid, "tanh": tanh,
               "identity": identity}


@st.composite
def blocks(draw, width: int, depth: int):
    """A module mapping (N, width) to (N, out); returns (module, out)."""
    kind = draw(st.sampled_from(["dense", "norm", "dropout", "residual", "branches", "sum"] if depth else
                                ["dense", "norm", "dropout"]))
    act = ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))]
    if kind == "dense":
        out = draw(st.integers(1, 5))
        return serial(dense(out), act()), out
    if kind == "norm":
        return (batchnorm() if draw(st.booleans()) else layernorm()), width
    if kind == "dropout":
        return dropout(draw(st.sampled_from([0.0, 0.25, 0.5]))), width
    if kind == "residual":
        inner, out = draw(chains(width, depth - 1))
        return residual(serial(inner, dense(width))), width
    if kind == "sum":  # two branches of the same output width, added
        out = draw(st.integers(1, 4))
        (a, _), (b, _) = draw(chains(width, depth - 1)), draw(chains(width, depth - 1))
        return serial(fan_out(2), parallel(serial(a, dense(out)), serial(b, dense(out))), fan_in_sum()), out
    (a, wa), (b, wb) = draw(chains(width, depth - 1)), draw(chains(width, depth - 1))
    return serial(fan_out(2), parallel(a, b), fan_in_concat()), wa + wb


@st.composite
def chains(draw, width: int, depth: int):
    """A serial chain of 1-3 blocks starting at ``width``; returns (module, out)."""
    children = []
    for _ in range(draw(st.integers(1, 3))):
        block, width = draw(blocks(width, depth))
        children.append(block)
    return serial(*children), width


# Each example is one compiled check (seconds: the budget is 5 examples); no shrinking, so that a
# failure reports at once.
@settings(max_examples=5, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(net=chains(3, 1), classes=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_random_compositions_have_true_gradients(net, classes, seed):
    module, width = net
    module = serial(module, dense(classes))
    row = gradcheck.check_module(module, (4, 3), seed=seed)
    assert row.passed, gradcheck.format_report([row], verbose=True)


def test_nested_combinators_backward_is_derived_from_the_children():
    """(Each combinator alone is checked by `fnet gradcheck`; random compositions above.)"""
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
    (lambda: serial(layernorm()), (None,), r"serial\[0\] \(layernorm1\): layernorm: expects input of shape \(N, D\) or "
                                           r"\(N, \.\.\., D\), got \(None,\)"),
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


def test_branches_where_one_array_is_expected_and_mismatched_branches_are_named():
    with pytest.raises(ValueError, match=r"serial\[1\] \(dense1\): dense: expects one array, got 2 branches of "
                                         r"shapes \(None, 4\) and \(None, 4\); merge them first with fan_in_sum"):
        nets.network(serial(fan_out(2), dense(3)), input_shape=(4,))
    a, b = jnp.ones((2, 3)), jnp.ones((5, 4))
    with pytest.raises(ValueError, match=r"fan_in_concat: the branches' shapes \(2, 3\) and \(5, 4\) differ outside "
                                         r"axis -1"):
        fan_in_concat().forward({}, {}, (a, b), train=False)
    with pytest.raises(ValueError, match=r"fan_in_sum: expects a tuple of branches of one shape, got shapes "
                                         r"\[\(2, 3\), \(5, 4\)\]"):
        fan_in_sum().forward({}, {}, (a, b), train=False)
