"""Time one training step (forward, backward, Adam update) of the same MLP in fnet, flax+optax,
PyTorch and NumPy, side by side in one process, against the machine's matmul floor.

    python -m benchmarks.train_step [--quick] [--device cpu|gpu] [--configs small,medium,large]
                                    [--reps N] [--threads N] [--no-torch-compile]
                                    [--matmul-precision float32|tensorfloat32|bfloat16] [--out DIR]

Configurations (ReLU MLPs, softmax cross-entropy, Adam lr 1e-3, float32):
small 784-[100]*4-10 batch 128, medium 784-512-512-10 batch 256, large 784-2048-2048-10 batch 512.
``--quick`` shrinks every configuration to a few units and a few steps (a smoke test).

Implementations (all start from the same initial weights and see the same data, an epoch of
``steps`` minibatches of a synthetic 10-class problem, x uniform in [0, 1)):

- ``fnet manual step``: :func:`fnet.train.make_train_step` (hand-written backward), one
  jit-compiled call per step;
- ``fnet manual epoch``: :func:`fnet.train.make_epoch`, all the epoch's steps in ONE compiled
  call (a ``lax.scan``; it also shuffles and gathers the minibatches on device);
  per-step time = call time / steps;
- ``fnet autodiff step`` / ``fnet autodiff epoch``: the same with ``grad="autodiff"``;
- ``flax+optax``: a linen MLP and ``optax.adam`` in a ``TrainState``, ``jax.jit`` of the whole
  step, as flax's documentation writes it;
- ``torch eager`` / ``torch compile``: ``nn.Sequential`` + ``torch.optim.Adam``;
  ``torch.compile(model)`` when it works here (otherwise the error is recorded);
- ``numpy``: the from-scratch curriculum way, affine/ReLU forward and backward, softmax loss and
  Adam written in NumPy.

The floor: the step's matmul flops divided by the float32 matmul rate of a square 2048^3 ``jnp``
matmul (best of 3) run in every round of the interleaved repetitions, so under the same load as
the implementations (median over the rounds; the best round and a 2048^3/4096^3 peak taken at
start are recorded too). For layer widths
``d_0, ..., d_L`` and batch B::

    forward  = 2 B sum_l d_{l-1} d_l
    backward = 2 B sum_l d_{l-1} d_l          (dW of every layer)
             + 2 B sum_{l>=2} d_{l-1} d_l     (dx of every layer but the first, whose dx is unused)

i.e. about 3x the forward. Adam, the bias adds, ReLU and the softmax are memory-bound and not in
the floor; the floor is a bound no implementation can beat, not an estimate.

Timing: warm-up (compilation, first touch) excluded; each repetition runs the epoch's ``steps``
steps; the implementations' repetitions are interleaved and the median is reported. Compilation
time (first call minus one timed step) is reported separately. Each implementation's per-step
losses are recorded and it must have trained (loss fell). Peak memory: XLA's
``memory_analysis()`` of the compiled step/epoch (JAX implementations only).

``--matmul-precision bfloat16`` runs the float32 matmuls with bfloat16 inputs (float32
accumulation) in JAX (``jax_default_matmul_precision``) and PyTorch
(``set_float32_matmul_precision("medium")``): the GPU option; the floor is then measured at the
same precision. Results go to ``DIR/train_step-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from fnet import mlp, optim, train

LR = 1e-3
#: name -> (input_dim, hidden_dims, output_dim, batch, steps per repetition, default reps)
CONFIGS = {
    "small": (784, (100,) * 4, 10, 128, 50, 21),
    "medium": (784, (512, 512), 10, 256, 20, 11),
    "large": (784, (2048, 2048), 10, 512, 5, 7),
}
QUICK_CONFIGS = {
    "small": (16, (8,) * 4, 4, 8, 4, 2),
    "medium": (16, (12, 12), 4, 8, 4, 2),
    "large": (16, (16, 16), 4, 8, 4, 2),
}
#: --matmul-precision (JAX's name) -> torch.set_float32_matmul_precision's equivalent
TORCH_PRECISION = {"float32": "highest", "tensorfloat32": "high", "bfloat16": "medium"}
PEERS = ("flax+optax", "torch eager", "torch compile", "numpy")


def step_flops(dims, batch: int) -> dict:
    """Matmul flops of one training step of an MLP with layer widths ``dims`` (see the module
    docstring): ``{"forward": ..., "backward": ..., "total": ...}``."""
    sizes = [a * b for a, b in zip(dims[:-1], dims[1:])]
    forward = 2 * batch * sum(sizes)
    backward = 2 * batch * sum(sizes) + 2 * batch * sum(sizes[1:])
    return {"forward": forward, "backward": backward, "total": forward + backward}


def make_data(dims, batch: int, steps: int, seed: int = 0):
    """A learnable synthetic problem: x uniform in [0, 1) of shape (steps * batch, d_0), labels the
    argmax of a fixed random linear teacher, of shape (steps * batch,), int32."""
    rng = np.random.default_rng(seed)
    x = rng.random((steps * batch, dims[0]), dtype=np.float32)
    teacher = rng.standard_normal((dims[0], dims[-1])).astype(np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int32)
    return x, y


# ------------------------------------------------------------------------------------ fnet


def _fnet_step(name, net, params0, batches, grad) -> _common.Impl:
    opt = optim.adam(LR)
    carry = [jax.tree_util.tree_map(jnp.copy, params0), {}, None]
    carry[2] = opt.init(carry[0])
    compile_s, step = _common.timed(
        lambda: train.make_train_step(net, opt, grad=grad).lower(*carry, batches[0], None).compile()
    )
    impl = _common.Impl(name, None, len(batches), compile_s=compile_s, memory=_common.compiled_memory(step))

    def rep():
        p, s, o = carry
        out = []
        t0 = time.perf_counter()
        for batch in batches:
            p, s, o, m = step(p, s, o, batch, None)
            out.append(m["loss"])
        jax.block_until_ready((p, o))
        dt = time.perf_counter() - t0
        carry[:] = [p, s, o]
        impl.losses.extend(np.asarray(jnp.stack(out)).tolist())
        return dt

    impl.rep = rep
    return _common.first_call(impl)


# ------------------------------------------------------------------------------------ flax


def _flax(params0, batches, n_layers) -> _common.Impl:
    import optax
    from flax.training import train_state

    dims = [params0[f"W{i}"].shape[1] for i in range(1, n_layers + 1)]

    model = _common.flax_mlp(dims)
    # The same initial weights as fnet's (Dense_i's kernel is (in, out) like fnet's W).
    params = {f"Dense_{i - 1}": {"kernel": jnp.copy(params0[f"W{i}"]), "bias": jnp.copy(params0[f"b{i}"])}
              for i in range(1, n_layers + 1)}
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(LR))
    return _common.flax_loop(state, batches)


# ------------------------------------------------------------------------------------ torch


def _torch(name, params0, batches_np, n_layers, device, compile_model: bool) -> _common.Impl:
    from torch import nn

    mods = []
    for i in range(1, n_layers + 1):  # the same initial weights
        lin = _common.torch_linear(params0[f"W{i}"], params0[f"b{i}"])
        mods += [lin, nn.ReLU()] if i < n_layers else [lin]
    return _common.torch_loop(name, nn.Sequential(*mods), batches_np, device, compile_model, LR)


# ------------------------------------------------------------------------------------ numpy


def _numpy(params0, batches_np, n_layers) -> _common.Impl:
    """The curriculum's from-scratch step: affine/ReLU forward with caches, softmax loss,
    backward in reverse, Adam per parameter (float32 throughout)."""
    params = {k: np.array(v) for k, v in params0.items()}
    adam = _common.numpy_adam(list(params.values()), LR)

    def step(x, y):
        caches, h = [], x
        for i in range(1, n_layers):
            a = h @ params[f"W{i}"] + params[f"b{i}"]
            caches.append((h, a))
            h = np.maximum(a, 0)
        scores = h @ params[f"W{n_layers}"] + params[f"b{n_layers}"]
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        n = x.shape[0]
        loss = -log_probs[np.arange(n), y].mean()
        dscores = np.exp(log_probs)
        dscores[np.arange(n), y] -= 1
        dscores /= n
        grads = {f"W{n_layers}": h.T @ dscores, f"b{n_layers}": dscores.sum(axis=0)}
        dh = dscores @ params[f"W{n_layers}"].T
        for i in range(n_layers - 1, 0, -1):
            h_in, a = caches[i - 1]
            da = dh * (a > 0)
            grads[f"W{i}"], grads[f"b{i}"] = h_in.T @ da, da.sum(axis=0)
            if i > 1:
                dh = da @ params[f"W{i}"].T
        adam([grads[k] for k in params])
        return loss

    return _common.python_loop("numpy", step, batches_np)


# ------------------------------------------------------------------------------------ driver


def bench_config(name: str, spec, *, reps: int | None, device: str, torch_compile: bool, matmul_n: int) -> dict:
    """Time every implementation on one configuration; return its JSON record."""
    d_in, hidden, d_out, batch, steps, default_reps = spec
    reps = reps or default_reps
    dims = (d_in, *hidden, d_out)
    n_layers = len(dims) - 1
    net = mlp(d_in, hidden, d_out)
    params0, _ = net.init(jax.random.PRNGKey(0))
    # The peers start from the same weights, under cs231n's flat names (W1, b1, ...).
    flat0 = {f"{k}{i}": params0[f"dense{i}"][k] for i in range(1, n_layers + 1) for k in ("W", "b")}
    x, y = make_data(dims, batch, steps)
    batches_np = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    batches = [(jnp.asarray(xb), jnp.asarray(yb)) for xb, yb in batches_np]
    xd, yd = jnp.asarray(x), jnp.asarray(y)

    impls = []
    impls.append(_fnet_step("fnet manual step", net, params0, batches, "manual"))
    impls.append(_common.fnet_epoch("fnet manual epoch", net, optim.adam(LR), params0, xd, yd, batch, "manual"))
    impls.append(_fnet_step("fnet autodiff step", net, params0, batches, "autodiff"))
    impls.append(_common.fnet_epoch("fnet autodiff epoch", net, optim.adam(LR), params0, xd, yd, batch, "autodiff"))
    impls.append(_flax(flat0, batches, n_layers))
    tdev = _common.torch_device(device)
    more, not_run = _common.peers(lambda name, compile_model: _torch(name, flat0, batches_np, n_layers, tdev, compile_model),
                                  lambda: _numpy(flat0, batches_np, n_layers), "numpy", device=device,
                                  torch_compile=torch_compile)
    flops = step_flops(dims, batch)
    timing = _common.time_against_floor(impls + more, reps=reps, matmul_n=matmul_n, flops=flops)
    return {
        "dims": list(dims),
        "batch": batch,
        "steps_per_rep": steps,
        "reps": reps,
        "flops": flops,
        **timing,
        "not_run": not_run,
        "gather": _gather_cost(xd, yd, batch),
    }


def _gather_cost(x, y, batch: int) -> dict:
    """Per-step time of make_epoch's on-device shuffle and per-step minibatch gather alone (the
    permutation, then a ``lax.scan`` whose step does make_epoch's ``jnp.take`` of the batch's rows
    and a sum to keep it live), to judge its share of the scanned epoch."""
    steps = x.shape[0] // batch

    @jax.jit
    def gather(x, y, key):
        order = jax.random.permutation(key, x.shape[0])[: steps * batch].reshape(steps, batch)

        def body(acc, idx):
            return acc + jnp.sum(jnp.take(x, idx, axis=0)) + jnp.sum(jnp.take(y, idx, axis=0)), None

        return jax.lax.scan(body, jnp.zeros((), x.dtype), order)[0]

    key = jax.random.PRNGKey(0)
    jax.block_until_ready(gather(x, y, key))
    ts = [_common.timed(lambda: jax.block_until_ready(gather(x, y, key)))[0] for _ in range(9)]
    return {"per_step_s": statistics.median(ts) / steps}


def targets(configs: dict) -> dict:
    """The targets, evaluated on this run's medians: ``{target: {"value", "goal", "met"}}``."""
    out = {}

    def add(name, value, goal, met):
        out[name] = {"value": value, "goal": goal, "met": bool(met)}

    if "small" in configs:
        r = configs["small"]["results"]
        peers = [r[p]["median_s"] for p in PEERS if p in r]
        fastest_peer = min(peers) / r[_common.REFERENCE]["median_s"]
        add("small: fastest peer / fnet manual epoch", fastest_peer, ">= 2", fastest_peer >= 2)
        add("small: fnet manual epoch / floor", r[_common.REFERENCE]["over_floor"], "<= 2.5", r[_common.REFERENCE]["over_floor"] <= 2.5)
    if "large" in configs:
        v = configs["large"]["results"][_common.REFERENCE]["over_floor"]
        add("large: fnet manual epoch / floor", v, "<= 1.15", v <= 1.15)
    for cname, c in configs.items():
        r = c["results"]
        for kind in ("step", "epoch"):
            ratio = r[f"fnet manual {kind}"]["median_s"] / r[f"fnet autodiff {kind}"]["median_s"]
            add(f"{cname}: manual / autodiff {kind} time", ratio, "<= 1.05", ratio <= 1.05)
            mm, ma = r[f"fnet manual {kind}"]["peak_memory"], r[f"fnet autodiff {kind}"]["peak_memory"]
            if mm and ma:
                add(f"{cname}: manual / autodiff {kind} peak memory", mm["peak_bytes"] / ma["peak_bytes"], "<= 1",
                    mm["peak_bytes"] <= ma["peak_bytes"])
    return out


def format_table(record: dict) -> str:
    """The Markdown tables of a record: one per configuration, then the targets."""
    lines = [
        f"# train_step on {record['machine']['cpu_model']} ({record['machine']['cores']} cores, {record['device']})",
        "",
        f"{record['date']}; peak float32 matmul at start {record['peak_matmul_at_start']['flops_per_s'] / 1e9:.1f} "
        "GFLOP/s; "
        f"load average before/after {record['load_average_before']} / {record['load_average_after']}; "
        f"threads {record['threads']}; matmul precision {record['matmul_precision']}.",
        "Per-step medians; `x floor` = time / (matmul flops / peak rate); `x fnet` = time / fnet manual epoch's.",
    ]
    for cname, c in record["configs"].items():
        dims = c["dims"]
        lines += [
            "",
            f"## {cname}: {dims[0]}-{dims[1:-1]}-{dims[-1]}, batch {c['batch']}, {c['flops']['total'] / 1e6:.1f} "
            f"MFLOP/step, floor {1e3 * c['floor_s']:.3f} ms, {c['steps_per_rep']} steps x {c['reps']} reps",
            "",
            f"Square {c['matmul']['n']}^3 float32 matmul in the same rounds: median "
            f"{c['matmul']['median_flops_per_s'] / 1e9:.1f} GFLOP/s (sets the floor), best "
            f"{c['matmul']['best_flops_per_s'] / 1e9:.1f} GFLOP/s.",
            "",
            *_common.timing_rows(c),
        ]
        lines.append(f"\nmake_epoch's shuffle + gather alone: {1e3 * c['gather']['per_step_s']:.4f} ms/step.")
    return "\n".join(lines + _common.targets_rows(record["targets"]))


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    parser = _common.step_parser(__doc__, CONFIGS, "small,medium,large", "networks")
    parser.add_argument("--matmul-precision", choices=tuple(TORCH_PRECISION), default=None,
                        help="precision of float32 matmuls (JAX's jax_default_matmul_precision, torch's "
                             "set_float32_matmul_precision); bfloat16 for the GPU's bf16 tensor cores")
    args, names = _common.parse_step_args(parser, argv, CONFIGS)
    threads = _common.set_threads(args.threads)
    if args.matmul_precision:
        import torch

        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
        torch.set_float32_matmul_precision(TORCH_PRECISION[args.matmul_precision])

    record = _common.record_header("train_step", args.device)
    record["threads"] = threads
    record["matmul_precision"] = args.matmul_precision or "default"
    record["peak_matmul_at_start"] = _common.peak_matmul_flops(sizes=(256,) if args.quick else (2048, 4096))
    specs = QUICK_CONFIGS if args.quick else CONFIGS
    configs = {}
    for cname in names:
        print(f"[train_step] {cname} ...", file=sys.stderr, flush=True)
        configs[cname] = bench_config(
            cname, specs[cname], reps=args.reps, device=args.device,
            torch_compile=not (args.quick or args.no_torch_compile), matmul_n=256 if args.quick else 2048,
        )
    record.update(quick=args.quick, learning_rate=LR, configs=configs, targets=targets(configs),
                  load_average_after=_common.load_average())
    return _common.publish(record, format_table(record), args.out, "train_step", args.quick)


if __name__ == "__main__":
    main()
