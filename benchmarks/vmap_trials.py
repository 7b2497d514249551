"""Many trials in one vmapped program vs a Python loop over trials.

    python -m benchmarks.vmap_trials [--quick] [--fit-trials K] [--out DIR]

The curriculum's search network, 784-[100]*6-10 ReLU with SGD, batch 100, 50 epochs on 400
samples (the first 400 MNIST training images when ``$FNET_DATA`` has them, else random data
of the same shape: the timing does not depend on the values), 100 trials of
``lr = 10**U(-6, -2)`` and ``weight_decay = 10**U(-8, -4)``, training accuracy measured after
every epoch. Four ways to run the same trials, each timed with its compilation:

- ``vmapped``: :func:`fnet.fit_trials`, all trials in ONE jit-compiled vmapped program
  (and ``vmapped_warm``: the same call again with new hyperparameter values, which reuses the
  compiled program);
- ``fnet_loop``: a Python loop of :func:`fnet.fit_trials` runs of one trial each (one
  compiled single-trial program, reused by every trial: the best a loop can do);
- ``fit_loop``: a Python loop of :func:`fnet.train.fit` (what a user writes without vmap: a
  new optimizer per learning rate recompiles the epoch); run on ``--fit-trials`` trials and
  extrapolated to all of them;
- ``flax_loop``: flax.linen + optax, one compiled single-trial program (``optax.inject_hyperparams``
  for a traced learning rate) in a Python loop.

Then one trial without compilation (``per_trial_ms``, medians of 11 interleaved warm calls): the
whole ``fit_trials`` call, its compiled program alone (the Python around it), the same scanned
epochs without the per-epoch evaluation and the init (what the evaluation costs), and the flax
trial (which evaluates every epoch too).

The first trials of ``vmapped`` and ``fnet_loop`` are compared (final params and curves). The
JSON and a Markdown table go to ``DIR/vmap_trials-<machine>.{json,md}`` (``-quick`` added in quick
mode: 4 tiny trials, a smoke test for the test suite).
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import RESULTS_DIR, publish
from benchmarks._machine import machine_info
from fnet import data, nets, optim, search, train, trials

FULL = {"trials": 100, "samples": 400, "hidden": [100] * 6, "epochs": 50, "batch_size": 100}
QUICK = {"trials": 4, "samples": 40, "hidden": [16] * 2, "epochs": 2, "batch_size": 10}
RANGES = {"learning_rate": (1e-6, 1e-2), "weight_decay": (1e-8, 1e-4)}
COMPARED = 3  # trials whose results are compared between the vmapped and the looped runs


def load_data(n: int):
    """The first ``n`` MNIST training images (x (n, 784) float32, y (n,) int32), or random data
    of that shape when the MNIST files are not found; and the source's name."""
    try:
        ds = data.load("mnist", val_fraction=0.0)
        return ds.x_train[:n], ds.y_train[:n], "mnist"
    except data.DatasetNotFoundError:
        rng = np.random.default_rng(0)
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32), "random"


def _timed(f):
    t0 = time.perf_counter()
    out = jax.block_until_ready(f())
    return out, time.perf_counter() - t0


def _one(hp: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in hp.items()}


def flax_trial(cfg: dict, n: int):
    """One flax.linen + optax trial as a jitted ``run(seed, lr, wd, x, y) -> per-epoch training
    accuracy`` for ``n`` samples: the same network (He-normal weights, zero biases), loss (softmax
    cross-entropy + 0.5 * wd * sum of squared weights), SGD, batch, epoch structure and per-epoch
    accuracy on the training samples as fnet's trials; the random streams differ."""
    import flax.linen as fnn
    import optax

    class MLP(fnn.Module):
        hidden: tuple

        @fnn.compact
        def __call__(self, x):
            he = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
            for h in self.hidden:
                x = fnn.relu(fnn.Dense(h, kernel_init=he)(x))
            return fnn.Dense(10, kernel_init=he)(x)

    model = MLP(tuple(cfg["hidden"]))
    steps = n // cfg["batch_size"]

    @jax.jit
    def run(seed, lr, wd, x, y):
        init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(init_key, x[:1])
        tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
        opt_state = tx.init(params)

        def loss_fn(params, xb, yb):
            logits = model.apply(params, xb)
            l2 = sum(jnp.sum(k**2) for path, k in jax.tree_util.tree_leaves_with_path(params) if "kernel" in str(path))
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean() + 0.5 * wd * l2

        def epoch(carry, e):
            params, opt_state = carry
            order = jax.random.permutation(jax.random.fold_in(train_key, e), n)[: steps * cfg["batch_size"]]

            def step(carry, idx):
                params, opt_state = carry
                grads = jax.grad(loss_fn)(params, x[idx], y[idx])
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order.reshape(steps, -1))
            acc = jnp.mean(jnp.argmax(model.apply(params, x), axis=1) == y)
            return (params, opt_state), acc

        _, accs = jax.lax.scan(epoch, (params, opt_state), jnp.arange(cfg["epochs"]))
        return accs

    return run


def flax_loop(cfg: dict, x, y, hp: dict, seeds) -> tuple[list, float]:
    """Train every trial with :func:`flax_trial`, one compiled program called once per trial.
    Returns the per-trial training accuracy after the last epoch and the wall time (with the
    compilation)."""
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    t0 = time.perf_counter()
    run = flax_trial(cfg, len(x))
    final = [float(run(int(s), hp["learning_rate"][i], hp["weight_decay"][i], xd, yd)[-1]) for i, s in enumerate(seeds)]
    return final, time.perf_counter() - t0


def per_trial(cfg: dict, make_net, factory, x, y, hp: dict, seeds, rounds: int) -> dict:
    """Where one trial's time goes, without compilation: medians (ms) over ``rounds`` interleaved
    warm calls of trial 0 as the whole ``fit_trials`` call, as its compiled program alone, as the
    same scanned epochs without the per-epoch evaluation and the init, and as the flax trial."""
    common = {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"]}
    hp1 = {k: jnp.asarray(v[:1]) for k, v in hp.items()}
    h0 = {k: v[0] for k, v in hp1.items()}
    xd, yd, s1 = jnp.asarray(x), jnp.asarray(y), jnp.asarray(seeds[:1])
    program = trials._trials_program(make_net, factory, cfg["batch_size"], "manual", cfg["epochs"],
                                     min(1000, len(x)), True, 0)  # what fit_trials calls
    start = trials.init_trials(make_net, factory, s1, hp1)
    start = jax.tree_util.tree_map(lambda a: a[0], start)

    @jax.jit
    def epochs_alone(start, x, y, h):
        key = jax.random.split(jax.random.PRNGKey(int(seeds[0])))[1]
        epoch = train.make_epoch(make_net(h), factory(h), batch_size=cfg["batch_size"], jit=False)

        def one(carry, e):
            *carry, losses = epoch(*carry, x, y, jax.random.fold_in(key, e))
            return tuple(carry), jnp.mean(losses)

        return jax.lax.scan(one, start, jnp.arange(1, cfg["epochs"] + 1))

    flax_run = flax_trial(cfg, len(x))
    calls = {
        "fit_trials call": lambda: trials.fit_trials(make_net, factory, x, y, hparams=_one(hp, 0), seeds=seeds[:1], **common).params,
        "its compiled program": lambda: program(s1, hp1, xd, yd, None),
        "the same epochs, no evaluation or init": lambda: epochs_alone(start, xd, yd, h0),
        "flax+optax trial (with its evaluation)": lambda: flax_run(int(seeds[0]), hp1["learning_rate"][0],
                                                                   hp1["weight_decay"][0], xd, yd),
    }
    for f in calls.values():
        jax.block_until_ready(f())  # compile
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, f in calls.items():
            times[name].append(_timed(f)[1])
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def bench(quick: bool, fit_trials: int) -> dict:
    cfg = QUICK if quick else FULL
    x, y, source = load_data(cfg["samples"])
    hidden = tuple(cfg["hidden"])

    def make_net(h):  # one object for every call, so that they share the compiled program
        return nets.mlp(784, hidden, 10, weight_decay=h["weight_decay"])

    factory = search.optimizer_factory(optim.sgd)
    hp = search.sample(RANGES, cfg["trials"], seed=0)
    seeds = np.arange(cfg["trials"])
    common = {"epochs": cfg["epochs"], "batch_size": cfg["batch_size"]}
    times = {}
    load_before = os.getloadavg()  # the timings mean little on a machine busy with other work

    vmapped, times["vmapped"] = _timed(lambda: trials.fit_trials(make_net, factory, x, y, hparams=hp, seeds=seeds, **common))
    hp_warm = search.sample(RANGES, cfg["trials"], seed=1)
    _, times["vmapped_warm"] = _timed(lambda: trials.fit_trials(make_net, factory, x, y, hparams=hp_warm, seeds=seeds,
                                                                **common))

    def loop():
        return [trials.fit_trials(make_net, factory, x, y, hparams=_one(hp, i), seeds=seeds[i : i + 1], **common)
                for i in range(cfg["trials"])]

    looped, times["fnet_loop"] = _timed(loop)

    k = min(fit_trials, cfg["trials"])

    def fit_loop():
        for i in range(k):
            net_i = nets.mlp(784, cfg["hidden"], 10, weight_decay=float(hp["weight_decay"][i]))
            train.fit(net_i, optim.sgd(float(hp["learning_rate"][i])), x, y, seed=int(seeds[i]), progress=False, **common)

    _, t_fit = _timed(fit_loop)
    times["fit_loop"] = t_fit * cfg["trials"] / k

    flax_acc, times["flax_loop"] = flax_loop(cfg, x, y, hp, seeds)
    breakdown = per_trial(cfg, make_net, factory, x, y, hp, seeds, rounds=1 if quick else 11)

    compared = []
    for i in range(min(COMPARED, cfg["trials"])):
        param_diff = max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(
            lambda v, one: float(jnp.max(jnp.abs(v[i] - one[0]))), vmapped.params, looped[i].params)))
        acc_diff = float(np.max(np.abs(vmapped.history["train_acc"][i] - looped[i].history["train_acc"][0])))
        loss_diff = float(np.max(np.abs(vmapped.history["train_loss"][i] - looped[i].history["train_loss"][0])))
        compared.append({"trial": i, "max_abs_param_diff": param_diff, "max_abs_train_acc_diff": acc_diff,
                         "max_abs_train_loss_diff": loss_diff,
                         # The scales the differences are rounding of.
                         "max_abs_param": max(float(jnp.max(jnp.abs(one))) for one in
                                              jax.tree_util.tree_leaves(looped[i].params)),
                         "max_train_loss": float(np.max(looped[i].history["train_loss"]))})
    final_acc = vmapped.history["train_acc"][:, -1]
    return {
        "benchmark": "vmap_trials",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": dict(cfg, quick=quick, data=source, network=nets.mlp(784, hidden, 10).name, optimizer="sgd",
                       ranges=RANGES, fit_trials_timed=k, dtype="float32"),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "seconds": times,
        "speedup": {f"vmapped_vs_{name}": times[name] / times["vmapped"] for name in ("fnet_loop", "fit_loop", "flax_loop")},
        "speedup_warm": {f"vmapped_warm_vs_{name}": times[name] / times["vmapped_warm"]
                         for name in ("fnet_loop", "fit_loop", "flax_loop")},
        "per_trial_ms": breakdown,
        "compared_trials": compared,
        "final_train_acc": {"fnet_vmapped_median": float(np.median(final_acc)), "fnet_vmapped_max": float(np.max(final_acc)),
                            "flax_median": float(np.median(flax_acc)), "flax_max": float(np.max(flax_acc))},
    }


def format_table(record: dict) -> str:
    cfg, sec = record["config"], record["seconds"]
    lines = [
        f"{cfg['trials']} trials of {cfg['network']} (SGD, {cfg['samples']} {cfg['data']} samples, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}), wall time with compilation",
        "",
        "| run | seconds | vmapped is faster by |",
        "|---|---:|---:|",
        f"| fnet vmapped (one program) | {sec['vmapped']:.2f} | 1.0x |",
        f"| fnet vmapped, new hyperparameters (no recompile) | {sec['vmapped_warm']:.2f} | - |",
    ]
    names = {"fnet_loop": "fnet loop of one compiled single-trial program",
             "fit_loop": f"fnet `fit` loop (recompiles per lr; {cfg['fit_trials_timed']} trials timed, extrapolated)",
             "flax_loop": "flax + optax loop of one compiled single-trial program"}
    for key, label in names.items():
        lines.append(f"| {label} | {sec[key]:.2f} | {record['speedup'][f'vmapped_vs_{key}']:.1f}x |")
    worst = max(c["max_abs_param_diff"] for c in record["compared_trials"])
    lines += ["", f"vmapped vs looped, first {len(record['compared_trials'])} trials: max |param diff| {worst:.2e}",
              "", "One trial without compilation (medians of interleaved warm calls):", "",
              "| trial 0 as | ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in record["per_trial_ms"].items()]
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tiny trials (a smoke test)")
    parser.add_argument("--fit-trials", type=int, default=5, help="trials timed in the fit() loop (default 5)")
    parser.add_argument("--out", default=RESULTS_DIR)
    args = parser.parse_args(argv)
    record = bench(args.quick, args.fit_trials)
    return publish(record, format_table(record), args.out, "vmap_trials", args.quick)[0]


if __name__ == "__main__":
    main()
