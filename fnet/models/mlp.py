"""cs231n's fully connected network of any depth (:func:`mlp`), as one composition."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from fnet import _checks, combinators, layers, losses, modules
from fnet.models._common import check_common, ints, present, shown
from fnet.modules import Module
from fnet.nets import Net, network

NORMS = (None, "batchnorm", "layernorm")


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


def validate_mlp_config(cfg: MLPConfig) -> None:
    fn = "mlp"
    for name in ("input_dim", "output_dim"):
        _checks.integer(fn, name, getattr(cfg, name), minimum=1)
    ints(fn, "hidden_dims", cfg.hidden_dims)
    if cfg.activation not in modules.ACTIVATIONS:
        raise ValueError(f"{fn}: unknown activation {cfg.activation!r}; choose one of {sorted(modules.ACTIVATIONS)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"{fn}: unknown norm {cfg.norm!r}; choose one of {list(NORMS)}")
    _checks.rate(fn, "dropout", cfg.dropout)
    _checks.rate(fn, "input_dropout", cfg.input_dropout)
    if cfg.loss not in losses.LOSSES:
        raise ValueError(f"{fn}: unknown loss {cfg.loss!r}; choose one of {sorted(losses.LOSSES)}")
    check_common(fn, cfg.weight_decay, cfg.dtype, cfg.init)


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
      A :class:`Net` (see :func:`fnet.network`) whose ``config`` is the :class:`MLPConfig`. The params
      are ``{"dense1": {"W", "b"}, "batchnorm1": {"gamma", "beta"}, ..., "denseL": ...}`` (the
      mapping from cs231n's names is in :mod:`fnet.models`'s docstring).
    """
    cfg = MLPConfig(
        input_dim=_checks.integer("mlp", "input_dim", input_dim, minimum=1),
        hidden_dims=ints("mlp", "hidden_dims", hidden_dims),
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
    return mlp_from_config(cfg)


def mlp_module(cfg: MLPConfig) -> Module:
    """The composition of :func:`mlp`: ``serial([dropout], dense, [norm], activation, [dropout], ...,
    dense)``; a dropout rate given as a JAX array (a sweep's) inserts the dropout layers even at
    0, so that one compiled program serves every rate of a sweep."""
    rate = cfg.dropout
    with_dropout = present(rate)
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


def describe(cfg: MLPConfig) -> str:
    """Short name of a configuration, e.g. ``"5-[6,6]-3 relu batchnorm dropout=0.3 wd=0.1"``."""
    parts = [f"{cfg.input_dim}-[{','.join(map(str, cfg.hidden_dims))}]-{cfg.output_dim}", cfg.activation]
    if cfg.norm:
        parts.append(cfg.norm)
    if cfg.input_dropout:
        parts.append(f"input_dropout={cfg.input_dropout}")
    if present(cfg.dropout):
        parts.append(f"dropout={shown(cfg.dropout)}")
    if present(cfg.weight_decay):
        parts.append(f"wd={shown(cfg.weight_decay)}")
    return " ".join(parts)


def mlp_from_config(cfg: MLPConfig) -> Net:
    """The network of a (checked) :class:`MLPConfig`."""
    validate_mlp_config(cfg)
    return network(mlp_module(cfg), (cfg.input_dim,), loss=cfg.loss, weight_decay=cfg.weight_decay, dtype=cfg.dtype,
                   name=describe(cfg), config=cfg)
