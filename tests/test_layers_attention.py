"""fnet.layers.attention: scaled dot-product and multi-head attention against slow NumPy loops and
their hand-written backward passes against jax.vjp (float64), masks (a fully masked row stays
finite), positional encodings by the formula, GELU against jax.nn.gelu, and the bad-input errors."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import rounding_rtol
from hypothesis import given, settings
from hypothesis import strategies as st

from fnet import layers


def _normal(key, shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float64)


def numpy_attention(q, k, v, mask=None):
    """Attention one query row at a time, as written on paper."""
    n, h, s, d = q.shape
    out = np.zeros((n, h, s, v.shape[3]))
    for a in range(n):
        for b in range(h):
            for i in range(s):
                scores = np.array([q[a, b, i] @ k[a, b, t] / math.sqrt(d) for t in range(k.shape[2])])
                allowed = np.ones_like(scores, bool) if mask is None else np.broadcast_to(mask, (n, h, s, len(scores)))[a, b, i]
                if not allowed.any():
                    w = np.full(len(scores), 1 / len(scores))  # every key masked: the mean of the values
                else:
                    e = np.where(allowed, np.exp(scores - scores[allowed].max()), 0.0)
                    w = e / e.sum()
                out[a, b, i] = w @ v[a, b]
    return out


def _mask(s, t):
    """A causal mask whose first query row is fully masked too."""
    mask = np.tril(np.ones((s, t), bool), k=t - s)
    mask[0] = False
    return jnp.asarray(mask)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 3), s=st.integers(1, 4), t=st.integers(1, 5), d=st.integers(1, 4))
def test_attention_matches_numpy_and_a_fully_masked_row_is_finite(n, h, s, t, d):
    q, k, v = _normal(0, (n, h, s, d)), _normal(1, (n, h, t, d)), _normal(2, (n, h, t, 3))
    for mask in (None, _mask(s, t)):
        out, _ = layers.attention_forward(q, k, v, mask=mask)
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, numpy_attention(*map(np.asarray, (q, k, v)), mask), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_backward_matches_vjp(dropout, masked, recompute):
    q, k, v = _normal(0, (2, 2, 4, 3)), _normal(1, (2, 2, 5, 3)), _normal(2, (2, 2, 5, 6))
    mask, key = (_mask(4, 5) if masked else None), jax.random.PRNGKey(7)

    def forward(q, k, v):
        return layers.attention_forward(q, k, v, mask=mask, dropout=dropout, key=key)[0]

    out, cache = layers.attention_forward(q, k, v, mask=mask, dropout=dropout, key=key, recompute=recompute)
    np.testing.assert_array_equal(out, forward(q, k, v))  # recompute changes the cache, not the output
    dout = _normal(3, out.shape)
    manual = layers.attention_backward(dout, cache)
    expected = jax.vjp(forward, q, k, v)[1](dout)
    chex.assert_trees_all_close(manual, expected, rtol=rounding_rtol(np.float64, terms=5 * 6), atol=1e-13)
    if masked:  # the fully masked first row does not depend on q
        assert float(jnp.max(jnp.abs(manual[0][:, :, 0]))) == 0.0


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_recomputed_weights_give_the_stored_gradients_and_keep_no_weights(dropout):
    q, k, v = _normal(0, (2, 3, 4, 3)), _normal(1, (2, 3, 6, 3)), _normal(2, (2, 3, 6, 5))
    mask, key = _mask(4, 6), jax.random.PRNGKey(3)
    dout = _normal(3, (2, 3, 4, 5))
    stored, recomputed = (layers.attention_forward(q, k, v, mask=mask, dropout=dropout, key=key, recompute=r)[1]
                          for r in (False, True))
    # recomputed: nothing of the weights' (N, h, S, T) shape is kept; with dropout, the key is
    assert recomputed.weights is None and recomputed.dropout_mask is None
    assert (recomputed.dropout_key is not None) == (dropout > 0)
    # The backward recomputes the forward's very weights and dropout mask (the same operations on
    # the same q, k and key), so the two backward passes run the same arithmetic: equal to the
    # rounding of the softmax's and the products' sums over T and d (not one CPU's printout).
    chex.assert_trees_all_close(layers.attention_backward(dout, recomputed), layers.attention_backward(dout, stored),
                                rtol=rounding_rtol(np.float64, terms=6 + 5), atol=1e-14)


def test_multi_head_attention_recompute_with_dropout_matches_vjp():
    e, heads = 6, 2
    query, key, value = _normal(0, (2, 4, e)), _normal(1, (2, 5, e)), _normal(2, (2, 5, e))
    params, mask, rng = _mha_params(e), _mask(4, 5), jax.random.PRNGKey(5)

    def forward(query, key, value, params):
        return layers.multi_head_attention_forward(query, key, value, params, num_heads=heads, mask=mask,
                                                   dropout=0.4, rng=rng)[0]

    out, cache = layers.multi_head_attention_forward(query, key, value, params, num_heads=heads, mask=mask,
                                                     dropout=0.4, rng=rng, recompute=True)
    assert cache.attention.weights is None
    dout = _normal(3, out.shape)
    expected = jax.vjp(forward, query, key, value, params)[1](dout)
    rtol = rounding_rtol(np.float64, terms=4 * e * e)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(expected))
    chex.assert_trees_all_close(layers.multi_head_attention_backward(dout, cache), expected, rtol=rtol,
                                atol=rtol * scale)


def _mha_params(e, key=0):
    keys = jax.random.split(jax.random.PRNGKey(key), 8)
    return {name: jax.random.normal(kk, (e, e) if name.startswith("W") else (e,), jnp.float64) / math.sqrt(e)
            for name, kk in zip(layers.PROJECTIONS, keys)}


def test_multi_head_attention_backward_matches_vjp_and_the_key_bias_gradient_vanishes():
    e, heads = 6, 3
    query, key, value = _normal(0, (2, 4, e)), _normal(1, (2, 5, e)), _normal(2, (2, 5, e))
    params, mask = _mha_params(e), _mask(4, 5)[None, None]

    def forward(query, key, value, params):
        return layers.multi_head_attention_forward(query, key, value, params, num_heads=heads, mask=mask)[0]

    out, cache = layers.multi_head_attention_forward(query, key, value, params, num_heads=heads, mask=mask)
    dout = _normal(3, out.shape)
    manual = layers.multi_head_attention_backward(dout, cache)
    expected = jax.vjp(forward, query, key, value, params)[1](dout)
    rtol = rounding_rtol(np.float64, terms=4 * e * e)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(expected))
    chex.assert_trees_all_close(manual, expected, rtol=rtol, atol=rtol * scale)
    # softmax is shift-invariant per row: the key bias has no effect, so its gradient is rounding
    assert float(jnp.max(jnp.abs(manual[3]["bk"]))) <= rtol * scale


def test_multi_head_self_attention_matches_per_head_numpy():
    e, heads, s = 8, 2, 5
    x, params = _normal(0, (3, s, e)), _mha_params(e, key=1)
    causal = jnp.tril(jnp.ones((s, s), bool))
    out, _ = layers.multi_head_attention_forward(x, x, x, params, num_heads=heads, mask=causal)
    p = {k: np.asarray(v) for k, v in params.items()}
    xn, d = np.asarray(x), e // heads
    proj = {c: xn @ p[f"W{c}"] + p[f"b{c}"] for c in "qkv"}
    split = {c: proj[c].reshape(3, s, heads, d).transpose(0, 2, 1, 3) for c in "qkv"}
    attended = numpy_attention(split["q"], split["k"], split["v"], np.asarray(causal))
    expected = attended.transpose(0, 2, 1, 3).reshape(3, s, e) @ p["Wo"] + p["bo"]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_positional_encoding_follows_the_formula():
    table = np.asarray(layers.positional_encoding(7, 6, dtype=jnp.float64))
    for i in range(7):
        for j in range(6):
            angle = i * 10000 ** (-(j if j % 2 == 0 else j - 1) / 6)
            assert table[i, j] == pytest.approx(math.sin(angle) if j % 2 == 0 else math.cos(angle), abs=1e-15)
    assert layers.positional_encoding(3, 5).dtype == jnp.float32 and layers.positional_encoding(3, 5).shape == (3, 5)


@pytest.mark.parametrize("approximate", ["erf", "tanh"])
def test_gelu_matches_jax_and_its_backward_matches_grad(approximate):
    x = jnp.linspace(-6, 6, 101, dtype=jnp.float64)
    out, cache = layers.gelu_forward(x, approximate=approximate)
    np.testing.assert_allclose(out, jax.nn.gelu(x, approximate=approximate == "tanh"), rtol=1e-14, atol=1e-15)
    dout = _normal(0, x.shape)
    expected = jax.vjp(lambda x: layers.gelu_forward(x, approximate=approximate)[0], x)[1](dout)[0]
    # 1 + tanh(...) cancels where x << 0: absolute rounding of a few eps * |dout| * |x|
    atol = 8 * np.finfo(np.float64).eps * float(jnp.max(jnp.abs(dout))) * 6
    np.testing.assert_allclose(layers.gelu_backward(dout, cache), expected, rtol=1e-13, atol=atol)


def test_bad_input_is_named():
    q = jnp.zeros((1, 2, 3, 4))
    with pytest.raises(TypeError, match=r"attention_forward: mask must be a boolean array .* got .* dtype float"):
        layers.attention_forward(q, q, q, mask=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match=r"attention_forward: mask of shape \(4, 3\) does not broadcast to the scores' "
                                         r"shape \(N, h, S, T\) = \(1, 2, 3, 3\)"):
        layers.attention_forward(q, q, q, mask=jnp.ones((4, 3), bool))
    with pytest.raises(ValueError, match=r"attention_forward: dropout 0.5 > 0 needs a PRNG key"):
        layers.attention_forward(q, q, q, dropout=0.5)
    with pytest.raises(ValueError, match=r"attention_forward: q \(N, h, S, d\), k .* must agree"):
        layers.attention_forward(q, jnp.zeros((1, 2, 3, 5)), q)
    x = jnp.zeros((2, 3, 6))
    with pytest.raises(ValueError, match=r"multi_head_attention_forward: num_heads 4 does not divide the width E = 6"):
        layers.multi_head_attention_forward(x, x, x, _mha_params(6), num_heads=4)
    with pytest.raises(ValueError, match=r"multi_head_attention_forward: params"):
        layers.multi_head_attention_forward(x, x, x, _mha_params(4), num_heads=2)
    with pytest.raises(ValueError, match=r"attention_forward: mask of shape \(2, 1, 2, 3, 3\) does not broadcast"):
        layers.attention_forward(q, q, q, mask=jnp.ones((2, 1, 2, 3, 3), bool))  # broadcasts, but to more than (N, h, S, T)
    for recompute in (False, True):
        with pytest.raises(ValueError, match=r"attention_forward: dropout 0.5 > 0 needs a PRNG key"):
            layers.attention_forward(q, q, q, dropout=0.5, recompute=recompute)
        _, cache = layers.attention_forward(q, q, q, recompute=recompute)
        with pytest.raises(ValueError, match=r"attention_backward: dout"):
            layers.attention_backward(jnp.zeros((1, 2, 3, 5)), cache)
    with pytest.raises(ValueError, match=r"gelu_forward: approximate must be one of \('erf', 'tanh'\), got 'fast'"):
        layers.gelu_forward(q, approximate="fast")
