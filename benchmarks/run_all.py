"""Every benchmark that has a GPU path, one after another, each in a process of its own, in one
command that fits in 10 minutes on one GPU; then one summary of them all.

    python -m benchmarks.run_all --device gpu [--quick] [--out DIR] [--only a,b] [--budget-s S]

:data:`BENCHMARKS` (below) is the plan: for every benchmark, in the order they run, the arguments
it gets besides ``--device``, ``--out`` and ``--quick``, its rough wall time on one H100 (start-up,
JAX and torch.compile compilation included; no GPU run has measured them yet) and on 2 CPU cores
with ``--quick``, and why those arguments. On a GPU every step takes well under a millisecond to a
few, so repetitions are cheap and compilation dominates: the arguments keep the default
repetitions (``mnist_e2e``'s whole trainings excepted) and drop ``torch.compile`` (tens of seconds
of Inductor/Triton compilation per model on a cold cache) everywhere except in ``conv_step``,
whose goals are set against it.

Each benchmark runs as ``python -m benchmarks.NAME ...`` in its own process (its own process
group), so that a crash, an out-of-memory error or an XLA abort ends that benchmark only: its exit
status and last stderr line are recorded and the next one starts. Its stdout and stderr go to
``DIR/run_all-<machine>[-quick]-logs/NAME.out|.err``. A benchmark whose expected time (the
``--quick`` column with ``--quick``) would take the run past ``--budget-s`` (default 540 s, which
leaves a 10-minute limit a minute for start-up and the summary) is not started and is recorded as
skipped with the reason; one that outlives the budget is killed and recorded as timed out.

Benchmarks without a ``--device`` option (``optim_update``, ``vmap_trials``) run on JAX's default
device, the GPU when there is one; with ``--device cpu`` they get ``JAX_PLATFORMS=cpu``. Not run:
``startup`` (start-up of the ``fnet`` command on the CPU), ``char_lm_sizes``, ``nanogpt_recipe``
and ``train_datasets`` (trainings of minutes to an hour each), ``xla_cpu_options`` (XLA:CPU only)
and ``conv_layout`` (prints, writes nothing).

The device is checked first, in a short process of its own (this process never starts JAX's
backend, so it holds no GPU memory while the benchmarks run): ``--device gpu`` where JAX finds no
GPU, or an unknown ``--only`` name, gives one line and exit status 2, and nothing is written.
Where PyTorch has no CUDA (a CPU build), a warning says so and the run goes on: the benchmarks
with PyTorch peers fail with their own one-line message, the others run.

The summary, ``DIR/run_all-<machine>[-quick].json`` and ``.md``, lists per benchmark its
arguments, status (ok, failed, timeout, skipped), exit status, last stderr line, wall seconds, the
paths of its JSON and Markdown results (relative to DIR) and the goal rows (``targets``) of its
results JSON where it has them. Exit status 1 when a benchmark failed or timed out, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import NamedTuple

from benchmarks import _common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The default --budget-s: a 10-minute limit less a minute for start-up, the device check and the summary.
BUDGET_S = 540.0


class Bench(NamedTuple):
    """One benchmark's entry in the plan."""

    args: tuple[str, ...]  # its arguments besides --device, --out and --quick
    gpu_s: int  # rough wall seconds on one H100, start-up and compilation included
    quick_s: int  # rough wall seconds with --quick on 2 CPU cores
    why: str  # why these arguments
    takes_device: bool = True  # False: it runs on JAX's default device (no --device option)


#: The plan, in the order the benchmarks run (the most wanted first, so that a budget that runs
#: out skips the least wanted).
BENCHMARKS = {
    # With conv_step's further networks, "--configs", "simple,two_conv,small_cnn,three_layer_convnet,
    # deep_convnet" (about 40 s more each, torch.compile included).
    "conv_step": Bench(("--configs", "simple,two_conv"), 150, 20,
                       "its goals are against PyTorch eager and torch.compile: keeps torch.compile"),
    "train_step": Bench(("--configs", "small,medium,large", "--no-torch-compile"), 60, 20,
                        "three MLPs; torch.compile would add ~30 s per config"),
    "conv_breakdown": Bench(("--configs", "simple,two_conv"), 60, 20,
                            "one compiled loop per piece and config, no peers"),
    "transformer_step": Bench(("--configs", "nano,large", "--no-torch-compile"), 70, 50,
                              "the large config is the GPU recipe's width and context"),
    "rnn_step": Bench(("--configs", "h128,h512", "--no-torch-compile"), 50, 30,
                      "PyTorch's LSTM is cuDNN's fused kernel, eager"),
    "compose_step": Bench((), 25, 8, "one residual MLP, manual against autodiff"),
    "mnist_e2e": Bench(("--repeats", "2"), 40, 12, "2 repeats of 10 MNIST epochs (needs MNIST under $FNET_DATA)"),
    "optim_update": Bench((), 25, 5, "every optimizer, fnet against optax", takes_device=False),
    "vmap_trials": Bench(("--fit-trials", "2"), 50, 20,
                         "100 vmapped trials; 2 fit() trials timed (each recompiles)", takes_device=False),
}

_WROTE = re.compile(r"^wrote (.+\.json) and (.+\.md)$", re.MULTILINE)


def probe(device: str) -> None:
    """(In the checking process of :func:`check_device`.) Select ``device`` for JAX, or exit with its one-line message;
    print the machine's slug and the summary's header fields (with ``torch_cuda``: whether PyTorch
    finds a CUDA device) as JSON."""
    import torch

    from benchmarks._machine import machine_slug

    _common.select_device(device)
    header = {**_common.record_header("run_all", device), "torch_cuda": torch.cuda.is_available()}
    print(json.dumps({"slug": machine_slug(), "header": header}))


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def check_device(device: str) -> dict:
    """The machine's slug and header fields (:func:`probe`, in a process of its own); raises
    ``SystemExit`` (one line, status 2) when ``device`` is not there."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from benchmarks.run_all import probe; probe(sys.argv[1])",
                           device], capture_output=True, text=True, env=_child_env(None), check=False)
    if proc.returncode != 0:
        print(f"run_all: {_last_line(proc.stderr) or f'--device {device}: the check exited {proc.returncode}'}",
              file=sys.stderr)
        raise SystemExit(2)
    machine = json.loads(_last_line(proc.stdout))
    if device == "gpu" and not machine["header"]["torch_cuda"]:
        print("run_all: PyTorch finds no CUDA device (a CPU build of torch?): the benchmarks with PyTorch "
              "peers will fail, the others run", file=sys.stderr)
    return machine


def _child_env(jax_platform: str | None) -> dict:
    """This environment, with the repository first on ``PYTHONPATH`` (the benchmarks import from it
    whatever the working folder) and ``JAX_PLATFORMS=jax_platform`` where given."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    if jax_platform:
        env["JAX_PLATFORMS"] = jax_platform
    return env


def command(name: str, bench: Bench, device: str, out: str, quick: bool) -> list[str]:
    """The argv that runs benchmark ``name`` with ``bench``'s arguments."""
    device_args = ("--device", device) if bench.takes_device else ()
    return [sys.executable, "-m", f"benchmarks.{name}", *bench.args, *device_args, "--out", out,
            *(("--quick",) if quick else ())]


def run_one(name: str, bench: Bench, *, device: str, out: str, quick: bool, logs: str, timeout_s: float) -> dict:
    """Run one benchmark in its own process group, its output to ``logs/NAME.out|.err``; kill the
    group after ``timeout_s``. Returns its summary entry (without ``targets``)."""
    argv = command(name, bench, device, out, quick)
    entry = {"args": list(bench.args), "why": bench.why}
    out_log, err_log = (os.path.join(logs, f"{name}.{ext}") for ext in ("out", "err"))
    t0 = time.perf_counter()
    with open(out_log, "w") as so, open(err_log, "w") as se:
        platform = "cpu" if device == "cpu" and not bench.takes_device else None
        proc = subprocess.Popen(argv, stdout=so, stderr=se, env=_child_env(platform), start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its group: torch.compile's workers too
            proc.wait()
            timed_out = True
    entry["wall_s"] = round(time.perf_counter() - t0, 2)
    entry["exit_status"] = proc.returncode
    with open(out_log) as f, open(err_log) as g:
        stdout, stderr = f.read(), g.read()
    wrote = _WROTE.findall(stdout)
    entry["results"] = dict(zip(("json", "md"), (os.path.relpath(p, out) for p in wrote[-1]))) if wrote else None
    entry["logs"] = {"out": os.path.relpath(out_log, out), "err": os.path.relpath(err_log, out)}
    entry["last_stderr_line"] = _last_line(stderr)
    if timed_out:
        entry["status"], entry["note"] = "timeout", f"killed after {timeout_s:.0f} s (the budget's rest)"
    elif proc.returncode != 0 or not entry["results"]:
        entry["status"], entry["note"] = "failed", entry["last_stderr_line"] or "no results written"
    else:
        entry["status"] = "ok"
    return entry


def targets_of(entry: dict, out: str) -> dict | None:
    """The goal rows of a finished benchmark's results JSON (None where it sets none)."""
    if not entry.get("results"):
        return None
    with open(os.path.join(out, entry["results"]["json"])) as f:
        return json.load(f).get("targets") or None


def run_plan(names: list[str], *, device: str, out: str, quick: bool, logs: str, budget_s: float, t0: float) -> dict:
    """Run ``names`` in turn within ``budget_s`` seconds from ``t0``, printing progress; returns
    ``{name: summary entry}``."""
    entries = {}
    for i, name in enumerate(names, 1):
        bench, elapsed = BENCHMARKS[name], time.perf_counter() - t0
        expect = bench.quick_s if quick else bench.gpu_s
        if elapsed + expect > budget_s:
            entries[name] = {"args": list(bench.args), "why": bench.why,
                             "status": "skipped", "exit_status": None, "last_stderr_line": None, "wall_s": None,
                             "results": None,
                             "note": f"{elapsed:.0f} s spent + ~{expect} s expected > --budget-s {budget_s:g}"}
            print(f"[run_all {i}/{len(names)}] {name}: skipped ({entries[name]['note']})", flush=True)
            continue
        print(f"[run_all {i}/{len(names)}] {' '.join((name, *bench.args))} (~{expect} s; {elapsed:.0f} s elapsed)",
              flush=True)
        entry = run_one(name, bench, device=device, out=out, quick=quick, logs=logs, timeout_s=budget_s - elapsed)
        entry["targets"] = targets_of(entry, out) if entry["status"] == "ok" else None
        entries[name] = entry
        note = f": {entry['note']}" if "note" in entry else ""
        print(f"[run_all {i}/{len(names)}] {name}: {entry['status']} (exit {entry['exit_status']}) in "
              f"{entry['wall_s']:.1f} s{note}", flush=True)
    return entries


def format_table(record: dict) -> str:
    """The summary's Markdown: what ran where, one row per benchmark, then every goal row."""
    machine = record["machine"]
    counts = ", ".join(f"{sum(b['status'] == s for b in record['benchmarks'].values())} {s}"
                       for s in ("ok", "failed", "timeout", "skipped"))
    device = record["device"] + (f": {machine['device_kind']}" if record["device"] == "gpu" else "")
    lines = [f"# run_all on {machine['cpu_model']} ({machine['cores']} cores, {device})", "",
             (f"{record['date']}; {'--quick; ' if record['quick'] else ''}budget {record['budget_s']:g} s, "
              f"{record['wall_s']:.0f} s in all; {counts}."), "",
             "| benchmark | arguments | status | wall s | results |", "|---|---|---|---:|---|"]
    for name, b in record["benchmarks"].items():
        status = b["status"] + (f" (exit {b['exit_status']}): {b['note']}" if b["status"] == "failed" else
                                f": {b['note']}" if "note" in b else "")
        res = f"[json]({b['results']['json']}), [md]({b['results']['md']})" if b["results"] else "-"
        wall = f"{b['wall_s']:.1f}" if b["wall_s"] is not None else "-"
        args = f"`{' '.join(b['args'])}`" if b["args"] else "-"
        lines.append(f"| {name} | {args} | {status} | {wall} | {res} |")
    lines += ["", "## Targets", "", "| benchmark | target | value | goal | met |", "|---|---|---:|---|---|"]
    rows = [f"| {name} | {t} | {v['value']:.3f} | {v['goal']} | {'yes' if v['met'] else 'NO'} |"
            for name, b in record["benchmarks"].items() for t, v in (b.get("targets") or {}).items()]
    return "\n".join(lines + (rows or ["| - | no goal rows in these results | | | |"]))


def parse_args(argv) -> tuple[argparse.Namespace, list[str]]:
    """``(args, the benchmarks to run in the plan's order)``; an unknown ``--only`` name: one line,
    exit status 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="gpu", help="default gpu")
    parser.add_argument("--quick", action="store_true", help="every benchmark with --quick (seconds each)")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"start no benchmark that would end after this many seconds (default {BUDGET_S:g})")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only is not None:
        asked = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in asked if n not in BENCHMARKS]
        if unknown or not asked:
            parser.exit(2, f"run_all: --only: unknown benchmark {','.join(unknown) or repr(args.only)}; "
                           f"choose from {','.join(BENCHMARKS)}\n")
        names = [n for n in names if n in asked]
    return args, names


def main(argv=None) -> tuple[str, str]:
    """Run the plan and write the summary's JSON and Markdown; returns their paths."""
    args, names = parse_args(argv)
    t0 = time.perf_counter()
    machine = check_device(args.device)
    out = os.path.abspath(args.out)
    stem = f"run_all-{machine['slug']}{'-quick' if args.quick else ''}"
    logs = os.path.join(out, f"{stem}-logs")
    os.makedirs(logs, exist_ok=True)
    record = {**machine["header"], "quick": args.quick, "budget_s": args.budget_s}
    record["benchmarks"] = run_plan(names, device=args.device, out=out, quick=args.quick, logs=logs,
                                    budget_s=args.budget_s, t0=t0)
    record.update(wall_s=round(time.perf_counter() - t0, 2), load_average_after=_common.load_average(),
                  all_ok=all(b["status"] in ("ok", "skipped") for b in record["benchmarks"].values()))
    return _common.publish(record, format_table(record), out, "run_all", args.quick, machine["slug"])


if __name__ == "__main__":
    with open(main()[0]) as f:
        sys.exit(0 if json.load(f)["all_ok"] else 1)
