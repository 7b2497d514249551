"""Time one training step (forward, backward, Adam) of the same CNN in fnet (manual and autodiff),
flax+optax, PyTorch (eager and torch.compile) and Deep-Learning-from-Scratch-style NumPy im2col,
side by side in one process, against the step's convolution and matmul floor.

    python -m benchmarks.conv_step [--quick] [--device cpu|gpu] [--configs simple,two_conv]
                                   [--reps N] [--threads N] [--no-torch-compile] [--out DIR]

Configurations (ReLU, 2x2 max pooling, softmax cross-entropy, Adam lr 1e-3, float32, MNIST-sized
images of a synthetic 10-class problem):

- ``simple``: Deep Learning from Scratch's SimpleConvNet, conv5x5(30) - relu - pool - dense(100) -
  relu - dense(10), batch 100;
- ``two_conv``: conv3x3(32, pad 1) - relu - pool - conv3x3(64, pad 1) - relu - pool - dense(128) -
  relu - dense(10), batch 64 (fnet's ``cnn`` without batch norm and dropout, which the peers would
  each do differently).

Implementations (the same initial weights and the same data; the peers step through the
minibatches in order, fnet's epoch shuffles them on device, so its losses differ from theirs):

- ``fnet manual epoch`` / ``fnet autodiff epoch``: :func:`fnet.train.make_epoch` of a network
  composed from fnet's modules (NCHW), all steps of an epoch in one compiled call (it also
  shuffles and gathers the minibatches);
- ``flax+optax``: linen ``Conv``/``max_pool``/``Dense`` in NHWC (flax's layout) in a
  ``TrainState``, ``jax.jit`` of the step as flax's documentation writes it;
- ``torch eager`` / ``torch compile``: ``nn.Sequential`` of ``Conv2d``/``MaxPool2d``/``Linear``
  (NCHW) + ``torch.optim.Adam``; ``torch.compile`` where it works (else the error is recorded);
- ``numpy im2col``: the book's ``common/layers.py`` way (im2col/col2im convolution, argmax
  pooling), in float32.

The floor: the step's multiply-add flops divided by the float32 rate of a square 2048^3 matmul
measured in the same interleaved rounds. A convolution of B images with F filters of C x k x k
and H' x W' outputs costs ``2 B F C k^2 H' W'`` forward; its backward is dW (the same) and dx
(the same, but for the first layer, whose dx is unused); dense layers as in train_step.
Timing: compiled ahead of time (compile time recorded), interleaved repetitions, medians.
Peak memory: XLA's ``memory_analysis()`` (JAX implementations only). Results go to
``DIR/conv_step-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from fnet import combinators, modules, nets, optim

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
PEERS = ("flax+optax", "torch eager", "torch compile", "numpy im2col")


def _shapes(convs, side):
    """Per conv: (C_in, F, k, pad, H_in, H_out); then the flattened size after the last pool."""
    out, c, h = [], 1, side
    for f, k, p in convs:
        h_conv = h + 2 * p - k + 1
        out.append((c, f, k, p, h, h_conv))
        c, h = f, h_conv // 2
    return out, c * h * h


def step_flops(convs, hidden, side, batch) -> dict:
    """Multiply-add flops of one training step (see the module docstring)."""
    layers, flat = _shapes(convs, side)
    conv_fwd = [2 * batch * f * c * k * k * ho * ho for c, f, k, _, _, ho in layers]
    dense = [flat * hidden, hidden * 10]
    forward = sum(conv_fwd) + 2 * batch * sum(dense)
    backward = sum(conv_fwd) + sum(conv_fwd[1:]) + 2 * batch * sum(dense) + 2 * batch * sum(dense)
    return {"forward": forward, "backward": backward, "total": forward + backward}


def fnet_module(convs, hidden):
    body = []
    for f, k, p in convs:
        body += [modules.conv2d(f, k, pad=p), modules.relu(), modules.max_pool(2)]
    return combinators.serial(*body, modules.flatten(), modules.dense(hidden), modules.relu(), modules.dense(10))


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


def _torch(name, weights, convs, batches_np, device, compile_model):
    import torch
    from torch import nn

    mods = []
    for (w, b), (f, k, p) in zip(weights, convs):
        conv = nn.Conv2d(w.shape[1], f, k, padding=p)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w.copy()))
            conv.bias.copy_(torch.from_numpy(b.copy()))
        mods += [conv, nn.ReLU(), nn.MaxPool2d(2)]
    mods.append(nn.Flatten())
    for i, (w, b) in enumerate(weights[len(convs):]):
        lin = _common.torch_linear(w, b)
        mods += [lin, nn.ReLU()] if i == 0 else [lin]
    return _common.torch_loop(name, nn.Sequential(*mods), batches_np, device, compile_model, LR)


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


def bench_config(spec, *, reps, device, torch_compile, matmul_n) -> dict:
    """Time every implementation on one configuration; return its JSON record."""
    convs, hidden, side, batch, steps, default_reps = spec
    reps = reps or default_reps
    net = nets.network(fnet_module(convs, hidden), (1, side, side))
    params0, _ = net.init(jax.random.PRNGKey(0))
    weights = _flat_weights(params0, convs)
    x, y = make_data(side, batch, steps)
    batches_np = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    batches = [(jnp.asarray(a), jnp.asarray(b)) for a, b in batches_np]
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    impls = [_common.fnet_epoch("fnet manual epoch", net, optim.adam(LR), params0, xd, yd, batch, "manual"),
             _common.fnet_epoch("fnet autodiff epoch", net, optim.adam(LR), params0, xd, yd, batch, "autodiff"),
             _flax(weights, convs, batches, side)]
    tdev = _common.torch_device(device)
    more, not_run = _common.peers(lambda name, compile_model: _torch(name, weights, convs, batches_np, tdev, compile_model),
                                  lambda: _numpy(weights, convs, batches_np), "numpy im2col", device=device,
                                  torch_compile=torch_compile)
    flops = step_flops(convs, hidden, side, batch)
    timing = _common.time_against_floor(impls + more, reps=reps, matmul_n=matmul_n, flops=flops)
    return {"convs": [list(c) for c in convs], "hidden": hidden, "side": side, "batch": batch, "steps_per_rep": steps,
            "reps": reps, "params": nets.num_params(net), "flops": flops, **timing, "not_run": not_run}


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
        convs = " - ".join(f"conv{k}x{k}({f}, pad {p})-relu-pool" for f, k, p in c["convs"])
        lines += ["", f"## {cname}: {convs} - dense({c['hidden']})-relu-dense(10), {c['side']}x{c['side']}, batch "
                  f"{c['batch']}, {c['params']:,} params, {c['flops']['total'] / 1e6:.1f} MFLOP/step, floor "
                  f"{1e3 * c['floor_s']:.2f} ms ({c['matmul']['median_flops_per_s'] / 1e9:.1f} GFLOP/s), "
                  f"{c['steps_per_rep']} steps x {c['reps']} reps", "", *_common.timing_rows(c)]
    return "\n".join(lines + _common.targets_rows(record["targets"]))


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    args, names = _common.parse_step_args(_common.step_parser(__doc__, CONFIGS, "simple,two_conv", "networks"), argv, CONFIGS)
    record = _common.record_header("conv_step", args.device)
    record["threads"] = _common.set_threads(args.threads)
    specs = QUICK_CONFIGS if args.quick else CONFIGS
    configs = {}
    for cname in names:
        print(f"[conv_step] {cname} ...", file=sys.stderr, flush=True)
        configs[cname] = bench_config(specs[cname], reps=args.reps, device=args.device,
                                      torch_compile=not (args.quick or args.no_torch_compile),
                                      matmul_n=256 if args.quick else 2048)
    record.update(quick=args.quick, learning_rate=LR, configs=configs, targets=targets(configs),
                  load_average_after=_common.load_average())
    return _common.publish(record, format_table(record), args.out, "conv_step", args.quick)


if __name__ == "__main__":
    main()
