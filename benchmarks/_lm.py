"""What the language-model step benchmarks (rnn_step, transformer_step) share beyond
:mod:`benchmarks._common`: windows of a text as stacked batches, fnet's training step over them
(one compiled call per step, or all steps in one ``lax.scan``), PyTorch's token-model loop, and
the benchmark's run (:func:`run`) and tables (:func:`format_table`). Every implementation returns
an :class:`~benchmarks._common.Impl`, already warmed up."""

from __future__ import annotations

import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common
from fnet import data, optim


def text_batches(ds, batch: int, steps: int, n: int, seed: int = 0):
    """``n`` batches of random windows of ``ds``'s training text (:func:`fnet.data.random_windows`):
    ids and next-character targets, each a NumPy array (n, B, T = ``steps``) of int32."""
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    ids, y = zip(*(data.random_windows(k, jnp.asarray(ds.train), batch, steps) for k in keys))
    return np.stack(ids), np.stack(y)


def fnet_steps(name: str, loss_and_grad: Callable, opt, params0, ids, y, *, scanned: bool) -> _common.Impl:
    """fnet's training step as an :class:`~benchmarks._common.Impl`: ``loss_and_grad(params, x,
    y) -> (loss, grads)``, then ``opt`` (an fnet or optax transformation) and
    :func:`fnet.optim.apply_updates`, over the stacked batches ``ids``, ``y`` (n, B, ...).

    ``scanned=False``: one jit-compiled call per step; True: all n steps in one compiled
    ``lax.scan`` (time / n per step). Both donate the parameters and the optimizer state, and are
    compiled ahead of time (timed, with XLA's memory analysis)."""
    def step(params, opt_state, batch):
        loss, grads = loss_and_grad(params, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, loss

    def epoch(params, opt_state, ids, y):
        def body(carry, batch):
            params, opt_state, loss = step(*carry, batch)
            return (params, opt_state), loss

        (params, opt_state), step_losses = jax.lax.scan(body, (params, opt_state), (ids, y))
        return params, opt_state, step_losses

    carry = [jax.tree_util.tree_map(jnp.copy, params0), None]
    carry[1] = opt.init(carry[0])
    ids, y = jnp.asarray(ids), jnp.asarray(y)
    fn, args = (epoch, (ids, y)) if scanned else (step, ((ids[0], y[0]),))
    compile_s, compiled = _common.timed(lambda: jax.jit(fn, donate_argnums=(0, 1)).lower(*carry, *args).compile())
    impl = _common.Impl(name, None, ids.shape[0], compile_s=compile_s, memory=_common.compiled_memory(compiled))

    def rep():
        t0 = time.perf_counter()
        if scanned:
            p, o, out = compiled(*carry, ids, y)
        else:
            (p, o), out = carry, []
            for batch in zip(ids, y):
                p, o, loss = compiled(p, o, batch)
                out.append(loss)
        jax.block_until_ready((p, o, out))
        dt = time.perf_counter() - t0
        carry[:] = [p, o]
        impl.losses.extend(np.asarray(jnp.stack(out) if isinstance(out, list) else out).tolist())
        return dt

    impl.rep = rep
    return _common.first_call(impl)


def torch_loop(name: str, model, ids, y, *, device: str, compile_model: bool, make_optimizer: Callable,
               clip: float) -> _common.Impl:
    """A PyTorch token model ``model`` (ids (B, T) -> scores (B, T, V)) trained as PyTorch's
    examples do: ``nn.CrossEntropyLoss`` over the B*T tokens, ``clip_grad_norm_(clip)``, the
    optimizer ``make_optimizer(parameters)``, eager or under ``torch.compile``, over the NumPy
    batches ``ids``, ``y`` (n, B, T), as a :func:`~benchmarks._common.python_loop`."""
    import torch
    from torch import nn

    model = model.to(device)
    opt = make_optimizer(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    forward = torch.compile(model) if compile_model else model
    batches = [(torch.from_numpy(a).long().to(device), torch.from_numpy(b).long().to(device)) for a, b in zip(ids, y)]

    def step(x, t):
        opt.zero_grad(set_to_none=True)
        scores = forward(x)
        loss = loss_fn(scores.reshape(-1, scores.shape[-1]), t.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.detach()

    return _common.python_loop(name, step, batches, torch.cuda.synchronize if device == "cuda" else (lambda: None))


def manual_vs_autodiff(add: Callable, cname: str, results: dict) -> None:
    """The goals both step benchmarks set: fnet's manual step and epoch at most autodiff's in time
    and in XLA's peak memory; ``add(name, value, goal, met)`` records each."""
    for kind in ("step", "epoch"):
        manual, auto = results[f"fnet manual {kind}"], results[f"fnet autodiff {kind}"]
        ratio = manual["median_s"] / auto["median_s"]
        add(f"{cname}: manual / autodiff {kind} time", ratio, "<= 1.0", ratio <= 1.0)
        if manual["peak_memory"] and auto["peak_memory"]:
            v = manual["peak_memory"]["peak_bytes"] / auto["peak_memory"]["peak_bytes"]
            add(f"{cname}: manual / autodiff {kind} peak memory", v, "<= 1.0", v <= 1.0)


def format_table(record: dict, name: str, model: Callable[[dict], str]) -> str:
    """The Markdown tables of a step benchmark's record: one per configuration (its heading starts
    with ``model(config)``, the network in words), the first losses, then the targets."""
    lines = [*_common.table_heading(record, name),
             "Per-step medians; `x floor` = time / (matmul flops / square-matmul rate); `x fnet` = time / "
             "fnet manual epoch's."]
    for cname, c in record["configs"].items():
        first = ", ".join(f"{impl} {r['first_loss']:.6f}" for impl, r in c["results"].items())
        lines += ["", f"## {cname}: {model(c)}; B = {c['batch']}, T = {c['T']}; {c['params']:,} params, "
                  f"{c['flops']['total'] / 1e6:,.1f} MFLOP/step, floor {1e3 * c['floor_s']:.2f} ms "
                  f"({c['matmul']['median_flops_per_s'] / 1e9:.1f} GFLOP/s), {c['steps_per_rep']} steps x "
                  f"{c['reps']} reps", "", *_common.timing_rows(c), "", f"First loss (same weights, same batch): {first}."]
    return "\n".join(lines + _common.targets_rows(record["targets"]))


def run(name: str, doc: str, configs: dict, quick_configs: dict, bench_config: Callable, targets: Callable,
        model: Callable[[dict], str], argv=None, **record) -> tuple[str, str]:
    """A step benchmark's command: parse ``argv`` (:func:`benchmarks._common.step_parser`), run
    ``bench_config(spec, ds=, reps=, device=, torch_compile=, matmul_n=)`` for each chosen
    configuration on tiny-shakespeare, and write the record (with ``record``'s fields and
    ``targets(configs)``) as JSON and Markdown; returns their paths."""
    args, names = _common.parse_step_args(_common.step_parser(doc, configs, ",".join(configs), "models"), argv, configs)
    out = _common.record_header(name, args.device)
    out["threads"] = _common.set_threads(args.threads)
    ds = data.load_text("shakespeare")
    specs = quick_configs if args.quick else configs
    results = {}
    for cname in names:
        print(f"[{name}] {cname} ...", file=sys.stderr, flush=True)
        results[cname] = bench_config(specs[cname], ds=ds, reps=args.reps, device=args.device,
                                      torch_compile=not (args.quick or args.no_torch_compile),
                                      matmul_n=256 if args.quick else 2048)
    out.update(quick=args.quick, **record, configs=results, targets=targets(results),
               load_average_after=_common.load_average())
    return _common.publish(out, format_table(out, name, model), args.out, name, args.quick)
