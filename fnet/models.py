"""The model zoo: the ready networks, each one composition, and ONE registry of them.

:data:`MODELS` maps a name to its :class:`Model`: what it is, its default widths and dropout, how
its layers are laid out, and its data presets (the ``fnet train`` defaults per data set), so that
the command and the library read one table:

>>> import fnet
>>> sorted(fnet.models.MODELS)
['deep_convnet', 'gru', 'lstm', 'mlp', 'rnn', 'simple_convnet', 'small_cnn', 'three_layer_convnet']
>>> net = fnet.mlp(784, [100, 100], 10, dropout=0.1)                  # cs231n's FullyConnectedNet
>>> fnet.nets.num_params(net)                                          # 784*100+100 + 100*100+100 + 100*10+10
89610
>>> fnet.nets.num_params(fnet.models.cnn("small_cnn", (1, 28, 28), 10))  # a ready CNN by name
421834
>>> net = fnet.models.build("deep_convnet", (1, 28, 28), 10)          # any model by name
>>> fnet.models.from_config(net.config).config == net.config          # rebuilt from its config
True
>>> net = fnet.models.char_lm(65, cell="lstm", hidden=512)            # a character language model
>>> net.input_shape, net.output_shape                                  # token ids (T,) -> scores (T, V)
((128,), (128, 65))

``mlp``'s parameters are the composition's tree. Its layers are named ``dense1``, ``batchnorm1``
(or ``layernorm1``), ..., so the cs231n names map as::

    W{i}, b{i}             -> params["dense{i}"]["W"], params["dense{i}"]["b"]
    gamma{i}, beta{i}      -> params["batchnorm{i}"]["gamma"], ...  (or "layernorm{i}")
    running_mean/var{i}    -> state["batchnorm{i}"].mean, state["batchnorm{i}"].var

Names: ``"small_cnn"`` was called ``"cnn"`` (the name of the function :func:`cnn` too); the old
name is still accepted (:data:`ALIASES`), so that configurations and run folders saved before the
rename load, and a CNN's dense width, once its ``hidden`` field, is ``dense_width``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fnet import _checks, combinators, layers, losses, modules
from fnet import init as initializers
from fnet.modules import Module, batchnorm, conv2d, dense, dropout, flatten, max_pool, relu
from fnet.nets import Net, network

NORMS = (None, "batchnorm", "layernorm")


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


def _ints(fn: str, name: str, values, minimum: int = 1) -> tuple:
    """``values`` as a tuple of Python ints (NumPy integers accepted; see :func:`fnet._checks.integer`),
    so that a config holds plain ints and is JSON-serialisable."""
    return tuple(_checks.integer(fn, f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(values))


def _validate_config(cfg: MLPConfig) -> None:
    fn = "mlp"
    for name in ("input_dim", "output_dim"):
        _checks.integer(fn, name, getattr(cfg, name), minimum=1)
    _ints(fn, "hidden_dims", cfg.hidden_dims)
    if cfg.activation not in modules.ACTIVATIONS:
        raise ValueError(f"{fn}: unknown activation {cfg.activation!r}; choose one of {sorted(modules.ACTIVATIONS)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"{fn}: unknown norm {cfg.norm!r}; choose one of {list(NORMS)}")
    _checks.rate(fn, "dropout", cfg.dropout)
    _checks.rate(fn, "input_dropout", cfg.input_dropout)
    if _checks.is_concrete(cfg.weight_decay) and not _checks.non_negative(cfg.weight_decay):
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
        input_dim=_checks.integer("mlp", "input_dim", input_dim, minimum=1),
        hidden_dims=_ints("mlp", "hidden_dims", hidden_dims),
        output_dim=_checks.integer("mlp", "output_dim", output_dim, minimum=1),
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


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """Everything that defines a ready CNN; JSON-serialisable with :func:`dataclasses.asdict`.

    Fields:
      model: the name of a CNN of :data:`MODELS`.
      input_shape: one image's shape (C, H, W).
      num_classes: C, the number of scores.
      filters: the convolutions' widths, in order (the model's defaults when empty).
      dense_width: the width of the dense layer before the scores (0: the model's default).
      dropout: drop probability of the dropout layers (the model's default when None).
      init, weight_decay, dtype: as in :func:`mlp`.
    """

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    filters: tuple[int, ...] = ()
    dense_width: int = 0
    dropout: float | None = None
    init: str | float = "he"
    weight_decay: float = 0.0
    dtype: str = "float32"


def cnn(model: str, input_shape, num_classes: int, *, filters=(), dense_width: int = 0, dropout: float | None = None,
        init="he", weight_decay: float = 0.0, dtype="float32") -> Net:
    """A ready convolutional network of :data:`MODELS`, as one composition.

    - ``"small_cnn"``: fnet's default CNN for MNIST-sized images: two conv3x3 (pad 1) blocks with
      batch norm, ReLU and 2x2 max pooling, then dense(dense_width)-ReLU-dropout and the scores.
    - ``"three_layer_convnet"``: cs231n's ``ThreeLayerConvNet``, conv7x7 (pad 3)-ReLU-2x2 max
      pool-affine-ReLU-affine.
    - ``"simple_convnet"``: Deep Learning from Scratch's ``SimpleConvNet`` (ch. 7), conv5x5 (no
      pad)-ReLU-2x2 max pool-affine-ReLU-affine.
    - ``"deep_convnet"``: Deep Learning from Scratch's ``DeepConvNet`` (ch. 8, 99.38% on MNIST):
      three blocks of two conv3x3 (pad 1; the fourth conv pad 2)-ReLU and a 2x2 max pool, then
      affine(50)-ReLU-dropout(0.5)-affine-dropout(0.5).

    Args:
      model: the network's name (``"cnn"``: the old name of ``"small_cnn"``).
      input_shape: one image's shape (C, H, W), e.g. (1, 28, 28).
      num_classes: the number of classes.
      filters, dense_width, dropout: override the model's widths and dropout rate (see
        :class:`CNNConfig`; a dropout rate may be traced, as in :func:`mlp`).
      init, weight_decay, dtype: as in :func:`mlp` (He init by default, as both sources use).

    Returns:
      A :class:`Net` whose ``config`` is the :class:`CNNConfig`.
    """
    fn = "cnn"
    return from_config(CNNConfig(canonical_name(model, fn), _ints(fn, "input_shape", input_shape),
                                 _checks.integer(fn, "num_classes", num_classes, minimum=1),
                                 _ints(fn, "filters", filters),
                                 _checks.integer(fn, "dense_width", dense_width, minimum=0, what="(0: the model's own)"),
                                 dropout, init, weight_decay, jnp.dtype(dtype).name))


def _validate_cnn_config(cfg: CNNConfig) -> None:
    fn = "cnn"
    if cfg.model not in MODELS or not MODELS[cfg.model].images:
        raise ValueError(f"{fn}: unknown model {cfg.model!r}; choose one of {sorted(n for n, m in MODELS.items() if m.images)}")
    if len(cfg.input_shape) != 3:
        raise ValueError(f"{fn}: input_shape must be one image's shape (C, H, W), got {cfg.input_shape!r}")
    _ints(fn, "input_shape", cfg.input_shape)
    expected = len(MODELS[cfg.model].filters)
    if cfg.filters and len(cfg.filters) != expected:
        raise ValueError(f"{fn}: {cfg.model} has {expected} convolutions, so filters needs {expected} widths, "
                         f"got {cfg.filters!r}")
    _ints(fn, "filters", cfg.filters)
    _checks.integer(fn, "dense_width", cfg.dense_width, minimum=0, what="(0: the model's own)")
    _checks.integer(fn, "num_classes", cfg.num_classes, minimum=1)
    if cfg.dropout is not None:
        _checks.rate(fn, "dropout", cfg.dropout)
    if _checks.is_concrete(cfg.weight_decay) and not _checks.non_negative(cfg.weight_decay):
        raise ValueError(f"{fn}: weight_decay must be >= 0, got {cfg.weight_decay}")
    initializers.get(cfg.init)


def cnn_module(cfg: CNNConfig) -> Module:
    """The composition of :func:`cnn` for ``cfg``: the model's body (:attr:`Model.body`), then
    flatten-dense-ReLU-[dropout]-dense (and a last dropout for deep_convnet). A dropout rate given
    as a JAX array (a sweep's) always inserts the dropout layers, as in :func:`mlp_module`."""
    model = MODELS[cfg.model]
    rate = model.dropout if cfg.dropout is None else cfg.dropout
    drop = [dropout(rate)] if _present(rate) else []
    body = model.body(cfg.filters or model.filters, lambda width, k, pad: conv2d(width, k, pad=pad, init=cfg.init))
    head = [flatten(), dense(cfg.dense_width or model.dense_width, init=cfg.init), relu(), *drop,
            dense(cfg.num_classes, init=cfg.init), *(drop if model.dropout_last else [])]
    return combinators.serial(*body, *head)


def describe_cnn(cfg: CNNConfig) -> str:
    """Short name of a CNN configuration, e.g. ``"small_cnn (1x28x28, filters 32,64, dense 128)"``."""
    model = MODELS[cfg.model]
    shape = "x".join(map(str, cfg.input_shape))
    parts = [f"filters {','.join(map(str, cfg.filters or model.filters))}", f"dense {cfg.dense_width or model.dense_width}"]
    if cfg.dropout is not None:
        parts.append(f"dropout={_shown(cfg.dropout)}")
    if _present(cfg.weight_decay):
        parts.append(f"wd={_shown(cfg.weight_decay)}")
    return f"{cfg.model} ({shape}, {', '.join(parts)})"


def from_config(config) -> Net:
    """Build (or rebuild) a ready network from its configuration: an :class:`MLPConfig`, a
    :class:`CNNConfig` or a :class:`CharLMConfig`, or the ``dataclasses.asdict`` dict of one (a
    dict with a "vocab_size" key is a language model's, one with a "model" key other than "mlp"
    a CNN's; one saved before the renames, with model "cnn" or a "hidden" width, loads too)."""
    if isinstance(config, dict) and "vocab_size" in config:
        config = CharLMConfig(**config)
    elif isinstance(config, dict):
        config = upgrade_config(config)
        if config.get("model", "mlp") == "mlp":
            config.pop("model", None)
            config = MLPConfig(**dict(config, hidden_dims=tuple(config["hidden_dims"])))
        else:
            config = CNNConfig(**dict(config, model=canonical_name(config["model"], "from_config"),
                                      input_shape=tuple(config["input_shape"]), filters=tuple(config["filters"])))
    if isinstance(config, CharLMConfig):
        _validate_char_lm_config(config)
        return network(char_lm_module(config), (config.context,), loss="temporal_softmax_cross_entropy",
                       weight_decay=config.weight_decay, dtype=config.dtype, name=describe_char_lm(config),
                       config=config)
    if isinstance(config, CNNConfig):
        _validate_cnn_config(config)
        return network(cnn_module(config), config.input_shape, weight_decay=config.weight_decay,
                       dtype=config.dtype, name=describe_cnn(config), config=config)
    if not isinstance(config, MLPConfig):
        raise TypeError(f"from_config: expected an MLPConfig, a CNNConfig, a CharLMConfig or a dict, got "
                        f"{type(config).__name__}")
    _validate_config(config)
    return network(mlp_module(config), (config.input_dim,), loss=config.loss,
                   weight_decay=config.weight_decay, dtype=config.dtype, name=describe(config), config=config)


# --------------------------------------------------------------------------------------------
# Character language models (token ids (N, T) -> scores for the next token (N, T, V))

#: The recurrent cells of :func:`char_lm`, by name (the registry's language models).
CELLS = {"rnn": modules.rnn, "lstm": modules.lstm, "gru": modules.gru}


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Everything that defines a character language model; JSON-serialisable with
    :func:`dataclasses.asdict`. Fields mirror :func:`char_lm`'s arguments."""

    vocab_size: int
    cell: str = "lstm"
    embed: int = 64
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.0
    context: int = 128
    init: str | float = "xavier"
    weight_decay: float = 0.0
    dtype: str = "float32"


def char_lm(vocab_size: int, *, cell: str = "lstm", embed: int = 64, hidden: int = 512, layers: int = 1,
            dropout: float = 0.0, context: int = 128, init="xavier", weight_decay: float = 0.0,
            dtype="float32") -> Net:
    """A character (token) language model as one composition (:func:`char_lm_module`)::

        embedding(V, embed) - [cell(hidden) - dropout] x layers - temporal_dense(V)

    It takes token ids x (N, context) and scores the NEXT token at every step, (N, context, V);
    its loss is ``"temporal_softmax_cross_entropy"``, the mean over the N*T tokens in nats, and
    its targets are x shifted by one (:func:`fnet.data.random_windows`). Dropout acts on each
    recurrent layer's outputs (between layers, and before the scores: the non-recurrent
    connections, as Zaremba et al. 2014 regularize LSTMs), never inside the recurrence. The
    parameters do not depend on ``context``: ``from_config(dataclasses.replace(net.config,
    context=L))`` evaluates the same parameters on windows of L tokens, and
    :func:`fnet.generate.generate` runs them one token at a time.

    Args:
      vocab_size: V, the number of token ids (e.g. ``len(TextDataset.vocab)``).
      cell: "lstm", "rnn" (tanh) or "gru" (:data:`CELLS`).
      embed: the embedding's width (its table is N(0, 1), PyTorch's ``nn.Embedding``).
      hidden: the width of every recurrent layer.
      layers: the number of stacked recurrent layers.
      dropout: drop probability after each recurrent layer, in [0, 1) (may be traced, as in
        :func:`mlp`).
      context: T, the window length the network takes.
      init: the initializer of the recurrent and output weights ("xavier": cs231n's scales).
      weight_decay: L2 lambda on every weight, the embedding table included (see
        :func:`fnet.network`).
      dtype: parameter dtype.

    Returns:
      A :class:`Net` whose ``config`` is the :class:`CharLMConfig`; params ``{"embedding1":
      {"W"}, "lstm1": {"Wx", "Wh", "b"}, ..., "temporal_dense1": {"W", "b"}}``.
    """
    size = {k: _checks.integer("char_lm", k, v, minimum=1) for k, v in
            (("vocab_size", vocab_size), ("embed", embed), ("hidden", hidden), ("layers", layers), ("context", context))}
    return from_config(CharLMConfig(size["vocab_size"], cell, size["embed"], size["hidden"], size["layers"], dropout,
                                    size["context"], init, weight_decay, jnp.dtype(dtype).name))


def _validate_char_lm_config(cfg: CharLMConfig) -> None:
    fn = "char_lm"
    for name in ("vocab_size", "embed", "hidden", "layers", "context"):
        _checks.integer(fn, name, getattr(cfg, name), minimum=1)
    if cfg.cell not in CELLS:
        raise ValueError(f"{fn}: unknown cell {cfg.cell!r}; choose one of {', '.join(CELLS)}")
    _checks.rate(fn, "dropout", cfg.dropout)
    if _checks.is_concrete(cfg.weight_decay) and not _checks.non_negative(cfg.weight_decay):
        raise ValueError(f"{fn}: weight_decay must be >= 0, got {cfg.weight_decay}")
    if not jnp.issubdtype(jnp.dtype(cfg.dtype), jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {cfg.dtype!r}")
    initializers.get(cfg.init)


def char_lm_module(cfg: CharLMConfig) -> Module:
    """The composition of :func:`char_lm`: ``serial(embedding, cell, [dropout], ..., temporal_dense)``;
    a dropout rate given as a JAX array (a sweep's) inserts the dropout layers even at 0."""
    drop = [dropout(cfg.dropout)] if _present(cfg.dropout) else []
    cells = [layer for _ in range(cfg.layers) for layer in (CELLS[cfg.cell](cfg.hidden, init=cfg.init), *drop)]
    return combinators.serial(modules.embedding(cfg.vocab_size, cfg.embed), *cells,
                              modules.temporal_dense(cfg.vocab_size, init=cfg.init))


def describe_char_lm(cfg: CharLMConfig) -> str:
    """Short name of a language model's configuration, e.g. ``"lstm char LM (65 tokens, embed 64,
    1x512, context 128)"``."""
    parts = [f"{cfg.vocab_size} tokens", f"embed {cfg.embed}", f"{cfg.layers}x{cfg.hidden}", f"context {cfg.context}"]
    if _present(cfg.dropout):
        parts.append(f"dropout={_shown(cfg.dropout)}")
    if _present(cfg.weight_decay):
        parts.append(f"wd={_shown(cfg.weight_decay)}")
    return f"{cfg.cell} char LM ({', '.join(parts)})"


# --------------------------------------------------------------------------------------------
# Rebuilding from a configuration, and the registry


class Model(NamedTuple):
    """One ready network of the zoo.

    Fields:
      description: one line, for listings (``fnet train --help``).
      images: True for a CNN (samples are images (C, H, W)); False for the MLP (flat samples)
        and the language models.
      hidden: the MLP's default hidden sizes (() for a CNN).
      filters: a CNN's default convolution widths.
      dense_width: a CNN's default width of the dense layer before the scores.
      dropout: the default dropout rate (the MLP's comes from its data presets).
      presets: ``{data set: {option: value}}``, the ``fnet train`` defaults (epochs, batch size,
        ...) of this model on that data set; key None: every other data set.
      body: a CNN's layers before its head, ``(filters, conv) -> [modules]`` with ``conv(width,
        kernel, pad)`` a convolution with the configured initializer; None for the MLP.
      dropout_last: a CNN's head ends with dropout after the scores too (deep_convnet).
      cell: a character language model's recurrent cell (:data:`CELLS`; samples are token ids
        (T,), built by :func:`char_lm`); None for the MLP and the CNNs.
    """

    description: str
    images: bool
    hidden: tuple = ()
    filters: tuple = ()
    dense_width: int = 0
    dropout: float = 0.0
    presets: dict = {}
    body: Callable | None = None
    dropout_last: bool = False
    cell: str | None = None


def _deep_convnet_body(f, conv):
    # As the book's code lays it out: its fourth convolution pads by 2.
    body = []
    for i, pads in enumerate(((1, 1), (1, 2), (1, 1))):
        body += [conv(f[2 * i], 3, pads[0]), relu(), conv(f[2 * i + 1], 3, pads[1]), relu(), max_pool(2)]
    return body


#: The CNNs' presets: their widths and dropout are the model's own; the MNIST one is the README's
#: default CNN run (99.2% test accuracy in under 6 minutes on 2 cores).
_CNN_PRESETS = {
    "digits": {"epochs": 30, "batch_size": 32},
    "mnist": {"epochs": 6, "batch_size": 64, "schedule": "cosine"},
    "fashion-mnist": {"epochs": 6, "batch_size": 64, "schedule": "cosine"},
    None: {"epochs": 10, "batch_size": 64},
}

#: The language models' ``fnet train`` defaults (trained by steps on text; see :mod:`fnet.lm`).
_LM_PRESET = {"data": "shakespeare", "steps": 3600, "batch_size": 32, "context": 128, "embed": 64, "lr": 2e-3,
              "schedule": "cosine", "clip": 1.0, "init": "xavier", "dropout": 0.25}

#: The zoo: name -> :class:`Model`.
MODELS = {
    # MLP presets tuned: digits reaches 97.5-98.9% test accuracy over split seeds 0-3 with these,
    # MNIST 98% in 10 epochs.
    "mlp": Model("cs231n's FullyConnectedNet: [dense-[norm]-activation-[dropout]] x L - dense(C)", False,
                 hidden=(100, 100),
                 presets={"digits": {"epochs": 60, "batch_size": 32, "dropout": 0.1},
                          "mnist": {"epochs": 10, "batch_size": 128, "dropout": 0.0},
                          "fashion-mnist": {"epochs": 10, "batch_size": 128, "dropout": 0.0},
                          None: {"epochs": 30, "batch_size": 64, "dropout": 0.0}}),
    "small_cnn": Model("conv3x3(f1)-batchnorm-relu-pool2 - conv3x3(f2)-batchnorm-relu-pool2 - dense(d)-relu-dropout - "
                       "dense(C)", True, filters=(32, 64), dense_width=128, dropout=0.25, presets=_CNN_PRESETS,
                       body=lambda f, conv: [conv(f[0], 3, 1), batchnorm(), relu(), max_pool(2),
                                             conv(f[1], 3, 1), batchnorm(), relu(), max_pool(2)]),
    "three_layer_convnet": Model("cs231n's ThreeLayerConvNet: conv7x7(f)-relu-pool2 - dense(d)-relu - dense(C)", True,
                                 filters=(32,), dense_width=100, presets=_CNN_PRESETS,
                                 body=lambda f, conv: [conv(f[0], 7, 3), relu(), max_pool(2)]),
    "simple_convnet": Model("Deep Learning from Scratch's SimpleConvNet: conv5x5(f)-relu-pool2 - dense(d)-relu - "
                            "dense(C)", True, filters=(30,), dense_width=100, presets=_CNN_PRESETS,
                            body=lambda f, conv: [conv(f[0], 5, 0), relu(), max_pool(2)]),
    "deep_convnet": Model("Deep Learning from Scratch's DeepConvNet: 3 x [conv3x3-relu-conv3x3-relu-pool2] - "
                          "dense(d)-relu-dropout - dense(C)-dropout", True, filters=(16, 16, 32, 32, 64, 64),
                          dense_width=50, dropout=0.5, presets=_CNN_PRESETS, body=_deep_convnet_body,
                          dropout_last=True),
    # Language models: one layer of 512 with dropout 0.25, embedding 64, windows of 128 (chosen by
    # benchmarks/char_lm_sizes.py; see docs/language_models.md).
    "lstm": Model("character language model: embedding(e) - [LSTM(h) - dropout] x L - temporal_dense(V)", False,
                  hidden=(512,), presets={None: _LM_PRESET}, cell="lstm"),
    "rnn": Model("character language model: embedding(e) - [tanh RNN(h) - dropout] x L - temporal_dense(V)", False,
                 hidden=(512,), presets={None: _LM_PRESET}, cell="rnn"),
    "gru": Model("character language model: embedding(e) - [GRU(h) - dropout] x L - temporal_dense(V)", False,
                 hidden=(512,), presets={None: _LM_PRESET}, cell="gru"),
}
#: Old names, still accepted: ``"cnn"`` named the function :func:`cnn` and a model alike.
ALIASES = {"cnn": "small_cnn"}


def canonical_name(name: str, fn: str = "models") -> str:
    """The registry's name for ``name`` (case and "-" vs "_" ignored; :data:`ALIASES` resolved)."""
    key = str(name).lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"{fn}: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return key


def preset(name: str, data: str) -> dict:
    """The ``fnet train`` defaults of model ``name`` on data set ``data``: "hidden", "filters"
    (() : the model's), "dense_width" (0: the model's), "dropout" (None: the model's), "epochs",
    "batch_size" and any other option its data preset sets."""
    model = MODELS[canonical_name(name)]
    return {"hidden": model.hidden, "filters": (), "dense_width": 0, "dropout": None,
            **model.presets.get(data, model.presets.get(None, {}))}


def build(name: str, input_shape, num_outputs: int, *, hidden=None, filters=(), dense_width: int = 0, dropout=None,
          **options) -> Net:
    """Model ``name`` for samples of ``input_shape`` and ``num_outputs`` scores: :func:`mlp` (of
    the flattened samples, ``hidden`` sizes), :func:`cnn` (``filters``, ``dense_width``) or
    :func:`char_lm` (``input_shape`` (T,), ``num_outputs`` the vocabulary; ``hidden`` one width
    per recurrent layer, all equal, e.g. ``(512, 512)`` for two layers of 512). None, () and 0
    take the model's defaults; ``options`` go to the builder (``activation``, ``norm``, ``loss``
    for the MLP; ``embed`` for a language model; ``init``, ``weight_decay``, ``dtype`` for all)."""
    name = canonical_name(name, "build")
    model = MODELS[name]
    if model.cell is not None:
        return _build_char_lm(model.cell, input_shape, num_outputs, hidden, dropout, options)
    if model.images:
        return cnn(name, input_shape, num_outputs, filters=filters, dense_width=dense_width, dropout=dropout, **options)
    return mlp(math.prod(input_shape), model.hidden if hidden is None else hidden, num_outputs,
               dropout=model.dropout if dropout is None else dropout, **options)


def _build_char_lm(cell: str, input_shape, vocab_size: int, hidden, dropout, options: dict) -> Net:
    """:func:`build` of a language model."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 1:
        raise ValueError(f"build: the {cell} language model takes windows of token ids, input_shape (T,), got "
                         f"{input_shape}")
    (context,) = input_shape
    sizes = {}
    if isinstance(hidden, (tuple, list)) and hidden:
        if len(set(hidden)) > 1:
            raise ValueError(f"build: a language model's recurrent layers have one width, got hidden {tuple(hidden)}")
        sizes = {"hidden": hidden[0], "layers": len(hidden)}
    elif hidden is not None and hidden != ():
        sizes = {"hidden": hidden}
    if dropout is not None:
        sizes["dropout"] = dropout
    return char_lm(vocab_size, cell=cell, context=context, **sizes, **options)


def upgrade_config(config: dict) -> dict:
    """A configuration dict (``dataclasses.asdict`` of a config) saved before the zoo's renames,
    as today's: model "cnn" is "small_cnn", a CNN's "hidden" width is "dense_width"."""
    config = dict(config)
    if isinstance(config.get("model"), str):
        config["model"] = ALIASES.get(config["model"], config["model"])
    if config.get("model", "mlp") != "mlp" and "hidden" in config:
        config["dense_width"] = config.pop("hidden")
    return config


def upgrade_run_options(options: dict) -> dict:
    """``fnet train`` options saved before the zoo's renames, as today's: model "cnn" is
    "small_cnn", and a CNN's dense width, once its ``hidden``, is ``dense_width``."""
    options = dict(options)
    if isinstance(options.get("model"), str):
        options["model"] = ALIASES.get(options["model"], options["model"])
    if "dense_width" not in options and "hidden" in options:
        images = options.get("model") in MODELS and MODELS[options["model"]].images
        options["dense_width"] = (list(options["hidden"]) or [0])[0] if images else 0
        options["hidden"] = [] if images else options["hidden"]
    return options
