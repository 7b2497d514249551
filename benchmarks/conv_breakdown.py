"""Where the time of fnet's scanned CNN training step goes: each piece of the step timed on its own,
inside a compiled loop, at the shapes of :mod:`benchmarks.conv_step`'s configurations.

    python -m benchmarks.conv_breakdown [--quick] [--device cpu|gpu] [--configs simple,two_conv]
                                        [--reps N] [--out DIR]
    python -m benchmarks.conv_breakdown --configs small_cnn,three_layer_convnet,deep_convnet

Pieces, each one row (summed over the network's layers where it has several; the shapes, batch,
filters and image size are conv_step's ``CONFIGS``, float32):

- ``conv forward``: :func:`fnet.layers.conv_forward` of every conv layer (with its layout
  transposes and bias);
- ``conv dx`` / ``conv dW``: :func:`fnet.layers.conv_backward` of every conv layer, keeping only
  dx (resp. dW and db), so that XLA drops the other half; dx only for the layers whose dx the step
  uses (not the first: its dx is unused and XLA drops it), except where that leaves none (a single
  conv layer): then the first layer's, marked "not in the step";
- ``max-pool forward`` / ``max-pool backward``: :func:`fnet.layers.max_pool_forward` (2x2,
  stride 2) and :func:`fnet.layers.max_pool_backward`;
- ``relu forward+backward``: every ReLU of the step (after each conv and after the hidden dense
  layer);
- ``layout transposes``: the NCHW<->NHWC transposes of the activations (x, out, dout, dx) and the
  OIHW<->HWIO ones of the filters (forward and flipped backward) that ``conv_forward`` and
  ``conv_backward`` do, alone (they are also inside the conv rows: this row says how much of those
  is layout);
- ``dense forward+backward``: both affine layers' forward and backward;
- ``softmax loss``: :func:`fnet.losses.softmax_cross_entropy` (loss and dscores);
- ``adam update``: :func:`fnet.optim.adam`'s update and ``apply_updates`` on all parameters;
- ``whole step``: :func:`fnet.train.make_epoch`'s scanned epoch per step (it also shuffles and
  gathers the minibatches), the reference that the shares divide by.

The ready CNNs (conv_step's ``READY``: small_cnn, three_layer_convnet, deep_convnet, as ``fnet
train`` builds them, batch 64) are broken down by LAYER instead: each conv2d layer's forward, dx
and dW (``conv2d3 dW``...; the first layer's dx is not in the step), and each batchnorm layer's
forward+backward (:func:`fnet.layers.spatial_batchnorm_forward` and its backward); what the rows
leave out (ReLU, pooling, dropout, the dense head, Adam) is the whole step less their sum.

How a piece is timed without XLA hoisting it: the piece runs ``ITERS`` times in a ``lax.scan``
whose carry holds a scalar ``c`` and the piece's outputs. Each iteration feeds ``x0 + c`` for every
floating input ``x0`` (passed as an argument, so nothing is a constant) and sets ``c = c +
SCALE * (the first element of every output)``. An input that does not change across iterations
(``x0 + 0 * c`` is folded to ``x0``) lets XLA's loop-invariant code motion compute the piece once,
outside the loop, which looks 5-10x faster than it is; here each iteration's input depends on the
previous iteration's output, so the piece runs every time, and its outputs are written to memory
every time (they are the loop's result), as in the step. ``SCALE`` is small enough that ``x0 + c``
rounds to ``x0`` (the data stay the same) but not zero, which XLA would fold. The trick costs an
elementwise pass over the inputs: each piece's ``harness`` column is the same loop with the piece
replaced by the identity (outputs = the perturbed inputs), an upper bound on what it adds.

Shares are of the whole step's time and need not sum to 1: inside the step XLA fuses across pieces
(e.g. ReLU's mask into the pooling), the conv rows include their transposes, and each row alone
pays for its inputs' memory traffic. Timing: compiled ahead of time, interleaved repetitions (one
call of every piece, then the next round), medians. Results go to
``DIR/conv_breakdown-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common, conv_step
from fnet import layers, losses, nets, optim

#: Loop iterations per timed call of a piece (and in quick mode).
ITERS, QUICK_ITERS = 20, 3
#: The carry's weight on the outputs: x0 + c rounds to x0 for data of order 1e-3 and up.
SCALE = 1e-20
PIECES = ("conv forward", "conv dx", "conv dW", "max-pool forward", "max-pool backward", "relu forward+backward",
          "layout transposes", "dense forward+backward", "softmax loss", "adam update")


def _floats(tree):
    return [a for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)]


def scanned(piece, inputs, iters: int):
    """``piece(*inputs) -> outputs`` run ``iters`` times in a ``lax.scan`` whose every input depends
    on the carry (see the module docstring), compiled for ``inputs``; returns the compiled loop
    (called with ``inputs``, it returns the last outputs and the carry scalar)."""

    def loop(*inputs):
        def body(carry, _):
            c, _ = carry
            shifted = jax.tree_util.tree_map(
                lambda a: a + c.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, inputs)
            out = piece(*shifted)
            c = c + SCALE * sum(a[(0,) * a.ndim].astype(c.dtype) for a in _floats(out))
            return (c, out), None

        c0 = jnp.zeros((), jnp.float32)
        out0 = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(piece, *inputs))
        return jax.lax.scan(body, (c0, out0), None, length=iters)[0]

    return jax.jit(loop).lower(*inputs).compile()


def _timed_loop(piece, inputs, iters: int):
    """``(compile seconds, rep)``: :func:`scanned` compiled and warmed up (every buffer touched);
    ``rep()`` calls it once, blocked on, and returns its seconds."""
    compile_s, compiled = _common.timed(lambda: scanned(piece, inputs, iters))

    def rep():
        return _common.timed(lambda: jax.block_until_ready(compiled(*inputs)))[0]

    rep()
    return compile_s, rep


def _rand(rng, shape, scale=1.0):
    return jnp.asarray(scale * rng.standard_normal(shape).astype(np.float32))


def _conv_layers(rng, params, convs, side, batch):
    """Per conv layer: its input x, weights, conv output (pre-ReLU), ReLU output, pool cache and
    a random upstream gradient of the conv output (all float32, the step's shapes)."""
    out = []
    for i, (c, f, k, p, h, hc) in enumerate(conv_step._shapes(convs, side)[0]):
        x = jnp.asarray(rng.random((batch, c, h, h), dtype=np.float32)) if i == 0 else _rand(rng, (batch, c, h, h))
        W, b = params[f"conv2d{i + 1}"]["W"], params[f"conv2d{i + 1}"]["b"]
        z, cache = layers.conv_forward(x, W, b, pad=p)
        r, _ = layers.relu_forward(z)
        pooled, pool_cache = layers.max_pool_forward(r, pool_height=2, pool_width=2, stride=2)
        out.append({"x": x, "W": W, "b": b, "pad": p, "z": z, "r": r, "cache": cache, "pool_cache": pool_cache,
                    "dout": _rand(rng, z.shape, 1e-3), "dpool": _rand(rng, pooled.shape, 1e-3)})
    return out


def _transposes(x, dout, W, dx_out):
    """The layout transposes of one conv layer, as conv_forward/conv_backward do them."""
    to_nhwc, from_nhwc = (lambda a: jnp.transpose(a, (0, 2, 3, 1))), (lambda a: jnp.transpose(a, (0, 3, 1, 2)))
    out = [to_nhwc(x), from_nhwc(to_nhwc(dout)), to_nhwc(dout), jnp.transpose(W, (2, 3, 1, 0)),
           jnp.transpose(W[:, :, ::-1, ::-1], (2, 3, 0, 1))]
    return out + ([from_nhwc(to_nhwc(x))] if dx_out else [])  # dx back to NCHW (x's shape)


def pieces(su: conv_step.Setup, params, seed=0):
    """The pieces of one of conv_step's own networks (``su``, :func:`benchmarks.conv_step.setup`;
    ``params`` its float32 parameters): ``{name: (function, inputs, in_step)}``, ``in_step`` False
    where the timed piece is not part of the step (see ``conv dx`` in the module docstring)."""
    convs, hidden, side, batch = su.convs, su.hidden, su.side, su.batch
    rng = np.random.default_rng(seed)
    conv = _conv_layers(rng, params, convs, side, batch)
    dx_layers = list(range(1, len(conv))) or [0]
    flat = jnp.asarray(rng.random((batch, conv_step._shapes(convs, side)[1]), dtype=np.float32))
    (W1, b1), (W2, b2) = ((params[n]["W"], params[n]["b"]) for n in ("dense1", "dense2"))
    scores = _rand(rng, (batch, 10))
    y = jnp.asarray(rng.integers(0, 10, batch), dtype=jnp.int32)
    dscores = _rand(rng, (batch, 10), 1e-3)
    h1 = _rand(rng, (batch, hidden))
    opt = optim.adam(conv_step.LR)
    grads = jax.tree_util.tree_map(lambda a: 1e-3 * a, params)

    def dense(flat, W1, b1, W2, b2, dscores):
        a1, c1 = layers.affine_forward(flat, W1, b1)
        _, c2 = layers.affine_forward(a1, W2, b2)
        dh, dW2, db2 = layers.affine_backward(dscores, c2)
        return layers.affine_backward(dh, c1), dW2, db2

    def adam(grads, state, params):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    def relus(zs, douts):
        return [layers.relu_backward(d, layers.relu_forward(z)[1]) for z, d in zip(zs, douts)]

    pads = [layer["pad"] for layer in conv]
    dx_used = len(conv) > 1
    return {
        "conv forward": (lambda xs, Ws, bs: [layers.conv_forward(x, W, b, pad=p)[0] for x, W, b, p in zip(xs, Ws, bs, pads)],
                         [[layer[k] for layer in conv] for k in ("x", "W", "b")], True),
        "conv dx": (lambda cs, ds: [layers.conv_backward(d, c)[0] for c, d in zip(cs, ds)],
                    [[conv[i]["cache"] for i in dx_layers], [conv[i]["dout"] for i in dx_layers]], dx_used),
        "conv dW": (lambda cs, ds: [layers.conv_backward(d, c)[1:] for c, d in zip(cs, ds)],
                    [[layer["cache"] for layer in conv], [layer["dout"] for layer in conv]], True),
        "max-pool forward": (lambda rs: [layers.max_pool_forward(r, pool_height=2, pool_width=2, stride=2) for r in rs],
                             [[layer["r"] for layer in conv]], True),
        "max-pool backward": (lambda ds, cs: [layers.max_pool_backward(d, c) for d, c in zip(ds, cs)],
                              [[layer["dpool"] for layer in conv], [layer["pool_cache"] for layer in conv]], True),
        "relu forward+backward": (relus, [[layer["z"] for layer in conv] + [h1],
                                          [layer["dout"] for layer in conv] + [h1]], True),
        "layout transposes": (lambda xs, ds, Ws: [_transposes(*a, dx_used and i > 0) for i, a in enumerate(zip(xs, ds, Ws))],
                              [[layer[k] for layer in conv] for k in ("x", "dout", "W")], True),
        "dense forward+backward": (dense, [flat, W1, b1, W2, b2, dscores], True),
        "softmax loss": (losses.softmax_cross_entropy, [scores, y], True),
        "adam update": (adam, [grads, opt.init(params), params], True),
    }


def layer_pieces(net, params, batch: int, seed=0):
    """The per-layer pieces of a ready CNN ``net`` (``params``: its float32 parameters) on
    ``batch`` images: ``{name: (function, inputs, in_step)}`` with every conv2d layer's forward,
    dx and dW (dx not in the step for the first) and every batchnorm layer's forward+backward."""
    rng = np.random.default_rng(seed)
    table, first = {}, True
    for layer in conv_step.layers_of(net):
        x = _rand(rng, (batch, *layer.in_shape))
        dout = _rand(rng, (batch, *layer.out_shape), 1e-3)
        p = params.get(layer.name, {})
        if layer.kind == "conv2d":
            cache = layers.conv_forward(x, p["W"], p["b"], pad=layer.pad)[1]
            table[f"{layer.name} forward"] = (functools.partial(_conv, pad=layer.pad), [x, p["W"], p["b"]], True)
            table[f"{layer.name} dx"] = (lambda c, d: layers.conv_backward(d, c)[0], [cache, dout], not first)
            table[f"{layer.name} dW"] = (lambda c, d: layers.conv_backward(d, c)[1:], [cache, dout], True)
            first = False
        elif layer.kind == "batchnorm":
            table[f"{layer.name} forward+backward"] = (_batchnorm, [x, p["gamma"], p["beta"], dout], True)
    return table


def _conv(x, W, b, *, pad):
    return layers.conv_forward(x, W, b, pad=pad)[0]


def _batchnorm(x, gamma, beta, dout):
    running = (jnp.zeros_like(gamma), jnp.ones_like(gamma))
    out, _, cache = layers.spatial_batchnorm_forward(x, gamma, beta, running)
    return out, layers.spatial_batchnorm_backward(dout, cache)


def bench_config(cname: str, quick: bool, *, reps, iters) -> dict:
    """Time every piece and the whole scanned step of configuration ``cname`` (its quick version
    when ``quick``), interleaved; return its JSON record: conv_step's own networks by piece
    (:func:`pieces`), the ready CNNs by layer (:func:`layer_pieces`)."""
    su = conv_step.setup(cname, quick)
    net, side, batch, steps, reps = su.net, su.side, su.batch, su.steps, reps or su.reps
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), net.init(jax.random.PRNGKey(0)).params)
    table = layer_pieces(net, params, batch) if su.convs is None else pieces(su, params)
    x, y = conv_step.make_data(side, batch, steps)
    step = _common.fnet_epoch("whole step", net, optim.adam(conv_step.LR), params, jnp.asarray(x), jnp.asarray(y),
                              batch, "manual")
    reps_of, compile_s = {"whole step": step.rep}, {}
    for name, (piece, inputs, _) in table.items():
        for key, fn in ((name, piece), (f"{name} harness", lambda *a: a)):
            compile_s[key], reps_of[key] = _timed_loop(fn, inputs, iters)
    times = _common.interleaved(reps_of, reps)
    whole = _common.summarize(times["whole step"], step.per_rep_steps)
    results = {}
    for name, (_, _, in_step) in table.items():
        s = _common.summarize(times[name], iters)
        results[name] = {**s, "harness_median_s": _common.summarize(times[f"{name} harness"], iters)["median_s"],
                         "share_of_step": s["median_s"] / whole["median_s"], "in_step": in_step,
                         "compile_s": compile_s[name]}
    return {**su.about, "layers": conv_step.describe(conv_step.layers_of(net, su.dropout)), "side": side, "batch": batch,
            "params": nets.num_params(net), "iters": iters, "steps_per_rep": steps, "reps": reps, "results": results,
            "whole_step": {**whole, "compile_s": step.compile_s, "trained": _common.trained(step.losses, steps)}}


def format_table(record: dict) -> str:
    """The Markdown tables of a record: one per configuration."""
    lines = [*_common.table_heading(record, "conv_breakdown"),
             (f"Per-step medians of each piece alone in a {record['iters']}-iteration `lax.scan` whose inputs depend on "
              "the carry; `harness` = the same loop with the piece replaced by the identity (the trick's own cost); "
              "`share` = the piece / the whole scanned step. Shares need not sum to 1: XLA fuses across pieces in "
              "the step, and the conv rows include their layout transposes.")]
    for cname, c in record["configs"].items():
        w = c["whole_step"]
        lines += ["", (f"## {cname}: {c['layers']}, {c['side']}x{c['side']}, batch {c['batch']}, {c['params']:,} params; "
                       f"{c['reps']} reps"), "",
                  "| piece | ms/step | harness ms | share of step |", "|---|---:|---:|---:|"]
        for name, r in sorted(c["results"].items(), key=lambda kv: -kv[1]["median_s"]):
            note = "" if r["in_step"] else " (the first conv layer's: not in the step)"
            lines.append(f"| {name}{note} | {1e3 * r['median_s']:.3f} | {1e3 * r['harness_median_s']:.3f} | "
                         f"{r['share_of_step']:.2f} |")
        lines.append(f"| **whole step** (make_epoch, {c['steps_per_rep']} steps) | {1e3 * w['median_s']:.3f} | | 1.00 |")
    return "\n".join(lines)


def main(argv=None) -> tuple[str, str]:
    """Run the breakdown and write its JSON and Markdown; returns their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks, a few iterations (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--configs", default="simple,two_conv",
                        help=f"comma-separated subset of {','.join(conv_step.NETWORKS)}")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions of every piece")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    args, names = _common.parse_step_args(parser, argv, conv_step.NETWORKS)
    record = _common.record_header("conv_breakdown", args.device)
    record["threads"] = "XLA default"
    iters = QUICK_ITERS if args.quick else ITERS
    configs = {}
    for cname in names:
        print(f"[conv_breakdown] {cname} ...", file=sys.stderr, flush=True)
        configs[cname] = bench_config(cname, args.quick, reps=args.reps, iters=iters)
    record.update(quick=args.quick, iters=iters, pieces=list(PIECES), configs=configs,
                  load_average_after=_common.load_average())
    return _common.publish(record, format_table(record), args.out, "conv_breakdown", args.quick)


if __name__ == "__main__":
    main()
