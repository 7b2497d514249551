"""Time one training step (forward, backward, Adam) of the same CNN in fnet (manual and autodiff),
flax+optax, PyTorch (eager and torch.compile) and Deep-Learning-from-Scratch-style NumPy im2col,
side by side in one process, against the step's convolution and matmul floor.

    python -m benchmarks.conv_step [--quick] [--device cpu|gpu] [--configs NAME,...]
                                   [--reps N] [--threads N] [--no-torch-compile] [--out DIR]

Configurations (ReLU, 2x2 max pooling, softmax cross-entropy, Adam lr 1e-3, float32, MNIST-sized
images of a synthetic 10-class problem):

- ``simple``: Deep Learning from Scratch's SimpleConvNet, conv5x5(30) - relu - pool - dense(100) -
  relu - dense(10), batch 100;
- ``two_conv``: conv3x3(32, pad 1) - relu - pool - conv3x3(64, pad 1) - relu - pool - dense(128) -
  relu - dense(10), batch 64 (fnet's ``cnn`` without batch norm and dropout, which the peers would
  each do differently);
- ``small_cnn``, ``three_layer_convnet``, ``deep_convnet``: fnet's ready CNNs
  (:data:`fnet.models.cnn.ARCHITECTURES`) as ``fnet train --model NAME`` builds them (the model's
  widths and dropout, He init), at their MNIST preset's batch (64); batch norm in training mode and
  dropout included (``simple_convnet`` is ``simple`` at batch 64, so it is not repeated).

Implementations (the same initial weights and the same data; the peers step through the
minibatches in order, fnet's epoch shuffles them on device, so its losses differ from theirs):

- ``fnet manual epoch`` / ``fnet autodiff epoch``: :func:`fnet.train.make_epoch` of a network
  composed from fnet's modules (NCHW), all steps of an epoch in one compiled call (it also
  shuffles and gathers the minibatches);
- ``flax+optax``: linen ``Conv``/``max_pool``/``Dense`` in NHWC (flax's layout) in a
  ``TrainState``, ``jax.jit`` of the step as flax's documentation writes it (``simple`` and
  ``two_conv`` only);
- ``torch eager`` / ``torch compile``: ``nn.Sequential`` of the same layers as fnet's network
  (``Conv2d``/``BatchNorm2d``/``ReLU``/``MaxPool2d``/``Flatten``/``Linear``/``Dropout``, NCHW, read
  from it by :func:`layers_of`) + ``torch.optim.Adam``; ``torch.compile`` where it works (else the
  error is recorded);
- ``numpy im2col``: the book's ``common/layers.py`` way (im2col/col2im convolution, argmax
  pooling), in float32 (``simple`` and ``two_conv`` only).

The floor: the step's multiply-add flops divided by the float32 rate of a square 2048^3 matmul
measured in the same interleaved rounds. A convolution of B images with F filters of C x k x k
and H' x W' outputs costs ``2 B F C k^2 H' W'`` forward, a dense layer (D, M) ``2 B D M``; the
backward of each is dW (the same) and dx (the same, but for the first of these layers, whose dx is
unused). Batch norm, ReLU, pooling and dropout are memory-bound and left out of the floor.
Timing: compiled ahead of time (compile time recorded), interleaved repetitions, medians.
Peak memory: XLA's ``memory_analysis()`` (JAX implementations only). Results go to
``DIR/conv_step-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations

import functools
import math
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from fnet import combinators, models, modules, nets, optim

LR = 1e-3
#: name -> (convs [(filters, kernel, pad)], dense hidden, image side, batch, steps per rep, reps)
CONFIGS = {
    "simple": ([(30, 5, 0)], 100, 28, 100, 10, 9),
    "two_conv": ([(32, 3, 1), (64, 3, 1)], 128, 28, 64, 10, 9),
}
QUICK_CONFIGS = {
    "simple": ([(4, 5, 0)], 8, 12, 8, 3, 2),
    "two_conv": ([(4, 3, 1), (8, 3, 1)], 8, 12, 8, 3, 2),
}
#: fnet's ready CNNs: name -> (widths overriding the model's defaults, image side, batch, steps per rep, reps)
READY = {name: ({}, 28, models.preset(name, "mnist")["batch_size"], 10, 9)
         for name in ("small_cnn", "three_layer_convnet", "deep_convnet")}
#: Their tiny versions: 3 repetitions of 4 steps of 16 images, enough for the loss to fall through
#: deep_convnet's dropout on the scores.
QUICK_READY = {name: ({"filters": (8,) * len(models.ARCHITECTURES[name].filters), "dense_width": 16}, 12, 16, 4, 3)
               for name in READY}
#: Every name ``--configs`` takes: the networks above, then the ready CNNs.
NETWORKS = (*CONFIGS, *READY)
PEERS = ("flax+optax", "torch eager", "torch compile", "numpy im2col")


class Layer(NamedTuple):
    """One layer of a network as the peers and :func:`step_flops` read it (:func:`layers_of`).

    Fields:
      kind: the fnet module's kind: "conv2d", "batchnorm", "relu", "max_pool", "flatten", "dense"
        or "dropout".
      name: its key in the params tree (e.g. "conv2d1"), where its weights are.
      in_shape, out_shape: one sample's shapes, e.g. (1, 28, 28) -> (32, 28, 28).
      weight: the shape of its "W" (conv2d: (F, C, k, k); dense: (D, M)); () for the others.
      pad: a conv2d's zero padding (stride 1).
      window: a max_pool's window (= its stride).
      rate: a dropout's drop probability.
    """

    kind: str
    name: str
    in_shape: tuple
    out_shape: tuple
    weight: tuple = ()
    pad: int = 0
    window: int = 0
    rate: float = 0.0


def layers_of(net, dropout: float = 0.0) -> list[Layer]:
    """The layers of ``net``, a flat :func:`fnet.combinators.serial` of conv2d (stride 1),
    batchnorm, relu, max_pool, flatten, dense and dropout modules, read from fnet's own
    composition (kinds, shapes from :func:`fnet.modules.init_shapes`) so that the peers build what
    fnet trains. ``dropout``: the rate of its dropout layers (a module keeps it in its closure)."""
    out, shape = [], (None, *net.input_shape)
    for name, child in net.module.children:
        params, _, out_shape = modules.init_shapes(child, shape)
        weight = tuple(params["W"].shape) if "W" in params else ()
        layer = Layer(child.name, name, tuple(shape[1:]), tuple(out_shape[1:]), weight)
        if child.name == "conv2d":
            pad = (out_shape[2] - shape[2] + weight[2] - 1) // 2
            if out_shape[2] != shape[2] + 2 * pad - weight[2] + 1:
                raise ValueError(f"layers_of: {name} must be a stride-1 convolution, got {shape} -> {out_shape}")
            layer = layer._replace(pad=pad)
        elif child.name == "max_pool":
            layer = layer._replace(window=shape[2] // out_shape[2])
        elif child.name == "dropout":
            layer = layer._replace(rate=dropout)
        elif child.name not in ("batchnorm", "relu", "flatten", "dense"):
            raise ValueError(f"layers_of: no peer layer for {name} (a {child.name})")
        out.append(layer)
        shape = out_shape
    return out


def describe(layers: list[Layer]) -> str:
    """``layers`` in one line, e.g. "conv5x5(30, pad 0)-relu-pool - dense(100)-relu-dense(10)"."""
    named = {"conv2d": lambda l: f"conv{l.weight[2]}x{l.weight[3]}({l.weight[0]}, pad {l.pad})",
             "dense": lambda l: f"dense({l.weight[1]})", "dropout": lambda l: f"dropout({l.rate:g})",
             "max_pool": lambda l: "pool"}
    text = ""
    for i, layer in enumerate(layers):
        if layer.kind != "flatten":
            text += ("" if not text else " - " if layers[i - 1].kind in ("max_pool", "flatten") else "-")
            text += named.get(layer.kind, lambda l: l.kind)(layer)
    return text


def _shapes(convs, side):
    """Per conv: (C_in, F, k, pad, H_in, H_out); then the flattened size after the last pool."""
    out, c, h = [], 1, side
    for f, k, p in convs:
        h_conv = h + 2 * p - k + 1
        out.append((c, f, k, p, h, h_conv))
        c, h = f, h_conv // 2
    return out, c * h * h


def step_flops(layers: list[Layer], batch: int) -> dict:
    """Multiply-add flops of one training step of ``layers`` (:func:`layers_of`) on ``batch``
    images (see the module docstring): ``2 B prod(W) H' W'`` per conv2d and dense layer forward
    (H' W' = 1 for a dense layer), again for dW, again for dx but for the first."""
    per_layer = [2 * batch * math.prod(l.weight) * math.prod(l.out_shape[1:]) for l in layers if l.weight]
    forward = sum(per_layer)
    backward = sum(per_layer) + sum(per_layer[1:])
    return {"forward": forward, "backward": backward, "total": forward + backward}


def fnet_module(convs, hidden):
    body = []
    for f, k, p in convs:
        body += [modules.conv2d(f, k, pad=p), modules.relu(), modules.max_pool(2)]
    return combinators.serial(*body, modules.flatten(), modules.dense(hidden), modules.relu(), modules.dense(10))


def ready_net(name: str, side: int, *, filters=(), dense_width: int = 0):
    """fnet's ready CNN ``name`` for 1 x side x side images and 10 classes, built as ``fnet train
    --model NAME`` builds it (:func:`fnet.models.build`, the model's dropout and He init), and its
    dropout rate. ``filters``/``dense_width`` override the widths (quick mode's tiny versions)."""
    net = models.build(name, (1, side, side), 10, filters=filters, dense_width=dense_width)
    return net, models.ARCHITECTURES[name].dropout


class Setup(NamedTuple):
    """One configuration, built: the fnet network and what the benchmarks around it need.

    Fields:
      net: the fnet network (float32).
      dropout: the rate of its dropout layers (0 for ``CONFIGS``' networks, which have none).
      side, batch, steps, reps: image side, batch size, steps per repetition, default repetitions.
      convs, hidden: ``CONFIGS``' description [(filters, kernel, pad)] and dense width; None for a
        ready CNN.
    """

    net: nets.Net
    dropout: float
    side: int
    batch: int
    steps: int
    reps: int
    convs: list | None = None
    hidden: int | None = None

    @property
    def about(self) -> dict:
        """What a JSON record says of the network besides its layers."""
        return {"model": self.net.name} if self.convs is None else {"convs": [list(c) for c in self.convs],
                                                                     "hidden": self.hidden}


def setup(cname: str, quick: bool) -> Setup:
    """Configuration ``cname`` (one of :data:`NETWORKS`) built, its quick version when ``quick``."""
    if cname in CONFIGS:
        convs, hidden, side, batch, steps, reps = (QUICK_CONFIGS if quick else CONFIGS)[cname]
        return Setup(nets.network(fnet_module(convs, hidden), (1, side, side)), 0.0, side, batch, steps, reps,
                     convs, hidden)
    widths, side, batch, steps, reps = (QUICK_READY if quick else READY)[cname]
    return Setup(*ready_net(cname, side, **widths), side, batch, steps, reps)


def make_data(side, batch, steps, seed=0):
    """x uniform in [0, 1) of shape (steps * batch, 1, side, side); labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    x = rng.random((steps * batch, 1, side, side), dtype=np.float32)
    teacher = rng.standard_normal((side * side, 10)).astype(np.float32)
    y = np.argmax((x.reshape(len(x), -1) - 0.5) @ teacher, axis=1).astype(np.int32)
    return x, y


def _flat_weights(params0, convs):
    """fnet's initial weights as a list: [(W (F, C, k, k), b), ..., (W_dense (in, out), b), ...]."""
    names = [f"conv2d{i + 1}" for i in range(len(convs))] + ["dense1", "dense2"]
    return [(np.asarray(params0[n]["W"]), np.asarray(params0[n]["b"])) for n in names]


def _flax(weights, convs, batches, side):
    import flax.linen as nn
    import optax
    from flax.training import train_state

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):  # x: NHWC
            for f, k, p in convs:
                x = nn.relu(nn.Conv(f, (k, k), padding=[(p, p), (p, p)])(x))
                x = nn.max_pool(x, (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(weights[-2][0].shape[1])(x))  # Dense_0, then Dense_1: creation order names them
            return nn.Dense(10)(x)

    # The same weights in flax's layouts: kernels HWIO; the first dense layer's rows reordered from
    # fnet's (C, H, W) flattening to flax's (H, W, C).
    layers, _ = _shapes(convs, side)
    c_last, h_last = layers[-1][1], layers[-1][5] // 2
    params = {f"Conv_{i}": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}
              for i, (w, b) in enumerate(weights[: len(convs)])}
    w1, b1 = weights[-2]
    w1 = w1.reshape(c_last, h_last, h_last, -1).transpose(1, 2, 0, 3).reshape(w1.shape)
    params["Dense_0"] = {"kernel": jnp.asarray(w1), "bias": jnp.asarray(b1)}
    params["Dense_1"] = {"kernel": jnp.asarray(weights[-1][0]), "bias": jnp.asarray(weights[-1][1])}
    model = CNN()
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(LR))
    return _common.flax_loop(state, [(jnp.transpose(x, (0, 2, 3, 1)), y) for x, y in batches])


def torch_model(layers: list[Layer], params):
    """PyTorch's ``nn.Sequential`` of ``layers`` (:func:`layers_of`) holding fnet's ``params`` (in
    training mode, as PyTorch builds it; seeded, so that its dropout masks repeat run to run)."""
    import torch
    from torch import nn

    def copied(module, values):
        with torch.no_grad():
            for param, value in zip(module.parameters(), values):  # weight then bias
                param.copy_(torch.from_numpy(np.array(value)))
        return module

    make = {
        "conv2d": lambda l, p: copied(nn.Conv2d(l.weight[1], l.weight[0], l.weight[2], padding=l.pad),
                                      (p["W"], p["b"])),
        # fnet's defaults (running = 0.9 running + 0.1 batch, eps 1e-5) in PyTorch's convention.
        "batchnorm": lambda l, p: copied(nn.BatchNorm2d(l.in_shape[0], eps=1e-5, momentum=0.1),
                                         (p["gamma"], p["beta"])),
        "relu": lambda l, p: nn.ReLU(),
        "max_pool": lambda l, p: nn.MaxPool2d(l.window),
        "flatten": lambda l, p: nn.Flatten(),  # NCHW rows in (C, H, W) order, as fnet's flatten
        "dense": lambda l, p: _common.torch_linear(p["W"], p["b"]),
        "dropout": lambda l, p: nn.Dropout(l.rate),
    }
    torch.manual_seed(0)
    return nn.Sequential(*(make[l.kind](l, params.get(l.name, {})) for l in layers))


# ------------------------------------------------------------------------------------ NumPy im2col


def im2col(x, k, stride, pad):
    """Deep Learning from Scratch's ``im2col``: (N, C, H, W) -> (N * H' * W', C * k * k)."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.zeros((n, c, k, k, ho, wo), dtype=x.dtype)
    for y in range(k):
        for x_ in range(k):
            col[:, :, y, x_, :, :] = img[:, :, y:y + stride * ho:stride, x_:x_ + stride * wo:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * ho * wo, -1)


def col2im(col, shape, k, stride, pad):
    """The adjoint of :func:`im2col` (``common/util.py``'s ``col2im``)."""
    n, c, h, w = shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    col = col.reshape(n, ho, wo, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(k):
        for x_ in range(k):
            img[:, :, y:y + stride * ho:stride, x_:x_ + stride * wo:stride] += col[:, :, y, x_, :, :]
    return img[:, :, pad:h + pad, pad:w + pad]


def _numpy(weights, convs, batches_np):
    """The book's layers (Convolution via im2col, Pooling via im2col + argmax, Affine, ReLU,
    SoftmaxWithLoss) and Adam, float32."""
    params = [[w.copy(), b.copy()] for w, b in weights]
    adam = _common.numpy_adam([a for p in params for a in p], LR)

    def step(x, y):
        caches = []
        h = x
        for (w, b), (f, k, p) in zip(params, convs):
            n, _, hh, ww = h.shape
            col = im2col(h, k, 1, p)
            out = (col @ w.reshape(f, -1).T + b).reshape(n, hh + 2 * p - k + 1, ww + 2 * p - k + 1, f).transpose(0, 3, 1, 2)
            mask = out <= 0
            out[mask] = 0
            pcol = im2col(out, 2, 2, 0).reshape(-1, 4)
            arg = np.argmax(pcol, axis=1)
            pooled = pcol[np.arange(len(arg)), arg].reshape(n, out.shape[2] // 2, out.shape[3] // 2, f).transpose(0, 3, 1, 2)
            caches.append((h.shape, col, mask, out.shape, arg))
            h = pooled
        pooled_shape = h.shape
        h = h.reshape(h.shape[0], -1)
        (w1, b1), (w2, b2) = params[-2:]
        a1 = h @ w1 + b1
        r1 = np.maximum(a1, 0)
        scores = r1 @ w2 + b2
        z = scores - scores.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        n = len(y)
        loss = -logp[np.arange(n), y].mean()
        d = np.exp(logp)
        d[np.arange(n), y] -= 1
        d /= n
        grads = [None] * len(params)
        grads[-1] = [r1.T @ d, d.sum(axis=0)]
        dr1 = (d @ w2.T) * (a1 > 0)
        grads[-2] = [h.T @ dr1, dr1.sum(axis=0)]
        dh = (dr1 @ w1.T).reshape(pooled_shape)
        for i in reversed(range(len(convs))):
            (w, b), (f, k, p) = params[i], convs[i]
            in_shape, col, mask, out_shape, arg = caches[i]
            dflat = dh.transpose(0, 2, 3, 1).ravel()
            dmax = np.zeros((dflat.size, 4), dtype=dflat.dtype)
            dmax[np.arange(len(arg)), arg] = dflat
            dout = col2im(dmax.reshape(-1, f * 4), out_shape, 2, 2, 0)
            dout[mask] = 0
            dflat2 = dout.transpose(0, 2, 3, 1).reshape(-1, f)
            grads[i] = [(dflat2.T @ col).reshape(w.shape), dflat2.sum(axis=0)]
            if i > 0:
                dh = col2im(dflat2 @ w.reshape(f, -1), in_shape, k, 1, p)
        adam([g for g_ in grads for g in g_])
        return loss

    return _common.python_loop("numpy im2col", step, batches_np)


# ------------------------------------------------------------------------------------ driver


def bench_config(cname: str, quick: bool, *, reps, device, torch_compile, matmul_n) -> dict:
    """Time every implementation on configuration ``cname`` (its quick version when ``quick``);
    return its JSON record."""
    su = setup(cname, quick)
    net, side, batch, steps = su.net, su.side, su.batch, su.steps
    reps = reps or su.reps
    params0, _ = net.init(jax.random.PRNGKey(0))
    layers = layers_of(net, su.dropout)
    x, y = make_data(side, batch, steps)
    batches_np = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    impls = [_common.fnet_epoch("fnet manual epoch", net, optim.adam(LR), params0, xd, yd, batch, "manual"),
             _common.fnet_epoch("fnet autodiff epoch", net, optim.adam(LR), params0, xd, yd, batch, "autodiff")]
    make_numpy, not_run = None, {}
    if su.convs is not None:
        weights = _flat_weights(params0, su.convs)
        impls.append(_flax(weights, su.convs, [(jnp.asarray(a), jnp.asarray(b)) for a, b in batches_np], side))
        make_numpy = functools.partial(_numpy, weights, su.convs, batches_np)
    else:
        why = "not written for the ready CNNs (batch norm, dropout): fnet against PyTorch only"
        not_run = {"flax+optax": why, "numpy im2col": why}
    tdev = _common.torch_device(device)

    def make_torch(name, compile_model):
        return _common.torch_loop(name, torch_model(layers, params0), batches_np, tdev, compile_model, LR)

    more, skipped = _common.peers(make_torch, make_numpy, "numpy im2col", device=device, torch_compile=torch_compile)
    flops = step_flops(layers, batch)
    timing = _common.time_against_floor(impls + more, reps=reps, matmul_n=matmul_n, flops=flops)
    return {**su.about, "layers": describe(layers), "side": side, "batch": batch, "steps_per_rep": steps, "reps": reps,
            "params": nets.num_params(net), "flops": flops, **timing, "not_run": {**not_run, **skipped}}


def targets(configs: dict) -> dict:
    """The goals on this run's medians: manual <= autodiff (time, peak memory); fnet
    ahead of every peer."""
    out = {}
    for cname, c in configs.items():
        r = c["results"]
        ratio = r["fnet manual epoch"]["median_s"] / r["fnet autodiff epoch"]["median_s"]
        out[f"{cname}: manual / autodiff time"] = {"value": ratio, "goal": "<= 1.0", "met": ratio <= 1.0}
        mm, ma = r["fnet manual epoch"]["peak_memory"], r["fnet autodiff epoch"]["peak_memory"]
        if mm and ma:
            v = mm["peak_bytes"] / ma["peak_bytes"]
            out[f"{cname}: manual / autodiff peak memory"] = {"value": v, "goal": "<= 1.0", "met": v <= 1.0}
        peers = [r[p]["median_s"] for p in PEERS if p in r]
        v = min(peers) / r[_common.REFERENCE]["median_s"]
        out[f"{cname}: fastest peer / fnet manual"] = {"value": v, "goal": ">= 1.0", "met": v >= 1.0}
    return out


def format_table(record: dict) -> str:
    """The Markdown tables of a record: one per configuration, then the targets."""
    lines = [*_common.table_heading(record, "conv_step"),
             "Per-step medians; `x floor` = time / (conv + matmul flops / square-matmul rate); `x fnet` = time / "
             "fnet manual epoch's."]
    for cname, c in record["configs"].items():
        lines += ["", f"## {cname}: {c['layers']}, {c['side']}x{c['side']}, batch "
                  f"{c['batch']}, {c['params']:,} params, {c['flops']['total'] / 1e6:.1f} MFLOP/step, floor "
                  f"{1e3 * c['floor_s']:.2f} ms ({c['matmul']['median_flops_per_s'] / 1e9:.1f} GFLOP/s), "
                  f"{c['steps_per_rep']} steps x {c['reps']} reps", "", *_common.timing_rows(c)]
    return "\n".join(lines + _common.targets_rows(record["targets"]))


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    parser = _common.step_parser(__doc__, NETWORKS, "simple,two_conv", "networks")
    args, names = _common.parse_step_args(parser, argv, NETWORKS)
    record = _common.record_header("conv_step", args.device)
    record["threads"] = _common.set_threads(args.threads)
    configs = {}
    for cname in names:
        print(f"[conv_step] {cname} ...", file=sys.stderr, flush=True)
        configs[cname] = bench_config(cname, args.quick, reps=args.reps, device=args.device,
                                      torch_compile=not (args.quick or args.no_torch_compile),
                                      matmul_n=256 if args.quick else 2048)
    record.update(quick=args.quick, learning_rate=LR, configs=configs, targets=targets(configs),
                  load_average_after=_common.load_average())
    return _common.publish(record, format_table(record), args.out, "conv_step", args.quick)


if __name__ == "__main__":
    main()
