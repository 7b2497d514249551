"""Time one training step of the same character-level LSTM language model in fnet (hand-written
backpropagation through time and autodiff), flax+optax, PyTorch (eager and torch.compile) and
cs231n-style NumPy, side by side in one process, against the step's matmul floor.

    python -m benchmarks.rnn_step [--quick] [--device cpu|gpu] [--configs h128,h512] [--reps N]
                                  [--threads N] [--no-torch-compile] [--out DIR]

The model (float32): token ids (B, T) -> embedding (65 -> 64) -> one LSTM layer of H units from a
zero state, every hidden state -> the same affine layer at every step to the 65 scores; the loss
is the softmax cross-entropy averaged over the B*T tokens; gradients clipped to global norm 1.0,
then Adam (lr 2e-3). Configurations: ``h128`` (H = 128) and ``h512`` (H = 512), both B = 32
windows of T = 64 characters of tiny-shakespeare (random offsets, the bundled copy).

Implementations (the same initial weights: fnet's modules' draws, mapped to each library's
layout; the same batches in the same order):

- ``fnet manual step`` / ``fnet manual epoch``: ``serial(embedding, lstm, temporal_dense)``'s
  hand-written backward chain (the LSTM's reverse-scan BPTT), ``temporal_softmax_loss(...,
  normalize="tokens")``, ``optim.chain(clip_by_global_norm(1.0), adam(2e-3))``; "step" is one
  jit-compiled call per step, "epoch" all the repetition's steps in one compiled ``lax.scan``;
- ``fnet autodiff step`` / ``fnet autodiff epoch``: the same with ``jax.value_and_grad`` of the
  same forward and loss;
- ``flax+optax``: ``nn.Embed``, ``nn.RNN(nn.OptimizedLSTMCell(H))``, ``nn.Dense``,
  ``optax.chain(clip_by_global_norm(1.0), adam(2e-3))`` in a ``TrainState``, one jitted step per
  call (flax's examples);
- ``torch eager`` / ``torch compile``: ``nn.Embedding``, ``nn.LSTM`` (PyTorch's fused kernel),
  ``nn.Linear``, ``clip_grad_norm_``, ``torch.optim.Adam``;
- ``numpy``: cs231n assignment 3's way, Python loops over time for the LSTM's forward and
  backward, ``np.add.at`` for the embedding's gradient; skipped above H = 128 (recorded).

The floor: the step's matmul flops at the rate of a square 2048^3 float32 matmul measured in the
same interleaved rounds. Per step, with E = 64, V = 65 and G = 4H gate columns::

    forward  = 2 B T (G (E + H) + H V)    (x Wx, h Wh, and the output layer)
    backward = 2 x forward                (dW and dx of every matmul: the LSTM's dx feeds the
                                           embedding's gradient, dh feeds the previous step)

The recurrence makes T dependent (B, H) x (H, 4H) products, far smaller than the floor's matmul,
so the floor bounds, it does not predict. Peak memory: XLA's ``memory_analysis()`` of the compiled
step and epoch (JAX implementations only). The first loss of every implementation (the same
weights, the same first batch) is recorded to check that they compute the same model. Results go
to ``DIR/rnn_step-<machine>.json`` and ``.md`` (``-quick`` in quick mode).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common, _lm
from fnet import combinators, losses, modules, optim

LR, CLIP, EMBED = 2e-3, 1.0, 64
#: name -> (hidden H, embedding E, batch B, window T, steps per repetition, default reps)
CONFIGS = {"h128": (128, EMBED, 32, 64, 10, 9), "h512": (512, EMBED, 32, 64, 5, 7)}
QUICK_CONFIGS = {"h128": (16, 8, 4, 8, 3, 2), "h512": (24, 8, 4, 8, 3, 2)}
#: The NumPy loops run up to this H (above, one step takes seconds on 2 cores).
NUMPY_MAX_HIDDEN = 128
PEERS = ("flax+optax", "torch eager", "torch compile", "numpy")


def step_flops(hidden: int, embed: int, vocab: int, batch: int, steps: int) -> dict:
    """Matmul flops of one training step (see the module docstring), T = ``steps``."""
    forward = 2 * batch * steps * (4 * hidden * (embed + hidden) + hidden * vocab)
    return {"forward": forward, "backward": 2 * forward, "total": 3 * forward}


# ------------------------------------------------------------------------------------ fnet


def fnet_model(vocab: int, embed: int, hidden: int):
    """``serial(embedding, lstm, temporal_dense)``: ids (B, T) -> scores (B, T, V)."""
    return combinators.serial(modules.embedding(vocab, embed), modules.lstm(hidden), modules.temporal_dense(vocab))


def fnet_loss_and_grad(model, grad: str):
    """``(params, ids, y) -> (loss, grads)``: the mean cross-entropy over the tokens and its
    gradient, by the modules' hand-written backward (``grad="manual"``) or ``jax.value_and_grad``."""
    def loss_of(scores, y):
        return losses.temporal_softmax_loss(scores, y, jnp.ones(y.shape, bool), normalize="tokens")

    def manual(params, ids, y):
        scores, _, cache = model.forward(params, {}, ids, train=True)
        loss, dscores = loss_of(scores, y)
        return loss, model.backward(params, cache, dscores)[1]

    def autodiff(params, ids, y):
        return jax.value_and_grad(lambda p: loss_of(model.forward(p, {}, ids, train=True)[0], y)[0])(params)

    return {"manual": manual, "autodiff": autodiff}[grad]


def _fnet(grad: str, scanned: bool, model, params0, ids, y) -> _common.Impl:
    """fnet's step (one compiled call per batch) or epoch (every batch in one ``lax.scan``)."""
    opt = optim.chain(optim.clip_by_global_norm(CLIP), optim.adam(LR))
    return _lm.fnet_steps(f"fnet {grad} {'epoch' if scanned else 'step'}", fnet_loss_and_grad(model, grad), opt,
                          params0, ids, y, scanned=scanned)


def _lstm_blocks(a, hidden: int) -> dict:
    """fnet's gate blocks (columns i, f, o, g of a (..., 4H) array) by gate name."""
    return {gate: a[..., k * hidden:(k + 1) * hidden] for k, gate in enumerate("ifog")}


# ------------------------------------------------------------------------------------ flax


def _flax(params0, ids, y, hidden: int, vocab: int) -> _common.Impl:
    import flax.linen as nn
    import optax
    from flax.training import train_state

    class CharLSTM(nn.Module):
        @nn.compact
        def __call__(self, ids):
            x = nn.Embed(vocab, params0["embedding1"]["W"].shape[1])(ids)
            return nn.Dense(vocab)(nn.RNN(nn.OptimizedLSTMCell(hidden))(x))

    # fnet's weights in flax's names: one (in, H) kernel per gate, the bias on the hidden side.
    lstm = params0["lstm1"]
    wx, wh, b = (_lstm_blocks(lstm[k], hidden) for k in ("Wx", "Wh", "b"))
    cell = {**{f"i{g}": {"kernel": wx[g]} for g in "ifgo"}, **{f"h{g}": {"kernel": wh[g], "bias": b[g]} for g in "ifgo"}}
    params = {"Embed_0": {"embedding": params0["embedding1"]["W"]}, "OptimizedLSTMCell_0": cell,
              "Dense_0": {"kernel": params0["temporal_dense1"]["W"], "bias": params0["temporal_dense1"]["b"]}}
    model = CharLSTM()
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids[0])["params"]
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    assert shapes == jax.tree_util.tree_map(jnp.shape, expected), f"flax's parameters are {expected}, not {shapes}"
    params = jax.tree_util.tree_map(jnp.array, params)
    tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    return _common.flax_loop(state, [(jnp.asarray(a), jnp.asarray(b)) for a, b in zip(ids, y)])


# ------------------------------------------------------------------------------------ torch


def _torch(name, params0, ids, y, hidden: int, device: str, compile_model: bool) -> _common.Impl:
    import torch
    from torch import nn

    emb_w, lstm, dense = params0["embedding1"]["W"], params0["lstm1"], params0["temporal_dense1"]
    vocab, embed = emb_w.shape

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.lstm = nn.Embedding(vocab, embed), nn.LSTM(embed, hidden, batch_first=True)
            self.out = _common.torch_linear(dense["W"], dense["b"])

        def forward(self, ids):
            return self.out(self.lstm(self.embed(ids))[0])

    model = CharLSTM()
    order = [0, 1, 3, 2]  # PyTorch's rows are gates i, f, g, o; fnet's columns i, f, o, g

    def rows(w):
        blocks = list(_lstm_blocks(np.asarray(w), hidden).values())
        return torch.from_numpy(np.concatenate([blocks[k] for k in order], axis=-1).T.copy())

    with torch.no_grad():
        model.embed.weight.copy_(torch.from_numpy(np.array(emb_w)))
        model.lstm.weight_ih_l0.copy_(rows(lstm["Wx"]))
        model.lstm.weight_hh_l0.copy_(rows(lstm["Wh"]))
        model.lstm.bias_ih_l0.copy_(rows(lstm["b"][None])[:, 0])
        model.lstm.bias_hh_l0.zero_()
    return _lm.torch_loop(name, model, ids, y, device=device, compile_model=compile_model,
                          make_optimizer=lambda params: torch.optim.Adam(params, lr=LR), clip=CLIP)


# ------------------------------------------------------------------------------------ numpy


def _sigmoid(a):
    return 0.5 * (1 + np.tanh(0.5 * a))  # no overflow for large |a|


def numpy_loss_and_grads(p: dict, ids, y):
    """cs231n assignment 3's char-LM step in NumPy: the LSTM's forward and backward as Python
    loops over time (gates i, f, o, g), the mean cross-entropy over the tokens.

    Args:
      p: ``{"emb" (V, E), "Wx" (E, 4H), "Wh" (H, 4H), "b" (4H,), "W" (H, V), "bo" (V,)}``.
      ids, y: int (B, T).

    Returns:
      ``(loss, grads)`` with grads keyed as ``p``.
    """
    n, t = ids.shape
    hidden = p["Wh"].shape[0]
    x, dtype = p["emb"][ids], p["Wh"].dtype
    h = c = np.zeros((n, hidden), dtype)
    hs, caches = np.zeros((n, t, hidden), dtype), []
    for s in range(t):
        a = x[:, s] @ p["Wx"] + h @ p["Wh"] + p["b"]
        i, f, o = (_sigmoid(a[:, k * hidden:(k + 1) * hidden]) for k in range(3))
        g = np.tanh(a[:, 3 * hidden:])
        c_prev, h_prev = c, h
        c = f * c + i * g
        tanh_c = np.tanh(c)
        h = o * tanh_c
        hs[:, s] = h
        caches.append((i, f, o, g, c_prev, h_prev, tanh_c))
    scores = hs.reshape(n * t, hidden) @ p["W"] + p["bo"]
    z = scores - scores.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    flat_y = y.reshape(-1)
    loss = -logp[np.arange(n * t), flat_y].mean()
    dscores = np.exp(logp)
    dscores[np.arange(n * t), flat_y] -= 1
    dscores /= n * t
    grads = {"W": hs.reshape(n * t, hidden).T @ dscores, "bo": dscores.sum(axis=0)}
    dhs = (dscores @ p["W"].T).reshape(n, t, hidden)
    grads.update(Wx=np.zeros_like(p["Wx"]), Wh=np.zeros_like(p["Wh"]), b=np.zeros_like(p["b"]))
    dx, dh, dc = np.zeros_like(x), np.zeros((n, hidden), dtype), np.zeros((n, hidden), dtype)
    for s in reversed(range(t)):
        i, f, o, g, c_prev, h_prev, tanh_c = caches[s]
        dh = dh + dhs[:, s]
        dc = dc + dh * o * (1 - tanh_c**2)
        da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dh * tanh_c * o * (1 - o),
                             dc * i * (1 - g**2)], axis=1)
        grads["Wx"] += x[:, s].T @ da
        grads["Wh"] += h_prev.T @ da
        grads["b"] += da.sum(axis=0)
        dx[:, s] = da @ p["Wx"].T
        dh, dc = da @ p["Wh"].T, dc * f
    grads["emb"] = np.zeros_like(p["emb"])
    np.add.at(grads["emb"], ids, dx)
    return loss, grads


def _numpy(params0, ids, y) -> _common.Impl:
    lstm, dense = params0["lstm1"], params0["temporal_dense1"]
    p = {k: np.array(v) for k, v in (("emb", params0["embedding1"]["W"]), ("Wx", lstm["Wx"]), ("Wh", lstm["Wh"]),
                                    ("b", lstm["b"]), ("W", dense["W"]), ("bo", dense["b"]))}
    adam = _common.numpy_adam(list(p.values()), LR)

    def step(x, t):
        loss, grads = numpy_loss_and_grads(p, x, t)
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        scale = np.float32(CLIP / norm) if norm > CLIP else np.float32(1)
        adam([grads[k] * scale for k in p])
        return loss

    return _common.python_loop("numpy", step, list(zip(ids, y)))


# ------------------------------------------------------------------------------------ driver


def bench_config(spec, *, ds, reps, device, torch_compile, matmul_n) -> dict:
    """Time every implementation on one configuration; return its JSON record."""
    hidden, embed, batch, steps, per_rep, default_reps = spec
    reps = reps or default_reps
    vocab = ds.vocab_size
    model = fnet_model(vocab, embed, hidden)
    params0, _, _ = model.init(jax.random.PRNGKey(0), (batch, steps))
    ids, y = _lm.text_batches(ds, batch, steps, per_rep)
    impls = [_fnet(grad, scanned, model, params0, ids, y) for grad in ("manual", "autodiff") for scanned in (False, True)]
    impls.append(_flax(params0, ids, y, hidden, vocab))
    skip = (f"skipped at H = {hidden} (> {NUMPY_MAX_HIDDEN}): its Python loops over T take seconds per step"
            if hidden > NUMPY_MAX_HIDDEN else None)
    tdev = _common.torch_device(device)
    more, not_run = _common.peers(lambda name, compile_model: _torch(name, params0, ids, y, hidden, tdev, compile_model),
                                  lambda: _numpy(params0, ids, y), "numpy", device=device, torch_compile=torch_compile,
                                  numpy_skip=skip)
    flops = step_flops(hidden, embed, vocab, batch, steps)
    timing = _common.time_against_floor(impls + more, reps=reps, matmul_n=matmul_n, flops=flops)
    for impl in impls + more:
        timing["results"][impl.name]["first_loss"] = impl.losses[0]
    return {"hidden": hidden, "embed": embed, "vocab": vocab, "batch": batch, "T": steps, "steps_per_rep": per_rep,
            "reps": reps, "params": sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params0)), "flops": flops,
            **timing, "not_run": not_run}


def targets(configs: dict) -> dict:
    """The goals on this run's medians: manual <= autodiff in time and peak memory (step and
    epoch), fnet ahead of flax; the ratio to PyTorch eager is recorded as it is (goal: none)."""
    out = {}

    def add(name, value, goal, met):
        out[name] = {"value": value, "goal": goal, "met": bool(met)}

    for cname, c in configs.items():
        r = c["results"]
        _lm.manual_vs_autodiff(add, cname, r)
        ref = r[_common.REFERENCE]["median_s"]
        add(f"{cname}: flax+optax / fnet manual epoch", r["flax+optax"]["median_s"] / ref, ">= 1.0",
            r["flax+optax"]["median_s"] >= ref)
        if "torch eager" in r:
            add(f"{cname}: torch eager / fnet manual epoch", r["torch eager"]["median_s"] / ref, "recorded", True)
    return out


def main(argv=None) -> tuple[str, str]:
    """Run the benchmark and write its JSON and Markdown; returns their paths."""
    return _lm.run("rnn_step", __doc__, CONFIGS, QUICK_CONFIGS, bench_config, targets,
                   lambda c: f"embedding {c['vocab']} -> {c['embed']}, LSTM H = {c['hidden']}, dense -> {c['vocab']}",
                   argv, learning_rate=LR, clip=CLIP)


if __name__ == "__main__":
    main()
