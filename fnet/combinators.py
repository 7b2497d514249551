"""Combinators: modules made of modules, whose backward pass is derived from their children's.

The chain rule is written once per combinator, never per network:

- :func:`serial` runs its children in order; its backward walks them in reverse over their own
  caches (Deep Learning from Scratch's ``layers.reverse()`` loop), with no layer-specific branch;
- :func:`parallel` maps element i of a tuple input with child i; its backward does the same with
  the tuple of upstream gradients;
- :func:`fan_out` copies its input ``n`` times; its backward SUMS the ``n`` upstream gradients
  (a variable used twice gets the sum of both uses' gradients);
- :func:`fan_in_sum` adds its inputs; its backward hands ``dy`` to every input;
- :func:`fan_in_concat` concatenates along a feature axis; its backward splits ``dy`` at the sizes
  recorded in the forward pass;
- :func:`residual` ``(x + block(x))`` is ``serial(fan_out(2), parallel(block, identity()),
  fan_in_sum())``: built from the others, not a fifth hand-written chain;
- :func:`tied_embedding` wraps a body between a token embedding and an output layer that share
  ONE table (weight tying): its backward adds the two uses' gradients of the table.

Children are given as modules or as ``(name, module)`` pairs; an unnamed child is named after its
kind and position among its kind, from 1 (``dense1``, ``relu1``, ``dense2``, ...). A combinator's
params are a dict ``{child name: child params}`` holding only the children that have parameters
(the same for state), so ``serial(dense(100), relu(), dense(10))`` has params
``{"dense1": {"W", "b"}, "dense2": {"W", "b"}}``, and inserting a parameter-free module (dropout)
never changes the parameter tree. Shapes propagate through ``init``; an error in a child is
re-raised with its position in front: ``"serial[3] (dense2): ..."``, nested combinators giving
the whole path.
"""

from __future__ import annotations

import itertools
import numbers

import jax
import jax.numpy as jnp

from fnet import _checks, layers
from fnet.modules import Module, Static, embedding, identity


def _has_leaves(tree) -> bool:
    return bool(jax.tree_util.tree_leaves(tree))


def _name_children(fn: str, children) -> tuple:
    """``((name, module), ...)``: explicit names kept, the others named ``<kind><k>``."""
    if not children:
        raise ValueError(f"{fn}: needs at least one child module")
    named, counts = [], {}
    for i, child in enumerate(children):
        name = None
        if isinstance(child, tuple) and not isinstance(child, Module) and len(child) == 2 and isinstance(child[0], str):
            name, child = child
        if not isinstance(child, Module):
            hint = (f"; did you mean {child.__name__}() (call the constructor)?"
                    if callable(child) and not isinstance(child, Module) else "")
            raise TypeError(f"{fn}: child {i} must be a Module or a (name, Module) pair, got "
                            f"{type(child).__name__}{hint}")
        if name is None:
            counts[child.name] = counts.get(child.name, 0) + 1
            name = f"{child.name}{counts[child.name]}"
        named.append((name, child))
    names = [n for n, _ in named]
    if len(set(names)) != len(names) or not all(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{fn}: child names must be unique and non-empty, got {names} (repeated: {dup})")
    return tuple(named)


def _in_child(fn: str, i: int, name: str, call):
    """Run ``call()``; a ValueError/TypeError from it gets the child's position in front."""
    return _checks.prefixed(f"{fn}[{i}] ({name})", call)


def _child_keys(key, n: int):
    return [None] * n if key is None else [jax.random.fold_in(key, i) for i in range(n)]


def is_shape(shape) -> bool:
    """True for one shape (a tuple of ints, Python or NumPy, or None), False for a tuple of shapes
    (branches)."""
    return isinstance(shape, tuple) and all(d is None or isinstance(d, numbers.Integral) for d in shape)


def serial(*children) -> Module:
    """Children in order: ``y = f_n(... f_2(f_1(x)))``; backward in reverse:
    ``dx = df_1^T(... df_n^T(dy))``, each child's parameter gradient from its own backward.

    Args:
      *children: modules or ``(name, module)`` pairs (see the module docstring for the names).

    Returns:
      A :class:`~fnet.modules.Module` with params/state ``{child name: ...}`` (children with
      parameters/state only) and cache ``(child caches, ...)``.

    >>> import jax
    >>> from fnet import combinators, modules
    >>> net = combinators.serial(modules.dense(4), modules.tanh(), ("head", modules.dense(3)))
    >>> params, state, output_shape = net.init(jax.random.PRNGKey(0), (None, 5))
    >>> jax.tree.map(lambda a: a.shape, params), state, output_shape
    ({'dense1': {'W': (5, 4), 'b': (4,)}, 'head': {'W': (4, 3), 'b': (3,)}}, {}, (None, 3))
    """
    return _serial("serial", children)


def _serial(fn: str, children) -> Module:
    """:func:`serial` under the name ``fn`` (the kind a composite built on it shows in errors)."""
    children = _name_children(fn, children)
    n = len(children)

    def init(key, input_shape):
        params, state, shape = {}, {}, input_shape
        for i, ((name, child), k) in enumerate(zip(children, jax.random.split(key, n))):
            p, s, shape = _in_child(fn, i, name, lambda: child.init(k, shape))
            if _has_leaves(p):
                params[name] = p
            if _has_leaves(s):
                state[name] = s
        return params, state, shape

    def forward(params, state, x, *, train, key=None):
        new_state, caches = {}, []
        for i, ((name, child), k) in enumerate(zip(children, _child_keys(key, n))):
            x, s, c = _in_child(fn, i, name, lambda: child.forward(params.get(name, {}), state.get(name, {}), x,
                                                                   train=train, key=k))
            if name in state:
                new_state[name] = s
            caches.append(c)
        return x, new_state, tuple(caches)

    def backward(params, cache, dy):
        dparams = {}
        for i in reversed(range(n)):
            name, child = children[i]
            dy, dp = _in_child(fn, i, name, lambda: child.backward(params.get(name, {}), cache[i], dy))
            if name in params:
                dparams[name] = dp
        return dy, dparams

    return Module(init, forward, backward, fn, f"{n} modules" if fn == "serial" else "", children, "serial")


def parallel(*children) -> Module:
    """Child i maps element i of a tuple: ``(x_1, ..., x_n) -> (f_1(x_1), ..., f_n(x_n))``;
    backward: ``(dy_1, ..., dy_n) -> (df_1^T(dy_1), ..., df_n^T(dy_n))``.

    Use it after :func:`fan_out` (the same input to several branches) and before a fan-in.
    """
    fn = "parallel"
    children = _name_children(fn, children)
    n = len(children)

    def check_inputs(what, xs):
        if not isinstance(xs, (tuple, list)) or len(xs) != n:
            got = f"a tuple of {len(xs)}" if isinstance(xs, (tuple, list)) else type(xs).__name__
            raise ValueError(f"{fn}: {what} must be a tuple of {n} (one per branch; put fan_out({n}) before "
                             f"parallel), got {got}")

    def init(key, input_shape):
        if is_shape(input_shape):
            raise ValueError(f"{fn}: input shape must be a tuple of {n} shapes (one per branch; put fan_out({n}) "
                             f"before parallel), got the single shape {input_shape}")
        check_inputs("input shape", input_shape)
        params, state, shapes = {}, {}, []
        for i, ((name, child), k, shape) in enumerate(zip(children, jax.random.split(key, n), input_shape)):
            p, s, out = _in_child(fn, i, name, lambda: child.init(k, shape))
            if _has_leaves(p):
                params[name] = p
            if _has_leaves(s):
                state[name] = s
            shapes.append(out)
        return params, state, tuple(shapes)

    def forward(params, state, xs, *, train, key=None):
        check_inputs("input", xs)
        ys, new_state, caches = [], {}, []
        for i, ((name, child), k, x) in enumerate(zip(children, _child_keys(key, n), xs)):
            y, s, c = _in_child(fn, i, name, lambda: child.forward(params.get(name, {}), state.get(name, {}), x,
                                                                   train=train, key=k))
            if name in state:
                new_state[name] = s
            ys.append(y)
            caches.append(c)
        return tuple(ys), new_state, tuple(caches)

    def backward(params, cache, dys):
        dxs, dparams = [], {}
        for i, (name, child) in enumerate(children):
            dx, dp = _in_child(fn, i, name, lambda: child.backward(params.get(name, {}), cache[i], dys[i]))
            if name in params:
                dparams[name] = dp
            dxs.append(dx)
        return tuple(dxs), dparams

    return Module(init, forward, backward, fn, f"{n} branches", children, "parallel")


def fan_out(n: int = 2) -> Module:
    """``x -> (x, ..., x)`` (``n`` copies); backward: ``dx = dy_1 + ... + dy_n``."""
    n = _checks.integer("fan_out", "n", n, minimum=1)

    def init(key, input_shape):
        del key
        return {}, {}, (tuple(input_shape),) * n

    def forward(params, state, x, *, train, key=None):
        del params, train, key
        return (x,) * n, state, None

    def backward(params, cache, dys):
        del params, cache
        return sum(dys[1:], dys[0]), {}

    return Module(init, forward, backward, "fan_out", f"{n} copies")


def _same_shapes(fn: str, shapes) -> None:
    if is_shape(shapes) or not isinstance(shapes, tuple) or not shapes:
        raise ValueError(f"{fn}: input must be a tuple of branches (e.g. from parallel), got the shape {shapes}")


def fan_in_sum() -> Module:
    """``(x_1, ..., x_n) -> x_1 + ... + x_n`` (all of one shape); backward: every input gets ``dy``."""
    fn = "fan_in_sum"

    def init(key, input_shape):
        del key
        _same_shapes(fn, input_shape)
        if len({tuple(s) for s in input_shape}) != 1:
            raise ValueError(f"{fn}: the branches' shapes differ: {' vs '.join(map(str, input_shape))}; "
                             "they must be equal to be added")
        return {}, {}, tuple(input_shape[0])

    def forward(params, state, xs, *, train, key=None):
        del params, train, key
        if not isinstance(xs, (tuple, list)) or len({tuple(jnp.shape(x)) for x in xs}) != 1:
            shapes = [tuple(jnp.shape(x)) for x in xs] if isinstance(xs, (tuple, list)) else jnp.shape(xs)
            raise ValueError(f"{fn}: expects a tuple of branches of one shape, got shapes {shapes}")
        return sum(xs[1:], xs[0]), state, Static(len(xs))

    def backward(params, cache, dy):
        del params
        return (dy,) * cache.value, {}

    return Module(init, forward, backward, fn)


def fan_in_concat(axis: int = -1) -> Module:
    """Concatenate the branches along ``axis`` (the feature axis by default; 1 for the channels of
    images); backward: ``dy`` split at the branches' sizes along ``axis``."""
    fn = "fan_in_concat"
    axis = _checks.integer(fn, "axis", axis)

    def concatenated(shapes) -> tuple:
        """The output shape; a ValueError unless the shapes agree outside ``axis`` (init and forward)."""
        rank = len(shapes[0])
        ax = axis % rank if -rank <= axis < rank else None
        if ax in (None, 0) or any(len(s) != rank for s in shapes):
            raise ValueError(f"{fn}: axis {axis} must be a non-batch axis of inputs of one rank, got shapes "
                             f"{' and '.join(map(str, shapes))}")
        rest = {tuple(s[:ax]) + tuple(s[ax + 1:]) for s in shapes}
        if len(rest) != 1:
            raise ValueError(f"{fn}: the branches' shapes {' and '.join(map(str, shapes))} differ outside axis "
                             f"{axis}; only the concatenated axis may differ")
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return tuple(out)

    def init(key, input_shape):
        del key
        _same_shapes(fn, input_shape)
        return {}, {}, concatenated(input_shape)

    def forward(params, state, xs, *, train, key=None):
        del params, train, key
        if not isinstance(xs, (tuple, list)) or len(xs) < 2:
            raise TypeError(f"{fn}: expects a tuple of at least 2 arrays (the branches), got {type(xs).__name__}")
        concatenated([tuple(jnp.shape(x)) for x in xs])
        return jnp.concatenate(xs, axis=axis), state, Static(tuple(x.shape[axis] for x in xs))

    def backward(params, cache, dy):
        del params
        splits = list(itertools.accumulate(cache.value))[:-1]
        return tuple(jnp.split(dy, splits, axis=axis)), {}

    return Module(init, forward, backward, fn, f"axis {axis}")


def residual(block: Module) -> Module:
    """``y = x + block(x)`` (the block must keep the shape), as
    ``serial(fan_out(2), parallel(block, identity()), fan_in_sum())``: backward
    ``dx = dy + dblock^T(dy)``. Params ``{"branches": {"block": <block's params>}}``.

    >>> import jax, jax.numpy as jnp
    >>> from fnet import combinators, modules
    >>> block = combinators.residual(modules.dense(2, init="zeros"))   # the block adds 0 at first
    >>> params, state, _ = block.init(jax.random.PRNGKey(0), (None, 2))
    >>> y, _, cache = block.forward(params, state, jnp.array([[1.0, -1.0]]), train=False)
    >>> dx, dparams = block.backward(params, cache, jnp.array([[1.0, 2.0]]))
    >>> print(y, dx)                                                   # dx = dy + W^T dy, W = 0
    [[ 1. -1.]] [[1. 2.]]
    >>> print(dparams["branches"]["block"]["W"])                      # x^T dy
    [[ 1.  2.]
     [-1. -2.]]
    """
    if not isinstance(block, Module):
        raise TypeError(f"residual: block must be a Module, got {type(block).__name__}")
    body = _serial("residual", (("split", fan_out(2)), ("branches", parallel(("block", block), ("skip", identity()))),
                                ("merge", fan_in_sum())))
    return body._replace(info="x + block(x)")


def tied_embedding(vocab_size: int, dim: int, body: Module, *, init=0.02) -> Module:
    """A token embedding, ``body`` and an output layer that share one table ``W`` (V, E), weight
    tying (Press & Wolf 2017; GPT-2 and nanoGPT tie their token embedding and head)::

        e = W[x]                  (N, T) ids -> (N, T, E)   (:func:`fnet.modules.embedding`)
        h = body(e)               (N, T, E) -> (N, T, E)
        scores = h W^T + b        (N, T, V)                 (:func:`fnet.layers.temporal_affine_forward`)

    Backward: ``dscores -> (dh, dW_head = (h^T dscores)^T, db)``, then the body's backward gives
    de, then the embedding's scatter-add gives dW_embed; ``dW = dW_embed + dW_head``, the table
    being used twice (as :func:`fan_out` sums). Params ``{"embedding": {"W"}, "body": <body's>,
    "head": {"b": (V,)}}``; state ``{"body": <body's>}`` when the body has state.

    Args:
      vocab_size: V; dim: E, the embedding's width, which the body must keep.
      body: a module of (N, T, E) -> (N, T, E).
      init: the table's initializer (default N(0, 0.02), GPT-2's).
    """
    fn = "tied_embedding"
    if not isinstance(body, Module):
        raise TypeError(f"{fn}: body must be a Module, got {type(body).__name__}")
    table = embedding(vocab_size, dim, init=init)
    vocab_size, dim = int(vocab_size), int(dim)

    def init_fn(key, input_shape):
        k_table, k_body = jax.random.split(key)
        p_table, _, shape = table.init(k_table, input_shape)
        p_body, s_body, out = _in_child(fn, 1, "body", lambda: body.init(k_body, shape))
        if tuple(out) != tuple(shape):
            raise ValueError(f"{fn}: body must keep the embedding's shape {tuple(shape)}, it returns {tuple(out)}")
        params = {"embedding": p_table, "body": p_body, "head": {"b": jnp.zeros((vocab_size,), p_table["W"].dtype)}}
        return params, ({"body": s_body} if _has_leaves(s_body) else {}), (*shape[:-1], vocab_size)

    def forward(params, state, x, *, train, key=None):
        e, _, c_table = table.forward(params["embedding"], {}, x, train=train)
        h, s_body, c_body = _in_child(fn, 1, "body", lambda: body.forward(params["body"], state.get("body", {}), e,
                                                                           train=train, key=key))
        scores, c_head = layers.temporal_affine_forward(h, params["embedding"]["W"].T, params["head"]["b"])
        return scores, ({"body": s_body} if "body" in state else {}), (c_table, c_body, c_head)

    def backward(params, cache, dscores):
        c_table, c_body, c_head = cache
        dh, dW_head, db = layers.temporal_affine_backward(dscores, c_head)
        de, dbody = _in_child(fn, 1, "body", lambda: body.backward(params["body"], c_body, dh))
        _, dtable = table.backward(params["embedding"], c_table, de)
        return None, {"embedding": {"W": dtable["W"] + dW_head.T}, "body": dbody, "head": {"b": db}}

    return Module(init_fn, forward, backward, fn, f"{vocab_size} tokens, dim {dim}, tied head",
                  (("embedding", table), ("body", body)), "serial")
