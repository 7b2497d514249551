"""Every `*_backward` checks `dout` against the forward output's shape (issue: a dout of shape
(8, 1) was broadcast silently, and batchnorm_backward returned a dbeta of shape (1,))."""

import re

import jax
import jax.numpy as jnp
import pytest

from fnet import layers

N, D, M = 8, 5, 10
X = jax.random.normal(jax.random.PRNGKey(0), (N, D))
G, B = jnp.ones(D), jnp.zeros(D)

CASES = {
    "affine_backward": (layers.affine_forward(X, jnp.ones((D, M)), jnp.zeros(M))[1], layers.affine_backward, (N, M)),
    "relu_backward": (layers.relu_forward(X)[1], layers.relu_backward, (N, D)),
    "leaky_relu_backward": (layers.leaky_relu_forward(X)[1], layers.leaky_relu_backward, (N, D)),
    "sigmoid_backward": (layers.sigmoid_forward(X)[1], layers.sigmoid_backward, (N, D)),
    "tanh_backward": (layers.tanh_forward(X)[1], layers.tanh_backward, (N, D)),
    "batchnorm_backward": (layers.batchnorm_forward(X, G, B, (G * 0, G))[2], layers.batchnorm_backward, (N, D)),
    "layernorm_backward": (layers.layernorm_forward(X, G, B)[1], layers.layernorm_backward, (N, D)),
    "dropout_backward": (layers.dropout_forward(X, 0.5, jax.random.PRNGKey(1))[1], layers.dropout_backward, (N, D)),
    "softmax_backward": (layers.softmax_forward(X)[1], layers.softmax_backward, (N, D)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("bad", ["column", "row", "transposed"])
def test_a_dout_of_another_shape_is_refused(name, bad):
    cache, backward, shape = CASES[name]
    dout = {"column": jnp.ones((shape[0], 1)), "row": jnp.ones((1, shape[1])), "transposed": jnp.ones(shape[::-1])}[bad]
    message = f"{name}: dout has shape {tuple(dout.shape)} but the forward output has shape {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        backward(dout, cache)
    backward(jnp.ones(shape), cache)  # the right shape passes


@pytest.mark.parametrize("name", ["affine_backward", "relu_backward"])
def test_an_integer_dout_is_refused(name):
    cache, backward, shape = CASES[name]
    with pytest.raises(TypeError, match=f"{name}: dout must be a floating-point array"):
        backward(jnp.ones(shape, jnp.int32), cache)
