"""Ten epochs of MNIST end to end (data loading, compilation, training, test accuracy) in fnet,
flax+optax and PyTorch.

    python -m benchmarks.mnist_e2e [--quick] [--device cpu|gpu] [--repeats N] [--epochs E]
                                   [--threads N] [--out DIR]

Every implementation trains a 784-100-100-10 ReLU MLP with softmax cross-entropy and Adam (lr 1e-3)
in minibatches of 128, reshuffled every epoch (the last incomplete minibatch dropped, as fnet
does), on the 60,000 MNIST training images (``fnet.data.load("mnist", val_fraction=0)``, found
via ``$FNET_DATA``), then reports its accuracy on the 10,000 test images. Each timed run
includes its own ``fnet.data.load`` call (one untimed load first puts the files in the OS
cache, so that no run pays a cold disk), building the model, compilation, training and the
test evaluation; each library initialises weights its own default way:

- ``fnet``: :func:`fnet.train.fit` (manual gradients, each epoch one compiled ``lax.scan``),
  ``progress=False``, then :func:`fnet.train.evaluate`;
- ``flax+optax``: flax's documented loop: a NumPy permutation per epoch, ``jax.jit`` of the
  whole train step on a ``TrainState``;
- ``torch eager``: ``nn.Sequential`` + ``torch.optim.Adam``, a ``torch.randperm`` per epoch and
  tensor indexing for the minibatches (the same arrays as the others, no DataLoader workers).

``--repeats`` rounds run the implementations interleaved; the median wall time is reported.
``--quick`` trains a 64-16-16-10 MLP on the bundled 8x8 digits instead (a smoke test).
Results go to ``DIR/mnist_e2e-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from fnet import data, mlp, optim, train

LR = 1e-3
BATCH = 128


def _load(quick: bool):
    return data.load("digits") if quick else data.load("mnist", val_fraction=0.0)


def run_fnet(quick: bool, hidden, epochs: int, seed: int, device: str) -> dict:
    """fnet: ``fit`` with scanned epochs and manual gradients, then ``evaluate`` on the test set."""
    ds = _load(quick)
    net = mlp(ds.num_features, hidden, ds.num_classes)
    result = train.fit(net, optim.adam(LR), ds.x_train, ds.y_train, epochs=epochs, batch_size=BATCH,
                       seed=seed, progress=False)
    return {"test_accuracy": train.evaluate(net, result.params, result.state, ds.x_test, ds.y_test)["accuracy"],
            "final_train_loss": result.history["train_loss"][-1]}


def run_flax(quick: bool, hidden, epochs: int, seed: int, device: str) -> dict:
    """flax.linen + optax, the loop of flax's MNIST example (jit of the whole step)."""
    import optax
    from flax.training import train_state

    ds = _load(quick)

    model = _common.flax_mlp((*hidden, ds.num_classes))
    params = model.init(jax.random.PRNGKey(seed), jnp.ones((1, ds.num_features)))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(LR))

    train_step = jax.jit(_common.flax_train_step)

    @jax.jit
    def accuracy(params, x, y):
        return jnp.mean(jnp.argmax(model.apply({"params": params}, x), axis=1) == y)

    rng = np.random.default_rng(seed)
    steps = len(ds.x_train) // BATCH
    for _ in range(epochs):
        perms = rng.permutation(len(ds.x_train))[: steps * BATCH].reshape(steps, BATCH)
        for perm in perms:
            state, loss = train_step(state, ds.x_train[perm], ds.y_train[perm])
    return {"test_accuracy": float(accuracy(state.params, ds.x_test, ds.y_test)), "final_train_loss": loss.item()}


def run_torch(quick: bool, hidden, epochs: int, seed: int, device: str) -> dict:
    """PyTorch eager: nn.Sequential, Adam, randperm minibatches by tensor indexing."""
    import torch
    from torch import nn

    tdev = _common.torch_device(device)
    ds = _load(quick)
    torch.manual_seed(seed)
    dims = (ds.num_features, *hidden, ds.num_classes)
    mods = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        mods += [nn.Linear(a, b), nn.ReLU()] if i < len(dims) - 2 else [nn.Linear(a, b)]
    model = nn.Sequential(*mods).to(tdev)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(ds.x_train).to(tdev)
    y = torch.from_numpy(ds.y_train).long().to(tdev)
    steps = len(x) // BATCH
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=tdev)
        for i in range(steps):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(torch.from_numpy(ds.x_test).to(tdev)).argmax(dim=1).cpu().numpy()
    return {"test_accuracy": float(np.mean(pred == ds.y_test)), "final_train_loss": loss.item()}


IMPLEMENTATIONS = {"fnet": run_fnet, "flax+optax": run_flax, "torch eager": run_torch}


def bench(quick: bool, repeats: int, epochs: int, device: str) -> dict:
    """Run every implementation ``repeats`` times, interleaved; return the per-implementation record."""
    hidden = (16, 16) if quick else (100, 100)
    _load(quick)  # untimed: puts the data files in the OS cache
    runs = {name: [] for name in IMPLEMENTATIONS}
    for r in range(repeats):
        for name, fn in IMPLEMENTATIONS.items():
            print(f"[mnist_e2e] round {r + 1}/{repeats}: {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            out = fn(quick, hidden, epochs, r, device)
            runs[name].append({"wall_s": time.perf_counter() - t0, **out})
    results = {}
    for name, rs in runs.items():
        walls = [x["wall_s"] for x in rs]
        accs = [x["test_accuracy"] for x in rs]
        results[name] = {
            "wall_s_median": statistics.median(walls),
            "test_accuracy_median": statistics.median(accs),
            "runs": rs,
        }
    ref = results["fnet"]["wall_s_median"]
    for r in results.values():
        r["over_fnet"] = r["wall_s_median"] / ref
    return {"hidden_dims": list(hidden), "epochs": epochs, "batch": BATCH, "learning_rate": LR,
            "dataset": "digits" if quick else "mnist (60,000 train / 10,000 test)", "repeats": repeats,
            "results": results}


def format_table(record: dict) -> str:
    """Markdown table of a record."""
    lines = [
        f"# mnist_e2e on {record['machine']['cpu_model']} ({record['machine']['cores']} cores, {record['device']})",
        "",
        f"{record['date']}; {record['dataset']}, {record['epochs']} epochs, MLP {record['hidden_dims']}, batch "
        f"{record['batch']}, Adam {record['learning_rate']}; median of {record['repeats']} interleaved runs; "
        f"threads {record['threads']}; load average before/after {record['load_average_before']} / "
        f"{record['load_average_after']}.",
        "",
        "| implementation | wall s (median) | x fnet | test accuracy (median) | all runs: wall s / accuracy |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in record["results"].items():
        runs = ", ".join(f"{x['wall_s']:.1f} / {100 * x['test_accuracy']:.2f}%" for x in r["runs"])
        lines.append(f"| {name} | {r['wall_s_median']:.2f} | {r['over_fnet']:.2f} | "
                     f"{100 * r['test_accuracy_median']:.2f}% | {runs} |")
    return "\n".join(lines)


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bundled 8x8 digits, a tiny MLP (a smoke test)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs per implementation (default 3, quick 1)")
    parser.add_argument("--epochs", type=int, default=None, help="default 10")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of PyTorch and NumPy's BLAS (default: theirs)")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    for name in ("repeats", "epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive int")
    _common.select_device(args.device)
    record = _common.record_header("mnist_e2e", args.device)
    record["threads"] = _common.set_threads(args.threads)
    record.update(bench(args.quick, args.repeats or (1 if args.quick else 3), args.epochs or 10,
                        args.device))
    record["quick"] = args.quick
    record["load_average_after"] = _common.load_average()
    return _common.publish(record, format_table(record), args.out, "mnist_e2e", args.quick)


if __name__ == "__main__":
    main()
