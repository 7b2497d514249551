"""The harness shared by the training benchmarks (train_step, conv_step, compose_step, mnist_e2e,
char_lm_sizes, nanogpt_recipe, ...).

Conventions: every implementation is warmed up (compiled, buffers touched) before timing; the
timed repetitions of all implementations are INTERLEAVED (rep 1 of each, then rep 2 of each, ...)
so that a change in machine load hits all of them alike; the reported time is the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import subprocess
import time
from typing import Callable, Collection

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._machine import machine_info, machine_slug
from fnet import files

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
#: The implementation every other one's time is divided by (``over_fnet_manual_epoch``).
REFERENCE = "fnet manual epoch"


def select_device(device: str) -> None:
    """Make ``device`` ("cpu" or "gpu") JAX's default, or raise ``SystemExit`` with a clear
    message when no such device exists (``--device gpu`` on a machine without a GPU)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"select_device: device must be 'cpu' or 'gpu', got {device!r}")
    try:
        devices = jax.devices(device)
    except RuntimeError as e:
        raise SystemExit(f"--device {device}: JAX finds no {device.upper()} here ({e})") from None
    jax.config.update("jax_default_device", devices[0])


def torch_device(device: str) -> str:
    """PyTorch's name for ``device``; raises ``SystemExit`` when PyTorch has no CUDA for "gpu"."""
    import torch

    if device == "gpu":
        if not torch.cuda.is_available():
            raise SystemExit("--device gpu: PyTorch finds no CUDA device here")
        return "cuda"
    return "cpu"


def set_threads(n: int | None) -> dict:
    """Set PyTorch's intra-op thread count and NumPy's BLAS threads (through threadpoolctl, when
    installed) to ``n``; keep their defaults when None. Returns the counts in effect.

    Why it is an option: PyTorch's OpenMP and OpenBLAS's threads spin at barriers, so on a 2-core
    machine that other processes also load, their default of one thread per core can be tens of
    times slower than one thread for small layers (the JSON records which counts ran). JAX's CPU
    thread pool cannot be resized at run time."""
    import torch

    if n is not None and n < 1:
        raise ValueError(f"set_threads: n must be a positive int, got {n}")
    if n is not None:
        torch.set_num_threads(n)
    counts = {"torch": torch.get_num_threads(), "numpy_blas": None}
    try:
        import threadpoolctl
    except ImportError:
        return counts
    if n is not None:
        threadpoolctl.threadpool_limits(n, user_api="blas")
    counts["numpy_blas"] = max((i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"),
                               default=None)
    return counts


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``uptime``), recorded because the machine is shared."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def square_matmul(n: int, dtype=jnp.float32) -> Callable[[], float]:
    """A compiled, warmed-up square float32 ``(n, n) @ (n, n)`` (``2 n^3`` flops); returns a function
    that runs it once and returns its seconds, to be interleaved with the implementations' reps."""
    matmul = jax.jit(jnp.matmul)
    a = jax.random.normal(jax.random.PRNGKey(n), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(n + 1), (n, n), dtype)
    matmul(a, b).block_until_ready()  # compile
    return lambda: timed(lambda: matmul(a, b).block_until_ready())[0]


def peak_matmul_flops(sizes=(2048, 4096), repeats: int = 5, dtype=jnp.float32) -> dict:
    """The machine's peak matmul rate: best over ``sizes`` of the fastest of ``repeats`` runs of a
    jit-compiled square ``(n, n) @ (n, n)`` in ``dtype`` (``2 n^3`` flops each).

    Returns ``{"flops_per_s": best rate, "per_size": {n: rate}}``.
    """
    per_size = {}
    for n in sizes:
        run = square_matmul(n, dtype)
        per_size[str(n)] = 2 * n**3 / min(run() for _ in range(repeats))
    return {"flops_per_s": max(per_size.values()), "per_size": per_size}


def timed(fn: Callable):
    """``(seconds, result)`` of one call of ``fn()`` (which must block until its work is done)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(reps_of: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run ``reps`` rounds; in each round call every ``reps_of[name]()`` once (each returns the
    seconds its repetition took). Returns ``{name: [seconds of each repetition]}``."""
    times = {name: [] for name in reps_of}
    for _ in range(reps):
        for name, rep in reps_of.items():
            times[name].append(rep())
    return times


def summarize(times: list[float], per: int = 1) -> dict:
    """Median, min and max of repetition times divided by ``per`` (e.g. steps per repetition)."""
    return {
        "median_s": statistics.median(times) / per,
        "min_s": min(times) / per,
        "max_s": max(times) / per,
        "reps": len(times),
    }


def compiled_memory(compiled) -> dict | None:
    """Bytes from XLA's ``memory_analysis()`` of a compiled JAX function: arguments, outputs,
    temporaries, aliased (donated) bytes and ``peak = arguments + outputs + temporaries - aliased``
    (every buffer that is live during the call). None where the backend gives no analysis."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends/plugins do not implement it
        return None
    if m is None:
        return None
    out = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
    }
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    return out


def trained(losses: list[float], per_rep: int) -> bool:
    """True when the loss fell: all recorded per-step losses are finite and the mean over the last
    repetition (its ``per_rep`` steps, the same minibatches as the first's) is below the first's."""
    arr = np.asarray(losses, dtype=np.float64)
    if arr.size < 2 * per_rep or not np.all(np.isfinite(arr)):
        return False
    return bool(arr[-per_rep:].mean() < arr[:per_rep].mean())


@dataclasses.dataclass
class Impl:
    """One implementation under test: ``rep()`` runs one timed repetition (``per_rep_steps``
    steps) and returns its seconds, appending the per-step losses to ``losses``."""

    name: str
    rep: Callable[[], float]
    per_rep_steps: int
    losses: list = dataclasses.field(default_factory=list)
    compile_s: float | None = None
    first_call_s: float | None = None
    memory: dict | None = None


def first_call(impl: Impl) -> Impl:
    """Run ``impl``'s first repetition (it touches every buffer, and compiles for torch.compile),
    time it, and keep it out of the statistics: the warm-up. JAX's implementations are compiled
    ahead of time (``lower(...).compile()``, timed separately) and called as compiled."""
    impl.first_call_s = impl.rep()
    return impl


def flax_loop(state, batches: list) -> Impl:
    """flax+optax as an :class:`Impl`: :func:`flax_train_step` compiled ahead of time for the
    ``TrainState`` ``state`` (timed, with its memory analysis), one repetition a Python loop of
    compiled steps over ``batches`` (a list of ``(x, y)`` device arrays), as flax's examples train."""
    compile_s, step = timed(lambda: jax.jit(flax_train_step).lower(state, *batches[0]).compile())
    impl = Impl("flax+optax", None, len(batches), compile_s=compile_s, memory=compiled_memory(step))
    current = [state]

    def rep():
        s, out = current[0], []
        t0 = time.perf_counter()
        for x, y in batches:
            s, loss = step(s, x, y)
            out.append(loss)
        jax.block_until_ready(s)
        dt = time.perf_counter() - t0
        current[0] = s
        impl.losses.extend(np.asarray(jnp.stack(out)).tolist())
        return dt

    impl.rep = rep
    return first_call(impl)


def python_loop(name: str, step: Callable, batches: list, sync: Callable[[], None] = lambda: None) -> Impl:
    """An eager implementation (PyTorch, NumPy) as an :class:`Impl`: one repetition calls
    ``step(x, y) -> loss`` on every batch in a Python loop, then ``sync()`` (e.g. waits for a
    GPU); the losses are read after the clock stops."""
    impl = Impl(name, None, len(batches))

    def rep():
        t0 = time.perf_counter()
        out = [step(x, y) for x, y in batches]
        sync()
        dt = time.perf_counter() - t0
        impl.losses.extend(float(loss) for loss in out)
        return dt

    impl.rep = rep
    return first_call(impl)


def fnet_epoch(name: str, net, opt, params0, x, y, batch: int, grad: str) -> Impl:
    """fnet's scanned epoch (:func:`fnet.train.make_epoch`: every step of an epoch in one compiled
    call) as an :class:`Impl`; its per-step time is the call's time / steps."""
    from fnet import train

    carry = [jax.tree_util.tree_map(jnp.copy, params0), net.init(jax.random.PRNGKey(0)).state, None]
    carry[2] = opt.init(carry[0])
    key = jax.random.PRNGKey(1)
    compile_s, epoch = timed(
        lambda: train.make_epoch(net, opt, batch_size=batch, grad=grad).lower(*carry, x, y, key).compile())
    impl = Impl(name, None, x.shape[0] // batch, compile_s=compile_s, memory=compiled_memory(epoch))
    count = [0]

    def rep():
        count[0] += 1
        t0 = time.perf_counter()
        p, s, o, step_losses = epoch(*carry, x, y, jax.random.fold_in(key, count[0]))
        jax.block_until_ready((p, o, step_losses))
        dt = time.perf_counter() - t0
        carry[:] = [p, s, o]
        impl.losses.extend(np.asarray(step_losses).tolist())
        return dt

    impl.rep = rep
    return first_call(impl)


def flax_mlp(features):
    """A flax.linen MLP, the way flax's examples write one: ``Dense(f)`` layers of ``features``
    (the last is the output layer) with ReLU between them, flax's default initializers."""
    import flax.linen as nn

    class MLP(nn.Module):
        features: tuple

        @nn.compact
        def __call__(self, x):
            for f in self.features[:-1]:
                x = nn.relu(nn.Dense(f)(x))
            return nn.Dense(self.features[-1])(x)

    return MLP(tuple(features))


def flax_train_step(state, x, y):
    """One step the way flax's examples write it: softmax cross-entropy of a ``TrainState``'s
    model, ``jax.value_and_grad``, ``state.apply_gradients``; returns ``(state, loss)``."""
    import optax

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def torch_linear(w: np.ndarray, b: np.ndarray):
    """A ``torch.nn.Linear`` holding fnet's dense weights ``W: (in, out)`` and ``b: (out,)``
    (PyTorch stores the weight transposed, ``(out, in)``)."""
    import torch
    from torch import nn

    lin = nn.Linear(*w.shape)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.asarray(w).T.copy()))
        lin.bias.copy_(torch.from_numpy(np.array(b)))
    return lin


def torch_loop(name: str, model, batches_np: list, device: str, compile_model: bool, lr: float) -> Impl:
    """A PyTorch ``model`` trained as PyTorch's examples do (``torch.optim.Adam(lr)``,
    ``nn.CrossEntropyLoss``, eager or ``torch.compile``) over ``batches_np`` (a list of NumPy
    ``(x, y)``) as a :func:`python_loop`."""
    import torch
    from torch import nn

    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    forward = torch.compile(model) if compile_model else model
    batches = [(torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)) for x, y in batches_np]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return python_loop(name, step, batches, torch.cuda.synchronize if device == "cuda" else (lambda: None))


def numpy_adam(params: list, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Callable:
    """The curriculum's Adam on a list of NumPy arrays, updated in place: returns ``update(grads)``
    (grads in the same order), which does ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)`` with the bias corrections of step ``t``."""
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]

    def update(grads: list) -> None:
        t[0] += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            p -= lr * (m[i] / (1 - b1 ** t[0])) / (np.sqrt(v[i] / (1 - b2 ** t[0])) + eps)

    return update


def peers(make_torch: Callable, make_numpy: Callable | None, numpy_name: str | None, *, device: str,
          torch_compile: bool, numpy_skip: str | None = None) -> tuple[list, dict]:
    """The peer implementations that run outside JAX: ``make_torch(name, compile_model=...)`` for
    "torch eager" and (when ``torch_compile``) "torch compile", ``make_numpy()`` on the CPU only
    and unless ``numpy_skip`` gives a reason not to run it (e.g. too slow at this size); no NumPy
    row at all where ``make_numpy`` is None (a benchmark without a NumPy implementation).
    Returns ``(impls, not_run)``, ``not_run`` saying why each missing one did not run."""
    impls, not_run = [make_torch("torch eager", compile_model=False)], {}
    if torch_compile:
        try:
            impls.append(make_torch("torch compile", compile_model=True))
        except Exception as e:  # e.g. no C++ compiler for inductor: record why and go on
            not_run["torch compile"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    else:
        not_run["torch compile"] = "skipped (--no-torch-compile or quick mode)"
    if make_numpy is None:
        return impls, not_run
    if device != "cpu":
        not_run[numpy_name] = "CPU only"
    elif numpy_skip:
        not_run[numpy_name] = numpy_skip
    else:
        impls.append(make_numpy())
    return impls, not_run


def time_against_floor(impls: list, *, reps: int, matmul_n: int, flops: dict) -> dict:
    """Time ``impls`` in ``reps`` interleaved rounds together with a square ``matmul_n`` matmul,
    which sets the floor (``flops["total"]`` at its median rate) under the same machine load.

    Returns ``{"matmul": its rates, "floor_s": floor per step, "results": {name: per-step
    medians, x floor, compile seconds, first and last repetition's mean loss, trained, peak
    memory, x REFERENCE}}``."""
    matmul = square_matmul(matmul_n)
    times = interleaved({"matmul": lambda: min(matmul() for _ in range(3)), **{i.name: i.rep for i in impls}}, reps)
    rates = [2 * matmul_n**3 / t for t in times["matmul"]]
    peak = {"n": matmul_n, "median_flops_per_s": statistics.median(rates), "best_flops_per_s": max(rates)}
    floor = flops["total"] / peak["median_flops_per_s"]
    results = {}
    for impl in impls:
        s = summarize(times[impl.name], impl.per_rep_steps)
        # torch.compile compiles on its first call: first repetition minus a typical one.
        first = impl.first_call_s - s["median_s"] * impl.per_rep_steps
        results[impl.name] = {
            **s,
            "over_floor": s["median_s"] / floor,
            "compile_s": impl.compile_s if impl.compile_s is not None else max(first, 0.0),
            "first_rep_mean_loss": float(np.mean(impl.losses[: impl.per_rep_steps])),
            "last_rep_mean_loss": float(np.mean(impl.losses[-impl.per_rep_steps :])),
            "trained": trained(impl.losses, impl.per_rep_steps),
            "peak_memory": impl.memory,
        }
    ref = results[REFERENCE]["median_s"]
    for r in results.values():
        r["over_fnet_manual_epoch"] = r["median_s"] / ref
    return {"matmul": peak, "floor_s": floor, "results": results}


def timing_rows(config: dict) -> list[str]:
    """The Markdown table of a :func:`time_against_floor` configuration record (``results`` and
    ``not_run``): one row per implementation, then one per implementation that did not run."""
    lines = ["| implementation | ms/step | x floor | x fnet | compile s | peak MiB (XLA) | mean loss first -> last rep "
             "| trained |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for name, r in config["results"].items():
        mem = f"{r['peak_memory']['peak_bytes'] / 2**20:.2f}" if r["peak_memory"] else "-"
        lines.append(f"| {name} | {1e3 * r['median_s']:.3f} | {r['over_floor']:.2f} | {r['over_fnet_manual_epoch']:.2f} | "
                     f"{r['compile_s']:.2f} | {mem} | {r['first_rep_mean_loss']:.3f} -> {r['last_rep_mean_loss']:.3f} | "
                     f"{'yes' if r['trained'] else 'NO'} |")
    lines += [f"| {name} | not run: {why} | | | | | | |" for name, why in config["not_run"].items()]
    return lines


def targets_rows(targets: dict) -> list[str]:
    """A ``## Targets`` Markdown section: ``{name: {"value", "goal", "met"}}``, one row each."""
    lines = ["", "## Targets", "", "| target | value | goal | met |", "|---|---:|---|---|"]
    return lines + [f"| {name} | {t['value']:.3f} | {t['goal']} | {'yes' if t['met'] else 'NO'} |"
                    for name, t in targets.items()]


def step_parser(doc: str, configs: Collection[str], default: str, what: str) -> argparse.ArgumentParser:
    """The options every step benchmark takes (``--quick``, ``--device``, ``--configs``, ``--reps``,
    ``--no-torch-compile``, ``--threads``, ``--out``); a benchmark may add its own before parsing
    with :func:`parse_step_args`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"tiny {what}, a few steps (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--configs", default=default, help=f"comma-separated subset of {','.join(configs)}")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per implementation")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (slow to compile)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of PyTorch and NumPy's BLAS")
    parser.add_argument("--out", default=RESULTS_DIR)
    return parser


def parse_step_args(parser: argparse.ArgumentParser, argv, configs: Collection[str]):
    """``(args, config names)``: ``argv`` parsed, every ``--configs`` name checked (one line and
    exit status 2 otherwise), the device selected."""
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not names or any(c not in configs for c in names):
        parser.error(f"--configs: choose from {','.join(configs)}, got {args.configs!r}")
    select_device(args.device)
    return args, names


def run_in_process(run_dir: str, command: list[str]) -> None:
    """Run ``command`` (an argv list that trains into the run folder ``run_dir``, e.g. ``fnet
    train ... --out RUN_DIR``) in a process of its own, so that its wall time is the run's alone,
    unless the run in ``run_dir`` has finished already (it has results.json: reused). An
    interrupted ``fnet train`` run (a checkpoint, no results) is continued with ``--resume``."""
    if os.path.exists(os.path.join(run_dir, "results.json")):
        print(f"{run_dir}: finished before, reused")
        return
    resume = ["--resume"] if os.path.exists(os.path.join(run_dir, "checkpoint.safetensors")) else []
    print(" ".join([os.path.basename(command[0]), *command[1:], *resume]), flush=True)
    subprocess.run([*command, *resume], check=True)


def read_lm_run(run_dir: str) -> dict:
    """A finished language-model run's record from its folder (``fnet train``'s files: config.json,
    history.json, results.json): the full validation loss of its best parameters, its wall time,
    its ms/step (the median over the evaluation intervals but the first, which compiles, of
    ``context * batch_size / chars_per_s``) and its curve (step, time, train loss, estimate)."""
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "history.json")) as f:
        history = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    rates = sorted(history["chars_per_s"][1:] or history["chars_per_s"])  # the first chunk compiles
    context, batch = config["args"]["context"], config["args"]["batch_size"]
    return {"net": config["net"], "steps": history["step"][-1], "val_loss": results["val_loss"],
            "val_bits_per_char": results["val_bits_per_char"], "best_step": results["best_step"],
            "wall_time_s": results["wall_time_s"], "ms_per_step": 1e3 * context * batch / rates[len(rates) // 2],
            "curve": {k: history[k] for k in ("step", "time", "train_loss", "val_loss")}}


def record_header(name: str, device: str) -> dict:
    """The fields every results file starts with: benchmark name, date, machine, load."""
    return {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "machine": machine_info(),
        "load_average_before": load_average(),
    }


def table_heading(record: dict, name: str) -> list[str]:
    """The first lines of a step benchmark's Markdown: what ran where (CPU, cores, device), when,
    under what load, with how many threads (the fields of :func:`record_header` and ``threads``)."""
    machine = record["machine"]
    return [f"# {name} on {machine['cpu_model']} ({machine['cores']} cores, {record['device']})", "",
            f"{record['date']}; load average before/after {record['load_average_before']} / "
            f"{record['load_average_after']}; threads {record['threads']}."]


def write_results(record: dict, markdown: str, out_dir: str, name: str, quick: bool,
                  machine: str | None = None) -> tuple[str, str]:
    """Write ``<name>-<machine>[-quick].json`` and ``.md`` under ``out_dir``; return both paths.
    ``machine`` defaults to this process's :func:`~benchmarks._machine.machine_slug` (given by a
    caller that must not start JAX's backend itself, e.g. :mod:`benchmarks.run_all`)."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}-{machine or machine_slug()}{'-quick' if quick else ''}")
    files.atomic_write(stem + ".json", json.dumps(record, indent=1, default=float))
    files.atomic_write(stem + ".md", markdown + "\n")
    return stem + ".json", stem + ".md"


def publish(record: dict, markdown: str, out_dir: str, name: str, quick: bool,
            machine: str | None = None) -> tuple[str, str]:
    """Print ``markdown``, :func:`write_results`, print where; return the JSON and Markdown paths."""
    print(markdown)
    paths = write_results(record, markdown, out_dir, name, quick, machine)
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths
