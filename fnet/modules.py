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

Leaf modules here are thin adapters around the :mod:`fnet.layers` pairs (:func:`elementwise`
lifts any elementwise pair, as stax's ``elementwise`` does): ``dense``, ``relu``, ``leaky_relu``,
``sigmoid``, ``tanh``, ``identity``, ``softmax``, ``batchnorm`` (per feature, or per channel of
images), ``layernorm``, ``dropout``, ``flatten``, and for images (N, C, H, W) ``conv2d``,
``max_pool``, ``avg_pool``, ``global_avg_pool``, ``groupnorm``. Hyperparameters (kernel sizes,
strides, rates) are checked and normalized when a module is built; shapes in ``init``, so that
``forward`` never re-checks them under jit. Parameters are named inside each module's dict (``{"W": ..., "b": ...}``), so
:func:`weight_mask` (innermost key "W", :func:`is_weight`) finds the weights of any composition, for
weight decay (:func:`fnet.optim.weights_only`, the networks' L2 penalty).
Combinators (``serial``, ``parallel``, fan-out/fan-in, ``residual``) are in
:mod:`fnet.combinators`; :func:`fnet.nets.network` turns a module and a loss into a ``Net``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fnet import _checks
from fnet import init as initializers
from fnet import layers
from fnet.layers.conv import output_size, pair


class Module(NamedTuple):
    """A network piece: three pure functions (see the module docstring for their contract).

    Fields:
      init: ``(key, input_shape) -> (params, state, output_shape)``.
      forward: ``(params, state, x, *, train, key) -> (y, new_state, cache)``.
      backward: ``(params, cache, dy) -> (dx, dparams)``, hand-written.
      name: the kind, e.g. "dense"; combinators name unnamed children after it ("dense1", ...).
      info: the hyperparameters in words, shown by :func:`fnet.summary` (e.g. "100 units, he").
      children: ``((name, Module), ...)`` of a combinator; empty for a leaf.
      flow: how a combinator feeds its children: "serial" (each child's output is the next
        one's input) or "parallel" (child i takes element i of a tuple); None for a leaf.
    """

    init: Callable
    forward: Callable
    backward: Callable
    name: str = "module"
    info: str = ""
    children: tuple = ()
    flow: str | None = None


class BatchNormState(NamedTuple):
    """State of :func:`batchnorm`."""

    mean: jax.Array
    """Running mean, shape (D,) (per feature) or (C,) (per channel of images); starts at 0."""
    var: jax.Array
    """Running (biased) variance, same shape; starts at 1."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Static:
    """A cache entry that is a Python value known at trace time (a shape, split sizes): marked
    static, so it is never turned into a traced array (e.g. inside ``jax.custom_vjp``)."""

    value: object = dataclasses.field(metadata=dict(static=True))


def is_weight(path) -> bool:
    """Whether the parameter at ``path`` (a ``jax.tree_util`` key path) is a weight: its innermost
    name (dict key or attribute name) starts with "W".

    The modules here name a layer's weight matrix or kernel "W" (``dense``, ``conv2d``), its bias
    "b" and normalization parameters "gamma"/"beta"; flat cs231n-style trees name them "W1",
    "W2", .... Weights are what L2 weight decay acts on (the source material's convention: not
    biases, not normalization parameters); a leaf without a name is not a weight.
    """
    names = [k.key if hasattr(k, "key") else getattr(k, "name", None) for k in path]
    names = [n for n in names if isinstance(n, str)]
    return bool(names) and names[-1].startswith("W")


def weight_mask(params):
    """A tree like ``params`` of Python bools, True at the weights (:func:`is_weight`):
    ``{"dense1": {"W": True, "b": False}, "batchnorm1": {"gamma": False, "beta": False}}``."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_weight(path), params)


def shape_error(name: str, input_shape, expected: str) -> ValueError:
    """The error of a module given an input shape it cannot take."""
    return ValueError(f"{name}: expects input of shape {expected}, got {tuple(input_shape)}")


def _check_rank(name: str, input_shape, ranks: tuple, expected: str) -> tuple:
    input_shape = tuple(input_shape)
    if len(input_shape) not in ranks:
        raise shape_error(name, input_shape, expected)
    return input_shape


# --------------------------------------------------------------------------------------------
# Elementwise layers


def elementwise(name: str, forward: Callable, backward: Callable, *, info: str = "", **options) -> Module:
    """A parameter-free, stateless, shape-preserving module from a layer pair
    ``out, cache = forward(x, **options)`` / ``dx = backward(dout, cache)`` (stax's
    ``elementwise``). ``options`` (e.g. leaky ReLU's ``alpha``) are bound now, once."""

    def init(key, input_shape):
        del key
        return {}, {}, tuple(input_shape)

    def fwd(params, state, x, *, train, key=None):
        del params, train, key  # elementwise: no parameters, same in train and eval, no randomness
        y, cache = forward(x, **options)
        return y, state, cache

    def bwd(params, cache, dy):
        del params
        return backward(dy, cache), {}

    return Module(init, fwd, bwd, name, info)


def relu() -> Module:
    """``y = max(x, 0)``; the derivative at 0 is 0 (:func:`fnet.layers.relu_forward`)."""
    return elementwise("relu", layers.relu_forward, layers.relu_backward)


def leaky_relu(alpha: float = layers.LEAKY_RELU_ALPHA) -> Module:
    """``y = x if x > 0 else alpha * x`` (:func:`fnet.layers.leaky_relu_forward`); ``alpha`` may
    be a traced scalar (built inside a traced function)."""
    return elementwise("leaky_relu", layers.leaky_relu_forward, layers.leaky_relu_backward, alpha=alpha,
                       info=f"alpha {alpha}" if isinstance(alpha, (int, float)) else "")


def sigmoid() -> Module:
    """``y = 1 / (1 + exp(-x))`` (:func:`fnet.layers.sigmoid_forward`)."""
    return elementwise("sigmoid", layers.sigmoid_forward, layers.sigmoid_backward)


def tanh() -> Module:
    """``y = tanh(x)`` (:func:`fnet.layers.tanh_forward`)."""
    return elementwise("tanh", layers.tanh_forward, layers.tanh_backward)


def identity() -> Module:
    """``y = x``, ``dx = dy``: the linear "activation", and the skip branch of a residual."""
    return elementwise("identity", layers.identity_forward, layers.identity_backward)


def softmax() -> Module:
    """Softmax over the last axis (:func:`fnet.layers.softmax_forward`). For training with
    cross-entropy, end the network with scores instead: the loss applies the softmax itself."""
    return elementwise("softmax", layers.softmax_forward, layers.softmax_backward)


#: Activation modules by name (as ``fnet.mlp(activation=...)`` accepts them).
ACTIVATIONS = {"relu": relu, "leaky_relu": leaky_relu, "sigmoid": sigmoid, "tanh": tanh, "identity": identity}


# --------------------------------------------------------------------------------------------
# Layers with parameters


def dense(units: int, *, init="he") -> Module:
    """Fully connected layer ``y = x_flat @ W + b`` (:func:`fnet.layers.affine_forward`).

    Input (N, d1, ..., dk) is flattened to (N, D), D = d1 * ... * dk; output (N, units).
    Params ``{"W": (D, units), "b": (units,)}``: W from ``init`` ("he" (default), "xavier",
    "normal" (std 0.01), "zeros", a float std, or ``(key, shape, dtype) -> array``), b zeros.
    """
    units = _checks.integer("dense", "units", units, minimum=1)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise shape_error("dense", input_shape, "(N, D) or (N, d1, ..., dk)")
        d = math.prod(input_shape[1:])
        params = {"W": w_init(key, (d, units), jnp.float32), "b": jnp.zeros((units,), jnp.float32)}
        return params, {}, (input_shape[0], units)

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.affine_forward(x, params["W"], params["b"])
        return y, state, cache

    def backward(params, cache, dy):
        del params  # the cache holds W (a reference, no copy)
        dx, dW, db = layers.affine_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    return Module(init_fn, forward, backward, "dense", f"{units} units, init {init if not callable(init) else 'custom'}")


def batchnorm(*, momentum: float = 0.9, eps: float = 1e-5) -> Module:
    """Batch normalization with running statistics in ``state`` (a :class:`BatchNormState`).

    Input (N, D): statistics per feature over the batch (:func:`fnet.layers.batchnorm_forward`).
    Input (N, C, H, W): per channel over (N, H, W) (:func:`fnet.layers.spatial_batchnorm_forward`).
    Params ``{"gamma": ones, "beta": zeros}`` of shape (D,) or (C,). Train mode normalizes with
    the batch statistics and updates the running ones (``running = momentum * running + (1 -
    momentum) * batch``); eval mode uses the running statistics and leaves them unchanged.
    """
    def init(key, input_shape):
        del key
        input_shape = _check_rank("batchnorm", input_shape, (2, 4), "(N, D) or (N, C, H, W)")
        d = input_shape[1]
        params = {"gamma": jnp.ones((d,)), "beta": jnp.zeros((d,))}
        return params, BatchNormState(jnp.zeros((d,)), jnp.ones((d,))), input_shape

    def forward(params, state, x, *, train, key=None):
        del key
        fwd = layers.batchnorm_forward if x.ndim == 2 else layers.spatial_batchnorm_forward
        y, (mean, var), cache = fwd(x, params["gamma"], params["beta"], (state.mean, state.var), train=train,
                                    momentum=momentum, eps=eps)
        return y, BatchNormState(mean, var), cache

    def backward(params, cache, dy):
        del params
        bwd = layers.batchnorm_backward if dy.ndim == 2 else layers.spatial_batchnorm_backward
        dx, dgamma, dbeta = bwd(dy, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}

    return Module(init, forward, backward, "batchnorm", f"momentum {momentum}, eps {eps}")


def layernorm(*, eps: float = 1e-5) -> Module:
    """Layer normalization of (N, D) input: per-sample statistics over the D features, the same
    in train and eval (:func:`fnet.layers.layernorm_forward`). Params ``{"gamma", "beta"}`` (D,)."""
    def init(key, input_shape):
        del key
        input_shape = _check_rank("layernorm", input_shape, (2,), "(N, D)")
        d = input_shape[1]
        return {"gamma": jnp.ones((d,)), "beta": jnp.zeros((d,))}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.layernorm_forward(x, params["gamma"], params["beta"], eps=eps)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        dx, dgamma, dbeta = layers.layernorm_backward(dy, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}

    return Module(init, forward, backward, "layernorm", f"eps {eps}")


def dropout(rate: float) -> Module:
    """Inverted dropout (:func:`fnet.layers.dropout_forward`): ``rate`` is the probability of
    DROPPING a unit; kept units are scaled by ``1 / (1 - rate)`` in train mode, which needs a
    ``key``; eval mode is the identity. ``rate`` may be a traced scalar (built inside a traced
    function, e.g. a vmapped sweep)."""
    _checks.rate("dropout", "rate", rate)

    def init(key, input_shape):
        del key
        return {}, {}, tuple(input_shape)

    def forward(params, state, x, *, train, key=None):
        del params
        if train and key is None:
            raise ValueError(f"dropout: key is None in train mode; dropout (rate {rate}) needs a PRNG key: "
                             "pass key=jax.random.PRNGKey(...) (or train=False for inference)")
        y, mask = layers.dropout_forward(x, rate, key, train=train)
        return y, state, mask

    def backward(params, cache, dy):
        del params
        return layers.dropout_backward(dy, cache), {}

    return Module(init, forward, backward, "dropout", f"rate {rate}" if isinstance(rate, (int, float)) else "")


def flatten() -> Module:
    """Reshape (N, d1, ..., dk) to (N, d1 * ... * dk), e.g. between convolutions and dense layers."""

    def init(key, input_shape):
        del key
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise shape_error("flatten", input_shape, "(N, d1, ..., dk)")
        return {}, {}, (input_shape[0], math.prod(input_shape[1:]))

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        return x.reshape(x.shape[0], -1), state, Static(tuple(x.shape[1:]))

    def backward(params, cache, dy):
        del params
        return dy.reshape(dy.shape[0], *cache.value), {}

    return Module(init, forward, backward, "flatten")


# --------------------------------------------------------------------------------------------
# Shapes without data, and the summary table


def init_shapes(module: Module, input_shape, key=None):
    """``(params, state, output_shape)`` of ``module.init`` with ``jax.ShapeDtypeStruct`` leaves:
    shapes and dtypes only, nothing computed (``jax.eval_shape``)."""
    out = []

    def shapes_only(k):
        params, state, output_shape = module.init(k, input_shape)
        out.append(output_shape)
        return params, state

    params, state = jax.eval_shape(shapes_only, jax.random.PRNGKey(0) if key is None else key)
    return params, state, out[0]


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def _show_shape(shape) -> str:
    if isinstance(shape, tuple) and shape and all(isinstance(s, tuple) for s in shape):
        return " ".join(_show_shape(s) for s in shape)
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def summary_rows(module: Module, input_shape, name: str = "") -> list[tuple]:
    """``[(depth, name, kind and hyperparameters, output shape, parameter count), ...]``: one row
    per module, combinators first and then their children (indented by ``depth``)."""
    rows = []

    def visit(m, shape, name, depth):
        params, _, out = init_shapes(m, shape)
        rows.append((depth, name, f"{m.name}" + (f" ({m.info})" if m.info else ""), out, _count(params)))
        if m.flow == "serial":
            for child_name, child in m.children:
                shape = visit(child, shape, child_name, depth + 1)
        elif m.flow == "parallel":
            for (child_name, child), s in zip(m.children, shape):
                visit(child, s, child_name, depth + 1)
        return out

    visit(module, tuple(input_shape), name or module.name, 0)
    return rows


def summary(module: Module, input_shape) -> str:
    """A table of the modules of ``module`` (a composition is shown as a tree), their output
    shapes (N: any batch size) and parameter counts, with the total, as Keras' ``summary``
    and torchinfo print it.

    Args:
      module: any module.
      input_shape: its input shape with the batch axis, e.g. ``(None, 784)``.
    """
    rows = summary_rows(module, input_shape)
    lines = [(("  " * d) + n, kind, _show_shape(out), f"{count:,}" if count else "-") for d, n, kind, out, count in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(("module", "type", "output shape", "params"))]
    header = ("module", "type", "output shape", "params")
    fmt = lambda cols: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))  # noqa: E731
    total = rows[0][4]
    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, lines), rule, f"total: {total:,} parameters"])


# --------------------------------------------------------------------------------------------
# Convolutional layers: images (N, C, H, W), filters (F, C, HH, WW), as in cs231n


def _image_shape(fn: str, input_shape) -> tuple:
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"{fn}: expects images of shape (N, C, H, W), got {input_shape}; for an image data set, "
                         "load the data with fnet.data.load(name, flatten=False)")
    return input_shape


def conv2d(filters: int, kernel_size, *, stride=1, pad=0, init="he") -> Module:
    """2-D convolution (cross-correlation) of images (:func:`fnet.layers.conv_forward`)::

        y[n, f, i, j] = b[f] + sum_{c, di, dj} W[f, c, di, dj] * xpad[n, c, s_h*i + di, s_w*j + dj]
        H' = 1 + (H + 2 * pad_h - HH) // stride_h        (the floor rule), W' likewise

    Input (N, C, H, W), output (N, filters, H', W'). ``kernel_size``, ``stride`` and ``pad`` are
    ints or (h, w) pairs. Params ``{"W": (filters, C, HH, WW), "b": (filters,)}``; W from
    ``init`` with the fan-in of a filter, ``C * HH * WW`` (:func:`fnet.init.fan_in`), b zeros.
    """
    fn = "conv2d"
    filters = _checks.integer(fn, "filters", filters, minimum=1)
    kernel = pair(fn, "kernel_size", kernel_size)
    stride = pair(fn, "stride", stride)
    pad = pair(fn, "pad", pad, minimum=0)
    w_init = initializers.get(init)

    def init_fn(key, input_shape):
        input_shape = _image_shape(fn, input_shape)
        out_hw = output_size(fn, input_shape, kernel, stride, pad, "kernel")
        shape = (filters, input_shape[1], *kernel)
        params = {"W": w_init(key, shape, jnp.float32), "b": jnp.zeros((filters,), jnp.float32)}
        return params, {}, (input_shape[0], filters, *out_hw)

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.conv_forward(x, params["W"], params["b"], stride=stride, pad=pad)
        return y, state, cache

    def backward(params, cache, dy):
        del params  # the cache holds W
        dx, dW, db = layers.conv_backward(dy, cache)
        return dx, {"W": dW, "b": db}

    info = f"{filters} filters {kernel[0]}x{kernel[1]}, stride {_show_pair(stride)}, pad {_show_pair(pad)}"
    return Module(init_fn, forward, backward, "conv2d", info)


def _show_pair(hw) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _pool(kind: str, forward_fn, backward_fn, pool_size, stride) -> Module:
    fn = f"{kind}_pool"
    window = pair(fn, "pool_size", pool_size)
    stride = window if stride is None else pair(fn, "stride", stride)

    def init(key, input_shape):
        del key
        input_shape = _image_shape(fn, input_shape)
        out_hw = output_size(fn, input_shape, window, stride, what="pooling window")
        return {}, {}, (*input_shape[:2], *out_hw)

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        y, cache = forward_fn(x, pool_height=window[0], pool_width=window[1], stride=stride)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        return backward_fn(dy, cache), {}

    return Module(init, forward, backward, fn, f"{window[0]}x{window[1]}, stride {_show_pair(stride)}")


def max_pool(pool_size=2, *, stride=None) -> Module:
    """Max pooling of images (:func:`fnet.layers.max_pool_forward`): each ``pool_size`` window
    (an int or an (h, w) pair) gives its maximum; ``stride`` defaults to the window (no overlap).
    On ties the gradient goes to the first maximum in row-major order. No parameters."""
    return _pool("max", layers.max_pool_forward, layers.max_pool_backward, pool_size, stride)


def avg_pool(pool_size=2, *, stride=None) -> Module:
    """Average pooling of images (:func:`fnet.layers.avg_pool_forward`); ``stride`` defaults to
    the window. No parameters."""
    return _pool("avg", layers.avg_pool_forward, layers.avg_pool_backward, pool_size, stride)


def global_avg_pool() -> Module:
    """The mean of each channel over the image: (N, C, H, W) -> (N, C)
    (:func:`fnet.layers.global_avg_pool_forward`). No parameters."""

    def init(key, input_shape):
        del key
        input_shape = _image_shape("global_avg_pool", input_shape)
        return {}, {}, tuple(input_shape[:2])

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        y, cache = layers.global_avg_pool_forward(x)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        return layers.global_avg_pool_backward(dy, cache), {}

    return Module(init, forward, backward, "global_avg_pool")


def groupnorm(groups: int, *, eps: float = 1e-5) -> Module:
    """Spatial group normalization of images (cs231n; :func:`fnet.layers.spatial_groupnorm_forward`):
    statistics per sample and per group of C/groups channels over (C/groups, H, W), the same in
    train and eval. Params ``{"gamma": ones, "beta": zeros}`` of shape (C,)."""
    fn = "groupnorm"
    groups = _checks.integer(fn, "groups", groups, minimum=1)

    def init(key, input_shape):
        del key
        input_shape = _image_shape(fn, input_shape)
        c = input_shape[1]
        if c % groups:
            raise ValueError(f"{fn}: {groups} groups do not divide the {c} channels of input shape {input_shape}")
        return {"gamma": jnp.ones((c,)), "beta": jnp.zeros((c,))}, {}, input_shape

    def forward(params, state, x, *, train, key=None):
        del train, key
        y, cache = layers.spatial_groupnorm_forward(x, params["gamma"], params["beta"], groups, eps=eps)
        return y, state, cache

    def backward(params, cache, dy):
        del params
        dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dy, cache)
        return dx, {"gamma": dgamma, "beta": dbeta}

    return Module(init, forward, backward, fn, f"{groups} groups, eps {eps}")
