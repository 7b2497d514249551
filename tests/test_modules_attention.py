"""fnet.modules.attention: the transformer modules' three-way gradient checks (hand-written backward
vs jax.grad vs finite differences, float64), causality, shapes and the bad-input errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import rounding_rtol

from fnet import combinators as c
from fnet import gradcheck
from fnet import modules as m


@pytest.mark.parametrize("module, shape", [
    (m.self_attention(2), (2, 4, 6)),
    (m.self_attention(3, causal=False, dropout=0.3), (2, 4, 6)),
    (m.self_attention(3, causal=False, dropout=0.3, recompute=True), (2, 4, 6)),
    (m.cross_attention(2), ((2, 3, 4), (2, 5, 4))),
    (m.cross_attention(2, dropout=0.2, recompute=True), ((2, 3, 4), (2, 5, 4))),
    (m.position_embedding(6), (2, 4, 3)),
    (m.gelu("tanh"), (3, 5)),
    (m.layernorm(), (2, 3, 5)),
    (c.serial(c.residual(c.serial(m.layernorm(), m.self_attention(2))),
              c.residual(c.serial(m.layernorm(), m.temporal_dense(16), m.gelu(), m.temporal_dense(8)))), (2, 4, 8)),
], ids=["self-causal", "self-dropout", "self-dropout-recompute", "cross", "cross-recompute", "positions", "gelu-tanh", "layernorm-3d", "block"])
def test_three_way_gradient_check(module, shape):
    assert gradcheck.check_module(module, shape).passed


@pytest.mark.parametrize("make", [lambda r: m.self_attention(2, dropout=0.25, recompute=r),
                                  lambda r: m.cross_attention(2, dropout=0.25, recompute=r)], ids=["self", "cross"])
def test_recompute_gives_the_stored_forward_and_gradients(make):
    stored, recomputed = make(False), make(True)
    shape = (2, 5, 4) if stored.name == "self_attention" else ((2, 5, 4), (2, 3, 4))
    with jax.enable_x64(True):
        params, state, _ = stored.init(jax.random.PRNGKey(0), shape)
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
        xs = [jax.random.normal(jax.random.PRNGKey(i + 1), s, jnp.float64)
              for i, s in enumerate([shape] if stored.name == "self_attention" else shape)]
        x = xs[0] if len(xs) == 1 else tuple(xs)
        key = jax.random.PRNGKey(9)
        y, _, cache = stored.forward(params, state, x, train=True, key=key)
        y_r, _, cache_r = recomputed.forward(params, state, x, train=True, key=key)
        np.testing.assert_array_equal(y, y_r)
        dy = jax.random.normal(jax.random.PRNGKey(7), y.shape, jnp.float64)
        # The same arithmetic on recomputed weights and a regenerated dropout mask: equal to the
        # rounding of the longest sums (over T keys, d features, then E for the projections), float64.
        tol = rounding_rtol(np.float64, terms=5 + 4 + 2 * 4)
        expected = stored.backward(params, cache, dy)
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(expected))
        chex.assert_trees_all_close(recomputed.backward(params, cache_r, dy), expected, rtol=tol, atol=tol * scale)
    assert "recompute" in recomputed.info and "recompute" not in stored.info


def test_causal_self_attention_does_not_look_ahead():
    module = m.self_attention(2)
    params, state, _ = module.init(jax.random.PRNGKey(0), (1, 5, 4))
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 4))
    changed = x.at[:, 3:].set(7.0)  # only positions 3 and 4 differ
    y, _, _ = module.forward(params, state, x, train=False)
    y2, _, _ = module.forward(params, state, changed, train=False)
    np.testing.assert_array_equal(y[:, :3], y2[:, :3])
    assert not np.allclose(y[:, 3:], y2[:, 3:])


def test_position_embedding_adds_the_first_rows():
    module = m.position_embedding(8)
    params, state, out_shape = module.init(jax.random.PRNGKey(0), (None, 5, 3))
    assert out_shape == (None, 5, 3) and params["P"].shape == (8, 3)
    x = jnp.ones((2, 5, 3), jnp.float32)
    y, _, cache = module.forward(params, state, x, train=True)
    np.testing.assert_array_equal(y, x + params["P"][:5])
    _, grads = module.backward(params, cache, jnp.ones_like(y))
    np.testing.assert_array_equal(grads["P"], jnp.concatenate([jnp.full((5, 3), 2.0), jnp.zeros((3, 3))]))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"self_attention: num_heads 4 does not divide the width E = 6"):
        m.self_attention(4).init(jax.random.PRNGKey(0), (2, 3, 6))
    with pytest.raises(ValueError, match=r"self_attention: .*\(N, T, E\)"):
        m.self_attention(2).init(jax.random.PRNGKey(0), (2, 6))
    with pytest.raises(ValueError, match=r"cross_attention: takes a tuple \(x, context\)"):
        m.cross_attention(2).init(jax.random.PRNGKey(0), (2, 3, 6))
    with pytest.raises(ValueError, match=r"cross_attention: x and context must have the same width E"):
        m.cross_attention(2).init(jax.random.PRNGKey(0), ((2, 3, 6), (2, 4, 8)))
    with pytest.raises(ValueError, match=r"position_embedding: sequences of 9 positions are longer than the context 8"):
        m.position_embedding(8).init(jax.random.PRNGKey(0), (2, 9, 4))
    with pytest.raises(ValueError, match=r"gelu: approximate must be one of \('erf', 'tanh'\), got 'fast'"):
        m.gelu("fast")
    with pytest.raises(ValueError, match=r"self_attention: dropout"):
        m.self_attention(2, dropout=1.5)
