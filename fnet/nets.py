"""Networks: a module (any composition) and a loss, as a :class:`Net` of pure functions.

:func:`network` turns a :class:`~fnet.modules.Module` into a ``Net``; :func:`mlp` builds cs231n's
fully connected network as ONE such composition, so every network has its hand-written backward
chain derived by the combinators (there is no second mechanism)::

    from fnet.modules import dense, relu
    from fnet.combinators import serial
    net = fnet.network(serial(dense(100), relu(), dense(10)), input_shape=(784,))
    variables = net.init(key)                         # Variables(params, state)
    scores = net.apply(variables, x)                  # inference: every network, batch norm included
    loss, state = net.loss(params, x, y, state=state, key=key)                 # forward only (jax.grad)
    loss, grads, state = net.loss_and_grad(params, x, y, state=state, key=key)  # hand-written backward

``net.init(key)`` returns a :class:`Variables` ``(params, state)``; it unpacks as a pair
(``params, state = net.init(key)``), and ``net.apply`` takes it whole, in the way flax's
``apply({"params": ..., "batch_stats": ...}, x)`` takes its variables. :class:`fnet.train.FitResult`
has ``.variables`` and ``.best_variables`` for the same use.

``mlp``'s parameters are the composition's tree. Its layers are named ``dense1``, ``batchnorm1``
(or ``layernorm1``), ..., so the cs231n names map as::

    W{i}, b{i}             -> params["dense{i}"]["W"], params["dense{i}"]["b"]
    gamma{i}, beta{i}      -> params["batchnorm{i}"]["gamma"], ...  (or "layernorm{i}")
    running_mean/var{i}    -> state["batchnorm{i}"].mean, state["batchnorm{i}"].var

``loss`` is the train-mode loss written with the forward functions only, so ``jax.grad`` can
differentiate it; ``loss_and_grad`` runs the same forward, keeps the caches and calls the
module's backward; the two share every forward line (and so the dropout masks for one key).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, combinators, losses, modules
from fnet import init as initializers
from fnet import layers
from fnet.modules import Module

NORMS = (None, "batchnorm", "layernorm")


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
      loss_name: "softmax_cross_entropy", "mse" or "sigmoid_binary_cross_entropy".
      module: the composition.
      name: a short description, e.g. "64-[100,100]-10 relu".
      config: the ready-made network's configuration (an :class:`MLPConfig`), or None.
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

    def __hash__(self):
        # A network is its functions: a config holding JAX arrays (a sweep's values) is unhashable.
        return hash((self.init, self.apply, self.loss, self.loss_and_grad))


def network(module, input_shape, *, loss: str = "softmax_cross_entropy", weight_decay: float = 0.0,
            dtype="float32", name: str | None = None, config=None) -> Net:
    """A :class:`Net` from a module and a loss.

    A sweep over hyperparameters (``fnet.fit_trials``) builds one network per trial inside the
    traced program, so ``weight_decay`` (and the module's own dropout rates and initializer
    scales) may be traced scalars there.

    Args:
      module: a :class:`~fnet.modules.Module`.
      input_shape: the shape of one sample, without the batch axis: ``(784,)``, ``(1, 28, 28)``.
      loss: "softmax_cross_entropy" (integer labels (N,); the module's output must be (N, C)),
        "mse" (targets of the output's shape) or "sigmoid_binary_cross_entropy" (0/1 targets).
      weight_decay: lambda of the L2 penalty ``0.5 * lambda * sum(W**2)`` over the weights only
        (the leaves named "W", as :func:`fnet.optim.weights_only` selects them; not biases or
        normalization parameters); may be traced. A concrete 0 adds no term to the program.
      dtype: the floating dtype of params and state (the modules' float32 values are cast).
      name: shown by the trainer and :func:`fnet.summary`; default "network".
      config: the configuration of a ready-made network (kept in ``net.config``).

    Raises:
      ValueError/TypeError: a shape the composition cannot take (naming the position, e.g.
        "serial[3] (dense2): ..."), an unknown loss, an output that does not fit the loss.
    """
    fn = "network"
    if not isinstance(module, Module):
        raise TypeError(f"{fn}: module must be a fnet.modules.Module, got {type(module).__name__}")
    input_shape = tuple(input_shape)
    if not input_shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"{fn}: input_shape must be the shape of one sample (positive ints, no batch axis), "
                         f"got {input_shape}")
    if loss not in losses.LOSSES:
        raise ValueError(f"{fn}: unknown loss {loss!r}; choose one of {sorted(losses.LOSSES)}")
    if _checks.is_concrete(weight_decay) and not _non_negative(weight_decay):
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
                         f"(N, {', '.join(map(str, output_shape))}); end it with dense(C) (or flatten())")
    params_spec, state_spec = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, dtype if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype),
        (params_spec, state_spec))
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
        return state, check_input(fn, x, input_shape)

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
               name or module.name, config)


def _non_negative(value) -> bool:
    """A concrete finite number >= 0 (NumPy and 0-d JAX scalars too)."""
    return (not isinstance(value, bool) and np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype, np.number)
            and math.isfinite(value) and value >= 0)


def summary(net_or_module, input_shape=None) -> str:
    """A table of a network's modules (a composition as a tree), their output shapes and
    parameter counts, with the total (as Keras' ``summary`` and torchinfo print it)::

        print(fnet.summary(net))

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


def _weight_mask(params):
    from fnet import optim  # the one rule for "a weight": innermost key starting with "W"

    return optim.weights_only(params)


def l2_penalty(params, lam):
    """The L2 penalty on the weights of ``params`` (the leaves whose innermost key starts with "W")
    and its gradient, a tree like ``params`` (``lam * W`` on weights, 0 elsewhere)::

        penalty = 0.5 * lam * sum_W sum(W**2),   dW = lam * W
    """
    mask = _weight_mask(params)
    weights = [p for p, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if m]
    penalty, _ = losses.l2_weight_decay(weights, lam)
    grads = jax.tree_util.tree_map(lambda p, m: (lam * p).astype(p.dtype) if m else jnp.zeros_like(p), params, mask)
    return penalty, grads


def check_input(fn: str, x, input_shape: tuple):
    """x as a float array of shape (N, *input_shape); a first dense layer also takes any
    (N, d1, ..., dk) with the right number of features (it flattens)."""
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


def check_targets(fn: str, net: Net, name: str, n: int, y) -> None:
    """Raise unless ``y`` fits ``n`` samples of ``net``'s scores: labels (n,) in [0, C) for
    softmax cross-entropy, else targets of shape (n, *output_shape)."""
    if net.loss_name == "softmax_cross_entropy":
        _checks.labels(fn, name, y, n, net.output_shape[0])
    elif _checks.shape_of(y) != (n, *net.output_shape):
        raise ValueError(f"{fn}: {name} has shape {_checks.shape_of(y)} but the network's scores for {n} samples have "
                         f"shape {(n, *net.output_shape)}; {net.loss_name} compares them elementwise")


def check_data(fn: str, net: Net, name: str, x, y) -> None:
    """Raise unless ``(x, y)`` is a data set ``net`` can train or be evaluated on: float features
    of shape (N, *input_shape) with N >= 1, targets as :func:`check_targets` wants them, all
    finite. ``name`` ("training", "validation") leads every message."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{fn}: {name} features must be floating point, got dtype {x.dtype}")
    try:
        check_input(fn, x, net.input_shape)
    except ValueError as e:
        raise ValueError(str(e).replace(f"{fn}: x has", f"{fn}: {name} features have", 1)) from None
    if len(x) == 0:
        raise ValueError(f"{fn}: {name} data is empty (shape {x.shape}); pass at least one sample"
                         + (", or val=None for no validation" if name == "validation" else ""))
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise ValueError(f"{fn}: {name} features contain NaN or inf (first at sample {bad[0]}, feature {bad[1]})")
    y = np.asarray(y)
    check_targets(fn, net, f"{name} {'labels' if net.loss_name == 'softmax_cross_entropy' else 'targets'}", len(x), y)
    if net.loss_name != "softmax_cross_entropy" and not np.all(np.isfinite(y)):
        raise ValueError(f"{fn}: {name} targets contain NaN or inf")


# --------------------------------------------------------------------------------------------
# The MLP


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Everything that defines an MLP; JSON-serialisable with :func:`dataclasses.asdict`.

    Fields mirror :func:`mlp`'s arguments.
    """

    input_dim: int
    hidden_dims: tuple[int, ...]
    output_dim: int
    activation: str = "relu"
    norm: str | None = None
    dropout: float = 0.0
    init: str | float = "he"
    weight_decay: float = 0.0
    loss: str = "softmax_cross_entropy"
    leaky_alpha: float = layers.LEAKY_RELU_ALPHA
    bn_momentum: float = 0.9
    norm_eps: float = 1e-5
    dtype: str = "float32"
    input_dropout: float = 0.0

    @property
    def num_layers(self) -> int:
        """Number of affine layers (hidden layers + the output layer)."""
        return len(self.hidden_dims) + 1


def _validate_config(cfg: MLPConfig) -> None:
    fn = "mlp"
    for name in ("input_dim", "output_dim"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{fn}: {name} must be a positive int, got {v!r}")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in cfg.hidden_dims):
        raise ValueError(f"{fn}: hidden_dims must be positive ints, got {cfg.hidden_dims!r}")
    if cfg.activation not in modules.ACTIVATIONS:
        raise ValueError(f"{fn}: unknown activation {cfg.activation!r}; choose one of {sorted(modules.ACTIVATIONS)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"{fn}: unknown norm {cfg.norm!r}; choose one of {list(NORMS)}")
    _checks.rate(fn, "dropout", cfg.dropout)
    _checks.rate(fn, "input_dropout", cfg.input_dropout)
    if _checks.is_concrete(cfg.weight_decay) and not _non_negative(cfg.weight_decay):
        raise ValueError(f"{fn}: weight_decay must be >= 0, got {cfg.weight_decay}")
    if cfg.loss not in losses.LOSSES:
        raise ValueError(f"{fn}: unknown loss {cfg.loss!r}; choose one of {sorted(losses.LOSSES)}")
    if not jnp.issubdtype(jnp.dtype(cfg.dtype), jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {cfg.dtype!r}")
    initializers.get(cfg.init)


def mlp(
    input_dim: int,
    hidden_dims,
    output_dim: int,
    *,
    activation: str = "relu",
    norm: str | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    init="he",
    weight_decay: float = 0.0,
    loss: str = "softmax_cross_entropy",
    leaky_alpha: float = layers.LEAKY_RELU_ALPHA,
    bn_momentum: float = 0.9,
    norm_eps: float = 1e-5,
    dtype="float32",
) -> Net:
    """cs231n's fully connected network of any depth, as one composition (:func:`mlp_module`).

    Each hidden layer is ``dense -> [batchnorm | layernorm] -> activation -> [dropout]``, the last
    layer is dense (scores); ``input_dropout`` puts a dropout layer on the inputs first.

    Args:
      input_dim: D, features per sample (inputs of shape (N, d1, ..., dk) are flattened).
      hidden_dims: sizes of the hidden layers, e.g. ``[100, 100]``; ``[]`` gives a linear model.
      output_dim: C, number of scores per sample.
      activation: "relu", "leaky_relu" (slope ``leaky_alpha``), "sigmoid", "tanh" or "identity"
        (a linear network).
      norm: None, "batchnorm" (running statistics in ``state``; ``bn_momentum``, ``norm_eps``)
        or "layernorm" (``norm_eps``).
      dropout: drop probability of each hidden unit in train mode, in [0, 1). A rate given as a
        JAX array (traced in a sweep, see :func:`fnet.fit_trials`, or concrete) always inserts
        the dropout layers, even at 0, so that every network of a sweep has one structure (the
        same init keys and dropout masks); a Python or NumPy float inserts them when > 0.
      input_dropout: drop probability of each input feature in train mode, in [0, 1) (*Deep
        Learning from Scratch* suggests ~0.2 on the inputs).
      init: weight initializer: "zeros", "normal" (std 0.01), "xavier", "he", a float std (may
        be traced), or a callable ``(key, shape, dtype) -> array``. Biases start at 0, gamma at
        1, beta at 0.
      weight_decay: lambda of the L2 penalty ``0.5 * lambda * sum(W**2)`` on weights only (may
        be traced).
      loss: "softmax_cross_entropy" (integer labels of shape (N,)), "mse" (targets of shape
        (N, C)) or "sigmoid_binary_cross_entropy" (0/1 targets of shape (N, C)).
      dtype: parameter dtype.

    Returns:
      A :class:`Net` (see :func:`network`) whose ``config`` is the :class:`MLPConfig`. The params
      are ``{"dense1": {"W", "b"}, "batchnorm1": {"gamma", "beta"}, ..., "denseL": ...}`` (the
      mapping from cs231n's names is in the module docstring).
    """
    cfg = MLPConfig(
        input_dim=input_dim,
        hidden_dims=tuple(hidden_dims),
        output_dim=output_dim,
        activation=activation,
        norm=norm,
        dropout=dropout,
        input_dropout=input_dropout,
        init=init,
        weight_decay=weight_decay,
        loss=loss,
        leaky_alpha=leaky_alpha,
        bn_momentum=bn_momentum,
        norm_eps=norm_eps,
        dtype=jnp.dtype(dtype).name,
    )
    return from_config(cfg)


def mlp_module(cfg: MLPConfig) -> Module:
    """The composition of :func:`mlp`: ``serial([dropout], dense, [norm], activation, [dropout], ...,
    dense)``; a dropout rate given as a JAX array (a sweep's) inserts the dropout layers even at
    0, so that one compiled program serves every rate of a sweep."""
    rate = cfg.dropout
    with_dropout = _present(rate)
    act = modules.ACTIVATIONS[cfg.activation]
    children = [modules.dropout(cfg.input_dropout)] if cfg.input_dropout > 0 else []
    for h in cfg.hidden_dims:
        children.append(modules.dense(h, init=cfg.init))
        if cfg.norm == "batchnorm":
            children.append(modules.batchnorm(momentum=cfg.bn_momentum, eps=cfg.norm_eps))
        elif cfg.norm == "layernorm":
            children.append(modules.layernorm(eps=cfg.norm_eps))
        children.append(act(cfg.leaky_alpha) if cfg.activation == "leaky_relu" else act())
        if with_dropout:
            children.append(modules.dropout(rate))
    children.append(modules.dense(cfg.output_dim, init=cfg.init))
    return combinators.serial(*children)


def _present(rate) -> bool:
    """Whether a rate needs its layers (or a penalty its term): a JAX array always (a sweep's
    value, traced or not: every network of a sweep gets one structure), a number when > 0."""
    return isinstance(rate, jax.Array) or rate > 0


def _shown(value) -> str:
    """A hyperparameter in a network's name; a traced one (a sweep's) has no value to show."""
    return f"{float(value):g}" if isinstance(value, jax.Array) and _checks.is_concrete(value) else (
        f"{value}" if _checks.is_concrete(value) else "(traced)")


def from_config(config) -> Net:
    """Build (or rebuild) a ready network from its configuration: an :class:`MLPConfig` or a
    :class:`CNNConfig`, or the ``dataclasses.asdict`` dict of one (a dict with a "model" key other
    than "mlp" is a CNN's)."""
    if isinstance(config, dict):
        config = dict(config)
        if config.get("model", "mlp") == "mlp":
            config.pop("model", None)
            config = MLPConfig(**dict(config, hidden_dims=tuple(config["hidden_dims"])))
        else:
            config = CNNConfig(**dict(config, input_shape=tuple(config["input_shape"]), filters=tuple(config["filters"])))
    if isinstance(config, CNNConfig):
        _validate_cnn_config(config)
        return network(cnn_module(config), config.input_shape, weight_decay=config.weight_decay,
                       dtype=config.dtype, name=describe_cnn(config), config=config)
    if not isinstance(config, MLPConfig):
        raise TypeError(f"from_config: expected an MLPConfig, a CNNConfig or a dict, got {type(config).__name__}")
    _validate_config(config)
    return network(mlp_module(config), (config.input_dim,), loss=config.loss,
                   weight_decay=config.weight_decay, dtype=config.dtype, name=describe(config), config=config)


def describe(cfg: MLPConfig) -> str:
    """Short name of a configuration, e.g. ``"5-[6,6]-3 relu batchnorm dropout=0.3 wd=0.1"``."""
    parts = [f"{cfg.input_dim}-[{','.join(map(str, cfg.hidden_dims))}]-{cfg.output_dim}", cfg.activation]
    if cfg.norm:
        parts.append(cfg.norm)
    if cfg.input_dropout:
        parts.append(f"input_dropout={cfg.input_dropout}")
    if _present(cfg.dropout):
        parts.append(f"dropout={_shown(cfg.dropout)}")
    if _present(cfg.weight_decay):
        parts.append(f"wd={_shown(cfg.weight_decay)}")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Ready convolutional networks (images of shape (C, H, W); each one composition)

#: The ready CNNs: ``name -> (description, default filters, default hidden width)``.
CNN_MODELS = {
    "cnn": ("conv3x3(f1)-batchnorm-relu-pool2 - conv3x3(f2)-batchnorm-relu-pool2 - dense(h)-relu-dropout - dense(C)",
            (32, 64), 128),
    "three_layer_convnet": ("cs231n's ThreeLayerConvNet: conv7x7(f)-relu-pool2 - dense(h)-relu - dense(C)", (32,), 100),
    "simple_convnet": ("Deep Learning from Scratch's SimpleConvNet: conv5x5(f)-relu-pool2 - dense(h)-relu - dense(C)",
                       (30,), 100),
    "deep_convnet": ("Deep Learning from Scratch's DeepConvNet: 3 x [conv3x3-relu-conv3x3-relu-pool2] - "
                     "dense(h)-relu-dropout - dense(C)-dropout", (16, 16, 32, 32, 64, 64), 50),
}


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """Everything that defines a ready CNN; JSON-serialisable with :func:`dataclasses.asdict`.

    Fields:
      model: a key of :data:`CNN_MODELS`.
      input_shape: one image's shape (C, H, W).
      num_classes: C, the number of scores.
      filters: the convolutions' widths, in order (the model's defaults when empty).
      hidden: the width of the dense layer before the scores (0: the model's default).
      dropout: drop probability of the dropout layers (the model's default when None: 0.5 for
        deep_convnet, 0.25 for cnn, no dropout for the others).
      init, weight_decay, dtype: as in :func:`mlp`.
    """

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    filters: tuple[int, ...] = ()
    hidden: int = 0
    dropout: float | None = None
    init: str | float = "he"
    weight_decay: float = 0.0
    dtype: str = "float32"


def cnn(model: str, input_shape, num_classes: int, *, filters=(), hidden: int = 0, dropout: float | None = None,
        init="he", weight_decay: float = 0.0, dtype="float32") -> Net:
    """A ready convolutional network (see :data:`CNN_MODELS`), as one composition.

    - ``"cnn"``: fnet's default CNN for MNIST-sized images: two conv3x3 (pad 1) blocks with batch
      norm, ReLU and 2x2 max pooling, then dense(hidden)-ReLU-dropout and the scores.
    - ``"three_layer_convnet"``: cs231n's ``ThreeLayerConvNet``, conv7x7 (pad 3)-ReLU-2x2 max
      pool-affine-ReLU-affine.
    - ``"simple_convnet"``: Deep Learning from Scratch's ``SimpleConvNet`` (ch. 7), conv5x5 (no
      pad)-ReLU-2x2 max pool-affine-ReLU-affine.
    - ``"deep_convnet"``: Deep Learning from Scratch's ``DeepConvNet`` (ch. 8, 99.38% on MNIST):
      three blocks of two conv3x3 (pad 1; the fourth conv pad 2)-ReLU and a 2x2 max pool, then
      affine(50)-ReLU-dropout(0.5)-affine-dropout(0.5).

    Args:
      model: the network's name.
      input_shape: one image's shape (C, H, W), e.g. (1, 28, 28).
      num_classes: the number of classes.
      filters, hidden, dropout: override the model's widths and dropout rate (see :class:`CNNConfig`).
      init, weight_decay, dtype: as in :func:`mlp` (He init by default, as both sources use).

    Returns:
      A :class:`Net` whose ``config`` is the :class:`CNNConfig`.
    """
    return from_config(CNNConfig(model, tuple(input_shape), num_classes, tuple(filters), hidden, dropout, init,
                                 weight_decay, jnp.dtype(dtype).name))


def _validate_cnn_config(cfg: CNNConfig) -> None:
    fn = "cnn"
    if cfg.model not in CNN_MODELS:
        raise ValueError(f"{fn}: unknown model {cfg.model!r}; choose one of {sorted(CNN_MODELS)}")
    if len(cfg.input_shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in cfg.input_shape):
        raise ValueError(f"{fn}: input_shape must be one image's shape (C, H, W), got {cfg.input_shape!r}")
    expected = len(CNN_MODELS[cfg.model][1])
    if cfg.filters and len(cfg.filters) != expected:
        raise ValueError(f"{fn}: {cfg.model} has {expected} convolutions, so filters needs {expected} widths, "
                         f"got {cfg.filters!r}")
    for name, values in (("filters", cfg.filters), ("hidden", (cfg.hidden,) if cfg.hidden else ())):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{fn}: {name} must be positive ints, got {values!r}")
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ValueError(f"{fn}: num_classes must be a positive int, got {cfg.num_classes!r}")
    if cfg.dropout is not None:
        _checks.rate(fn, "dropout", cfg.dropout)
    if _checks.is_concrete(cfg.weight_decay) and not _non_negative(cfg.weight_decay):
        raise ValueError(f"{fn}: weight_decay must be >= 0, got {cfg.weight_decay}")
    initializers.get(cfg.init)


def cnn_module(cfg: CNNConfig) -> Module:
    """The composition of :func:`cnn` for ``cfg``; a dropout rate given as a JAX array (a sweep's)
    always inserts the dropout layers, as in :func:`mlp_module`."""
    from fnet.modules import batchnorm, conv2d, dense, dropout, flatten, max_pool, relu

    _, default_filters, default_hidden = CNN_MODELS[cfg.model]
    f = cfg.filters or default_filters
    h = cfg.hidden or default_hidden
    default_rate = {"cnn": 0.25, "deep_convnet": 0.5}.get(cfg.model, 0.0)
    rate = default_rate if cfg.dropout is None else cfg.dropout
    with_dropout = _present(rate)

    def conv(width, k, pad):
        return conv2d(width, k, pad=pad, init=cfg.init)

    drop = [dropout(rate)] if with_dropout else []
    head = [flatten(), dense(h, init=cfg.init), relu(), *drop, dense(cfg.num_classes, init=cfg.init)]
    if cfg.model == "cnn":
        body = [conv(f[0], 3, 1), batchnorm(), relu(), max_pool(2), conv(f[1], 3, 1), batchnorm(), relu(), max_pool(2)]
    elif cfg.model == "three_layer_convnet":
        body = [conv(f[0], 7, 3), relu(), max_pool(2)]
    elif cfg.model == "simple_convnet":
        body = [conv(f[0], 5, 0), relu(), max_pool(2)]
    else:  # deep_convnet, as the book's code lays it out (its fourth convolution pads by 2)
        body = []
        for i, pads in enumerate(((1, 1), (1, 2), (1, 1))):
            body += [conv(f[2 * i], 3, pads[0]), relu(), conv(f[2 * i + 1], 3, pads[1]), relu(), max_pool(2)]
        head = head + drop
    return combinators.serial(*body, *head)


def describe_cnn(cfg: CNNConfig) -> str:
    """Short name of a CNN configuration, e.g. ``"cnn (1x28x28, filters 32,64, hidden 128)"``."""
    _, default_filters, default_hidden = CNN_MODELS[cfg.model]
    shape = "x".join(map(str, cfg.input_shape))
    parts = [f"filters {','.join(map(str, cfg.filters or default_filters))}", f"hidden {cfg.hidden or default_hidden}"]
    if cfg.dropout is not None:
        parts.append(f"dropout={_shown(cfg.dropout)}")
    if _present(cfg.weight_decay):
        parts.append(f"wd={_shown(cfg.weight_decay)}")
    return f"{cfg.model} ({shape}, {', '.join(parts)})"
