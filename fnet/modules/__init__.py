"""Modules: the layers of :mod:`fnet.layers` as composable records of pure functions.

A module is a :class:`Module`, a NamedTuple of three pure functions (as optax's
``GradientTransformation`` is a NamedTuple of two)::

    params, state, output_shape = module.init(key, input_shape)
    y, new_state, cache         = module.forward(params, state, x, *, train, key)
    dx, dparams                 = module.backward(params, cache, dy)

- ``init(key, input_shape)``: ``input_shape`` is the shape of one batch WITH its batch axis first,
  which may be None ("any batch size"): ``(None, 784)``, ``(None, 1, 28, 28)``. It returns the
  parameters, the state (e.g. batch-norm running statistics) and the output shape, so shapes are
  known before any data arrives (stax's ``init_fun(rng, input_shape)``; note that fnet's order is
  ``(params, state, output_shape)``). A shape that the module cannot take is a ValueError.
- ``forward(params, state, x, *, train, key)``: ``train`` is a Python bool (it selects the
  program: batch statistics and dropout in train mode); ``key`` is a PRNG key or None, keyword-only
  everywhere and ignored by modules that draw nothing. Returns the output, the new state (the
  same structure as ``state``; equal to it in eval mode) and the cache.
- ``backward(params, cache, dy)``: the hand-written gradient, no JAX autodiff: ``dx`` has x's
  shape, ``dparams`` exactly the tree structure of ``params``. ``dy`` is the upstream gradient
  (of the output ``y``; the layers call it ``dout``).

Parameters are created in float32 (:func:`fnet.nets.network` casts them to the network's dtype).

Invariants, one line each: ``dparams`` has the structure of ``params``; ``new_state`` has the
structure of ``state``; ``cache`` holds what ``backward`` needs and nothing more; parameter-free
modules have ``params == {}`` and stateless ones ``state == {}``.

Leaf modules are thin adapters around the :mod:`fnet.layers` pairs (:func:`elementwise` lifts
any elementwise pair, as stax's ``elementwise`` does), one file per family as in
:mod:`fnet.layers`, all re-exported here (``fnet.modules.dense``):

- :mod:`fnet.modules.base`: the :class:`Module` record, :class:`Static`, what a weight is
  (:func:`is_weight`, :func:`weight_mask`), :func:`init_shapes` and :func:`summary`;
- :mod:`fnet.modules.dense`: ``dense``, the activations ``relu``, ``leaky_relu``, ``sigmoid``,
  ``tanh``, ``identity``, ``softmax`` (:data:`ACTIVATIONS` maps names to constructors), ``flatten``;
- :mod:`fnet.modules.norm`: ``batchnorm`` (per feature, or per channel of images), ``layernorm``,
  ``groupnorm`` (images);
- :mod:`fnet.modules.dropout`: ``dropout``;
- :mod:`fnet.modules.conv`: for images (N, C, H, W), ``conv2d``, ``max_pool``, ``avg_pool``,
  ``global_avg_pool``;
- :mod:`fnet.modules.recurrent`: for sequences (N, T, ...), ``embedding``, ``rnn``, ``lstm``,
  ``gru``, ``temporal_dense``;
- :mod:`fnet.modules.attention`: for transformers (N, T, E), ``self_attention`` (causal by
  default), ``cross_attention``, ``position_embedding``, ``gelu`` (``layernorm`` normalizes the
  last axis of (N, T, E) too).

Hyperparameters (kernel sizes, strides, rates) are checked and normalized when a module is built;
shapes in ``init``, so that ``forward`` never re-checks them under jit. Parameters are named
inside each module's dict (``{"W": ..., "b": ...}``), so :func:`weight_mask` (innermost key "W",
:func:`is_weight`) finds the weights of any composition, for weight decay
(:func:`fnet.optim.weights_only`, the networks' L2 penalty). Combinators (``serial``,
``parallel``, fan-out/fan-in, ``residual``) are in :mod:`fnet.combinators`;
:func:`fnet.nets.network` turns a module and a loss into a ``Net``.

A composition, its shapes known before any data, and one forward and backward pass:

>>> import jax
>>> from fnet import combinators, modules
>>> net = combinators.serial(modules.dense(100), modules.relu(), modules.dropout(0.5), modules.dense(10))
>>> print(modules.summary(net, (None, 784)))
module      type                        output shape  params
------------------------------------------------------------
serial      serial (4 modules)          (N, 10)       79,510
  dense1    dense (100 units, init he)  (N, 100)      78,500
  relu1     relu                        (N, 100)           -
  dropout1  dropout (rate 0.5)          (N, 100)           -
  dense2    dense (10 units, init he)   (N, 10)        1,010
------------------------------------------------------------
total: 79,510 parameters
>>> params, state, output_shape = net.init(jax.random.PRNGKey(0), (None, 784))
>>> x = jax.random.normal(jax.random.PRNGKey(1), (32, 784))
>>> y, state, cache = net.forward(params, state, x, train=True, key=jax.random.PRNGKey(2))
>>> dx, dparams = net.backward(params, cache, jax.numpy.ones_like(y))
>>> y.shape, dx.shape, dparams["dense1"]["W"].shape
((32, 10), (32, 784), (784, 100))
"""

from fnet.modules.attention import cross_attention, gelu, position_embedding, self_attention
from fnet.modules.base import (Module, Static, init_shapes, is_weight, shape_error, summary, summary_rows,
                               weight_mask)
from fnet.modules.conv import avg_pool, conv2d, global_avg_pool, max_pool
from fnet.modules.dense import (ACTIVATIONS, dense, elementwise, flatten, identity, leaky_relu, relu, sigmoid, softmax,
                                tanh)
from fnet.modules.dropout import dropout
from fnet.modules.norm import BatchNormState, batchnorm, groupnorm, layernorm
from fnet.modules.recurrent import embedding, gru, lstm, rnn, temporal_dense
