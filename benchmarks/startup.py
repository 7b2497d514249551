"""Time to first result: the same one-epoch run in fresh processes, fnet vs flax+optax vs PyTorch.

    python -m benchmarks.startup [--quick] [--reps N] [--impls fnet,flax,torch] [--out DIR]

The run, as a new user meets it: start Python, import the library, load the bundled digits
(the split of ``fnet.data.load("digits")``: 1,294 train / 144 val / 359 test), build the
64-[100,100]-10 ReLU MLP with dropout 0.1 and He-normal weights, train ONE epoch of Adam (lr 1e-3,
batch 32), print the epoch's line (training loss, train and validation accuracy), evaluate the test
set, save the parameters and a figure of the curves (matplotlib), exit. Each implementation:

- ``fnet``: the command itself, ``fnet train --epochs 1 --out DIR`` (its defaults are this run);
- ``flax``: flax.linen + optax, a jitted step in a Python loop and a jitted evaluation, as flax's
  examples write them; params saved with ``flax.serialization``;
- ``torch``: ``nn.Sequential`` + ``torch.optim.Adam``, eager; ``torch.save`` of the state dict.

Measured from the parent, for every process: the wall time until the epoch's line reaches its
stdout (``PYTHONUNBUFFERED=1`` for all) and until it exits. **cold**: an empty compilation cache
(fnet: ``FNET_CACHE_DIR``; flax: JAX's persistent cache in a folder of its own, set up as fnet sets
it); **warm**: the same command again, finding its compiled programs there. PyTorch eager compiles
nothing, so its two rows differ only by noise. Every cold/warm pair runs in turn for every
implementation, ``--reps`` rounds (interleaved: load changes hit all alike); the table gives the
medians. The OS's file cache is warm for all after the first round (imports read the same files).
Results: ``DIR/startup-<machine>[-quick].{json,md}``; ``--quick`` runs one round of cold runs (a
smoke test for the test suite).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

IMPLS = ("fnet", "flax", "torch")
EPOCH_LINE = re.compile(r"\bepoch 1\b")
TEST_ACCURACY = re.compile(r"^test accuracy ([0-9.]+%)")
HIDDEN, DROPOUT, LR, BATCH = (100, 100), 0.1, 1e-3, 32


# ----------------------------------------------------------------------------- the children


def _child_flax(data_path: str, out_dir: str, cache_dir: str) -> None:
    import jax

    # The persistent cache as fnet's command sets it up (fnet/compile_cache.py).
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import serialization
    from flax.training import train_state

    d = np.load(data_path)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            for width in HIDDEN:
                x = nn.relu(nn.Dense(width, kernel_init=nn.initializers.he_normal())(x))
                x = nn.Dropout(DROPOUT, deterministic=not train)(x)
            return nn.Dense(10, kernel_init=nn.initializers.he_normal())(x)

    model = MLP()
    key = jax.random.PRNGKey(0)
    params = model.init(key, jnp.zeros((1, d["x_train"].shape[1])), train=False)["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(LR))

    @jax.jit
    def step(state, x, y, key):
        def loss_fn(p):
            scores = state.apply_fn({"params": p}, x, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(scores, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def evaluate(params, x, y):
        scores = model.apply({"params": params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(scores, y).mean(), jnp.mean(jnp.argmax(scores, 1) == y)

    x, y = d["x_train"], d["y_train"]
    order = np.random.default_rng(0).permutation(len(x))
    losses = []
    for i in range(len(x) // BATCH):
        idx = order[i * BATCH:(i + 1) * BATCH]
        state, loss = step(state, x[idx], y[idx], jax.random.fold_in(key, i))
        losses.append(loss)
    train_acc = evaluate(state.params, x[:1000], y[:1000])[1]
    val_acc = evaluate(state.params, d["x_val"], d["y_val"])[1]
    print(f"epoch 1/1  loss {float(np.mean(losses)):.4f}  train acc {100 * float(train_acc):5.1f}%  "
          f"val acc {100 * float(val_acc):5.1f}%")
    test_acc = float(evaluate(state.params, d["x_test"], d["y_test"])[1])
    with open(os.path.join(out_dir, "params.msgpack"), "wb") as f:
        f.write(serialization.to_bytes(state.params))
    _curves(out_dir, float(np.mean(losses)), float(train_acc), float(val_acc))
    print(f"test accuracy {100 * test_acc:.2f}%")


def _child_torch(data_path: str, out_dir: str) -> None:
    import numpy as np
    import torch
    from torch import nn

    d = np.load(data_path)
    torch.manual_seed(0)
    layers, width = [], d["x_train"].shape[1]
    for h in HIDDEN:
        dense = nn.Linear(width, h)
        nn.init.kaiming_normal_(dense.weight, nonlinearity="relu")
        nn.init.zeros_(dense.bias)
        layers += [dense, nn.ReLU(), nn.Dropout(DROPOUT)]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"]).long()

    def evaluate(xs, ys):
        model.eval()
        with torch.no_grad():
            scores = model(torch.from_numpy(xs))
            return (scores.argmax(1) == torch.from_numpy(ys).long()).float().mean().item()

    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))
    losses = []
    model.train()
    for i in range(len(x) // BATCH):
        idx = order[i * BATCH:(i + 1) * BATCH]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    train_acc, val_acc = evaluate(d["x_train"][:1000], d["y_train"][:1000]), evaluate(d["x_val"], d["y_val"])
    print(f"epoch 1/1  loss {np.mean(losses):.4f}  train acc {100 * train_acc:5.1f}%  val acc {100 * val_acc:5.1f}%")
    test_acc = evaluate(d["x_test"], d["y_test"])
    torch.save(model.state_dict(), os.path.join(out_dir, "params.pt"))
    _curves(out_dir, float(np.mean(losses)), train_acc, val_acc)
    print(f"test accuracy {100 * test_acc:.2f}%")


def _curves(out_dir: str, loss: float, train_acc: float, val_acc: float) -> None:
    """The figure fnet's command draws (loss and accuracy per epoch), for one epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([1], [loss], "o-", label="train loss")
    b.plot([1], [train_acc], "o-", label="train")
    b.plot([1], [val_acc], "o-", label="val")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.legend()
    fig.savefig(os.path.join(out_dir, "curves.png"), dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- the parent


def _command(impl: str, data_path: str, out_dir: str) -> list[str]:
    if impl == "fnet":
        return [sys.executable, "-m", "fnet", "train", "--epochs", "1", "--out", out_dir]
    return [sys.executable, "-m", "benchmarks.startup", "--child", impl, data_path, out_dir]


def time_run(impl: str, data_path: str, out_dir: str, cache_dir: str) -> dict:
    """Run one fresh process of ``impl``; its seconds to the epoch line and to its exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FNET_CACHE_DIR": cache_dir, "STARTUP_CACHE_DIR": cache_dir,
           "MPLBACKEND": "Agg"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    t0 = time.perf_counter()
    proc = subprocess.Popen(_command(impl, data_path, out_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=root)
    first_epoch, lines = None, []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if first_epoch is None and EPOCH_LINE.search(line):
            first_epoch = time.perf_counter() - t0
    err = proc.stderr.read()
    total = time.perf_counter() - t0
    if proc.wait() != 0 or first_epoch is None:
        raise RuntimeError(f"startup: {impl} failed (exit {proc.returncode}):\n" + "\n".join(lines) + "\n" + err)
    test = next((m.group(1) for ln in lines if (m := TEST_ACCURACY.search(ln))), None)
    return {"first_epoch_s": first_epoch, "total_s": total, "test_accuracy": test}


def save_digits(path: str) -> dict:
    """The digits split of ``fnet.data.load("digits")`` (what ``fnet train`` trains on) as an .npz."""
    import numpy as np

    from fnet import data

    ds = data.load("digits")
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val, x_test=ds.x_test,
             y_test=ds.y_test)
    return {"train": len(ds.x_train), "val": len(ds.x_val), "test": len(ds.x_test)}


def run(impls, reps: int, work: str, quick: bool = False) -> dict:
    data_path = os.path.join(work, "digits.npz")
    sizes = save_digits(data_path)
    runs = {impl: {"cold": []} if quick else {"cold": [], "warm": []} for impl in impls}
    for r in range(reps):
        for impl in impls:
            cache = os.path.join(work, f"cache-{impl}-{r}")
            for kind in ("cold",) if quick else ("cold", "warm"):
                out = os.path.join(work, f"out-{impl}-{r}-{kind}")
                os.makedirs(out)
                result = time_run(impl, data_path, out, cache)
                runs[impl][kind].append(result)
                print(f"round {r + 1}/{reps} {impl:<6} {kind}: first epoch {result['first_epoch_s']:5.2f} s, "
                      f"end {result['total_s']:5.2f} s  (test accuracy {result['test_accuracy']})", flush=True)
    return {"data": sizes, "runs": runs}


def table(record: dict) -> str:
    lines = ["| implementation | cache | to the epoch line (s) | to the end (s) | x fnet (end) | test accuracy |",
             "|---|---|---:|---:|---:|---:|"]
    med = {(impl, kind): {k: statistics.median(r[k] for r in rs) for k in ("first_epoch_s", "total_s")}
           for impl, kinds in record["runs"].items() for kind, rs in kinds.items()}
    for (impl, kind), m in med.items():
        ref = med.get(("fnet", kind))
        ratio = f"{m['total_s'] / ref['total_s']:.2f}" if ref else ""
        lines.append(f"| {impl} | {kind} | {m['first_epoch_s']:.2f} | {m['total_s']:.2f} | {ratio} | "
                     f"{record['runs'][impl][kind][-1]['test_accuracy']} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, cold runs only (a smoke test)")
    p.add_argument("--reps", type=int, default=5, help="rounds of cold+warm runs of every implementation")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated subset of " + ",".join(IMPLS))
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--child", nargs=3, metavar=("IMPL", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        impl, data_path, out_dir = args.child
        if impl == "flax":
            _child_flax(data_path, out_dir, os.environ["STARTUP_CACHE_DIR"])
        else:
            _child_torch(data_path, out_dir)
        return ""
    impls = [i for i in args.impls.split(",") if i]
    if not impls or any(i not in IMPLS for i in impls):
        p.error(f"--impls must name some of {', '.join(IMPLS)}, got {args.impls!r}")
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    reps = 1 if args.quick else args.reps
    from benchmarks._common import RESULTS_DIR, load_average, publish
    from benchmarks._machine import machine_info

    work = tempfile.mkdtemp(prefix="fnet-startup-")
    try:
        load_before = load_average()
        record = run(impls, reps, work, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record.update({"benchmark": "startup", "quick": args.quick, "reps": reps, "machine": machine_info(),
                   "load_before": load_before, "load_after": load_average(),
                   "date": datetime.datetime.now().isoformat(timespec="seconds")})
    return publish(record, table(record), args.out or RESULTS_DIR, "startup", args.quick)[0]


if __name__ == "__main__":
    main()
