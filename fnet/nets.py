"""Fully connected networks built from fnet's layer pairs, with a hand-written backward chain.

``mlp(...)`` returns a :class:`Net`, a record of pure functions over a plain parameter dict in
cs231n's naming::

    params = {"W1": (D, H1), "b1": (H1,), "gamma1": (H1,), "beta1": (H1,),   # gamma/beta with a norm
              ...,
              "WL": (H_{L-1}, C), "bL": (C,)}
    state  = {"running_mean1": (H1,), "running_var1": (H1,), ...}          # batch norm only, else {}

Each hidden layer is ``affine -> [batch norm | layer norm] -> activation -> [dropout]`` and the
last layer is affine, as in cs231n's ``FullyConnectedNet``. ``loss`` is the train-mode loss
written with the forward functions only, so ``jax.grad`` can differentiate it; ``loss_and_grad``
runs the same forward, keeps the caches and walks the layers' backward functions in reverse. The
two share every forward line (and hence the dropout masks for a given key), so their gradients
agree to rounding error; ``tests/test_nets.py`` checks all 48 combinations of activation,
normalization, dropout and weight decay.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fnet import _checks, layers, losses
from fnet import init as initializers

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

    @property
    def num_layers(self) -> int:
        """Number of affine layers (hidden layers + the output layer)."""
        return len(self.hidden_dims) + 1


class Net(NamedTuple):
    """A network as a record of pure functions (see :func:`mlp` for their signatures)."""

    config: MLPConfig
    init: Callable
    apply: Callable
    loss: Callable
    loss_and_grad: Callable


class _LayerCache(NamedTuple):
    affine: tuple
    norm: layers.NormCache | None
    act: object
    dropout: jax.Array | None


def _validate_config(cfg: MLPConfig) -> None:
    fn = "mlp"
    for name in ("input_dim", "output_dim"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{fn}: {name} must be a positive int, got {v!r}")
    if any(not isinstance(h, int) or h < 1 for h in cfg.hidden_dims):
        raise ValueError(f"{fn}: hidden_dims must be positive ints, got {cfg.hidden_dims!r}")
    if cfg.activation not in layers.ACTIVATIONS:
        raise ValueError(f"{fn}: unknown activation {cfg.activation!r}; choose one of {sorted(layers.ACTIVATIONS)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"{fn}: unknown norm {cfg.norm!r}; choose one of {list(NORMS)}")
    _checks.rate(fn, "dropout", cfg.dropout)
    if cfg.weight_decay < 0:
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
    init="he",
    weight_decay: float = 0.0,
    loss: str = "softmax_cross_entropy",
    leaky_alpha: float = layers.LEAKY_RELU_ALPHA,
    bn_momentum: float = 0.9,
    norm_eps: float = 1e-5,
    dtype="float32",
) -> Net:
    """Build a fully connected network of any depth.

    Args:
      input_dim: D, features per sample (inputs of shape (N, d1, ..., dk) are flattened).
      hidden_dims: sizes of the hidden layers, e.g. ``[100, 100]``; ``[]`` gives a linear model.
      output_dim: C, number of scores per sample.
      activation: "relu", "leaky_relu" (slope ``leaky_alpha``), "sigmoid" or "tanh".
      norm: None, "batchnorm" (running statistics in ``state``; ``bn_momentum``, ``norm_eps``)
        or "layernorm" (``norm_eps``).
      dropout: drop probability of each hidden unit in train mode, in [0, 1).
      init: weight initializer: "zeros", "normal" (std 0.01), "xavier", "he", a float std, or a
        callable ``(key, shape, dtype) -> array``. Biases start at 0, gamma at 1, beta at 0.
      weight_decay: lambda of the L2 penalty ``0.5 * lambda * sum(W**2)`` on weights only.
      loss: "softmax_cross_entropy" (integer labels of shape (N,)), "mse" (targets of shape
        (N, C)) or "sigmoid_binary_cross_entropy" (0/1 targets of shape (N, C)).
      dtype: parameter dtype.

    Returns:
      A :class:`Net` with:

      - ``init(key, *, std=None) -> (params, state)``; ``std`` (may be traced) overrides the
        weight initializer with N(0, std**2), for sweeps over the init scale.
      - ``apply(params, x, *, state=None, train=False, key=None, dropout=None)``: x of shape
        (N, D) (or (N, d1, ..., dk)); eval mode returns scores (N, C); train mode (batch
        statistics, dropout with ``key``) returns ``(scores, new_state)``.
      - ``loss(params, x, y, *, state=None, key=None, weight_decay=None, dropout=None)
        -> (loss, new_state)``: the train-mode loss including weight decay, for
        ``jax.value_and_grad(net.loss, has_aux=True)``.
      - ``loss_and_grad(params, x, y, *, state=None, key=None, weight_decay=None, dropout=None)
        -> (loss, grads, new_state)``: the same loss with the hand-written backward chain; no
        JAX autodiff anywhere.

      ``weight_decay`` and ``dropout`` given to ``loss``/``loss_and_grad``/``apply`` override the
      config's values and may be traced arrays (vmapped hyperparameter sweeps); a dropout override
      always inserts the dropout layers, even at rate 0.
    """
    cfg = MLPConfig(
        input_dim=input_dim,
        hidden_dims=tuple(hidden_dims),
        output_dim=output_dim,
        activation=activation,
        norm=norm,
        dropout=dropout,
        init=init,
        weight_decay=weight_decay,
        loss=loss,
        leaky_alpha=leaky_alpha,
        bn_momentum=bn_momentum,
        norm_eps=norm_eps,
        dtype=jnp.dtype(dtype).name,
    )
    _validate_config(cfg)
    return _build(cfg)


def from_config(config: MLPConfig | dict) -> Net:
    """Rebuild a :class:`Net` from an :class:`MLPConfig` or its ``dataclasses.asdict`` dict."""
    if isinstance(config, dict):
        config = dict(config, hidden_dims=tuple(config["hidden_dims"]))
        config = MLPConfig(**config)
    _validate_config(config)
    return _build(config)


def describe(cfg: MLPConfig) -> str:
    """Short name of a configuration, e.g. ``"5-[6,6]-3 relu batchnorm dropout=0.3 wd=0.1"``."""
    parts = [f"{cfg.input_dim}-[{','.join(map(str, cfg.hidden_dims))}]-{cfg.output_dim}", cfg.activation]
    if cfg.norm:
        parts.append(cfg.norm)
    if cfg.dropout:
        parts.append(f"dropout={cfg.dropout}")
    if cfg.weight_decay:
        parts.append(f"wd={cfg.weight_decay}")
    return " ".join(parts)


def param_names(cfg: MLPConfig) -> list[str]:
    """The keys of ``params`` for a config, in layer order (e.g. W1, b1, gamma1, beta1, W2, b2)."""
    names = []
    for i in range(1, cfg.num_layers + 1):
        names += [f"W{i}", f"b{i}"]
        if cfg.norm is not None and i < cfg.num_layers:
            names += [f"gamma{i}", f"beta{i}"]
    return names


def _build(cfg: MLPConfig) -> Net:
    n_layers = cfg.num_layers
    dims = (cfg.input_dim, *cfg.hidden_dims, cfg.output_dim)
    dtype = jnp.dtype(cfg.dtype)
    weight_init = initializers.get(cfg.init)
    act_forward, act_backward = layers.ACTIVATIONS[cfg.activation]
    if cfg.activation == "leaky_relu":
        act_forward = functools.partial(act_forward, alpha=cfg.leaky_alpha)
    loss_fn = losses.LOSSES[cfg.loss]
    expected_params = set(param_names(cfg))
    uses_bn = cfg.norm == "batchnorm"
    norm_backward = layers.batchnorm_backward if uses_bn else layers.layernorm_backward

    def init(key, *, std=None):
        w_init = weight_init if std is None else initializers.normal(std)
        keys = jax.random.split(key, n_layers)
        params, state = {}, {}
        for i in range(1, n_layers + 1):
            params[f"W{i}"] = w_init(keys[i - 1], (dims[i - 1], dims[i]), dtype)
            params[f"b{i}"] = jnp.zeros((dims[i],), dtype)
            if cfg.norm is not None and i < n_layers:
                params[f"gamma{i}"] = jnp.ones((dims[i],), dtype)
                params[f"beta{i}"] = jnp.zeros((dims[i],), dtype)
            if uses_bn and i < n_layers:
                state[f"running_mean{i}"] = jnp.zeros((dims[i],), dtype)
                state[f"running_var{i}"] = jnp.ones((dims[i],), dtype)
        return params, state

    def check_inputs(fn, params, x, state):
        if not isinstance(params, dict) or set(params) != expected_params:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{fn}: params must be a dict with keys {sorted(expected_params)}, got {got}")
        x = _checks.float_array(fn, "x", x, min_ndim=2)
        if math.prod(x.shape[1:]) != cfg.input_dim:
            raise ValueError(
                f"{fn}: x has shape {tuple(x.shape)} but the network expects {cfg.input_dim} features per "
                f"sample, i.e. shape (N, {cfg.input_dim})"
            )
        if uses_bn and state is None:
            raise ValueError(f"{fn}: state is None but the network uses batch norm; pass the state returned by init")
        return x, ({} if state is None else state)

    def dropout_rate(override):
        return cfg.dropout if override is None else override

    def uses_dropout(override):
        return override is not None or cfg.dropout > 0

    def forward(fn, params, x, state, *, train, key, dropout):
        """Scores, new state and per-layer caches; the single forward both gradient paths use."""
        x, state = check_inputs(fn, params, x, state)
        drop = train and uses_dropout(dropout)
        if drop and key is None:
            raise ValueError(f"{fn}: key is None but the network uses dropout (rate {dropout_rate(dropout)}); pass a PRNG key")
        new_state = dict(state)
        caches = []
        h = x
        for i in range(1, n_layers):
            h, c_aff = layers.affine_forward(h, params[f"W{i}"], params[f"b{i}"])
            c_norm = None
            if uses_bn:
                running = (state[f"running_mean{i}"], state[f"running_var{i}"])
                h, running, c_norm = layers.batchnorm_forward(
                    h, params[f"gamma{i}"], params[f"beta{i}"], running,
                    train=train, momentum=cfg.bn_momentum, eps=cfg.norm_eps,
                )
                new_state[f"running_mean{i}"], new_state[f"running_var{i}"] = running
            elif cfg.norm == "layernorm":
                h, c_norm = layers.layernorm_forward(h, params[f"gamma{i}"], params[f"beta{i}"], eps=cfg.norm_eps)
            h, c_act = act_forward(h)
            c_drop = None
            if drop:
                h, c_drop = layers.dropout_forward(h, dropout_rate(dropout), jax.random.fold_in(key, i))
            caches.append(_LayerCache(c_aff, c_norm, c_act, c_drop))
        scores, c_out = layers.affine_forward(h, params[f"W{n_layers}"], params[f"b{n_layers}"])
        return scores, new_state, caches, c_out

    def apply(params, x, *, state=None, train=False, key=None, dropout=None):
        scores, new_state, _, _ = forward("mlp.apply", params, x, state, train=train, key=key, dropout=dropout)
        return (scores, new_state) if train else scores

    def weights(params):
        return {f"W{i}": params[f"W{i}"] for i in range(1, n_layers + 1)}

    def decay(override):
        lam = cfg.weight_decay if override is None else override
        # A Python 0.0 adds nothing to the program; a traced lambda always adds the term.
        return None if (override is None and cfg.weight_decay == 0) else lam

    def loss(params, x, y, *, state=None, key=None, weight_decay=None, dropout=None):
        scores, new_state, _, _ = forward("mlp.loss", params, x, state, train=True, key=key, dropout=dropout)
        value, _ = loss_fn(scores, y)
        lam = decay(weight_decay)
        if lam is not None:
            value = value + losses.l2_weight_decay(weights(params), lam)[0]
        return value, new_state

    def loss_and_grad(params, x, y, *, state=None, key=None, weight_decay=None, dropout=None):
        fn = "mlp.loss_and_grad"
        scores, new_state, caches, c_out = forward(fn, params, x, state, train=True, key=key, dropout=dropout)
        value, dh = loss_fn(scores, y)
        grads = {}
        dh, grads[f"W{n_layers}"], grads[f"b{n_layers}"] = layers.affine_backward(dh, c_out)
        for i in range(n_layers - 1, 0, -1):
            c = caches[i - 1]
            dh = layers.dropout_backward(dh, c.dropout)
            dh = act_backward(dh, c.act)
            if c.norm is not None:
                dh, grads[f"gamma{i}"], grads[f"beta{i}"] = norm_backward(dh, c.norm)
            # The first layer's dx is unused; jit removes its matmul.
            dh, grads[f"W{i}"], grads[f"b{i}"] = layers.affine_backward(dh, c.affine)
        lam = decay(weight_decay)
        if lam is not None:
            penalty, dW = losses.l2_weight_decay(weights(params), lam)
            value = value + penalty
            grads.update({k: grads[k] + dW[k] for k in dW})
        return value, grads, new_state

    return Net(cfg, init, apply, loss, loss_and_grad)
