"""What a training run records: its per-epoch history, the progress line printed per epoch, and
the checkpoint that lets :func:`fnet.fit` resume where it stopped (the arrays and a
:class:`Progress`)."""

from __future__ import annotations

import math
from typing import NamedTuple

from fnet import checkpoint, files, optim

#: The per-epoch lists of ``FitResult.history`` (and of a run folder's history.json).
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "samples_per_s")
#: The file name of fit's checkpoint in its ``checkpoint_dir``.
CHECKPOINT_NAME = "checkpoint.safetensors"


class Progress(NamedTuple):
    """Where a run stands between epochs: what a checkpoint stores besides the arrays."""

    history: dict
    best_score: float
    best_epoch: int
    initial_loss: float  # the untrained net's loss (first minibatch, before any update); NaN before epoch 1
    stopped_early: bool

    @property
    def epochs_done(self) -> int:
        return len(self.history["epoch"])


def checkpoint_arrays(params, state, opt_state, best: dict) -> dict:
    """The arrays of a training checkpoint (:func:`fit`'s and :func:`fnet.lm.fit_lm`'s): the
    carry and the best copies, ``{"params", "state", "opt_state", "best_params", "best_state"}``."""
    return {"params": params, "state": state, "opt_state": opt_state,
            "best_params": best["params"], "best_state": best["state"]}


def checkpoint_like(params, state, opt_state) -> dict:
    """The structure, shapes and dtypes a checkpoint of this carry must have (``like`` of
    :func:`fnet.checkpoint.load`): :func:`checkpoint_arrays` with the carry as its best copy."""
    return checkpoint_arrays(params, state, opt_state, {"params": params, "state": state})


def split_arrays(tree: dict):
    """``((params, state, opt_state), best)`` of a loaded :func:`checkpoint_arrays` tree."""
    return (tree["params"], tree["state"], tree["opt_state"]), {"params": tree["best_params"], "state": tree["best_state"]}


def save_checkpoint(path, params, state, opt_state, best: dict, progress: Progress) -> None:
    """Write fit's checkpoint: the arrays (and the best epoch's ``best["params"]``,
    ``best["state"]``) and ``progress`` in the metadata, atomically (:func:`fnet.checkpoint.save`)."""
    tree = checkpoint_arrays(params, state, opt_state, best)
    meta = {"epoch": progress.epochs_done, "best_epoch": progress.best_epoch, "best_score": progress.best_score,
            "initial_loss": progress.initial_loss, "stopped_early": progress.stopped_early,
            "history": progress.history}
    checkpoint.save(path, tree, metadata=meta)


def load_checkpoint(path, params, state, opt_state):
    """``(params, state, opt_state, best, progress)`` of the checkpoint at ``path``, whose arrays
    must have the structure, shapes and dtypes of the given ones."""
    tree, meta = checkpoint.load(path, like=checkpoint_like(params, state, opt_state)), checkpoint.load_metadata(path)
    progress = Progress(meta["history"], meta["best_score"], meta["best_epoch"],
                         meta.get("initial_loss", math.nan), meta.get("stopped_early", False))
    if progress.epochs_done != meta["epoch"]:
        raise ValueError(f"fit: {path} is inconsistent: epoch {meta['epoch']} but {progress.epochs_done} epochs of history")
    (params, state, opt_state), best = split_arrays(tree)
    return params, state, opt_state, best, progress


def learning_rate(opt_state) -> float:
    """The rate the last update used, or NaN for an optimizer whose state does not record it
    (e.g. a plain optax optimizer; ``optax.inject_hyperparams`` ones do)."""
    try:
        return float(optim.current_learning_rate(opt_state))
    except ValueError:
        return math.nan


def progress_line(r: dict, epochs: int, width: int = 20) -> str:
    """One epoch's progress line from its history record ``r``, with a bar of ``width``:

    >>> r = {"epoch": 3, "train_loss": 0.41234, "train_acc": 0.875, "val_acc": 0.8512, "lr": 1e-3,
    ...      "samples_per_s": 12345.6}
    >>> progress_line(r, epochs=10)
    '[######--------------] epoch  3/10  loss 0.4123  train acc  87.5%  val acc  85.1%  lr 1.00e-03  12,346 samples/s'
    """
    done = round(width * r["epoch"] / epochs)
    bar = "#" * done + "-" * (width - done)
    val = "" if math.isnan(r["val_acc"]) else f"  val acc {100 * r['val_acc']:5.1f}%"
    train = "" if math.isnan(r["train_acc"]) else f"  train acc {100 * r['train_acc']:5.1f}%"
    lr = "" if math.isnan(r["lr"]) else f"  lr {r['lr']:.2e}"
    return (
        f"[{bar}] epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  loss {r['train_loss']:.4f}{train}{val}"
        f"{lr}  {r['samples_per_s']:,.0f} samples/s"
    )


def save_history(path, history: dict) -> None:
    """Write a history dict as JSON (NaN written as null), atomically (:mod:`fnet.files`)."""
    clean = {k: [None if isinstance(v, float) and math.isnan(v) else v for v in vs] for k, vs in history.items()}
    files.write_json(path, clean)
