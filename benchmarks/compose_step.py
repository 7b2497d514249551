"""A composed network's training step with hand-written gradients against autodiff: time and peak
memory of one scanned epoch (fnet.train.make_epoch) of a residual MLP built from fnet's modules,
``grad="manual"`` (the backward chain the combinators derive) against ``grad="autodiff"``
(``jax.grad`` of the same forward), in one process, interleaved.

    python -m benchmarks.compose_step [--quick] [--device cpu|gpu] [--reps N] [--out DIR]

The network: dense(W) - relu - R x residual(dense(W) - batchnorm - relu - dense(W)) - relu -
dropout(0.1) - dense(10), on a synthetic 10-class problem of 784 features, Adam lr 1e-3, float32.
Peak memory: XLA's ``memory_analysis()`` of each compiled epoch. Results go to
``DIR/compose_step-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from benchmarks import _common
from benchmarks.train_step import make_data
from fnet import combinators, modules, nets, optim

LR = 1e-3
#: name -> (width, residual blocks, batch, steps per repetition, reps)
CONFIGS = {"residual": (256, 3, 128, 40, 11)}
QUICK_CONFIGS = {"residual": (16, 2, 8, 4, 2)}


def residual_mlp(width: int, blocks: int) -> nets.Net:
    """The benchmark's network, as a composition."""
    m = modules
    body = [combinators.residual(combinators.serial(m.dense(width), m.batchnorm(), m.relu(), m.dense(width)))
            for _ in range(blocks)]
    module = combinators.serial(m.dense(width), m.relu(), *body, m.relu(), m.dropout(0.1), m.dense(10))
    return nets.network(module, (784,), name=f"residual MLP ({blocks} blocks of {width})")


def bench_config(spec, *, reps) -> dict:
    width, blocks, batch, steps, default_reps = spec
    net = residual_mlp(width, blocks)
    params0, _ = net.init(jax.random.PRNGKey(0))
    x, y = make_data((784, width, 10), batch, steps)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    impls = [_common.fnet_epoch(f"fnet {grad} epoch", net, optim.adam(LR), params0, xd, yd, batch, grad)
             for grad in ("manual", "autodiff")]
    times = _common.interleaved({impl.name: impl.rep for impl in impls}, reps or default_reps)
    results = {impl.name: {**_common.summarize(times[impl.name], impl.per_rep_steps), "compile_s": impl.compile_s,
                           "peak_memory": impl.memory, "trained": _common.trained(impl.losses, impl.per_rep_steps)}
               for impl in impls}
    manual, auto = results["fnet manual epoch"], results["fnet autodiff epoch"]
    ratios = {"time": manual["median_s"] / auto["median_s"]}
    if manual["peak_memory"] and auto["peak_memory"]:
        ratios["peak_memory"] = manual["peak_memory"]["peak_bytes"] / auto["peak_memory"]["peak_bytes"]
    return {"network": net.name, "params": nets.num_params(net), "batch": batch, "steps_per_rep": steps,
            "results": results, "manual_over_autodiff": ratios}


def format_table(record: dict) -> str:
    lines = [f"# compose_step on {record['machine']['cpu_model']} ({record['machine']['cores']} cores, {record['device']})",
             "", f"{record['date']}; load average before/after {record['load_average_before']} / "
             f"{record['load_average_after']}. Per-step medians of interleaved repetitions."]
    for c in record["configs"].values():
        lines += ["", f"## {c['network']}, {c['params']:,} params, batch {c['batch']}, {c['steps_per_rep']} steps per rep",
                  "", "| implementation | ms/step | compile s | peak MiB (XLA) | trained |", "|---|---:|---:|---:|---|"]
        for name, r in c["results"].items():
            mem = f"{r['peak_memory']['peak_bytes'] / 2**20:.2f}" if r["peak_memory"] else "-"
            lines.append(f"| {name} | {1e3 * r['median_s']:.3f} | {r['compile_s']:.2f} | {mem} | "
                         f"{'yes' if r['trained'] else 'NO'} |")
        ratios = ", ".join(f"{k} {v:.3f}" for k, v in c["manual_over_autodiff"].items())
        lines.append(f"\nmanual / autodiff: {ratios} (goal: <= 1.0 for both)")
    return "\n".join(lines)


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny network, a few steps (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    _common.select_device(args.device)
    record = _common.record_header("compose_step", args.device)
    specs = QUICK_CONFIGS if args.quick else CONFIGS
    configs = {}
    for name, spec in specs.items():
        print(f"[compose_step] {name} ...", file=sys.stderr, flush=True)
        configs[name] = bench_config(spec, reps=args.reps)
    record.update(quick=args.quick, learning_rate=LR, configs=configs, load_average_after=_common.load_average())
    return _common.publish(record, format_table(record), args.out, "compose_step", args.quick)


if __name__ == "__main__":
    main()
