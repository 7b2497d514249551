"""nanoGPT's GPT and training loop in plain JAX + optax, written the way a user would write them:
the comparator of benchmarks/nanogpt_recipe.py, one run per process.

The model is nanoGPT's ``model.py`` transcribed to ``jax.numpy``: token and learned position
embeddings, L pre-norm blocks (causal multi-head self-attention through
``jax.nn.dot_product_attention``, then an MLP of width 4E with exact GELU, each in a residual
branch after a layer norm), a final layer norm and the head, which is the token table transposed
(nanoGPT ties them; no head bias). Initialization is GPT-2's: every matrix and table N(0, 0.02),
the two projections that end a residual branch N(0, 0.02 / sqrt(2 L)), biases 0, layer norms 1
and 0. The loss is the mean token cross-entropy (``optax.softmax_cross_entropy_with_integer_labels``),
the gradient ``jax.value_and_grad``'s, the optimizer

    optax.chain(optax.clip_by_global_norm(clip),
                optax.adamw(optax.warmup_cosine_decay_schedule(0, lr, warmup, steps, min_lr),
                            b1=0.9, b2=beta2, weight_decay=weight_decay, mask=<the 2-D parameters>))

(nanoGPT decays every parameter of two or more dimensions: the matrices and both tables), and one
training step is ONE jitted call. Batches and validation windows are fnet's
(:func:`fnet.data.random_windows`, :func:`fnet.lm.validation_windows`) on the same split of
tiny-shakespeare, so both implementations see the same kind of batches and are scored on the same
characters; step ``s`` draws its batch with ``fold_in(data_key, s)``, ``init_key, data_key =
split(PRNGKey(seed))``.

The run folder gets what an ``fnet train`` run of a language model writes and the benchmark reads:
config.json (``args``, ``net``), history.json (per evaluation: step, train_loss, the cheap
validation estimate val_loss on 128 windows, time, chars_per_s) and results.json (the full
validation loss of the parameters with the best estimate, on :data:`fnet.lm.VAL_WINDOWS` windows;
``wall_time_s``: seconds from the initialized parameters to the last evaluation, compile and
evaluations included, as fnet's).

    python -m benchmarks.plain_gpt --out runs/plain-s0 --seed 0     # nanoGPT's CPU recipe
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnet import data, files, lm


def init_params(key, vocab_size: int, context: int, layers: int, width: int) -> dict:
    """nanoGPT's parameters with GPT-2's initialization: ``wte`` (V, E), ``wpe`` (T, E), ``ln_f``
    and a list of ``layers`` blocks, each with ``ln1``, ``attn_w`` (E, 3E) and ``attn_b`` (the
    query, key and value projections side by side), ``proj_w`` (E, E), ``ln2``, ``fc_w`` (E, 4E),
    ``out_w`` (4E, E) and their biases; x @ W layouts."""
    keys = iter(jax.random.split(key, 2 + 4 * layers))
    residual_std = 0.02 / math.sqrt(2 * layers)  # the branch ends: the residual stream's variance stays O(1)

    def normal(shape, std=0.02):
        return std * jax.random.normal(next(keys), shape)

    def norm():
        return {"g": jnp.ones(width), "b": jnp.zeros(width)}

    blocks = [{"ln1": norm(), "attn_w": normal((width, 3 * width)), "attn_b": jnp.zeros(3 * width),
               "proj_w": normal((width, width), residual_std), "proj_b": jnp.zeros(width),
               "ln2": norm(), "fc_w": normal((width, 4 * width)), "fc_b": jnp.zeros(4 * width),
               "out_w": normal((4 * width, width), residual_std), "out_b": jnp.zeros(width)} for _ in range(layers)]
    return {"wte": normal((vocab_size, width)), "wpe": normal((context, width)), "blocks": blocks, "ln_f": norm()}


def layer_norm(p, x, eps=1e-5):
    """Layer norm over the last axis (PyTorch's eps)."""
    # jax.nn.standardize, not x.var(): the gradient of x.var() on (N, T, E) compiled to a step
    # ~2x slower on XLA:CPU (jaxlib 0.10.2), which would have slowed the comparator for nothing.
    return jax.nn.standardize(x, axis=-1, epsilon=eps) * p["g"] + p["b"]


def forward(params, idx, heads: int):
    """Scores (N, T, V) of the next token at every position of the ids ``idx`` (N, T)."""
    n, t = idx.shape
    x = params["wte"][idx] + params["wpe"][:t]
    for b in params["blocks"]:
        q, k, v = jnp.split(layer_norm(b["ln1"], x) @ b["attn_w"] + b["attn_b"], 3, axis=-1)
        q, k, v = (a.reshape(n, t, heads, -1) for a in (q, k, v))  # (N, T, h, E / h)
        y = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(n, t, -1)
        x = x + y @ b["proj_w"] + b["proj_b"]
        h = jax.nn.gelu(layer_norm(b["ln2"], x) @ b["fc_w"] + b["fc_b"], approximate=False)
        x = x + h @ b["out_w"] + b["out_b"]
    return layer_norm(params["ln_f"], x) @ params["wte"].T


def loss_fn(params, x, y, heads: int):
    """Mean cross-entropy (nats) of the next-token predictions over the N*T tokens."""
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x, heads), y).mean()


def schedule(lr: float, min_lr: float, warmup: int, steps: int) -> optax.Schedule:
    """nanoGPT's learning rate at step s (0-based): ``lr * s / warmup`` for s < warmup, then
    ``min_lr + (lr - min_lr) (1 + cos(pi (s - warmup) / (steps - warmup))) / 2``, ``min_lr``
    from ``steps`` on."""
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, end_value=min_lr)


def optimizer(lr: float, min_lr: float, warmup: int, steps: int, beta2: float, weight_decay: float,
              clip: float) -> optax.GradientTransformation:
    """nanoGPT's AdamW: :func:`schedule`'s rate, decoupled decay on the parameters of two or more
    dimensions, gradients clipped to a global norm."""
    decay_mask = functools.partial(jax.tree_util.tree_map, lambda p: p.ndim >= 2)
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(schedule(lr, min_lr, warmup, steps), b1=0.9,
                                                                    b2=beta2, weight_decay=weight_decay, mask=decay_mask))


def make_step(opt: optax.GradientTransformation, heads: int):
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)``: one jitted training step."""

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, heads)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


_batch_loss = jax.jit(loss_fn, static_argnums=3)


def mean_loss(params, heads: int, x, y, batch_size: int = 64) -> float:
    """The mean token cross-entropy over the windows ``x``, ``y`` (N, T), in batches."""
    total = sum(float(_batch_loss(params, x[i:i + batch_size], y[i:i + batch_size], heads)) * len(x[i:i + batch_size])
                for i in range(0, len(x), batch_size))
    return total / len(x)


def train(args) -> dict:
    """Train one run of ``args`` (the parsed command line); returns its history and results."""
    text = data.load_text("shakespeare")
    init_key, data_key = jax.random.split(jax.random.PRNGKey(args.seed))
    params = init_params(init_key, text.vocab_size, args.context, args.layers, args.width)
    opt = optimizer(args.lr, args.min_lr, args.warmup, args.steps, args.beta2, args.weight_decay, args.clip)
    opt_state, step = opt.init(params), make_step(opt, args.heads)
    get_batch = jax.jit(data.random_windows, static_argnums=(2, 3))
    train_ids, (val_x, val_y) = jnp.asarray(text.train), lm.validation_windows(text.val, args.context,
                                                                                 lm.CHEAP_VAL_WINDOWS)
    history = {k: [] for k in ("step", "train_loss", "val_loss", "time", "chars_per_s")}
    best, best_step, best_val, losses = None, 0, math.inf, []
    t0 = t_chunk = time.perf_counter()
    for s in range(args.steps):
        x, y = get_batch(jax.random.fold_in(data_key, s), train_ids, args.batch_size, args.context)
        params, opt_state, loss = step(params, opt_state, x, y)
        losses.append(loss)
        if (s + 1) % args.eval_every and s + 1 < args.steps:
            continue
        train_loss = float(np.mean(jax.device_get(losses)))  # waits for the chunk's steps
        seconds = time.perf_counter() - t_chunk
        val = mean_loss(params, args.heads, val_x, val_y)
        record = {"step": s + 1, "train_loss": train_loss, "val_loss": val, "time": time.perf_counter() - t0,
                  "chars_per_s": len(losses) * args.batch_size * args.context / seconds}
        for k, v in record.items():
            history[k].append(v)
        if val < best_val:  # the parameters are donated to the next step: keep a copy
            best, best_step, best_val = jax.tree_util.tree_map(jnp.copy, params), s + 1, val
        print(f"step {s + 1}/{args.steps}  train {train_loss:.4f}  val {val:.4f}  {record['time']:.1f}s", flush=True)
        losses, t_chunk = [], time.perf_counter()
    full_x, full_y = lm.validation_windows(text.val, args.context)
    val = mean_loss(best, args.heads, full_x, full_y)
    results = {"best_step": best_step, "val_loss": val, "val_bits_per_char": lm.bits(val), "val_windows": lm.VAL_WINDOWS,
               "context": args.context, "wall_time_s": history["time"][-1],
               "parameters": sum(p.size for p in jax.tree_util.tree_leaves(params))}
    return {"history": history, "results": results}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = {"layers": 4, "heads": 4, "width": 128, "context": 64, "batch-size": 12, "steps": 2000, "warmup": 100,
             "eval-every": 100, "seed": 0}
    for name, default in sizes.items():
        p.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    rates = {"lr": 1e-3, "min-lr": 1e-4, "beta2": 0.99, "weight-decay": 0.1, "clip": 1.0}
    for name, default in rates.items():
        p.add_argument(f"--{name}", type=float, default=default, help=f"default {default}")
    p.add_argument("--out", required=True, help="the run folder (config.json, history.json, results.json)")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    for name in ("layers", "heads", "width", "context", "batch_size", "steps", "eval_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.warmup < args.steps:
        p.error(f"--warmup must be in [0, --steps {args.steps}), got {args.warmup}")
    if args.width % args.heads:
        p.error(f"--heads {args.heads} does not divide --width {args.width}")
    run = train(args)
    os.makedirs(args.out, exist_ok=True)
    config = {"args": {k: v for k, v in vars(args).items() if k != "out"},
              "net": {"model": "plain JAX GPT", "parameters": run["results"]["parameters"]}}
    for name, record in (("config", config), ("history", run["history"]), ("results", run["results"])):
        files.atomic_write(os.path.join(args.out, f"{name}.json"), json.dumps(record, indent=1))
    print(f"validation loss {run['results']['val_loss']:.4f} nats/char; run saved in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
