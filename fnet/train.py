"""Training: a jit-compiled step, whole epochs in one compiled call, evaluation and ``fit``.

The pieces, from the inside out::

    step  = make_train_step(net, opt, grad="manual")   # one minibatch, jit-compiled
    epoch = make_epoch(net, opt, batch_size=128)       # every minibatch of an epoch in ONE call
    metrics = evaluate(net, params, state, x, y)        # batched, jit-compiled
    result = fit(net, opt, x, y, val=(xv, yv), epochs=10, batch_size=128)

``grad="manual"`` differentiates with the network's hand-written backward chain
(``net.loss_and_grad``), ``grad="autodiff"`` with ``jax.value_and_grad(net.loss)``; both run the
same forward code and the same optimizer, so their trajectories agree to rounding error.

Randomness is a pure function of the seed: the init key, and for epoch ``e`` the shuffling and
dropout keys, all derive from ``PRNGKey(seed)`` by ``fold_in``, so a run resumed from the
checkpoint of epoch ``k`` continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, checkpoint, losses, optim
from fnet.nets import Net

GRAD_MODES = ("manual", "autodiff")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: dict):
        super().__init__(message)
        self.history = history


def _grad_fn(net: Net, grad: str, fn: str) -> Callable:
    """``(params, x, y, state, key, hparams) -> (loss, grads, new_state)`` for a gradient mode."""
    if grad == "manual":
        return lambda params, x, y, state, key, hp: net.loss_and_grad(params, x, y, state=state, key=key, **hp)
    if grad == "autodiff":
        value_and_grad = jax.value_and_grad(net.loss, has_aux=True)

        def autodiff(params, x, y, state, key, hp):
            (loss, new_state), grads = value_and_grad(params, x, y, state=state, key=key, **hp)
            return loss, grads, new_state

        return autodiff
    raise ValueError(f"{fn}: grad must be one of {GRAD_MODES}, got {grad!r}")


def _step_body(net: Net, opt, grad: str, fn: str) -> Callable:
    loss_and_grad = _grad_fn(net, grad, fn)

    def step(params, state, opt_state, batch, key, hparams):
        x, y = batch
        loss, grads, state = loss_and_grad(params, x, y, state, key, hparams)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), state, opt_state, loss

    return step


def make_train_step(net: Net, opt, *, grad: str = "manual", jit: bool = True, donate: bool = True) -> Callable:
    """One training step on one minibatch.

    Returns ``step(params, state, opt_state, batch, key) -> (params, state, opt_state, metrics)``
    where ``batch = (x, y)`` with x of shape (B, D) and y of shape (B,) (class labels) or (B, C)
    (regression targets), ``key`` the dropout key (may be None without dropout) and
    ``metrics = {"loss": scalar}``, the train-mode loss (with weight decay) BEFORE the update.

    Args:
      net: a network from :func:`fnet.mlp`.
      opt: an ``(init, update)`` optimizer from :mod:`fnet.optim` (or optax).
      grad: "manual" (hand-written backward) or "autodiff" (``jax.grad``).
      jit: compile the step with ``jax.jit``.
      donate: donate the params, state and optimizer-state buffers to the output (the caller
        must not reuse the arrays it passed in).
    """
    body = _step_body(net, opt, grad, "make_train_step")

    def step(params, state, opt_state, batch, key):
        params, state, opt_state, loss = body(params, state, opt_state, batch, key, {})
        return params, state, opt_state, {"loss": loss}

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1, 2) if donate else ())


def epoch_keys(seed_key, epoch: int):
    """``(shuffle_key, dropout_key)`` of an epoch: ``fold_in(seed_key, epoch)`` split in two."""
    return jax.random.split(jax.random.fold_in(seed_key, epoch))


def make_epoch(net: Net, opt, *, batch_size: int, grad: str = "manual", donate: bool = True) -> Callable:
    """A whole epoch of minibatch steps in ONE compiled call.

    Returns ``epoch(params, state, opt_state, x, y, key, hparams=None) ->
    (params, state, opt_state, losses)``: the N samples are permuted with ``key``, cut into
    ``N // batch_size`` minibatches (the last incomplete one is dropped, so every step sees the
    same shape), and the steps run inside a ``lax.scan``; ``losses`` has shape (steps,).
    Step ``i`` uses dropout key ``fold_in(key_dropout, i)`` where ``key_shuffle, key_dropout =
    split(key)``. ``hparams`` (optional dict with "weight_decay" and/or "dropout", possibly
    traced) overrides the network's values, for vmapped sweeps.

    Args:
      x: array of shape (N, D); y: array of shape (N,) or (N, C); both on device.
    """
    fn = "make_epoch"
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int, got {batch_size!r}")
    body = _step_body(net, opt, grad, fn)

    def epoch(params, state, opt_state, x, y, key, hparams=None):
        n = x.shape[0]
        if batch_size > n:
            raise ValueError(f"{fn}: batch_size {batch_size} is larger than the {n} training samples")
        steps = n // batch_size
        key_shuffle, key_dropout = jax.random.split(key)
        order = jax.random.permutation(key_shuffle, n)[: steps * batch_size].reshape(steps, batch_size)

        def scan_step(carry, inputs):
            idx, i = inputs
            params, state, opt_state = carry
            batch = (jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0))
            params, state, opt_state, loss = body(
                params, state, opt_state, batch, jax.random.fold_in(key_dropout, i), hparams or {}
            )
            return (params, state, opt_state), loss

        (params, state, opt_state), step_losses = jax.lax.scan(
            scan_step, (params, state, opt_state), (order, jnp.arange(steps))
        )
        return params, state, opt_state, step_losses

    return jax.jit(epoch, donate_argnums=(0, 1, 2) if donate else ())


@functools.lru_cache(maxsize=64)
def _eval_fn(net: Net, batch_size: int):
    loss_fn = losses.LOSSES[net.config.loss]

    @jax.jit
    def run(params, state, x, y):
        n = x.shape[0]
        nb = -(-n // batch_size)
        pad = nb * batch_size - n
        xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
        chunks = xp.reshape(nb, batch_size, *x.shape[1:])
        scores = jax.lax.map(lambda xb: net.apply(params, xb, state=state), chunks)
        scores = scores.reshape(nb * batch_size, -1)[:n]
        if net.config.loss != "softmax_cross_entropy":
            scores = scores.reshape((n, *y.shape[1:]))
        loss, _ = loss_fn(scores, y)
        if net.config.loss == "softmax_cross_entropy":
            acc = jnp.mean(jnp.argmax(scores, axis=1) == y)
        elif net.config.loss == "sigmoid_binary_cross_entropy":
            acc = jnp.mean((scores > 0) == (y > 0.5))
        else:
            acc = jnp.nan
        return loss, acc

    return run


def evaluate(net: Net, params, state, x, y, *, batch_size: int = 1000) -> dict:
    """Eval-mode loss and accuracy over a whole data set, in fixed-size batches under jit.

    The loss is the data loss only (no weight decay), averaged over all N samples; accuracy is
    the fraction of correct argmax predictions (softmax cross-entropy), of correct signs
    (binary cross-entropy), or NaN (regression).

    Args:
      x: array of shape (N, D); y: labels (N,) or targets (N, C).

    Returns:
      ``{"loss": float, "accuracy": float}``.
    """
    fn = "evaluate"
    x = _checks.float_array(fn, "x", x, min_ndim=2)
    if net.config.loss == "softmax_cross_entropy":
        _checks.labels(fn, "y", y, x.shape[0], net.config.output_dim)
    loss, acc = _eval_fn(net, min(batch_size, max(1, x.shape[0])))(params, state, jnp.asarray(x), jnp.asarray(y))
    return {"loss": float(loss), "accuracy": float(acc)}


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Fields:
      params, state, opt_state: after the last epoch run.
      best_params, best_state: those of the epoch with the best validation accuracy (the last
        epoch without validation data).
      best_epoch: that epoch's number (1-based).
      history: per-epoch lists: "epoch", "train_loss" (mean minibatch loss), "train_acc"
        (eval mode, on up to ``train_eval_samples`` training samples), "val_loss", "val_acc",
        "lr", "epoch_time" (seconds), "samples_per_s".
      stopped_early: True when early stopping ended the run.
    """

    params: dict
    state: dict
    opt_state: object
    best_params: dict
    best_state: dict
    best_epoch: int
    history: dict
    stopped_early: bool


HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "samples_per_s")
CHECKPOINT_NAME = "checkpoint.npz"


def _check_data(fn, net, name, x, y):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{fn}: {name} features must be floating point, got dtype {x.dtype}")
    if x.ndim < 2 or math.prod(x.shape[1:]) != net.config.input_dim:
        raise ValueError(f"{fn}: {name} features have shape {x.shape} but the network expects (N, {net.config.input_dim})")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise ValueError(f"{fn}: {name} features contain NaN or inf (first at sample {bad[0]}, feature {bad[1]})")
    if net.config.loss == "softmax_cross_entropy":
        _checks.labels(fn, f"{name} labels", np.asarray(y), len(x), net.config.output_dim)
    elif len(y) != len(x):
        raise ValueError(f"{fn}: {name} targets have {len(y)} rows but the features have {len(x)}")


def fit(
    net: Net,
    opt,
    x,
    y,
    *,
    val=None,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    grad: str = "manual",
    params=None,
    state=None,
    early_stopping: int | None = None,
    train_eval_samples: int = 1000,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    print_fn: Callable[[str], None] = print,
) -> FitResult:
    """Train ``net`` with ``opt`` for ``epochs`` epochs, one compiled call per epoch.

    Args:
      x, y: training data, x of shape (N, D), y of shape (N,) (labels) or (N, C) (targets).
      val: optional ``(x_val, y_val)``, evaluated after every epoch.
      epochs, batch_size: the last incomplete minibatch of each epoch is dropped.
      seed: all randomness (init, shuffling, dropout) derives from ``PRNGKey(seed)``.
      grad: "manual" or "autodiff".
      params, state: start from these instead of ``net.init``.
      early_stopping: stop after this many epochs without a better validation accuracy.
      train_eval_samples: training accuracy is measured in eval mode on this many samples.
      checkpoint_dir: if given, ``checkpoint.npz`` there is rewritten atomically after every
        epoch (params, state, optimizer state, best params and history).
      resume: continue from the checkpoint in ``checkpoint_dir`` (a run resumed after epoch k
        ends with bitwise the same params as an uninterrupted run with the same seed).
      progress: print one progress line per epoch (``False`` for quiet mode).
      print_fn: where progress lines go.

    Returns:
      A :class:`FitResult`.

    Raises:
      TrainingDiverged: when the loss becomes NaN/inf; the checkpoint of the last good epoch is
        kept untouched.
      ValueError/TypeError: bad data or options, before any training.
    """
    fn = "fit"
    _check_data(fn, net, "training", x, y)
    if val is not None:
        _check_data(fn, net, "validation", *val)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{fn}: epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= len(x):
        raise ValueError(f"{fn}: batch_size must be in [1, {len(x)}] (the number of training samples), got {batch_size!r}")
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs a checkpoint_dir")
    epoch_fn = make_epoch(net, opt, batch_size=batch_size, grad=grad)

    seed_key = jax.random.PRNGKey(seed)
    init_key, train_key = jax.random.split(seed_key)
    if params is None:
        params, init_state = net.init(init_key)
        state = init_state if state is None else state
    # The compiled epoch donates its inputs: keep our own copies of anything the caller passed.
    params, state = jax.tree_util.tree_map(jnp.copy, (params, {} if state is None else state))
    opt_state = opt.init(params)
    history = {k: [] for k in HISTORY_KEYS}
    best = {"score": -math.inf, "epoch": 0, "params": params, "state": state}
    start_epoch = 1
    ckpt_path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_NAME)
    if resume and os.path.exists(ckpt_path):
        like = {"params": params, "state": state, "opt_state": opt_state, "best_params": params, "best_state": state}
        tree, meta = checkpoint.load(ckpt_path, like=like), checkpoint.load_metadata(ckpt_path)
        params, state, opt_state = tree["params"], tree["state"], tree["opt_state"]
        best = {"score": meta["best_score"], "epoch": meta["best_epoch"],
                "params": tree["best_params"], "state": tree["best_state"]}
        history = meta["history"]
        start_epoch = meta["epoch"] + 1

    xd, yd = jnp.asarray(x), jnp.asarray(y)
    val_d = None if val is None else (jnp.asarray(val[0]), jnp.asarray(val[1]))
    n_eval = min(train_eval_samples, len(x))
    steps = len(x) // batch_size
    stale = 0
    stopped_early = False
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.perf_counter()
        params, state, opt_state, step_losses = epoch_fn(
            params, state, opt_state, xd, yd, jax.random.fold_in(train_key, epoch)
        )
        step_losses = np.asarray(step_losses)
        dt = time.perf_counter() - t0
        if not np.all(np.isfinite(step_losses)):
            bad = int(np.argmax(~np.isfinite(step_losses)))
            kept = f"; the checkpoint of epoch {epoch - 1} in {checkpoint_dir} is kept" if ckpt_path and epoch > 1 else ""
            raise TrainingDiverged(
                f"{fn}: the training loss became {step_losses[bad]} at epoch {epoch}, step {bad + 1} of {steps}{kept}; "
                "try a smaller learning rate",
                history,
            )
        train_m = evaluate(net, params, state, xd[:n_eval], yd[:n_eval])
        val_m = evaluate(net, params, state, *val_d) if val_d is not None else {"loss": math.nan, "accuracy": math.nan}
        record = {
            "epoch": epoch,
            "train_loss": float(step_losses.mean()),
            "train_acc": train_m["accuracy"],
            "val_loss": val_m["loss"],
            "val_acc": val_m["accuracy"],
            "lr": float(optim.current_learning_rate(opt_state)),
            "epoch_time": dt,
            "samples_per_s": steps * batch_size / dt,
        }
        for k in HISTORY_KEYS:
            history[k].append(record[k])
        # Best by validation accuracy (by validation loss for regression); the last epoch
        # without validation data.
        score = -val_m["loss"] if math.isnan(val_m["accuracy"]) else val_m["accuracy"]
        if val_d is None or score > best["score"]:
            best = {"score": score if val_d is not None else -math.inf, "epoch": epoch,
                    "params": jax.tree_util.tree_map(jnp.copy, params), "state": jax.tree_util.tree_map(jnp.copy, state)}
            stale = 0
        else:
            stale += 1
        if progress:
            print_fn(_progress_line(record, epochs))
        if ckpt_path is not None:
            os.makedirs(os.fspath(checkpoint_dir), exist_ok=True)
            tree = {"params": params, "state": state, "opt_state": opt_state,
                    "best_params": best["params"], "best_state": best["state"]}
            meta = {"epoch": epoch, "best_epoch": best["epoch"], "best_score": best["score"], "history": history}
            checkpoint.save(ckpt_path, tree, metadata=meta)
        if early_stopping is not None and stale >= early_stopping:
            stopped_early = True
            if progress:
                print_fn(f"early stopping: no better validation score for {early_stopping} epochs (best: epoch {best['epoch']})")
            break
    return FitResult(params, state, opt_state, best["params"], best["state"], best["epoch"], history, stopped_early)


def _progress_line(r: dict, epochs: int, width: int = 20) -> str:
    done = round(width * r["epoch"] / epochs)
    bar = "#" * done + "-" * (width - done)
    val = "" if math.isnan(r["val_acc"]) else f"  val acc {100 * r['val_acc']:5.1f}%"
    train = "" if math.isnan(r["train_acc"]) else f"  train acc {100 * r['train_acc']:5.1f}%"
    return (
        f"[{bar}] epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  loss {r['train_loss']:.4f}{train}{val}"
        f"  lr {r['lr']:.2e}  {r['samples_per_s']:,.0f} samples/s"
    )


def save_history(path, history: dict) -> None:
    """Write a history dict as JSON (NaN written as null)."""
    clean = {k: [None if isinstance(v, float) and math.isnan(v) else v for v in vs] for k, vs in history.items()}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(clean, f, indent=1)
    os.replace(tmp, path)
