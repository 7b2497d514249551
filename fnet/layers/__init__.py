"""Layers as pure forward/backward pairs (cs231n's convention), one file per family.

Every layer is two pure, jit-able functions::

    out, cache = X_forward(x, ...)
    dx, ... = X_backward(dout, cache)

``cache`` holds what the backward pass needs and nothing else; it is a pytree, so it can be
carried through ``jit``/``scan``. None of the backward functions uses JAX's autodiff: each one is
the hand-derived gradient, checked against ``jax.vjp`` and float64 finite differences in
``tests/test_layers.py`` and by ``fnet gradcheck``. An affine layer and a ReLU, forward and back:

>>> import jax.numpy as jnp
>>> from fnet import layers
>>> x = jnp.array([[1.0, -2.0], [0.5, 0.0]], jnp.float32)           # (N, D) = (2, 2)
>>> W = jnp.array([[1.0, 0.0, -1.0], [1.0, 1.0, 1.0]], jnp.float32)  # (D, M) = (2, 3)
>>> out, affine_cache = layers.affine_forward(x, W, jnp.zeros(3, jnp.float32))
>>> y, relu_cache = layers.relu_forward(out)
>>> print(y)
[[0.  0.  0. ]
 [0.5 0.  0. ]]
>>> dx, dW, db = layers.affine_backward(layers.relu_backward(jnp.ones_like(y), relu_cache), affine_cache)
>>> print(dx)          # only the one positive unit passes a gradient (ReLU's derivative at 0 is 0)
[[0. 0.]
 [1. 1.]]
>>> print(db)
[1. 0. 0.]

The families, each in its own file and all re-exported here (``fnet.layers.affine_forward``):

- :mod:`fnet.layers.dense`: affine, and the activations relu, leaky_relu, sigmoid, tanh,
  softmax, identity (:data:`ACTIVATIONS` maps names to pairs);
- :mod:`fnet.layers.norm`: batch norm, layer norm, spatial batch norm, spatial group norm;
- :mod:`fnet.layers.dropout`: inverted dropout;
- :mod:`fnet.layers.conv`: convolution, and the window geometry it shares with pooling.
- :mod:`fnet.layers.pool`: max/average/global-average pooling.

Sequence layers follow the same contract: ``recurrent`` (RNN, LSTM, GRU steps and sequences, with
backpropagation through time), ``embedding`` (word embeddings, the temporal affine layer) and
``attention`` (scaled dot-product and multi-head attention, sinusoidal positional encodings, GELU).

Conventions (documented once here, tested in the test suite):

- ReLU's derivative at exactly 0 is 0 (``dx = dout * (x > 0)``), as in cs231n and ``jax.nn.relu``.
  Leaky ReLU's derivative at 0 is ``alpha``.
- NaN propagates through every layer, as in ``jax.nn`` (``relu(NaN) = NaN``): a NaN input or
  weight is never hidden behind finite scores.
- Integer arguments (strides, pads, window sizes, group counts) accept Python and NumPy
  integers, never bools or floats (``fnet._checks.integer``).
- Every ``*_backward`` checks that ``dout`` has the forward output's shape (a ValueError naming
  the function and both shapes), since broadcasting a wrong shape would give wrong gradients.
- Batch norm: ``running = momentum * running + (1 - momentum) * batch_stat`` with momentum 0.9
  (cs231n's; PyTorch's ``momentum=0.1`` means the same thing as fnet's 0.9), eps 1e-5, and the
  *biased* batch variance (divide by N) for both normalization and the running variance
  (PyTorch stores the unbiased one).
- Dropout: ``rate`` is the probability of DROPPING a unit (PyTorch/optax convention, unlike
  stax's keep-probability); inverted dropout scales kept units by ``1 / (1 - rate)`` at train
  time so that eval mode is the identity.
- Convolution and pooling: images are (N, C, H, W) and filters (F, C, HH, WW), as in cs231n.
  Output sizes follow the floor rule ``H' = 1 + (H + 2 * pad - HH) // stride`` (PyTorch's and
  lax's; :func:`fnet.layers.conv.output_size`, which :mod:`fnet.modules` uses too): rows/columns
  past the last whole window are ignored and get zero gradient. Kernel sizes, strides and pads
  are an int or an (h, w) pair (:func:`fnet.layers.conv.pair`). On ties, max
  pooling's gradient goes to the FIRST maximum of the window in row-major order (an argmax's).
- Spatial batch norm takes per-channel statistics over (N, H, W) (not per pixel, as DLFS's
  flattening gives); spatial group norm per sample and group over (C/G, H, W). Both have
  per-channel gamma and beta of shape (C,).
"""

from fnet.layers.attention import (GELU_FORMS, PROJECTIONS, AttentionCache, MultiHeadCache, attention_backward,
                                   attention_forward, gelu_backward, gelu_forward, multi_head_attention_backward,
                                   multi_head_attention_forward, positional_encoding)
from fnet.layers.conv import ConvCache, conv_backward, conv_forward
from fnet.layers.pool import (PoolCache, avg_pool_backward, avg_pool_forward, global_avg_pool_backward,
                              global_avg_pool_forward, max_pool_backward, max_pool_forward)
from fnet.layers.dense import (ACTIVATIONS, LEAKY_RELU_ALPHA, IdentityCache, affine_backward, affine_forward,
                               identity_backward, identity_forward, leaky_relu_backward, leaky_relu_forward,
                               relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, softmax_backward,
                               softmax_forward, tanh_backward, tanh_forward)
from fnet.layers.dropout import dropout_backward, dropout_forward
from fnet.layers.embedding import (word_embedding_forward, word_embedding_backward, temporal_affine_forward, temporal_affine_backward)
from fnet.layers.recurrent import (RNNStepCache, RNNCache, rnn_step_forward, rnn_step_backward, rnn_forward, rnn_backward, LSTMStepCache, LSTMCache, lstm_step_forward, lstm_step_backward, lstm_state_forward, lstm_state_backward, lstm_forward, lstm_backward, GRUGates, GRUStepCache, GRUCache, gru_step_forward, gru_step_backward, gru_forward, gru_backward)
from fnet.layers.norm import (NormCache, SpatialNormCache, batchnorm_backward, batchnorm_forward, layernorm_backward,
                              layernorm_forward, spatial_batchnorm_backward, spatial_batchnorm_forward,
                              spatial_groupnorm_backward, spatial_groupnorm_forward)
