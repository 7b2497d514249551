"""Gradient truth for compositions: hypothesis builds random networks (depth, widths, residual and
branch blocks, norms, dropout, activations) and the derived hand-written backward chain must
equal jax.grad (< 1e-7) and central differences (< 1e-5) in float64, for the input and every
parameter (fnet.gradcheck.check_module: one compiled check per example)."""

from __future__ import annotations

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from fnet import gradcheck
from fnet.combinators import fan_in_concat, fan_in_sum, fan_out, parallel, residual, serial
from fnet.modules import batchnorm, dense, dropout, identity, layernorm, leaky_relu, relu, sigmoid, tanh

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
