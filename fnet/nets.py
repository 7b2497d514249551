"""Networks: a module (any composition) and a loss, as a :class:`Net` of pure functions.

:func:`network` turns a :class:`~fnet.modules.Module` into a ``Net``, so every network has its
hand-written backward chain derived by the combinators (there is no second mechanism); the ready
networks (:func:`fnet.mlp`, the CNNs) are compositions too, in :mod:`fnet.models`:

>>> import jax
>>> import numpy as np
>>> import fnet
>>> from fnet.combinators import serial
>>> from fnet.modules import dense, relu
>>> net = fnet.network(serial(dense(8), relu(), dense(3)), input_shape=(4,))
>>> variables = net.init(jax.random.PRNGKey(0))          # Variables(params, state)
>>> x, y = np.ones((5, 4), np.float32), np.array([0, 1, 2, 0, 1])
>>> net.apply(variables, x).shape                          # inference: every network, batch norm included
(5, 3)
>>> params, state = variables
>>> key = jax.random.PRNGKey(1)
>>> loss, state = net.loss(params, x, y, state=state, key=key)                   # forward only (jax.grad)
>>> loss2, grads, state = net.loss_and_grad(params, x, y, state=state, key=key)  # hand-written backward
>>> bool(loss == loss2), sorted(grads)                     # the same forward; grads shaped like params
(True, ['dense1', 'dense2'])

A network whose first layer is an :func:`~fnet.modules.embedding` takes integer token ids
(N, T) instead of float features, e.g. a character language model (:func:`fnet.models.char_lm`)::

    lm = serial(embedding(65, 64), lstm(256), temporal_dense(65))
    net = fnet.network(lm, input_shape=(128,), loss="temporal_softmax_cross_entropy")
    # net.input_dtype == "int32"; x: ids (N, 128) in [0, 65); y: the next ids (N, 128)

``net.init(key)`` returns a :class:`Variables` ``(params, state)``; it unpacks as a pair
(``params, state = net.init(key)``), and ``net.apply`` takes it whole, in the way flax's
``apply({"params": ..., "batch_stats": ...}, x)`` takes its variables. :class:`fnet.train.FitResult`
has ``.variables`` and ``.best_variables`` for the same use.

``loss`` is the train-mode loss written with the forward functions only, so ``jax.grad`` can
differentiate it; ``loss_and_grad`` runs the same forward, keeps the caches and calls the
module's backward; the two share every forward line (and so the dropout masks for one key).
A hyperparameter sweep builds one network per trial (:func:`fnet.fit_trials`), so a ``Net``'s
functions take no hyperparameters.

The ready networks were defined here before :mod:`fnet.models`; their names (``mlp``, ``cnn``,
``MLPConfig``, ``CNNConfig``, ``from_config``, ...) still resolve here.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, combinators, losses, modules
from fnet.modules import Module

#: The ready networks' names that :mod:`fnet.models` defines, kept resolvable as ``fnet.nets.X``.
_MODEL_NAMES = ("MLPConfig", "CNNConfig", "NORMS", "mlp", "mlp_module", "cnn", "cnn_module", "from_config",
                "describe", "describe_cnn", "CharLMConfig", "char_lm", "GPTConfig", "gpt")


def __getattr__(name):
    # Lazily: fnet.models builds on this module.
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module("fnet.models"), name)
    raise AttributeError(f"module 'fnet.nets' has no attribute {name!r}")


class Variables(NamedTuple):
    """Everything a network needs for inference: ``params`` and ``state`` (batch-norm running
    statistics; ``{}`` without batch norm). A pair, so ``params, state = net.init(key)`` works."""

    params: dict
    state: dict


class Net(NamedTuple):
    """A network as a record of pure functions and the facts the trainer needs (see :func:`network`).

    Fields:
      init: ``key -> Variables(params, state)``, one compiled program.
      apply: ``(variables or params, x, *, state=None, train=False, key=None)``: eval mode
        returns the scores (N, *output_shape); train mode (batch statistics, dropout with
        ``key``) returns ``(scores, new_state)``.
      loss: ``(params, x, y, *, state=None, key=None) -> (loss, new_state)``, the train-mode loss
        with weight decay, for ``jax.value_and_grad(..., has_aux=True)``.
      loss_and_grad: the same arguments ``-> (loss, grads, new_state)``, with the hand-written
        backward chain; no JAX autodiff anywhere.
      input_shape: the shape of ONE sample, e.g. (784,) or (1, 28, 28).
      output_shape: the shape of one sample's scores, e.g. (10,).
      loss_name: a name of :data:`fnet.losses.LOSSES`, e.g. "softmax_cross_entropy".
      module: the composition.
      name: a short description, e.g. "64-[100,100]-10 relu".
      config: the ready-made network's configuration (an :class:`MLPConfig`), or None.
      input_dtype: the integer dtype of a network that takes token ids (e.g. "int32"); None
        for one that takes float features.
      vocab_size: the number of token ids the network takes (its first embedding's rows), or
        None (float features, or token input without an embedding first).
    """

    init: Callable
    apply: Callable
    loss: Callable
    loss_and_grad: Callable
    input_shape: tuple
    output_shape: tuple
    loss_name: str
    module: Module
    name: str = "network"
    config: object = None
    input_dtype: str | None = None
    vocab_size: int | None = None

    def __hash__(self):
        # A network is its functions: a config holding JAX arrays (a sweep's values) is unhashable.
        return hash((self.init, self.apply, self.loss, self.loss_and_grad))


def network(module, input_shape, *, loss: str = "softmax_cross_entropy", weight_decay: float = 0.0,
            dtype="float32", input_dtype=None, name: str | None = None, config=None) -> Net:
    """A :class:`Net` from a module and a loss.

    A sweep over hyperparameters (``fnet.fit_trials``) builds one network per trial inside the
    traced program, so ``weight_decay`` (and the module's own dropout rates and initializer
    scales) may be traced scalars there.

    Args:
      module: a :class:`~fnet.modules.Module`.
      input_shape: the shape of one sample, without the batch axis: ``(784,)``, ``(1, 28, 28)``,
        ``(T,)`` for T token ids.
      loss: "softmax_cross_entropy" (integer labels (N,); the module's output must be (N, C)),
        "mse" (targets of the output's shape), "sigmoid_binary_cross_entropy" (0/1 targets) or
        "temporal_softmax_cross_entropy" (the next token ids (N, T); the output must be
        (N, T, V); the mean over the N*T tokens, in nats).
      weight_decay: lambda of the L2 penalty ``0.5 * lambda * sum(W**2)`` over the weights only
        (the leaves whose name starts with "W", as :func:`fnet.optim.weights_only` selects them:
        dense and conv kernels, the recurrent Wx and Wh, and an embedding's table W, as
        PyTorch's optimizers and nanoGPT decay embeddings; not biases or normalization
        parameters); may be traced. A concrete 0 adds no term to the program.
      dtype: the floating dtype of params and state (the modules' float32 values are cast).
      input_dtype: what the network takes. None (the default): inferred from the module, token
        ids of dtype "int32" when its first layer is an :func:`~fnet.modules.embedding`
        (through the first children of :func:`~fnet.combinators.serial`), float features
        otherwise. An integer dtype declares token ids (x must be an integer array of shape
        (N, *input_shape); it is cast to this dtype, and its ids checked against the first
        embedding's vocabulary when concrete); a floating dtype declares float features of any
        floating dtype (refused for a module that starts with an embedding).
      name: shown by the trainer and :func:`fnet.summary`; default "network".
      config: the configuration of a ready-made network (kept in ``net.config``).

    Raises:
      ValueError/TypeError: a shape the composition cannot take (naming the position, e.g.
        "serial[3] (dense2): ..."), an unknown loss, an output that does not fit the loss.
    """
    input_shape, dtype, output_shape, params_spec, state_spec = _network_shapes(module, input_shape, loss,
                                                                                weight_decay, dtype)
    input_dtype, vocab_size = _input_kind(module, params_spec, input_dtype)
    loss_fn = losses.LOSSES[loss]

    def cast(tree):
        return jax.tree_util.tree_map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    @jax.jit
    def init(key):
        params, state, _ = module.init(key, (None, *input_shape))
        return Variables(cast(params), cast(state))

    def check(fn, params, state, x):
        if isinstance(params, Variables):
            raise TypeError(f"{fn}: takes params and state= separately; got a Variables (use variables.params "
                            "and state=variables.state)")
        _checks.tree(fn, "params", params, "the network's params (as net.init makes them)", params_spec)
        state = {} if state is None else state
        if jax.tree_util.tree_leaves(state_spec) and not jax.tree_util.tree_leaves(state):
            raise ValueError(f"{fn}: state is None but the network has state (batch-norm running statistics); "
                             "pass state= from net.init (or the Variables to apply)")
        _checks.tree(fn, "state", state, "the network's state (as net.init makes it)", state_spec)
        return state, check_input(fn, x, input_shape, input_dtype=input_dtype, vocab_size=vocab_size)

    def forward(fn, params, state, x, *, train, key):
        """The one forward pass of apply, loss and loss_and_grad (so they share dropout masks)."""
        state, x = check(fn, params, state, x)
        return _checks.prefixed(fn, lambda: module.forward(params, state, x, train=train, key=key))

    def apply(params, x, *, state=None, train=False, key=None):
        fn = "net.apply"
        if isinstance(params, Variables):
            if state is not None:
                raise TypeError(f"{fn}: state is given twice: in the Variables and as state=")
            params, state = params
        y, new_state, _ = forward(fn, params, state, x, train=train, key=key)
        return (y, new_state) if train else y

    # A concrete 0 adds nothing to the program; a traced lambda always adds the term.
    decays = not (_checks.is_concrete(weight_decay) and weight_decay == 0)

    def loss_value(params, x, y, *, state=None, key=None):
        scores, new_state, _ = forward("net.loss", params, state, x, train=True, key=key)
        value, _ = loss_fn(scores, y)
        if decays:
            value = value + l2_penalty(params, weight_decay)[0]
        return value, new_state

    def loss_and_grad(params, x, y, *, state=None, key=None):
        fn = "net.loss_and_grad"
        scores, new_state, cache = forward(fn, params, state, x, train=True, key=key)
        value, dscores = loss_fn(scores, y)
        # The input's gradient is unused; jit removes its computation (the first matmul of dx).
        _, grads = _checks.prefixed(fn, lambda: module.backward(params, cache, dscores))
        if decays:
            penalty, dW = l2_penalty(params, weight_decay)
            value = value + penalty
            grads = jax.tree_util.tree_map(jnp.add, grads, dW)
        return value, grads, new_state

    return Net(init, apply, loss_value, loss_and_grad, input_shape, output_shape, loss, module,
               name or module.name, config, input_dtype, vocab_size)


def _network_shapes(module, input_shape, loss: str, weight_decay, dtype):
    """:func:`network`'s arguments checked, and the shapes its module gives them: ``(input_shape,
    dtype, output_shape, params_spec, state_spec)``, the specs with ``dtype`` for float leaves."""
    fn = "network"
    if not isinstance(module, Module):
        raise TypeError(f"{fn}: module must be a fnet.modules.Module, got {type(module).__name__}")
    input_shape = tuple(input_shape)
    if not input_shape or any(d is None for d in input_shape):  # () or a batch axis given as None
        raise ValueError(f"{fn}: input_shape must be the shape of one sample (positive ints, no batch axis), "
                         f"got {input_shape}")
    input_shape = tuple(_checks.integer(fn, f"input_shape[{i}]", d, minimum=1) for i, d in enumerate(input_shape))
    if loss not in losses.LOSSES:
        raise ValueError(f"{fn}: unknown loss {loss!r}; choose one of {sorted(losses.LOSSES)}")
    if _checks.is_concrete(weight_decay) and not _checks.non_negative(weight_decay):
        raise ValueError(f"{fn}: weight_decay must be a finite number >= 0, got {weight_decay!r}")
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {dtype}")
    params_spec, state_spec, out = modules.init_shapes(module, (None, *input_shape))
    if not combinators.is_shape(out) or len(out) < 2:
        raise ValueError(f"{fn}: the module's output must be one array (N, ...), got shapes {out}")
    output_shape = tuple(out[1:])
    if loss == "softmax_cross_entropy" and len(output_shape) != 1:
        raise ValueError(f"{fn}: softmax_cross_entropy needs scores of shape (N, C), but the module outputs "
                         f"(N, {', '.join(map(str, output_shape))}); end it with dense(C) (or flatten())"
                         + ("; for scores per time step (N, T, V) use loss=\"temporal_softmax_cross_entropy\""
                            if len(output_shape) == 2 else ""))
    if loss == "temporal_softmax_cross_entropy" and len(output_shape) != 2:
        raise ValueError(f"{fn}: temporal_softmax_cross_entropy needs scores of shape (N, T, V), but the module "
                         f"outputs (N, {', '.join(map(str, output_shape))}); end it with temporal_dense(V)")
    params_spec, state_spec = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, dtype if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype),
        (params_spec, state_spec))
    return input_shape, dtype, output_shape, params_spec, state_spec


def _first_embedding(module: Module, params_spec):
    """The params of the embedding that ``module`` starts with (through the first children of
    serial compositions), or None when it starts with something else."""
    while module.flow == "serial":
        name, module = module.children[0]
        params_spec = params_spec.get(name, {})
    return params_spec if module.name == "embedding" else None


def _input_kind(module: Module, params_spec, input_dtype):
    """``(input_dtype, vocab_size)`` of a network (see :func:`network`'s ``input_dtype``): the
    integer dtype's name and the first embedding's rows for token input, ``(None, None)`` for
    float features."""
    fn = "network"
    embedding = _first_embedding(module, params_spec)
    if input_dtype is None:
        input_dtype = "int32" if embedding is not None else "float32"
    try:
        input_dtype = jnp.dtype(input_dtype)
    except TypeError:
        raise TypeError(f"{fn}: input_dtype must be None, an integer or a floating dtype, got {input_dtype!r}") from None
    if jnp.issubdtype(input_dtype, jnp.floating):
        if embedding is not None:
            raise TypeError(f"{fn}: input_dtype is {input_dtype} but the module starts with an embedding, which "
                            "takes integer token ids; leave input_dtype=None (or pass \"int32\")")
        return None, None
    if not jnp.issubdtype(input_dtype, jnp.integer):
        raise TypeError(f"{fn}: input_dtype must be None, an integer or a floating dtype, got {input_dtype}")
    return input_dtype.name, None if embedding is None else int(embedding["W"].shape[0])


def summary(net_or_module, input_shape=None) -> str:
    """A table of a network's modules (a composition as a tree), their output shapes and
    parameter counts, with the total (as Keras' ``summary`` and torchinfo print it):

    >>> import fnet
    >>> from fnet.combinators import serial
    >>> from fnet.modules import dense, relu
    >>> print(fnet.summary(fnet.network(serial(dense(8), relu(), dense(3)), input_shape=(4,))))
    serial
    module    type                      output shape  params
    --------------------------------------------------------
    serial    serial (3 modules)        (N, 3)            67
      dense1  dense (8 units, init he)  (N, 8)            40
      relu1   relu                      (N, 8)             -
      dense2  dense (3 units, init he)  (N, 3)            27
    --------------------------------------------------------
    total: 67 parameters

    Args:
      net_or_module: a :class:`Net`, or a :class:`~fnet.modules.Module` with ``input_shape``.
      input_shape: for a module, its input shape with the batch axis (e.g. ``(None, 784)``).
    """
    if isinstance(net_or_module, Net):
        return f"{net_or_module.name}\n" + modules.summary(net_or_module.module, (None, *net_or_module.input_shape))
    if isinstance(net_or_module, Module):
        if input_shape is None:
            raise ValueError("summary: a module needs input_shape (with the batch axis, e.g. (None, 784))")
        return modules.summary(net_or_module, tuple(input_shape))
    raise TypeError(f"summary: expected a Net or a Module, got {type(net_or_module).__name__}")


def num_params(net: Net) -> int:
    """The number of parameters (array elements in ``params``) of a network."""
    params, _, _ = modules.init_shapes(net.module, (None, *net.input_shape))
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(params))


def l2_penalty(params, lam):
    """The L2 penalty on the weights of ``params`` (:func:`fnet.modules.is_weight`) and its
    gradient, a tree like ``params`` (``lam * W`` on weights, 0 elsewhere)::

        penalty = 0.5 * lam * sum_W sum(W**2),   dW = lam * W

    :func:`fnet.losses.l2_weight_decay` over the whole tree, masked to the weights.
    """
    return losses.l2_weight_decay(params, lam, mask=modules.weight_mask(params))


def check_input(fn: str, x, input_shape: tuple, *, input_dtype: str | None = None, vocab_size: int | None = None):
    """x as a float array of shape (N, *input_shape); a first dense layer also takes any
    (N, d1, ..., dk) with the right number of features (it flattens). For a network of token
    input (``input_dtype`` an integer dtype name, see :class:`Net`), x as integer ids of exactly
    (N, *input_shape), cast to ``input_dtype``, in [0, vocab_size) when concrete (and
    ``vocab_size`` is known)."""
    if input_dtype is not None:
        return _check_tokens(fn, x, input_shape, input_dtype, vocab_size)
    x = _checks.float_array(fn, "x", x, min_ndim=2)
    sample = tuple(x.shape[1:])
    if sample == input_shape or (len(input_shape) == 1 and math.prod(sample) == input_shape[0]):
        return x
    hint = ""
    if len(input_shape) > 1 and math.prod(sample) == math.prod(input_shape):
        hint = (f"; these look like flattened images: the network takes images of shape {input_shape} (N, C, H, W), "
                "so load the data with fnet.data.load(name, flatten=False)")
    raise ValueError(f"{fn}: x has shape {tuple(x.shape)} but the network expects samples of shape {input_shape}, "
                     f"i.e. x of shape (N, {', '.join(map(str, input_shape))}){hint}")


def _check_tokens(fn: str, x, input_shape: tuple, input_dtype: str, vocab_size: int | None):
    """:func:`check_input` for a network of token input."""
    expected = f"(N, {', '.join(map(str, input_shape))})"
    dtype = getattr(x, "dtype", None)
    dtype = np.asarray(x).dtype if dtype is None else dtype  # a list; never np.asarray a tracer
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{fn}: x must be integer token ids of shape {expected}, got dtype {dtype}")
    if _checks.shape_of(x)[1:] != input_shape:
        raise ValueError(f"{fn}: x has shape {_checks.shape_of(x)} but the network takes token ids of shape {expected}")
    if vocab_size is not None:
        _checks.token_ids(fn, "x", x, vocab_size)
    return jnp.asarray(x, input_dtype)


#: The losses whose targets are integer class ids: labels (N,), or token ids (N, T).
CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "temporal_softmax_cross_entropy")


def check_targets(fn: str, net: Net, name: str, n: int, y) -> None:
    """Raise unless ``y`` fits ``n`` samples of ``net``'s scores: labels (n,) in [0, C) for
    softmax cross-entropy, token ids (n, T) in [0, V) for the temporal one, else targets of
    shape (n, *output_shape)."""
    if net.loss_name == "softmax_cross_entropy":
        _checks.labels(fn, name, y, n, net.output_shape[0])
    elif net.loss_name == "temporal_softmax_cross_entropy":
        if _checks.shape_of(y) != (n, *net.output_shape[:-1]):
            raise ValueError(f"{fn}: {name} has shape {_checks.shape_of(y)} but the network's scores for {n} samples "
                             f"have shape {(n, *net.output_shape)}: the targets are one token id per step, of shape "
                             f"{(n, *net.output_shape[:-1])}")
        _checks.token_ids(fn, name, y, net.output_shape[-1])
    elif _checks.shape_of(y) != (n, *net.output_shape):
        raise ValueError(f"{fn}: {name} has shape {_checks.shape_of(y)} but the network's scores for {n} samples have "
                         f"shape {(n, *net.output_shape)}; {net.loss_name} compares them elementwise")


def check_data(fn: str, net: Net, name: str, x, y) -> None:
    """Raise unless ``(x, y)`` is a data set ``net`` can train or be evaluated on: float features
    of shape (N, *input_shape) (token ids in the net's vocabulary for a network of token input)
    with N >= 1, targets as :func:`check_targets` wants them, all finite. ``name`` ("training",
    "validation") leads every message."""
    x = np.asarray(x)
    tokens = net.input_dtype is not None
    if tokens and not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{fn}: {name} token ids must be integers, got dtype {x.dtype}")
    if not tokens and not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{fn}: {name} features must be floating point, got dtype {x.dtype}")
    what = "token ids" if tokens else "features"
    try:
        check_input(fn, x, net.input_shape, input_dtype=net.input_dtype, vocab_size=net.vocab_size)
    except ValueError as e:
        message = str(e).replace(f"{fn}: x has", f"{fn}: {name} {what} have", 1)
        raise ValueError(message.replace(f"{fn}: x must", f"{fn}: {name} {what} must", 1)) from None
    if len(x) == 0:
        raise ValueError(f"{fn}: {name} data is empty (shape {x.shape}); pass at least one sample"
                         + (", or val=None for no validation" if name == "validation" else ""))
    if not tokens and not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise ValueError(f"{fn}: {name} features contain NaN or inf (first at sample {bad[0]}, feature {bad[1]})")
    y = np.asarray(y)
    labels = net.loss_name in CLASSIFICATION_LOSSES
    check_targets(fn, net, f"{name} {'labels' if labels else 'targets'}", len(x), y)
    if not labels and not np.all(np.isfinite(y)):
        raise ValueError(f"{fn}: {name} targets contain NaN or inf")
