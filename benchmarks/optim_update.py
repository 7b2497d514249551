"""Time one optimizer update (update + apply_updates, jit-compiled, buffers donated), fnet vs optax.

    python -m benchmarks.optim_update [--quick] [--reps N] [--out DIR]

The parameters are a dict of 100 float32 leaves, 50 matrices (384, 512) and 50 vectors (512,),
9.86M values in all (``--quick``: 2 tiny leaves, a few reps, for the test suite). For every
optimizer both libraries run in this one process on the same parameters and gradients with the
same hyperparameters; warm-up (compilation) is excluded, the two libraries' reps are interleaved
so that drifts in machine load hit both alike, and the median is reported.

The memory-bandwidth bound of an update is ``arrays * bytes / bandwidth``: ``arrays`` counts the
buffers read plus written per value (SGD: read p, g, write p = 3; one-buffer optimizers 5; Adam
and AdamW 7), and ``bandwidth`` is measured with a donated ``x * 2`` over an array of the same
total size (read + write). The JSON goes to ``DIR/optim_update-<machine>.json`` (``-quick`` added
in quick mode), ``<machine>`` from :func:`benchmarks._machine.machine_slug`.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks._common import RESULTS_DIR, publish
from benchmarks._machine import machine_info
from fnet import optim

LR = 1e-3
#: name -> (fnet constructor, optax constructor taking the optax module, arrays read+written per value)
OPTIMIZERS = {
    "sgd": (lambda: optim.sgd(LR), lambda ox: ox.sgd(LR), 3),
    "momentum": (lambda: optim.momentum(LR, 0.9), lambda ox: ox.sgd(LR, momentum=0.9), 5),
    "nesterov": (lambda: optim.nesterov(LR, 0.9), lambda ox: ox.sgd(LR, momentum=0.9, nesterov=True), 5),
    "adagrad": (lambda: optim.adagrad(LR, eps=1e-7), lambda ox: ox.adagrad(LR, initial_accumulator_value=0.0, eps=1e-7), 5),
    "rmsprop": (lambda: optim.rmsprop(LR, 0.99, 1e-8), lambda ox: ox.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False), 5),
    "adam": (lambda: optim.adam(LR), lambda ox: ox.adam(LR), 7),
    "adamw": (lambda: optim.adamw(LR, weight_decay=1e-4), lambda ox: ox.adamw(LR, weight_decay=1e-4), 7),
}


def make_tree(quick: bool, seed: int = 0):
    """(params, grads): dicts of float32 ``W{i}`` matrices and ``b{i}`` vectors (100 leaves; 2 tiny
    ones in quick mode, where compilation would otherwise dominate)."""
    pairs, rows, cols = (1, 8, 16) if quick else (50, 384, 512)
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 4 * pairs))
    params, grads = {}, {}
    for i in range(pairs):
        for name, shape in ((f"W{i}", (rows, cols)), (f"b{i}", (cols,))):
            params[name] = jax.random.normal(next(keys), shape, jnp.float32)
            grads[name] = jax.random.normal(next(keys), shape, jnp.float32)
    return params, grads


def _step_fn(opt, apply_updates):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def _copy_bandwidth(n: int, reps: int) -> float:
    """Bytes per second of a donated elementwise read + write of ``n`` float32 values."""
    scale = jax.jit(lambda x: x * 2.0, donate_argnums=0)
    x = scale(jnp.ones(n, jnp.float32)).block_until_ready()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x = scale(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * 4 * n / statistics.median(times)


def bench(quick: bool, reps: int) -> dict:
    try:
        import optax
    except ImportError:
        optax = None
    params, grads = make_tree(quick)
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    bandwidth = _copy_bandwidth(n, reps)
    libs = {"fnet": optim.apply_updates}
    if optax is not None:
        libs["optax"] = optax.apply_updates
    results = {}
    for name, (make_fnet, make_optax, arrays) in OPTIMIZERS.items():
        runs = {}
        for lib, apply_updates in libs.items():
            opt = make_fnet() if lib == "fnet" else make_optax(optax)
            p = jax.tree_util.tree_map(jnp.copy, params)  # donated below, so each run gets its own copy
            runs[lib] = {"step": _step_fn(opt, apply_updates), "carry": (p, opt.init(p)), "times": []}
            for _ in range(2):  # warm-up: compilation and first-touch of the buffers
                runs[lib]["carry"] = jax.block_until_ready(runs[lib]["step"](*runs[lib]["carry"], grads))
        for _ in range(reps):
            for r in runs.values():
                t0 = time.perf_counter()
                r["carry"] = jax.block_until_ready(r["step"](*r["carry"], grads))
                r["times"].append(time.perf_counter() - t0)
        bound = arrays * 4 * n / bandwidth
        row = {"arrays_read_written": arrays, "bandwidth_bound_s": bound}
        for lib, r in runs.items():
            row[f"{lib}_median_s"] = statistics.median(r["times"])
            row[f"{lib}_over_bound"] = row[f"{lib}_median_s"] / bound
        if "optax" in runs:
            row["fnet_over_optax"] = row["fnet_median_s"] / row["optax_median_s"]
        results[name] = row
    return {
        "benchmark": "optim_update",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "optax_version": getattr(optax, "__version__", None),
        "config": {"quick": quick, "reps": reps, "leaves": len(params), "params": n, "dtype": "float32",
                   "learning_rate": LR},
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "results": results,
    }


def format_table(record: dict) -> str:
    cfg = record["config"]
    lines = [
        f"optimizer update on {cfg['leaves']} leaves, {cfg['params']:,} float32 params, median of {cfg['reps']} "
        f"(copy bandwidth {record['copy_bandwidth_GBps']:.1f} GB/s)",
        f"{'optimizer':<10} {'fnet ms':>9} {'optax ms':>9} {'fnet/optax':>11} {'bound ms':>9} {'fnet/bound':>11}",
    ]
    for name, r in record["results"].items():
        optax_ms = f"{1e3 * r['optax_median_s']:9.3f}" if "optax_median_s" in r else f"{'-':>9}"
        ratio = f"{r['fnet_over_optax']:11.3f}" if "fnet_over_optax" in r else f"{'-':>11}"
        lines.append(
            f"{name:<10} {1e3 * r['fnet_median_s']:9.3f} {optax_ms} {ratio} "
            f"{1e3 * r['bandwidth_bound_s']:9.3f} {r['fnet_over_bound']:11.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny tree and a few reps (a smoke test)")
    parser.add_argument("--reps", type=int, default=None, help="timed reps per optimizer (default 50, quick 3)")
    parser.add_argument("--out", default=RESULTS_DIR)
    args = parser.parse_args(argv)
    record = bench(args.quick, args.reps or (3 if args.quick else 50))
    return publish(record, format_table(record), args.out, "optim_update", args.quick)[0]


if __name__ == "__main__":
    main()
