"""The module record and what every module shares: the :class:`Module` NamedTuple (its contract
is written once, in :mod:`fnet.modules`), the :class:`Static` cache entry, what a weight is
(:func:`is_weight`, :func:`weight_mask`), the shape errors, and shapes and summaries without
data (:func:`init_shapes`, :func:`summary`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax


class Module(NamedTuple):
    """A network piece: three pure functions (their contract: :mod:`fnet.modules`).

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
    """A tree like ``params`` of Python bools, True at the weights (:func:`is_weight`).

    >>> from fnet import combinators, modules
    >>> net = combinators.serial(modules.conv2d(8, 3), modules.batchnorm(), modules.flatten(), modules.dense(10))
    >>> params, _, _ = modules.init_shapes(net, (None, 1, 28, 28))
    >>> modules.weight_mask(params)
    {'batchnorm1': {'beta': False, 'gamma': False}, 'conv2d1': {'W': True, 'b': False},
     'dense1': {'W': True, 'b': False}}
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: is_weight(path), params)


def shape_error(name: str, input_shape, expected: str) -> ValueError:
    """The error of a module given an input shape it cannot take."""
    return ValueError(f"{name}: expects input of shape {expected}, got {tuple(input_shape)}")


def one_shape(fn: str, input_shape) -> tuple:
    """``input_shape`` as a tuple if it is ONE array's shape; a ValueError naming ``fn`` if it is
    the shapes of several branches (a fan_out's copies, a parallel's outputs): only a fan-in (or a
    module that documents a tuple input) takes those."""
    input_shape = tuple(input_shape)
    if any(isinstance(d, tuple) for d in input_shape):
        raise ValueError(f"{fn}: expects one array, got {len(input_shape)} branches of shapes "
                         f"{' and '.join(map(str, input_shape))}; merge them first with fan_in_sum() or "
                         "fan_in_concat(), or give each its own module with parallel(...)")
    return input_shape


def image_shape(fn: str, input_shape) -> tuple:
    """``input_shape`` as a tuple if it is images (N, C, H, W); a ValueError naming ``fn`` otherwise."""
    input_shape = one_shape(fn, input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"{fn}: expects images of shape (N, C, H, W), got {input_shape}; for an image data set, "
                         "load the data with fnet.data.load(name, flatten=False)")
    return input_shape


# --------------------------------------------------------------------------------------------
# Shapes without data, and the summary table


def init_shapes(module: Module, input_shape, key=None):
    """``(params, state, output_shape)`` of ``module.init`` with ``jax.ShapeDtypeStruct`` leaves:
    shapes and dtypes only, nothing computed (``jax.eval_shape``).

    >>> import jax
    >>> from fnet import combinators, modules
    >>> net = combinators.serial(modules.conv2d(8, 3, pad=1), modules.max_pool(2), modules.flatten(), modules.dense(10))
    >>> params, state, output_shape = modules.init_shapes(net, (None, 1, 28, 28))
    >>> jax.tree.map(lambda leaf: leaf.shape, params), output_shape
    ({'conv2d1': {'W': (8, 1, 3, 3), 'b': (8,)}, 'dense1': {'W': (1568, 10), 'b': (10,)}}, (None, 10))
    """
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
