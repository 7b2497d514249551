"""Training: a jit-compiled step, whole epochs in one compiled call, and ``fit``.

The pieces, from the inside out: ``make_train_step(net, opt, grad="manual")`` (one minibatch,
jit-compiled), ``make_epoch(net, opt, batch_size=128)`` (every minibatch of an epoch in ONE call)
and ``fit``, here two epochs of a small network on 64 random samples:

>>> import numpy as np
>>> import fnet
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)
>>> net, opt = fnet.mlp(4, [8], 3), fnet.optim.adam(1e-2)
>>> result = fnet.fit(net, opt, x, y, val=(x[:16], y[:16]), epochs=2, batch_size=16, progress=False)
>>> result.history["epoch"], result.history["train_loss"][1] < result.history["train_loss"][0]
([1, 2], True)
>>> sorted(fnet.evaluate(net, *result.best_variables, x, y))    # eval mode, best params on validation
['accuracy', 'loss']

Evaluation is :mod:`fnet.evaluation` (``evaluate`` is re-exported here), many trainings in one
vmapped program :mod:`fnet.trials`, data-parallel meshes :mod:`fnet.distributed`.

``grad="manual"`` differentiates with the network's hand-written backward chain
(``net.loss_and_grad``), ``grad="autodiff"`` with ``jax.value_and_grad(net.loss)``; both run the
same forward code and the same optimizer, so their trajectories agree to rounding error.

Randomness is a pure function of the seed: the init key, and for epoch ``e`` the shuffling and
dropout keys, all derive from ``PRNGKey(seed)`` by ``fold_in``, so a run resumed from the
checkpoint of epoch ``k`` continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, distributed, evaluation, history, limits, optim, xla_options
from fnet import nets
from fnet.distributed import DATA_AXIS, check_mesh, data_mesh, replicate  # noqa: F401 - data_mesh: also fnet.train's
from fnet.evaluation import accuracy, evaluate  # noqa: F401 - also fnet.train's
from fnet.history import CHECKPOINT_NAME, HISTORY_KEYS, save_history  # noqa: F401 - also fnet.train's
from fnet.nets import Net

GRAD_MODES = ("manual", "autodiff")
#: A run whose epoch loss exceeds this multiple of the untrained network's loss (the first
#: minibatch's loss, before any update) has diverged, even if the loss is still finite.
DIVERGENCE_FACTOR = 1e3


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``history`` holds the epochs completed before."""

    def __init__(self, message: str, history: dict):
        super().__init__(message)
        self.history = history


def _grad_fn(net: Net, grad: str, fn: str) -> Callable:
    """``(params, x, y, state, key) -> (loss, grads, new_state)`` for a gradient mode."""
    if grad == "manual":
        return lambda params, x, y, state, key: net.loss_and_grad(params, x, y, state=state, key=key)
    if grad == "autodiff":
        value_and_grad = jax.value_and_grad(net.loss, has_aux=True)

        def autodiff(params, x, y, state, key):
            (loss, new_state), grads = value_and_grad(params, x, y, state=state, key=key)
            return loss, grads, new_state

        return autodiff
    raise ValueError(f"{fn}: grad must be one of {GRAD_MODES}, got {grad!r}")


def is_optimizer(opt) -> bool:
    """True for an ``(init, update)`` optimizer (fnet or optax), False for anything else (e.g. a
    factory ``hparams -> optimizer`` of :func:`fnet.fit_trials`)."""
    return hasattr(opt, "init") and hasattr(opt, "update")


def step_body(net: Net, opt, grad: str, fn: str) -> Callable:
    """``(params, state, opt_state, batch, key) -> (params, state, opt_state, loss)``: one update,
    traceable (the body of every compiled loop of steps: epochs, trials, language-model chunks);
    ``fn`` names the caller in errors."""
    if not is_optimizer(opt):
        raise TypeError(f"{fn}: opt must be an (init, update) optimizer (fnet.optim or optax), got {type(opt).__name__}")
    loss_and_grad = _grad_fn(net, grad, fn)

    def step(params, state, opt_state, batch, key):
        x, y = batch
        loss, grads, state = loss_and_grad(params, x, y, state, key)
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
      net: any :class:`~fnet.nets.Net` (:func:`fnet.network` of a composition, :func:`fnet.mlp`, ...).
      opt: an ``(init, update)`` optimizer from :mod:`fnet.optim` (or optax).
      grad: "manual" (hand-written backward) or "autodiff" (``jax.grad``).
      jit: compile the step with ``jax.jit``.
      donate: donate the params, state and optimizer-state buffers to the output (the caller
        must not reuse the arrays it passed in).
    """
    body = step_body(net, opt, grad, "make_train_step")

    def step(params, state, opt_state, batch, key):
        params, state, opt_state, loss = body(params, state, opt_state, batch, key)
        return params, state, opt_state, {"loss": loss}

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1, 2) if donate else ())


def make_epoch(net: Net, opt, *, batch_size: int, grad: str = "manual", donate: bool = True, jit: bool = True,
               mesh: jax.sharding.Mesh | None = None) -> Callable:
    """A whole epoch of minibatch steps in ONE compiled call.

    Returns ``epoch(params, state, opt_state, x, y, key) -> (params, state, opt_state, losses)``:
    the N samples are permuted with ``key``, cut into ``N // batch_size`` minibatches (the last
    incomplete one is dropped, so every step sees the same shape), and the steps run inside a
    ``lax.scan``; ``losses`` has shape (steps,). Step ``i`` uses dropout key ``fold_in(key_dropout,
    i)`` where ``key_shuffle, key_dropout = split(key)``.

    Args:
      net: any :class:`~fnet.nets.Net`; under ``jit=False`` it may hold traced hyperparameters
        (a network built inside a vmapped sweep, as :func:`fnet.fit_trials` does).
      opt: an ``(init, update)`` optimizer.
      x: array of shape (N, D); y: array of shape (N,) or (N, C); both on device.
      jit: return the epoch compiled with ``jax.jit`` (cached per network and options, so that
        repeated ``fit`` calls reuse it); ``False``: the plain traceable function, to be wrapped
        in ``jax.vmap``/``jax.jit`` by the caller.
      donate: with ``jit``, donate the params, state and optimizer-state buffers.
      mesh: data parallelism (see :func:`fit`): each minibatch is sharded along the mesh's
        ``"data"`` axis (``with_sharding_constraint``), every output is replicated, and XLA
        inserts the all-reduce of the gradients (and of batch-norm statistics). The inputs
        should be replicated over the mesh (:func:`fnet.distributed.replicate`).
    """
    if not jit:
        return _epoch(net, opt, batch_size, grad, mesh)
    return _compiled_epoch(net, opt, batch_size, grad, donate, mesh)


@functools.lru_cache(maxsize=32)
def _compiled_epoch(net: Net, opt, batch_size: int, grad: str, donate: bool, mesh) -> Callable:
    epoch = _epoch(net, opt, batch_size, grad, mesh)
    # With a mesh every output is replicated, so each process can read the losses and params.
    shardings = {} if mesh is None else {"out_shardings": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())}
    return jax.jit(epoch, donate_argnums=(0, 1, 2) if donate else (), **shardings)


def _epoch(net: Net, opt, batch_size: int, grad: str, mesh) -> Callable:
    """:func:`make_epoch`'s traceable epoch."""
    fn = "make_epoch"
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1)
    if mesh is not None:
        check_mesh(fn, mesh, batch_size)
    body = step_body(net, opt, grad, fn)

    def shard(batch):
        # Split the batch axis over the devices; XLA then computes every mean over the batch
        # (the loss, batch-norm statistics) as a global mean with all-reduces.
        if mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS)))

    def epoch(params, state, opt_state, x, y, key):
        n = x.shape[0]
        if batch_size > n:
            raise ValueError(f"{fn}: batch_size {batch_size} is larger than the {n} training samples")
        steps = n // batch_size
        key_shuffle, key_dropout = jax.random.split(key)
        order = jax.random.permutation(key_shuffle, n)[: steps * batch_size].reshape(steps, batch_size)

        def scan_step(carry, inputs):
            idx, i = inputs
            batch = shard((jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)))
            *carry, loss = body(*carry, batch, jax.random.fold_in(key_dropout, i))
            return tuple(carry), loss

        (params, state, opt_state), step_losses = jax.lax.scan(
            scan_step, (params, state, opt_state), (order, jnp.arange(steps))
        )
        return params, state, opt_state, step_losses

    return epoch


def split_key(key):
    """``jax.random.split(key)`` as a pair (unpacking the (2, ...) array eagerly is a program too)."""
    a, b = jax.random.split(key)
    return a, b


def shape_spec(a) -> jax.ShapeDtypeStruct:
    """The shape and dtype of ``a`` (an array or a Python/NumPy scalar), for ahead-of-time compiling."""
    return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))


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
      stopped_early: True when early stopping ended the run (in this call or, for a resumed
        run, before it).
      epochs_run: the number of epochs this call trained (0 for a resumed run that had already
        finished).
    """

    params: dict
    state: dict
    opt_state: object
    best_params: dict
    best_state: dict
    best_epoch: int
    history: dict
    stopped_early: bool
    epochs_run: int

    @property
    def variables(self) -> nets.Variables:
        """``Variables(params, state)`` after the last epoch, for ``net.apply(result.variables, x)``."""
        return nets.Variables(self.params, self.state)

    @property
    def best_variables(self) -> nets.Variables:
        """``Variables(best_params, best_state)``, for ``net.apply(result.best_variables, x)``."""
        return nets.Variables(self.best_params, self.best_state)


def _check_fit_args(fn, net, x, y, val, epochs, batch_size, seed, early_stopping, divergence_factor, resume,
                    checkpoint_dir):
    """Stage 1, validate the inputs: ``(epochs, batch_size, seed, early_stopping)`` as ints."""
    nets.check_data(fn, net, "training", x, y)
    if val is not None:
        nets.check_data(fn, net, "validation", *val)
    epochs = _checks.integer(fn, "epochs", epochs, minimum=1)
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1, maximum=len(x),
                                 what="(the number of training samples)")
    seed = limits.check_seed(f"{fn}: seed", _checks.integer(fn, "seed", seed))
    if early_stopping is not None:
        early_stopping = _checks.integer(fn, "early_stopping", early_stopping, minimum=1, what="(epochs)")
    if divergence_factor is not None and not (math.isfinite(divergence_factor) and divergence_factor > 1):
        raise ValueError(f"{fn}: divergence_factor must be a finite number > 1 or None, got {divergence_factor!r}")
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs a checkpoint_dir")
    return epochs, batch_size, seed, early_stopping


def _start(fn, net, opt, seed: int, params, state, ckpt_path):
    """Stage 2, initialise or resume: ``(train_key, (params, state, opt_state), best, progress)``,
    from ``net.init`` (or the given params/state) or from the checkpoint at ``ckpt_path``."""
    seed_key = jax.random.PRNGKey(seed)
    init_key, train_key = xla_options.compiled_init(split_key, shape_spec(seed_key))(seed_key)
    if params is None:
        params, init_state = xla_options.compiled_init(net.init, shape_spec(init_key))(init_key)
        state = init_state if state is None else state
    # The compiled epoch donates its inputs: keep our own copies of anything the caller passed.
    params, state = jax.tree_util.tree_map(jnp.copy, (params, {} if state is None else state))
    opt_state = jax.jit(opt.init)(params)  # one small program, not one eager zeros_like per leaf
    best = {"params": params, "state": state}
    run = history.Progress({k: [] for k in history.HISTORY_KEYS}, -math.inf, 0, math.nan, False)
    if ckpt_path is not None and os.path.exists(ckpt_path):
        params, state, opt_state, best, run = history.load_checkpoint(ckpt_path, params, state, opt_state)
    # Training from NaN or inf can only give NaN: refuse it, naming the leaf (also a resumed one).
    for name, tree in (("params", params), ("state", state), ("opt_state", opt_state)):
        _checks.finite_tree(fn, name, tree)
    return train_key, (params, state, opt_state), best, run


def _place(mesh, carry, best: dict, x, y):
    """The arrays on the device, or replicated over every device of ``mesh``."""
    if mesh is None:
        return carry, best, (jnp.asarray(x), jnp.asarray(y))
    *carry, x, y = replicate((*carry, x, y), mesh)
    return tuple(carry), replicate(best, mesh), (x, y)


def _check_divergence(fn, run: history.Progress, step_losses, epoch: int, factor, checkpoint_dir) -> history.Progress:
    """Stage 4a: record the untrained network's loss (epoch 1's first step) and raise
    :class:`TrainingDiverged` when the epoch's loss is NaN/inf or above ``factor`` times it."""
    if epoch == 1:
        run = run._replace(initial_loss=float(step_losses[0]))
    kept = f"; the checkpoint of epoch {epoch - 1} in {checkpoint_dir} is kept" if checkpoint_dir and epoch > 1 else ""
    if not np.all(np.isfinite(step_losses)):
        bad = int(np.argmax(~np.isfinite(step_losses)))
        if epoch == 1 and bad == 0:  # before any update: the starting point itself gives non-finite scores
            raise TrainingDiverged(f"{fn}: the untrained network's loss is already {step_losses[0]} (step 1 of epoch "
                                   "1, before any update): its initial parameters give non-finite scores, e.g. from "
                                   "a too large init scale; a smaller learning rate cannot help", run.history)
        raise TrainingDiverged(f"{fn}: the training loss became {step_losses[bad]} at epoch {epoch}, step {bad + 1} "
                               f"of {len(step_losses)}{kept}; try a smaller learning rate", run.history)
    mean = float(step_losses.mean())
    if factor is not None and mean > factor * run.initial_loss:
        raise TrainingDiverged(f"{fn}: the training loss diverged at epoch {epoch}: its mean {mean:.4g} is more than "
                               f"{factor:g} times the untrained network's loss {run.initial_loss:.4g}{kept}; try a "
                               "smaller learning rate", run.history)
    return run


def _record(net: Net, carry, epoch: int, step_losses, seconds: float, batch_size: int, eval_train, eval_val) -> dict:
    """Stage 3b: the epoch's line of the history, with its eval-mode metrics."""
    params, state, opt_state = carry
    train_m = evaluation.evaluate_checked(net, params, state, *eval_train)
    no_val = {"loss": math.nan, "accuracy": math.nan}
    val_m = no_val if eval_val is None else evaluation.evaluate_checked(net, params, state, *eval_val)
    return {"epoch": epoch, "train_loss": float(step_losses.mean()), "train_acc": train_m["accuracy"],
            "val_loss": val_m["loss"], "val_acc": val_m["accuracy"], "lr": history.learning_rate(opt_state),
            "epoch_time": seconds, "samples_per_s": len(step_losses) * batch_size / seconds}


def _track(run: history.Progress, best: dict, record: dict, carry, has_val: bool, early_stopping):
    """Stage 4b: append ``record`` to the history, keep the best epoch's variables (by validation
    accuracy, by validation loss for regression; the last epoch without validation data), and
    decide early stopping: ``early_stopping`` epochs since the best one (a resumed run continues
    the count, so it stops where the uninterrupted run would). Returns ``(progress, best)``."""
    for k in history.HISTORY_KEYS:
        run.history[k].append(record[k])
    score = -record["val_loss"] if math.isnan(record["val_acc"]) else record["val_acc"]
    if not has_val or score > run.best_score:
        run = run._replace(best_score=score if has_val else -math.inf, best_epoch=record["epoch"])
        best = {"params": jax.tree_util.tree_map(jnp.copy, carry[0]), "state": jax.tree_util.tree_map(jnp.copy, carry[1])}
    stale = run.epochs_done - run.best_epoch
    return run._replace(stopped_early=early_stopping is not None and stale >= early_stopping), best


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
    mesh: jax.sharding.Mesh | None = None,
    divergence_factor: float | None = DIVERGENCE_FACTOR,
) -> FitResult:
    """Train ``net`` with ``opt`` for ``epochs`` epochs, one compiled call per epoch.

    Args:
      x, y: training data, x of shape (N, D), y of shape (N,) (labels) or (N, C) (targets);
        finite values only.
      val: optional ``(x_val, y_val)`` (at least one sample), evaluated after every epoch.
      epochs, batch_size: ints (NumPy ints too); the last incomplete minibatch of each epoch is
        dropped.
      seed: all randomness (init, shuffling, dropout) derives from ``PRNGKey(seed)``.
      grad: "manual" or "autodiff".
      params, state: start from these (finite values) instead of ``net.init``.
      early_stopping: stop after this many epochs without a better validation accuracy.
      train_eval_samples: training accuracy is measured in eval mode on this many samples.
      checkpoint_dir: if given, ``checkpoint.safetensors`` there is rewritten atomically after every
        epoch (params, state, optimizer state, best params and history).
      resume: continue from the checkpoint in ``checkpoint_dir`` (a run resumed after epoch k
        ends with bitwise the same params as an uninterrupted run with the same seed). A run
        that had already finished (``epochs`` done, or stopped early) trains no further: the
        result is the checkpoint's, with ``epochs_run == 0``.
      progress: print one progress line per epoch (``False`` for quiet mode).
      print_fn: where progress lines go.
      mesh: train data-parallel over the devices of a :class:`jax.sharding.Mesh` with a
        ``"data"`` axis (e.g. :func:`fnet.distributed.data_mesh`): params, optimizer state and data are
        replicated on every device, each minibatch of ``batch_size`` samples is split along
        ``"data"`` (``batch_size / devices`` per device), and XLA inserts the all-reduce of the
        gradients, so the run computes the same steps as on one device (to rounding). Batch-norm
        statistics are GLOBAL (over the whole minibatch, as on one device), because
        ``jnp.mean`` over a sharded batch axis is compiled into an all-reduce. The mesh may span
        several processes (``jax.distributed``; see :mod:`fnet.distributed`): every process
        runs this same call on the same data, and only process 0 prints and writes checkpoints.
      divergence_factor: the run has diverged when an epoch's mean training loss exceeds this
        multiple of the untrained network's loss (the loss of the first minibatch, before any
        update; default :data:`DIVERGENCE_FACTOR` = 1000), even if it is still finite; None
        turns this check off (a NaN or inf loss always stops the run).

    Returns:
      A :class:`FitResult`.

    Raises:
      TrainingDiverged: when the loss becomes NaN/inf or diverges (see ``divergence_factor``);
        the checkpoint of the last good epoch is kept untouched.
      ValueError/TypeError: bad data or options, before any training.
    """
    fn = "fit"
    epochs, batch_size, seed, early_stopping = _check_fit_args(
        fn, net, x, y, val, epochs, batch_size, seed, early_stopping, divergence_factor, resume, checkpoint_dir)
    epoch_fn = make_epoch(net, opt, batch_size=batch_size, grad=grad, mesh=mesh)
    lead = distributed.is_lead()  # every process of a multi-process mesh runs fit; one talks and writes
    ckpt_path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), history.CHECKPOINT_NAME)
    train_key, carry, best, run = _start(fn, net, opt, seed, params, state, ckpt_path if resume else None)
    carry, best, data = _place(mesh, carry, best, x, y)
    n_eval = min(train_eval_samples, len(x))
    # The evaluations' data on the host, copied once (they cut it into batches there).
    eval_train = (np.asarray(x[:n_eval]), np.asarray(y[:n_eval]))
    eval_val = None if val is None else (np.asarray(val[0]), np.asarray(val[1]))
    start_epoch = run.epochs_done + 1
    last_epoch = start_epoch - 1 if run.stopped_early else epochs  # a run that stopped early stays stopped
    fold_in = xla_options.compiled_init(jax.random.fold_in, shape_spec(train_key), shape_spec(np.uint32(0)))
    for epoch in range(start_epoch, last_epoch + 1):  # stage 3, the epoch loop
        t0 = time.perf_counter()
        key = fold_in(train_key, np.uint32(epoch))
        *carry, step_losses = epoch_fn(*carry, *data, key if mesh is None else replicate(key, mesh))
        carry, step_losses, seconds = tuple(carry), np.asarray(step_losses), time.perf_counter() - t0
        run = _check_divergence(fn, run, step_losses, epoch, divergence_factor, checkpoint_dir)
        record = _record(net, carry, epoch, step_losses, seconds, batch_size, eval_train, eval_val)
        run, best = _track(run, best, record, carry, val is not None, early_stopping)
        if progress and lead:  # stage 5, progress lines
            print_fn(history.progress_line(record, epochs))
        if ckpt_path is not None and lead:  # stage 6, the checkpoint
            os.makedirs(os.fspath(checkpoint_dir), exist_ok=True)
            history.save_checkpoint(ckpt_path, *carry, best, run)
        if run.stopped_early:
            if progress and lead:
                print_fn(f"early stopping: no better validation score for {early_stopping} epochs "
                         f"(best: epoch {run.best_epoch})")
            break
    return FitResult(*carry, best["params"], best["state"], run.best_epoch, run.history, run.stopped_early,
                     run.epochs_done - start_epoch + 1)


