"""Time one training step of the same character-level GPT in fnet (the composition's hand-written
backward, storing or recomputing the attention weights, and autodiff), flax+optax and PyTorch
(eager and torch.compile), side by side in one process, against the step's matmul floor.

    python -m benchmarks.transformer_step [--quick] [--device cpu|gpu] [--configs nano,large]
                                          [--reps N] [--threads N] [--no-torch-compile] [--out DIR]

The model (float32, ``fnet.gpt``): token ids (B, T) -> token embedding (V -> E) + learned
positions -> L pre-norm blocks (``x + attention(layernorm(x))``, causal multi-head self-attention
of h heads; ``x + W2 gelu(W1 layernorm(x))``, hidden 4E, exact GELU) -> layer norm -> scores (B,
T, V); the loss is the softmax cross-entropy averaged over the B*T tokens; gradients clipped to
global norm 1.0, then AdamW (lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on every parameter),
no dropout: nanoGPT's ``train_shakespeare_char`` recipe. Configurations, on windows of
tiny-shakespeare (V = 65, random offsets, the bundled copy):

- ``nano``: nanoGPT's CPU size, L = 4, h = 4, E = 128, T = 64, B = 12;
- ``large``: L = 6, h = 6, E = 384, T = 256, B = 8 (nanoGPT's GPU recipe's width and context).

Implementations (the same initial weights: fnet's draws, mapped to each library's layout; the
same batches in the same order):

- ``fnet manual step`` / ``fnet manual epoch``: ``fnet.gpt``'s hand-written backward chain
  (``net.loss_and_grad``), ``optim.chain(clip_by_global_norm(1.0), adamw(...))``; "step" is one
  jit-compiled call per step, "epoch" all the repetition's steps in one compiled ``lax.scan``;
- ``fnet manual recompute epoch``: the same with ``recompute=True``: the attention's backward
  recomputes the softmax weights from q and k instead of keeping them from the forward;
- ``fnet autodiff step`` / ``fnet autodiff epoch``: ``jax.value_and_grad`` of the same forward;
- ``flax+optax``: ``flax.linen`` with ``nn.MultiHeadDotProductAttention`` (a causal
  ``nn.make_causal_mask``), ``nn.LayerNorm``, ``nn.Dense``, ``nn.gelu``, ``nn.Embed`` for tokens
  and positions; ``optax.chain(clip_by_global_norm(1.0), adamw(...))`` in a ``TrainState``;
- ``torch eager`` / ``torch compile``: nanoGPT's ``model.py`` shape (one fused q, k, v
  ``nn.Linear``, ``F.scaled_dot_product_attention(is_causal=True)``, ``nn.GELU``),
  ``clip_grad_norm_``, ``torch.optim.AdamW``.

The floor: the step's matmul flops at the rate of a square 2048^3 float32 matmul measured in the
same interleaved rounds. Per step, every implementation computing the full T x T scores::

    forward  = L (2 B T 12 E^2 + 4 B T^2 E) + 2 B T E V
               (q, k, v, output projections 4 E^2 and the MLP 8 E^2 per token; q k^T and
                weights v, 2 B T^2 E each; the output layer)
    backward = 2 x forward     (dW and dx of every matmul: dx reaches the embeddings)

Recomputing the weights adds one q k^T product per layer to the backward; the floor does not
count it. Peak memory: XLA's ``memory_analysis()`` of the compiled step and epoch (JAX
implementations only). The first loss of every implementation (the same weights, the same first
batch) is recorded to check that they compute the same model. Results go to
``DIR/transformer_step-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

import fnet
from benchmarks import _common, _lm
from fnet import optim

LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0
#: name -> (layers L, heads h, width E, context T, batch B, steps per repetition, default reps)
CONFIGS = {"nano": (4, 4, 128, 64, 12, 10, 7), "large": (6, 6, 384, 256, 8, 2, 5)}
QUICK_CONFIGS = {"nano": (1, 2, 16, 8, 4, 3, 2), "large": (2, 2, 24, 16, 2, 3, 2)}
#: fnet's layer norm epsilon (``modules.layernorm``'s default), given to the peers' layer norms.
LN_EPS = 1e-5


def step_flops(layers: int, width: int, context: int, batch: int, vocab: int) -> dict:
    """Matmul flops of one training step (see the module docstring)."""
    tokens = batch * context
    forward = layers * (2 * tokens * 12 * width**2 + 4 * tokens * context * width) + 2 * tokens * width * vocab
    return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}


def fnet_net(vocab: int, spec, recompute: bool = False):
    """``fnet.gpt`` at the size of ``spec`` (a :data:`CONFIGS` value)."""
    layers, heads, width, context = spec[:4]
    return fnet.gpt(vocab, context, layers=layers, heads=heads, width=width, recompute=recompute)


def fnet_loss_and_grad(net, grad: str):
    """``(params, ids, y) -> (loss, grads)``: by the composition's hand-written backward
    (``grad="manual"``, ``net.loss_and_grad``) or ``jax.value_and_grad`` of ``net.loss``."""
    def manual(params, ids, y):
        return net.loss_and_grad(params, ids, y)[:2]

    def autodiff(params, ids, y):
        return jax.value_and_grad(lambda p: net.loss(p, ids, y)[0])(params)

    return {"manual": manual, "autodiff": autodiff}[grad]


def _fnet(name: str, net, grad: str, scanned: bool, params0, ids, y) -> _common.Impl:
    opt = optim.chain(optim.clip_by_global_norm(CLIP),
                      optim.adamw(LR, *BETAS, eps=1e-8, weight_decay=WEIGHT_DECAY))
    return _lm.fnet_steps(name, fnet_loss_and_grad(net, grad), opt, params0, ids, y, scanned=scanned)


def _blocks(params0) -> list[dict]:
    """fnet's blocks, in order, each as ``{"ln1", "attn", "ln2", "fc", "proj"}`` of fnet's leaves."""
    blocks = [params0[f"serial{i}"] for i in range(1, len(params0) + 1) if f"serial{i}" in params0]
    return [{"ln1": b["residual1"]["branches"]["block"]["layernorm1"],
             "attn": b["residual1"]["branches"]["block"]["self_attention1"],
             "ln2": b["residual2"]["branches"]["block"]["layernorm1"],
             "fc": b["residual2"]["branches"]["block"]["temporal_dense1"],
             "proj": b["residual2"]["branches"]["block"]["temporal_dense2"]} for b in blocks]


# ------------------------------------------------------------------------------------ flax


def _flax(params0, ids, y, heads: int) -> _common.Impl:
    import flax.linen as nn
    import optax
    from flax.training import train_state

    vocab, width = params0["embedding1"]["W"].shape
    context, layers, d = params0["position_embedding1"]["P"].shape[0], len(_blocks(params0)), width // heads

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, mask):
            x = x + nn.MultiHeadDotProductAttention(heads, qkv_features=width, out_features=width)(
                nn.LayerNorm(LN_EPS)(x), mask=mask)
            hidden = nn.Dense(4 * width)(nn.LayerNorm(LN_EPS)(x))
            return x + nn.Dense(width)(nn.gelu(hidden, approximate=False))

    class GPT(nn.Module):
        @nn.compact
        def __call__(self, ids):
            t = ids.shape[1]
            x = nn.Embed(vocab, width)(ids) + nn.Embed(context, width)(jnp.arange(t))
            mask = nn.make_causal_mask(ids)
            for _ in range(layers):
                x = Block()(x, mask)
            return nn.Dense(vocab)(nn.LayerNorm(LN_EPS)(x))

    def ln(p):
        return {"scale": p["gamma"], "bias": p["beta"]}

    def dense(p):
        return {"kernel": p["W"], "bias": p["b"]}

    def attention(p):  # fnet's (E, E) projections, head i = features i*d ... (i+1)*d - 1
        qkv = {name: {"kernel": p[f"W{c}"].reshape(width, heads, d), "bias": p[f"b{c}"].reshape(heads, d)}
               for name, c in (("query", "q"), ("key", "k"), ("value", "v"))}
        return {**qkv, "out": {"kernel": p["Wo"].reshape(heads, d, width), "bias": p["bo"]}}

    params = {"Embed_0": {"embedding": params0["embedding1"]["W"]},
              "Embed_1": {"embedding": params0["position_embedding1"]["P"]},
              "LayerNorm_0": ln(params0["layernorm1"]), "Dense_0": dense(params0["temporal_dense1"])}
    for i, b in enumerate(_blocks(params0)):
        params[f"Block_{i}"] = {"MultiHeadDotProductAttention_0": attention(b["attn"]), "LayerNorm_0": ln(b["ln1"]),
                                "LayerNorm_1": ln(b["ln2"]), "Dense_0": dense(b["fc"]), "Dense_1": dense(b["proj"])}
    model = GPT()
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids[0])["params"]
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    assert shapes == jax.tree_util.tree_map(jnp.shape, expected), f"flax's parameters are {expected}, not {shapes}"
    params = jax.tree_util.tree_map(jnp.array, params)
    tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.adamw(LR, *BETAS, eps=1e-8, weight_decay=WEIGHT_DECAY))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    return _common.flax_loop(state, [(jnp.asarray(a), jnp.asarray(b)) for a, b in zip(ids, y)])


# ------------------------------------------------------------------------------------ torch


def torch_gpt(params0, heads: int):
    """nanoGPT's ``GPT`` module shape in PyTorch holding fnet's weights (``nn.Linear`` stores W^T;
    q, k and v are one (E, 3E) ``c_attn``)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    vocab, width = params0["embedding1"]["W"].shape

    def t(a):
        return torch.from_numpy(np.array(a))

    class Attention(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.c_attn = _common.torch_linear(np.concatenate([p["Wq"], p["Wk"], p["Wv"]], axis=1),
                                               np.concatenate([p["bq"], p["bk"], p["bv"]]))
            self.c_proj = _common.torch_linear(p["Wo"], p["bo"])

        def forward(self, x):
            b, n, e = x.shape
            q, k, v = (z.view(b, n, heads, e // heads).transpose(1, 2) for z in self.c_attn(x).split(e, dim=2))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(out.transpose(1, 2).reshape(b, n, e))

    def layer_norm(p):
        ln = nn.LayerNorm(width, eps=LN_EPS)
        with torch.no_grad():
            ln.weight.copy_(t(p["gamma"]))
            ln.bias.copy_(t(p["beta"]))
        return ln

    class Block(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = layer_norm(p["ln1"]), Attention(p["attn"]), layer_norm(p["ln2"])
            self.mlp = nn.Sequential(_common.torch_linear(p["fc"]["W"], p["fc"]["b"]), nn.GELU(),
                                     _common.torch_linear(p["proj"]["W"], p["proj"]["b"]))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding.from_pretrained(t(params0["embedding1"]["W"]), freeze=False)
            self.wpe = nn.Embedding.from_pretrained(t(params0["position_embedding1"]["P"]), freeze=False)
            self.h = nn.ModuleList([Block(p) for p in _blocks(params0)])
            self.ln_f = layer_norm(params0["layernorm1"])
            self.lm_head = _common.torch_linear(params0["temporal_dense1"]["W"], params0["temporal_dense1"]["b"])

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return GPT()


def _torch(name, params0, ids, y, heads: int, device: str, compile_model: bool) -> _common.Impl:
    import torch

    return _lm.torch_loop(name, torch_gpt(params0, heads), ids, y, device=device, compile_model=compile_model,
                          make_optimizer=lambda p: torch.optim.AdamW(p, lr=LR, betas=BETAS, eps=1e-8,
                                                                     weight_decay=WEIGHT_DECAY),
                          clip=CLIP)


# ------------------------------------------------------------------------------------ driver


def bench_config(spec, *, ds, reps, device, torch_compile, matmul_n) -> dict:
    """Time every implementation on one configuration; return its JSON record."""
    layers, heads, width, context, batch, per_rep, default_reps = spec
    reps = reps or default_reps
    vocab = ds.vocab_size
    net = fnet_net(vocab, spec)
    params0 = net.init(jax.random.PRNGKey(0)).params
    ids, y = _lm.text_batches(ds, batch, context, per_rep)
    impls = [_fnet(f"fnet {grad} {'epoch' if scanned else 'step'}", net, grad, scanned, params0, ids, y)
             for grad in ("manual", "autodiff") for scanned in (False, True)]
    impls.append(_fnet("fnet manual recompute epoch", fnet_net(vocab, spec, recompute=True), "manual", True,
                       params0, ids, y))
    impls.append(_flax(params0, ids, y, heads))
    tdev = _common.torch_device(device)
    more, not_run = _common.peers(lambda name, compile_model: _torch(name, params0, ids, y, heads, tdev, compile_model),
                                  None, None, device=device, torch_compile=torch_compile)
    flops = step_flops(layers, width, context, batch, vocab)
    timing = _common.time_against_floor(impls + more, reps=reps, matmul_n=matmul_n, flops=flops)
    for impl in impls + more:
        timing["results"][impl.name]["first_loss"] = impl.losses[0]
    return {"layers": layers, "heads": heads, "width": width, "T": context, "batch": batch, "vocab": vocab,
            "steps_per_rep": per_rep, "reps": reps,
            "params": sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params0)), "flops": flops,
            **timing, "not_run": not_run}


def targets(configs: dict) -> dict:
    """The goals on this run's medians: manual <= autodiff in time and peak memory (step and
    epoch), fnet ahead of flax and of PyTorch eager; recompute / store recorded as measured."""
    out = {}

    def add(name, value, goal, met):
        out[name] = {"value": value, "goal": goal, "met": bool(met)}

    def peak(r):
        return r["peak_memory"]["peak_bytes"] if r["peak_memory"] else None

    for cname, c in configs.items():
        r = c["results"]
        _lm.manual_vs_autodiff(add, cname, r)
        store, recompute = r["fnet manual epoch"], r["fnet manual recompute epoch"]
        add(f"{cname}: recompute / store epoch time", recompute["median_s"] / store["median_s"], "recorded", True)
        if peak(store) and peak(recompute):
            add(f"{cname}: recompute / store epoch peak memory", peak(recompute) / peak(store), "recorded", True)
        ref = r[_common.REFERENCE]["median_s"]
        for peer in ("flax+optax", "torch eager"):
            if peer in r:
                add(f"{cname}: {peer} / fnet manual epoch", r[peer]["median_s"] / ref, ">= 1.0",
                    r[peer]["median_s"] >= ref)
    return out


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    return _lm.run("transformer_step", __doc__, CONFIGS, QUICK_CONFIGS, bench_config, targets,
                   lambda c: f"GPT, {c['layers']} layers, {c['heads']} heads, width {c['width']}, vocabulary {c['vocab']}",
                   argv, learning_rate=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, clip=CLIP)


if __name__ == "__main__":
    main()
