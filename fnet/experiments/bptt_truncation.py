"""Truncated backpropagation through time (*Deep Learning from Scratch 2*, chapter 5): how far back
must the gradient flow? An LSTM language model trains on tiny-shakespeare cut into B parallel
streams of consecutive windows of T characters (:func:`fnet.data.contiguous_windows`); its state
(h, c) is CARRIED from one window to the next, so the forward pass sees the whole stream, but the
gradient is cut at every window boundary: T is the truncation length.

Each truncation length trains with the same number of updates of the same number of characters
(B * T = :data:`CHARS_PER_UPDATE` per update, so a short T has many streams), the same epochs and the same optimizer
(Adam 2e-3 cosine to 2e-4, gradients clipped at global norm 1). The state starts from zeros at
each epoch. The step is composed from the layers' hand-written passes (embedding, the
state-carrying LSTM :func:`fnet.layers.lstm_state_forward`/``backward``, temporal affine, the
temporal softmax loss), checked against ``jax.grad`` on the first batch of every run.

Validation loss: :func:`fnet.lm.validation_loss`, nats per character over 512 fixed windows of
128 characters from the last 10% of the text, each from a zero state, the same for every T.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fnet import data, layers, lm, losses, models, optim, plots, schedules

NAME = "bptt-truncation"
DESCRIPTION = "Validation loss of an LSTM language model against the truncation length of BPTT (state carried across windows)."
CHARS_PER_UPDATE = 4096
EVAL_CONTEXT = 128


def loss_and_grad(params, x, y, h0, c0):
    """The loss of one window (mean over its B*T tokens, nats) from the carried state ``(h0, c0)``
    (each (B, H)), its gradients by the hand-written passes with the gradient cut at ``(h0, c0)``,
    and the state after the window: ``(loss, grads, (h_T, c_T))``; x, y int (B, T)."""
    emb, lstm, out = params["embedding1"], params["lstm1"], params["temporal_dense1"]
    e, e_cache = layers.word_embedding_forward(x, emb["W"])
    h, c_last, l_cache = layers.lstm_state_forward(e, h0, c0, lstm["Wx"], lstm["Wh"], lstm["b"])
    scores, a_cache = layers.temporal_affine_forward(h, out["W"], out["b"])
    loss, dscores = losses.temporal_softmax_loss(scores, y, jnp.ones(y.shape, bool), normalize="tokens")
    dh, dW, db = layers.temporal_affine_backward(dscores, a_cache)
    de, _, _, dWx, dWh, dbl = layers.lstm_state_backward(dh, jnp.zeros_like(c_last), l_cache)
    grads = {"embedding1": {"W": layers.word_embedding_backward(de, e_cache)},
             "lstm1": {"Wx": dWx, "Wh": dWh, "b": dbl}, "temporal_dense1": {"W": dW, "b": db}}
    return loss, grads, (h[:, -1], c_last)


def _autodiff_rel_diff(params, x, y, h0, c0) -> float:
    """The largest relative difference, over the leaves, of the manual gradients against jax.grad."""
    manual = loss_and_grad(params, x, y, h0, c0)[1]
    auto = jax.grad(lambda p: loss_and_grad(p, x, y, h0, c0)[0])(params)
    diffs = jax.tree_util.tree_map(lambda m, a: float(jnp.linalg.norm(m - a) / jnp.linalg.norm(a)), manual, auto)
    return max(jax.tree_util.tree_leaves(diffs))


def _epoch(opt):
    """One compiled pass over the streams: ``(params, opt_state, xs, ys) -> (params, opt_state,
    losses)`` with xs, ys (steps, B, T), the state carried from window to window."""

    def epoch(params, opt_state, xs, ys):
        hidden = params["lstm1"]["Wh"].shape[0]
        zeros = jnp.zeros((xs.shape[1], hidden), params["lstm1"]["Wh"].dtype)

        def step(carry, batch):
            params, opt_state, state = carry
            loss, grads, state = loss_and_grad(params, *batch, *state)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optim.apply_updates(params, updates), opt_state, state), loss

        (params, opt_state, _), step_losses = jax.lax.scan(step, (params, opt_state, (zeros, zeros)), (xs, ys))
        return params, opt_state, step_losses

    return jax.jit(epoch, donate_argnums=(0, 1))


def train_truncated(text, ids, truncation: int, *, chars_per_update: int, embed: int, hidden: int, epochs: int,
                    seed: int) -> dict:
    """One LSTM trained with truncation length ``truncation`` on ``ids`` in windows of
    ``chars_per_update // truncation`` streams; returns its record."""
    batch = max(1, chars_per_update // truncation)
    xs, ys = data.contiguous_windows(ids, batch, truncation)
    net = models.char_lm(text.vocab_size, embed=embed, hidden=hidden, context=truncation)
    params, _ = net.init(jax.random.PRNGKey(seed))
    steps = epochs * xs.shape[0]
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(schedules.cosine(2e-3, steps, alpha=0.1)))
    zeros = jnp.zeros((batch, hidden), params["lstm1"]["Wh"].dtype)
    rel_diff = _autodiff_rel_diff(params, xs[0], ys[0], zeros, zeros)
    opt_state, epoch, train_loss = opt.init(params), _epoch(opt), []
    for _ in range(epochs):
        params, opt_state, step_losses = epoch(params, opt_state, xs, ys)
        train_loss.append(float(np.mean(step_losses)))
    evaluator = models.from_config(dataclasses.replace(net.config, context=EVAL_CONTEXT))
    return {"truncation": truncation, "batch": batch, "updates": steps, "train_loss": train_loss,
            "val_loss": lm.validation_loss(evaluator, params, text.val), "grad_rel_diff_vs_autodiff": rel_diff}


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Every truncation length's run.

    Returns:
      ``{"quick", "embed", "hidden", "epochs", "chars_per_update", "runs": [{"truncation", "batch",
      "updates", "train_loss" (per epoch), "val_loss", "grad_rel_diff_vs_autodiff"}]}``.
    """
    text = data.load_text("shakespeare", data_dir=data_dir)
    if quick:
        truncations, chars, embed, hidden, epochs, ids = (2, 16), 256, 8, 16, 1, text.train[:20_000]
    else:
        truncations, chars, embed, hidden, epochs, ids = (2, 8, 32, 128), CHARS_PER_UPDATE, 64, 256, 4, text.train
    runs = [train_truncated(text, ids, t, chars_per_update=chars, embed=embed, hidden=hidden, epochs=epochs, seed=seed)
            for t in truncations]
    return {"quick": quick, "embed": embed, "hidden": hidden, "epochs": epochs, "chars_per_update": chars, "runs": runs}


def summary(result: dict) -> str:
    lines = [f"LSTM H={result['hidden']}, {result['epochs']} epochs, {result['chars_per_update']} characters per update; "
             f"validation loss in nats/char (512 windows of {EVAL_CONTEXT} from the last 10%)",
             f"{'T':>5} {'streams':>7} {'updates':>7} {'train':>7} {'val':>7} {'vs jax.grad':>11}"]
    for r in result["runs"]:
        lines.append(f"{r['truncation']:>5} {r['batch']:>7} {r['updates']:>7} {r['train_loss'][-1]:>7.4f} "
                     f"{r['val_loss']:>7.4f} {r['grad_rel_diff_vs_autodiff']:>11.1e}")
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    t = [r["truncation"] for r in result["runs"]]
    ax.semilogx(t, [r["val_loss"] for r in result["runs"]], "o-", base=2, label="validation")
    ax.semilogx(t, [r["train_loss"][-1] for r in result["runs"]], "s--", base=2, label="train (last epoch's mean)")
    ax.set(xlabel="truncation length T (characters the gradient flows back)", ylabel="loss (nats/char)",
           title=f"Truncated BPTT, LSTM H={result['hidden']}, state carried across windows")
    ax.legend()
    fig.tight_layout()
    plots.save_figure(fig, path)
