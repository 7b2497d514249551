"""XLA:CPU's dot paths for the small curriculum network, each setting in fresh processes.

    python -m benchmarks.xla_cpu_options [--quick] [--rounds N] [--settings NAME,...] [--reps N] [--out DIR]

The small configuration of :mod:`benchmarks.train_step` (784-[100]*4-10 ReLU, batch 128, Adam,
float32: fnet's jitted step and scanned epoch, manual and autodiff, flax+optax, torch eager,
NumPy) spends most of its step in dots far below the machine's matmul rate. XLA:CPU can hand
dots (and fusions around them) to libraries instead of its own emitted loops and Eigen; which
ones a jaxlib offers is in its ``XLA_FLAGS=--help``. Each setting below is an ``XLA_FLAGS``
string (it replaces the variable); a round runs ``python -m benchmarks.train_step --configs
small`` once per setting, each in its own fresh process (flags are read once per process), the
settings' order rotated from round to round so that a slow stretch of a shared machine does not
land on one setting. Reported: per implementation, the median over rounds of its per-step
median, and its ratio to the same implementation under the default setting (below 1: faster).
torch and NumPy do not use XLA: they show how much the machine's speed moved between processes.
Each setting's losses over the first repetition (the first 50 steps from the same weights) are
compared with the default's: a setting must compute the same training, to float32 rounding (later
steps drift apart by percents, as rounding differences grow over hundreds of Adam steps). A
setting XLA rejects is recorded with its error.

Results go to ``DIR/xla_cpu_options-<machine>.json`` and ``.md`` (``-quick``: two settings, one
round, train_step's quick mode; a smoke test for the suite).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from benchmarks import _common

#: name -> XLA_FLAGS (jaxlib 0.10.2). By default XLA:CPU hands single dots and reductions to
#: YNNPACK (its fusion types "individual_dot" and "reduce"); the others take them back (XLA's own
#: dot kernels, Eigen), give it the elementwise ops too, or give the dots to oneDNN. The XNNPACK
#: options (xla_cpu_experimental_xnn_fusion_type=dot, the XNN graph fusion) leave this program
#: unchanged in this jaxlib, with or without YNNPACK (checked with :func:`library_fusions`), so
#: they are not timed. The YNN flag ignores names it does not know (its ``bogus`` takes every fusion
#: away), which is why each setting's fusion counts are recorded next to its times.
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot,-reduce"
SETTINGS = {
    "default": "",
    "no ynnpack": NO_YNN,
    "ynnpack + elementwise": "--xla_cpu_experimental_ynn_fusion_type=+eltwise",
    "onednn dots": f"{NO_YNN} --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
    "no ynnpack, eigen 1 thread": f"{NO_YNN} --xla_cpu_multi_thread_eigen=false",
}
QUICK_SETTINGS = ("default", "no ynnpack")
IMPLS = ("fnet manual epoch", "fnet manual step", "fnet autodiff epoch", "fnet autodiff step", "flax+optax",
         "torch eager", "numpy")
#: The first 50 steps' mean loss: float32 sums of n terms in another order differ by up to
#: 2 * n * eps each (Higham's bound), n summed along a step's chain (784-[100]*4-10: forward
#: 784 + 4 * 100, backward 10 + 3 * 100, batch 128), over 50 steps: ~1.9e-2. A wrong computation
#: (a miscompiled dot) is off by far more.
LOSS_RTOL = 2 * ((784 + 4 * 100) + (10 + 3 * 100) + 128) * 1.1920929e-07 * 50


#: Compiles fnet's scanned epoch of the small network and prints its library fusions as JSON.
_FUSIONS_SCRIPT = """
import collections, json, re, jax, jax.numpy as jnp
from fnet import mlp, optim, train
net, opt = mlp(784, (100,) * 4, 10), optim.adam(1e-3)
params, state = net.init(jax.random.PRNGKey(0))
x, y = jnp.zeros((1280, 784), jnp.float32), jnp.zeros((1280,), jnp.int32)
lowered = train.make_epoch(net, opt, batch_size=128).lower(params, state, opt.init(params), x, y, jax.random.PRNGKey(0))
print(json.dumps(collections.Counter(re.findall(r'"kind":"__(\\w+)_fusion"', lowered.compile().as_text()))))
"""


def library_fusions(flags: str) -> dict:
    """``{"ynn": 13, ...}``: how many fusions of fnet's small scanned epoch XLA hands to each
    library under ``XLA_FLAGS=flags`` (a fresh process); ``{"error": ...}`` if it fails."""
    proc = subprocess.run([sys.executable, "-c", _FUSIONS_SCRIPT], env={**os.environ, "XLA_FLAGS": flags},
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": _error_line(proc)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _error_line(proc) -> str:
    # XLA logs a rejected flag as an E/F line (then prints its whole --help); else the last line.
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    logged = [line.split("] ", 1)[-1] for line in lines if re.match(r"[EF]\d{4} ", line)]
    return logged[0] if logged else lines[-1] if lines else f"exit status {proc.returncode}"


def run_setting(flags: str, *, quick: bool, reps: int | None, out_dir: str) -> dict:
    """One fresh ``benchmarks.train_step`` process with ``XLA_FLAGS=flags``: its small config's
    record, or ``{"error": ...}`` with the last line it printed when it failed."""
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--configs", "small", "--no-torch-compile", "--out", out_dir]
    cmd += ["--quick"] if quick else []
    cmd += ["--reps", str(reps)] if reps else []
    env = {**os.environ, "XLA_FLAGS": flags}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": _error_line(proc)}
    stem = f"train_step-{_common.machine_slug()}{'-quick' if quick else ''}.json"
    with open(os.path.join(out_dir, stem)) as f:
        return json.load(f)["configs"]["small"]


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per setting and implementation: per-step medians over the rounds, their median, the ratio
    to the default setting's, and whether its first repetition's loss agrees with the default's."""
    out = {}
    for name, records in runs.items():
        ok = [r for r in records if "error" not in r]
        if not ok:
            out[name] = {"error": records[0]["error"]}
            continue
        impls = {}
        for impl in IMPLS:
            per_step = [r["results"][impl]["median_s"] for r in ok if impl in r["results"]]
            if per_step:
                impls[impl] = {"per_round_s": per_step, "median_s": statistics.median(per_step),
                               "first_rep_mean_loss": ok[0]["results"][impl]["first_rep_mean_loss"]}
        out[name] = {"impls": impls, "floor_s": statistics.median(r["floor_s"] for r in ok)}
    base = out.get("default", {}).get("impls", {})
    for name, s in out.items():
        for impl, r in s.get("impls", {}).items():
            if impl in base:
                r["vs_default"] = r["median_s"] / base[impl]["median_s"]
                ref = base[impl]["first_rep_mean_loss"]
                r["same_training"] = abs(r["first_rep_mean_loss"] - ref) <= LOSS_RTOL * abs(ref)
    return out


def format_table(record: dict) -> str:
    """Markdown: one row per setting, per implementation its per-step time and ratio to default."""
    shown = [i for i in IMPLS if i != "fnet autodiff step"]
    lines = [f"XLA:CPU settings, {record['config']}, {record['rounds']} rounds of fresh processes "
             f"(per-step medians; in brackets: vs the default setting)", "",
             "| setting | XLA_FLAGS | library fusions | " + " | ".join(shown) + " |",
             "|---|---|---|" + "---:|" * len(shown)]
    for name, s in record["settings"].items():
        flags = f"`{SETTINGS[name]}`" if SETTINGS[name] else "(none)"
        fusions = ", ".join(f"{n} {lib}" for lib, n in s.get("library_fusions", {}).items() if lib != "error") or "none"
        if "error" in s:
            lines.append(f"| {name} | {flags} | - | rejected: {s['error'][:80]} |" + " |" * (len(shown) - 1))
            continue
        cells = []
        for impl in shown:
            r = s["impls"].get(impl)
            if r is None:
                cells.append("-")
                continue
            mark = "" if r.get("same_training", True) else " (loss differs)"
            cells.append(f"{r['median_s'] * 1e6:.0f} us ({r.get('vs_default', 1.0):.2f}x){mark}")
        lines.append(f"| {name} | {flags} | {fusions} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> tuple[str, str]:
    """Run every setting ``--rounds`` times and write the JSON and Markdown; returns their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two settings, one round, tiny network (a smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="fresh processes per setting (default 5; quick 1)")
    parser.add_argument("--settings", default=None, help=f"comma-separated subset of: {', '.join(SETTINGS)}")
    parser.add_argument("--reps", type=int, default=None, help="train_step's repetitions per process (its default)")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    names = QUICK_SETTINGS if args.quick else tuple(SETTINGS)
    if args.settings:
        names = tuple(n.strip() for n in args.settings.split(",") if n.strip())
        unknown = [n for n in names if n not in SETTINGS]
        if unknown or "default" not in names:
            parser.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)} (with default)")
    rounds = args.rounds or (1 if args.quick else 5)
    record = _common.record_header("xla_cpu_options", "cpu")
    runs = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as scratch:
        for k in range(rounds):
            order = names[k % len(names):] + names[: k % len(names)]
            for name in order:
                print(f"[xla_cpu_options] round {k + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
                runs[name].append(run_setting(SETTINGS[name], quick=args.quick, reps=args.reps, out_dir=scratch))
    settings = summarize(runs)
    for name in names:
        settings[name]["library_fusions"] = library_fusions(SETTINGS[name])
    record.update(quick=args.quick, rounds=rounds, config="784-[100]*4-10 batch 128" if not args.quick else "quick",
                  flags={n: SETTINGS[n] for n in names}, settings=settings,
                  load_average_after=_common.load_average())
    return _common.publish(record, format_table(record), args.out, "xla_cpu_options", args.quick)


if __name__ == "__main__":
    main()
