"""The ready convolutional networks (images of shape (C, H, W)), each one composition:
:data:`ARCHITECTURES` holds their layouts and default widths, :func:`cnn` builds one by name."""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax.numpy as jnp

from fnet import _checks, combinators
from fnet.models._common import check_common, ints, present, shown
from fnet.modules import Module, batchnorm, conv2d, dense, dropout, flatten, max_pool, relu
from fnet.nets import Net, network


class Architecture(NamedTuple):
    """A ready CNN's layout.

    Fields:
      filters: the default convolution widths, in order.
      dense_width: the default width of the dense layer before the scores.
      body: the layers before the head, ``(filters, conv) -> [modules]`` with ``conv(width,
        kernel, pad)`` a convolution with the configured initializer.
      dropout: the default rate of the head's dropout (0: none).
      dropout_last: the head ends with dropout after the scores too (deep_convnet).
    """

    filters: tuple
    dense_width: int
    body: Callable
    dropout: float = 0.0
    dropout_last: bool = False


def _deep_convnet_body(f, conv):
    # As the book's code lays it out: its fourth convolution pads by 2.
    body = []
    for i, pads in enumerate(((1, 1), (1, 2), (1, 1))):
        body += [conv(f[2 * i], 3, pads[0]), relu(), conv(f[2 * i + 1], 3, pads[1]), relu(), max_pool(2)]
    return body


#: name -> :class:`Architecture` (their descriptions are the registry's, :data:`fnet.models.MODELS`).
ARCHITECTURES = {
    "small_cnn": Architecture((32, 64), 128, lambda f, conv: [conv(f[0], 3, 1), batchnorm(), relu(), max_pool(2),
                                                              conv(f[1], 3, 1), batchnorm(), relu(), max_pool(2)],
                              dropout=0.25),
    "three_layer_convnet": Architecture((32,), 100, lambda f, conv: [conv(f[0], 7, 3), relu(), max_pool(2)]),
    "simple_convnet": Architecture((30,), 100, lambda f, conv: [conv(f[0], 5, 0), relu(), max_pool(2)]),
    "deep_convnet": Architecture((16, 16, 32, 32, 64, 64), 50, _deep_convnet_body, dropout=0.5, dropout_last=True),
}
#: Old names, still accepted: ``"cnn"`` named the function :func:`cnn` and a model alike.
ALIASES = {"cnn": "small_cnn"}


def model_key(name: str) -> str:
    """A model's name as the registries spell it: lower case, "_" for "-", :data:`ALIASES` resolved."""
    key = str(name).lower().replace("-", "_")
    return ALIASES.get(key, key)


def cnn_name(name: str, fn: str) -> str:
    """The CNN called ``name`` (:func:`model_key`), or a ValueError naming ``fn``."""
    key = model_key(name)
    if key not in ARCHITECTURES:
        raise ValueError(f"{fn}: unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return key


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """Everything that defines a ready CNN; JSON-serialisable with :func:`dataclasses.asdict`.

    Fields:
      model: the name of a CNN of :data:`ARCHITECTURES`.
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
    """A ready convolutional network of :data:`ARCHITECTURES`, as one composition.

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
    return cnn_from_config(CNNConfig(cnn_name(model, fn), ints(fn, "input_shape", input_shape),
                                 _checks.integer(fn, "num_classes", num_classes, minimum=1),
                                 ints(fn, "filters", filters),
                                 _checks.integer(fn, "dense_width", dense_width, minimum=0, what="(0: the model's own)"),
                                 dropout, init, weight_decay, jnp.dtype(dtype).name))


def validate_cnn_config(cfg: CNNConfig) -> None:
    fn = "cnn"
    if cfg.model not in ARCHITECTURES:
        raise ValueError(f"{fn}: unknown model {cfg.model!r}; choose one of {sorted(ARCHITECTURES)}")
    if len(cfg.input_shape) != 3:
        raise ValueError(f"{fn}: input_shape must be one image's shape (C, H, W), got {cfg.input_shape!r}")
    ints(fn, "input_shape", cfg.input_shape)
    expected = len(ARCHITECTURES[cfg.model].filters)
    if cfg.filters and len(cfg.filters) != expected:
        raise ValueError(f"{fn}: {cfg.model} has {expected} convolutions, so filters needs {expected} widths, "
                         f"got {cfg.filters!r}")
    ints(fn, "filters", cfg.filters)
    _checks.integer(fn, "dense_width", cfg.dense_width, minimum=0, what="(0: the model's own)")
    _checks.integer(fn, "num_classes", cfg.num_classes, minimum=1)
    if cfg.dropout is not None:
        _checks.rate(fn, "dropout", cfg.dropout)
    check_common(fn, cfg.weight_decay, cfg.dtype, cfg.init)


def cnn_module(cfg: CNNConfig) -> Module:
    """The composition of :func:`cnn` for ``cfg``: the model's body (:attr:`Architecture.body`), then
    flatten-dense-ReLU-[dropout]-dense (and a last dropout for deep_convnet). A dropout rate given
    as a JAX array (a sweep's) always inserts the dropout layers, as in :func:`mlp_module`."""
    model = ARCHITECTURES[cfg.model]
    rate = model.dropout if cfg.dropout is None else cfg.dropout
    drop = [dropout(rate)] if present(rate) else []
    body = model.body(cfg.filters or model.filters, lambda width, k, pad: conv2d(width, k, pad=pad, init=cfg.init))
    head = [flatten(), dense(cfg.dense_width or model.dense_width, init=cfg.init), relu(), *drop,
            dense(cfg.num_classes, init=cfg.init), *(drop if model.dropout_last else [])]
    return combinators.serial(*body, *head)


def describe_cnn(cfg: CNNConfig) -> str:
    """Short name of a CNN configuration, e.g. ``"small_cnn (1x28x28, filters 32,64, dense 128)"``."""
    model = ARCHITECTURES[cfg.model]
    shape = "x".join(map(str, cfg.input_shape))
    parts = [f"filters {','.join(map(str, cfg.filters or model.filters))}", f"dense {cfg.dense_width or model.dense_width}"]
    if cfg.dropout is not None:
        parts.append(f"dropout={shown(cfg.dropout)}")
    if present(cfg.weight_decay):
        parts.append(f"wd={shown(cfg.weight_decay)}")
    return f"{cfg.model} ({shape}, {', '.join(parts)})"


def cnn_from_config(cfg: CNNConfig) -> Net:
    """The network of a (checked) :class:`CNNConfig`."""
    validate_cnn_config(cfg)
    return network(cnn_module(cfg), cfg.input_shape, weight_decay=cfg.weight_decay, dtype=cfg.dtype,
                   name=describe_cnn(cfg), config=cfg)
