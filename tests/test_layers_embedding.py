"""fnet.layers.embedding: the word embedding (the gradients of repeated ids summed, none for unused
ids) and the temporal affine layer (against a loop over time steps), both against JAX's autodiff in
float64, and the checks of token ids."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layer_checks import AUTODIFF_TOL, rnd

from fnet import layers as R
from fnet.gradcheck import rel_error


def test_word_embedding_sums_the_gradients_of_repeated_ids():
    rng = np.random.default_rng(7)
    V, D = 6, 3
    W = rnd(rng, (V, D))
    x = jnp.array([[0, 3, 3, 5], [3, 0, 1, 3]])  # 3 four times, 0 twice; 2 and 4 unused
    out, cache = R.word_embedding_forward(x, W)
    np.testing.assert_array_equal(out, np.asarray(W)[np.asarray(x)])
    dout = rnd(rng, out.shape)
    dW = R.word_embedding_backward(dout, cache)
    want = np.zeros((V, D))
    for n in range(2):
        for t in range(4):
            want[int(x[n, t])] += np.asarray(dout[n, t])
    np.testing.assert_allclose(dW, want, rtol=1e-14, atol=1e-15)
    assert not np.any(np.asarray(dW)[[2, 4]])
    auto = jax.grad(lambda W: jnp.sum(R.word_embedding_forward(x, W)[0] * dout))(W)
    assert rel_error(dW, auto) < AUTODIFF_TOL


def test_temporal_affine_matches_a_loop_and_vjp():
    rng = np.random.default_rng(8)
    x, W, b = rnd(rng, (2, 3, 4)), rnd(rng, (4, 5)), rnd(rng, (5,))
    out, cache = R.temporal_affine_forward(x, W, b)
    want = np.stack([np.asarray(x[:, t]) @ np.asarray(W) + np.asarray(b) for t in range(3)], axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-13)
    dout = rnd(rng, out.shape)
    _, vjp = jax.vjp(lambda *a: R.temporal_affine_forward(*a)[0], x, W, b)
    assert rel_error(R.temporal_affine_backward(dout, cache), vjp(dout)) < AUTODIFF_TOL


def test_bad_token_ids():
    W = jnp.ones((5, 2))
    with pytest.raises(TypeError, match=r"word_embedding_forward: x must be integer token ids, got dtype float"):
        R.word_embedding_forward(jnp.zeros((2, 3)), W)
    with pytest.raises(ValueError, match=r"word_embedding_forward: x must lie in \[0, 5\) for a vocabulary of 5, "
                                         r"got values in \[-1, 5\]"):
        R.word_embedding_forward(jnp.array([[0, 5], [-1, 2]]), W)
    # under jit the values are unknown: only the dtype is checked
    assert jax.jit(lambda x: R.word_embedding_forward(x, W)[0])(jnp.array([[0, 4]])).shape == (1, 2, 2)
