"""Training: a jit-compiled step, whole epochs in one compiled call, evaluation and ``fit``.

The pieces, from the inside out::

    step  = make_train_step(net, opt, grad="manual")   # one minibatch, jit-compiled
    epoch = make_epoch(net, opt, batch_size=128)       # every minibatch of an epoch in ONE call
    metrics = evaluate(net, params, state, x, y)        # batched, jit-compiled
    result = fit(net, opt, x, y, val=(xv, yv), epochs=10, batch_size=128)
    trials = fit_trials(net, lambda h: sgd(h["learning_rate"]), x, y,     # T models in ONE vmapped
                        hparams={"learning_rate": lrs}, val=(xv, yv))     # program (lrs: shape (T,))

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

from fnet import _checks, checkpoint, distributed, files, losses, optim, xla_options
from fnet import nets
from fnet.distributed import DATA_AXIS, check_mesh, data_mesh, replicate  # noqa: F401 - data_mesh: also fnet.train's
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


#: Hyperparameters that the network's loss takes as (possibly traced) overrides.
NET_HPARAMS = ("weight_decay", "dropout")
#: Every hyperparameter a trial gives the network rather than the optimizer ("init_scale" is
#: used by ``net.init``); all other keys go to an optimizer factory.
MODEL_HPARAMS = (*NET_HPARAMS, "init_scale")


def is_optimizer(opt) -> bool:
    """True for an ``(init, update)`` optimizer (fnet or optax), False for a factory ``hparams -> optimizer``."""
    return hasattr(opt, "init") and hasattr(opt, "update")


def _check_opt(fn: str, opt) -> None:
    if not is_optimizer(opt) and not callable(opt):
        raise TypeError(f"{fn}: opt must be an (init, update) optimizer or a factory hparams -> optimizer, got {type(opt).__name__}")


def resolve_optimizer(opt, hparams: dict | None):
    """The optimizer to use for ``hparams``: ``opt`` itself, or ``opt(hparams)`` for a factory.

    A factory (any callable without ``init``/``update``, e.g. ``lambda h: fnet.optim.sgd(h["learning_rate"])``)
    is called INSIDE the traced program, so its hyperparameters may be traced per-trial values
    (no recompilation when they change; vmappable).
    """
    return opt if is_optimizer(opt) else opt(hparams or {})


def _split_hparams(fn: str, opt, hparams: dict | None) -> dict:
    """The network's share of ``hparams``; the rest is for an optimizer factory (or ``init_scale``)."""
    hparams = hparams or {}
    other = [k for k in hparams if k not in MODEL_HPARAMS]
    if other and is_optimizer(opt):
        raise ValueError(
            f"{fn}: hparams {sorted(other)} can only be used by an optimizer factory (hparams -> optimizer), "
            f"but opt is a ready-made optimizer; the network itself takes only {list(NET_HPARAMS)}"
        )
    return {k: hparams[k] for k in NET_HPARAMS if k in hparams}


def _step_body(net: Net, opt, grad: str, fn: str) -> Callable:
    loss_and_grad = _grad_fn(net, grad, fn)

    def step(params, state, opt_state, batch, key, hparams):
        x, y = batch
        loss, grads, state = loss_and_grad(params, x, y, state, key, _split_hparams(fn, opt, hparams))
        updates, opt_state = resolve_optimizer(opt, hparams).update(grads, opt_state, params)
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


# Cached so that repeated fit() calls with the same net and optimizer (a resumed run, several
# seeds) reuse one compiled epoch instead of compiling it again.
@functools.lru_cache(maxsize=32)
def make_epoch(net: Net, opt, *, batch_size: int, grad: str = "manual", donate: bool = True, jit: bool = True,
               mesh: jax.sharding.Mesh | None = None) -> Callable:
    """A whole epoch of minibatch steps in ONE compiled call.

    Returns ``epoch(params, state, opt_state, x, y, key, hparams=None) ->
    (params, state, opt_state, losses)``: the N samples are permuted with ``key``, cut into
    ``N // batch_size`` minibatches (the last incomplete one is dropped, so every step sees the
    same shape), and the steps run inside a ``lax.scan``; ``losses`` has shape (steps,).
    Step ``i`` uses dropout key ``fold_in(key_dropout, i)`` where ``key_shuffle, key_dropout =
    split(key)``. ``hparams`` (optional dict of scalars, possibly traced) overrides the network's
    "weight_decay" and/or "dropout" and is handed whole to ``opt`` when ``opt`` is a factory
    ``hparams -> optimizer`` (e.g. its "learning_rate"), for vmapped sweeps.

    Args:
      opt: an ``(init, update)`` optimizer, or a factory ``hparams -> optimizer`` called inside
        the traced step (see :func:`resolve_optimizer`); ``opt_state`` must then come from
        ``resolve_optimizer(opt, hparams).init(params)``.
      x: array of shape (N, D); y: array of shape (N,) or (N, C); both on device.
      jit: return the epoch compiled with ``jax.jit`` (``False``: the plain traceable function,
        to be wrapped in ``jax.vmap``/``jax.jit`` by the caller, as :func:`fit_trials` does).
      donate: with ``jit``, donate the params, state and optimizer-state buffers.
      mesh: data parallelism (see :func:`fit`): each minibatch is sharded along the mesh's
        ``"data"`` axis (``with_sharding_constraint``), every output is replicated, and XLA
        inserts the all-reduce of the gradients (and of batch-norm statistics). The inputs
        should be replicated over the mesh (:func:`fnet.distributed.replicate`).
    """
    fn = "make_epoch"
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1)
    _check_opt(fn, opt)
    if mesh is not None:
        check_mesh(fn, mesh, batch_size)
    body = _step_body(net, opt, grad, fn)

    def shard(batch):
        # Split the batch axis over the devices; XLA then computes every mean over the batch
        # (the loss, batch-norm statistics) as a global mean with all-reduces.
        if mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS)))

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
            batch = shard((jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)))
            params, state, opt_state, loss = body(
                params, state, opt_state, batch, jax.random.fold_in(key_dropout, i), hparams or {}
            )
            return (params, state, opt_state), loss

        (params, state, opt_state), step_losses = jax.lax.scan(
            scan_step, (params, state, opt_state), (order, jnp.arange(steps))
        )
        return params, state, opt_state, step_losses

    if not jit:
        return epoch
    # With a mesh every output is replicated, so each process can read the losses and params.
    shardings = {} if mesh is None else {"out_shardings": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())}
    return jax.jit(epoch, donate_argnums=(0, 1, 2) if donate else (), **shardings)


def _eval_sums(net: Net, params, state, xb, yb, valid):
    """Eval-mode sums over one padded batch: (sum of the per-sample data losses, number of correct
    predictions), counting only the rows where ``valid`` (bool, shape (B,)) is True."""
    loss_fn = losses.LOSSES[net.loss_name]
    scores = net.apply(params, xb, state=state)

    def per_sample(f):
        return jax.vmap(lambda s, t: f(s[None], t[None]))(scores, yb)

    sample_loss = per_sample(lambda s, t: loss_fn(s, t)[0])
    sample_acc = per_sample(lambda s, t: accuracy(net, s, t))
    return jnp.sum(jnp.where(valid, sample_loss, 0.0)), jnp.sum(jnp.where(valid, sample_acc, 0.0))


def _padded_batches(x, batch_size: int, xp=jnp):
    """x padded with zero rows to a multiple of ``batch_size`` and reshaped to (batches,
    batch_size, ...), with the array module ``xp`` (jax.numpy in a trace, NumPy on the host)."""
    pad = -x.shape[0] % batch_size
    padded = xp.concatenate([x, xp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return padded.reshape(-1, batch_size, *x.shape[1:])


def _eval_fn(net: Net, batch_size: int):
    """``(params, state, x, y) -> (mean loss, accuracy)`` over a whole data set, traceable (for
    the trials program): a loop over padded batches of :func:`_eval_sums`."""

    def run(params, state, x, y):
        n = x.shape[0]
        valid = _padded_batches(jnp.ones(n, bool), batch_size)
        batches = (_padded_batches(x, batch_size), _padded_batches(y, batch_size), valid)
        loss, correct = jax.lax.map(lambda b: _eval_sums(net, params, state, *b), batches)
        return jnp.sum(loss) / n, jnp.sum(correct) / n

    return run


@functools.lru_cache(maxsize=64)
def _eval_batch_program(net: Net, batch_size: int):
    """:func:`_eval_sums` jit-compiled for batches of ``batch_size``: one program per network and
    batch size, shared by every data set it evaluates (training, validation, test)."""
    return jax.jit(functools.partial(_eval_sums, net))


def accuracy(net: Net, scores, y):
    """Fraction of correct predictions, traceable (usable inside jit, scan and vmap).

    Args:
      scores: the net's outputs, shape (N, C) (or (N, K) for a binary head).
      y: labels of shape (N,) for softmax cross-entropy (correct = argmax), 0/1 targets of
        scores' shape for sigmoid binary cross-entropy (a score > 0 predicts 1).

    Returns:
      Scalar accuracy; NaN for a regression (MSE) net.
    """
    if net.loss_name == "softmax_cross_entropy":
        return jnp.mean(jnp.argmax(scores, axis=1) == y)
    if net.loss_name == "sigmoid_binary_cross_entropy":
        return jnp.mean((scores > 0) == (y > 0.5))
    return jnp.nan


def evaluate(net: Net, params, state, x, y, *, batch_size: int = 1000) -> dict:
    """Eval-mode loss and accuracy over a whole data set, in fixed-size batches under jit.

    The loss is the data loss only (no weight decay), averaged over all N samples; accuracy is
    the fraction of correct argmax predictions (softmax cross-entropy), of correct signs
    (binary cross-entropy), or NaN (regression). The data is cut into batches of
    ``batch_size`` rows, the last one padded (the padding is not counted), so that one compiled
    program per network and batch size evaluates data sets of every size.

    Args:
      x: array of shape (N, D); y: labels (N,) or targets (N, C).

    Returns:
      ``{"loss": float, "accuracy": float}``.
    """
    fn = "evaluate"
    x = _checks.float_array(fn, "x", x, min_ndim=2)
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1)
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: x is empty (shape {tuple(x.shape)}); there is nothing to evaluate")
    _checks.finite(fn, "x", x)
    _check_targets(fn, net, "y", x.shape[0], y)
    return _evaluate(net, params, state, jnp.asarray(x), jnp.asarray(y), batch_size)


def _evaluate(net: Net, params, state, x, y, batch_size: int = 1000) -> dict:
    """:func:`evaluate` without the checks, for data that was checked already (``fit``)."""
    program = _eval_batch_program(net, batch_size)
    # Batches cut on the host (a view on the CPU): slicing device arrays of each size would
    # compile a program per size, as would a program taking the whole data set.
    x, y = np.asarray(x), np.asarray(y)
    n = x.shape[0]
    batches = (_padded_batches(a, batch_size, np) for a in (x, y, np.ones(n, bool)))
    loss, correct = 0.0, 0.0
    for xb, yb, vb in zip(*batches):
        batch_loss, batch_correct = program(params, state, xb, yb, vb)
        loss, correct = loss + batch_loss, correct + batch_correct
    return {"loss": float(loss) / n, "accuracy": float(correct) / n}


# ----------------------------------------------------------------------------- many trials at once

TRIAL_HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


class TrialsResult(NamedTuple):
    """What :func:`fit_trials` returns; every array has a leading trial axis of length T.

    Fields:
      params, state, opt_state: after the last epoch; leaves of shape (T, ...).
      history: NumPy arrays of shape (T, epochs): "train_loss" (mean minibatch loss of the
        epoch, with weight decay), "train_acc" (eval mode, on up to ``train_eval_samples``
        training samples), "val_loss", "val_acc" (NaN without validation data).
      hparams: the hyperparameters as trained, NumPy arrays of shape (T,).
      seeds: int array (T,): trial ``i`` is ``fit(..., seed=seeds[i])``.
      diverged: bool array (T,): the training loss became NaN/inf at some epoch, or an epoch's
        mean loss exceeded :data:`DIVERGENCE_FACTOR` times the untrained network's loss, as
        :func:`fit` would report (such a trial's later metrics are meaningless; a search should
        rank it last).
    """

    params: dict
    state: dict
    opt_state: object
    history: dict
    hparams: dict
    seeds: np.ndarray
    diverged: np.ndarray


def _split_in_two(key):
    """``jax.random.split(key)`` as a pair (unpacking the (2, ...) array eagerly is a program too)."""
    a, b = jax.random.split(key)
    return a, b


def _spec(a) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))


def _init_trial(net: Net, opt, seed, hparams):
    """One trial's ``(params, state, opt_state)``: the same keys as :func:`fit` with ``seed``."""
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
    params, state = net.init(init_key, std=hparams.get("init_scale"))
    return params, state, resolve_optimizer(opt, hparams).init(params)


def init_trials(net: Net, opt, seeds, hparams: dict):
    """Initial ``(params, state, opt_state)`` of T trials, stacked along a leading trial axis.

    Trial ``i`` starts exactly where :func:`fit` with ``seed=seeds[i]`` starts, with its weights
    drawn from N(0, init_scale**2) when ``hparams`` has "init_scale" (else the net's initializer).

    Args:
      seeds: int array of shape (T,).
      hparams: dict of arrays of shape (T,) (see :func:`fit_trials`).
    """
    return jax.vmap(functools.partial(_init_trial, net, opt))(jnp.asarray(seeds), hparams)


@functools.lru_cache(maxsize=32)
def _trials_program(net: Net, opt, batch_size: int, grad: str, epochs: int, n_eval: int, shared_data: bool,
                    n_val: int):
    """The whole run of all trials as one jit-compiled, vmapped program (cached: new values of
    the hyperparameters, seeds or data of the same shapes reuse the compiled program)."""
    epoch_fn = make_epoch(net, opt, batch_size=batch_size, grad=grad, jit=False)
    eval_train = _eval_fn(net, min(1000, n_eval))
    eval_val = _eval_fn(net, min(1000, n_val)) if n_val else None

    def run(seed, hparams, x, y, val):
        params, state, opt_state = _init_trial(net, opt, seed, hparams)
        train_key = jax.random.split(jax.random.PRNGKey(seed))[1]

        def one_epoch(carry, epoch):
            params, state, opt_state = carry
            params, state, opt_state, step_losses = epoch_fn(
                params, state, opt_state, x, y, jax.random.fold_in(train_key, epoch), hparams
            )
            _, train_acc = eval_train(params, state, x[:n_eval], y[:n_eval])
            val_loss, val_acc = eval_val(params, state, *val) if eval_val else (jnp.nan, jnp.nan)
            metrics = dict(zip(TRIAL_HISTORY_KEYS, (jnp.mean(step_losses), train_acc, val_loss, val_acc)))
            return (params, state, opt_state), (metrics, step_losses[0])

        (params, state, opt_state), (history, first_losses) = jax.lax.scan(
            one_epoch, (params, state, opt_state), jnp.arange(1, epochs + 1)
        )
        # The untrained network's loss (epoch 1's first minibatch), for fit's divergence rule.
        return params, state, opt_state, history, first_losses[0]

    data_axis = None if shared_data else 0
    return jax.jit(jax.vmap(run, in_axes=(0, 0, data_axis, data_axis, None)))


def _check_trial_hparams(fn: str, opt, hparams) -> int:
    if not isinstance(hparams, dict) or not hparams:
        raise ValueError(f"{fn}: hparams must be a non-empty dict of arrays of shape (T,), got {hparams!r}")
    shapes = {k: np.shape(v) for k, v in hparams.items()}
    if any(len(sh) != 1 for sh in shapes.values()) or len(set(shapes.values())) != 1 or not next(iter(shapes.values()))[0]:
        raise ValueError(f"{fn}: every hparams value must have the same shape (T,) with T >= 1, got shapes {shapes}")
    _split_hparams(fn, opt, hparams)
    for k, v in hparams.items():
        v = np.asarray(v)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{fn}: hparams[{k!r}] contains NaN or inf")
    if "dropout" in hparams:
        _checks.rate(fn, "hparams['dropout']", np.asarray(hparams["dropout"]))
    for k in ("learning_rate", "init_scale"):
        if k in hparams and np.any(np.asarray(hparams[k]) <= 0):
            raise ValueError(f"{fn}: hparams[{k!r}] must be > 0, got min {np.min(hparams[k])}")
    if "weight_decay" in hparams and np.any(np.asarray(hparams["weight_decay"]) < 0):
        raise ValueError(f"{fn}: hparams['weight_decay'] must be >= 0, got min {np.min(hparams['weight_decay'])}")
    return next(iter(shapes.values()))[0]


def fit_trials(
    net: Net,
    opt,
    x,
    y,
    *,
    hparams: dict,
    val=None,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    seeds=None,
    grad: str = "manual",
    shared_data: bool = True,
    train_eval_samples: int = 1000,
) -> TrialsResult:
    """Train T models (an ensemble, or a batch of hyperparameter settings) as ONE vmapped,
    jit-compiled program: every epoch of every trial, with per-epoch evaluation, in one call.

    Trial ``i`` computes exactly what :func:`fit` computes with ``seed=seeds[i]`` and the
    optimizer ``resolve_optimizer(opt, hparams_i)`` (same init, shuffling and dropout keys,
    same steps), only batched: params, optimizer state and hyperparameters carry a leading
    trial axis, and ``jax.vmap`` turns the T small matrix products of a step into one batched
    product. The compiled program is cached, so new hyperparameter VALUES (same T) do not
    recompile. There is no early stopping and no exception on divergence: a diverged trial is
    flagged in ``diverged``.

    Args:
      opt: an optimizer shared by all trials, or a factory ``hparams -> optimizer`` (e.g.
        ``lambda h: fnet.optim.sgd(h["learning_rate"])``) that receives each trial's scalars,
        traced; keep the same factory object across calls to reuse the compiled program.
      x, y: training data shared by all trials, x of shape (N, D), y of shape (N,) or (N, C);
        with ``shared_data=False``, one data set per trial: x (T, N, D), y (T, N) or (T, N, C).
      hparams: dict of arrays of shape (T,): "weight_decay" and "dropout" override the net's
        values, "init_scale" draws the weights from N(0, init_scale**2), and every key
        (e.g. "learning_rate", "momentum") is handed to an optimizer factory.
      val: optional ``(x_val, y_val)`` shared by all trials, evaluated after every epoch.
      epochs, batch_size: as in :func:`fit` (the last incomplete minibatch is dropped).
      seed, seeds: trial ``i`` uses ``seeds[i]`` (int array (T,)); default ``seed + arange(T)``.
        Equal seeds give every trial the same init, shuffling and dropout masks.
      grad: "manual" or "autodiff".
      train_eval_samples: training accuracy is measured on this many samples.

    Returns:
      A :class:`TrialsResult`.
    """
    fn = "fit_trials"
    _check_opt(fn, opt)
    t = _check_trial_hparams(fn, opt, hparams)
    x, y = np.asarray(x), np.asarray(y)
    if shared_data:
        _check_data(fn, net, "training", x, y)
        n = len(x)
    else:
        if x.ndim < 3 or len(x) != t or len(y) != t:
            raise ValueError(f"{fn}: with shared_data=False, x and y need a leading trial axis of length {t}, "
                             f"got shapes {x.shape} and {y.shape}")
        _check_data(fn, net, "training", x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:]))
        n = x.shape[1]
    if val is not None:
        _check_data(fn, net, "validation", *val)
    epochs = _checks.integer(fn, "epochs", epochs, minimum=1)
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1, maximum=n, what="(the number of training samples)")
    seeds = np.asarray(seed + np.arange(t) if seeds is None else seeds)
    if seeds.shape != (t,) or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"{fn}: seeds must be an int array of shape ({t},) (one per trial), got {seeds.dtype} {seeds.shape}")
    hp = {k: jnp.asarray(v, dtype=jnp.result_type(float)) for k, v in hparams.items()}
    program = _trials_program(net, opt, batch_size, grad, epochs, min(train_eval_samples, n), shared_data,
                              0 if val is None else len(val[0]))
    val_d = None if val is None else (jnp.asarray(val[0]), jnp.asarray(val[1]))
    params, state, opt_state, history, initial = program(jnp.asarray(seeds), hp, jnp.asarray(x), jnp.asarray(y), val_d)
    history = {k: np.asarray(v) for k, v in history.items()}
    loss = history["train_loss"]
    with np.errstate(invalid="ignore"):  # NaN losses compare False; they count through isfinite
        exploded = np.any(loss > DIVERGENCE_FACTOR * np.asarray(initial)[:, None], axis=1)
    diverged = ~np.all(np.isfinite(loss), axis=1) | exploded
    return TrialsResult(params, state, opt_state, history, {k: np.asarray(v) for k, v in hp.items()}, seeds, diverged)


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


HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "samples_per_s")
CHECKPOINT_NAME = "checkpoint.npz"


def _check_targets(fn, net, name, n, y) -> None:
    """Labels in [0, C) for softmax cross-entropy, else targets shaped like the scores."""
    if net.loss_name == "softmax_cross_entropy":
        _checks.labels(fn, name, y, n, net.output_shape[0])
    elif _checks.shape_of(y) != (n, *net.output_shape):
        raise ValueError(f"{fn}: {name} has shape {_checks.shape_of(y)} but the network's scores for {n} samples have "
                         f"shape {(n, *net.output_shape)}; {net.loss_name} compares them elementwise")


def _check_data(fn, net, name, x, y):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{fn}: {name} features must be floating point, got dtype {x.dtype}")
    try:
        nets.check_input(fn, x, net.input_shape)
    except ValueError as e:
        raise ValueError(str(e).replace(f"{fn}: x has", f"{fn}: {name} features have", 1)) from None
    if len(x) == 0:
        raise ValueError(f"{fn}: {name} data is empty (shape {x.shape}); pass at least one sample"
                         + (", or val=None for no validation" if name == "validation" else ""))
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise ValueError(f"{fn}: {name} features contain NaN or inf (first at sample {bad[0]}, feature {bad[1]})")
    y = np.asarray(y)
    if net.loss_name == "softmax_cross_entropy":
        _check_targets(fn, net, f"{name} labels", len(x), y)
    else:
        _check_targets(fn, net, f"{name} targets", len(x), y)
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{fn}: {name} targets contain NaN or inf")


def _check_finite_tree(fn: str, name: str, tree) -> None:
    """Raise naming the first leaf of ``tree`` (by path) that holds NaN or inf."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(f"{fn}: {name}{jax.tree_util.keystr(path)} contains NaN or inf; "
                             "training from non-finite values cannot produce a meaningful network")


class _Progress(NamedTuple):
    """Where a run stands between epochs: what a checkpoint stores besides the arrays."""

    history: dict
    best_score: float
    best_epoch: int
    initial_loss: float  # the untrained net's loss (first minibatch, before any update); NaN before epoch 1
    stopped_early: bool

    @property
    def epochs_done(self) -> int:
        return len(self.history["epoch"])


def _save_checkpoint(path, params, state, opt_state, best: dict, progress: _Progress) -> None:
    tree = {"params": params, "state": state, "opt_state": opt_state,
            "best_params": best["params"], "best_state": best["state"]}
    meta = {"epoch": progress.epochs_done, "best_epoch": progress.best_epoch, "best_score": progress.best_score,
            "initial_loss": progress.initial_loss, "stopped_early": progress.stopped_early,
            "history": progress.history}
    checkpoint.save(path, tree, metadata=meta)


def _load_checkpoint(path, params, state, opt_state):
    """``(params, state, opt_state, best, progress)`` of the checkpoint at ``path``, whose arrays
    must have the structure, shapes and dtypes of the given ones."""
    like = {"params": params, "state": state, "opt_state": opt_state, "best_params": params, "best_state": state}
    tree, meta = checkpoint.load(path, like=like), checkpoint.load_metadata(path)
    progress = _Progress(meta["history"], meta["best_score"], meta["best_epoch"],
                         meta.get("initial_loss", math.nan), meta.get("stopped_early", False))
    if progress.epochs_done != meta["epoch"]:
        raise ValueError(f"fit: {path} is inconsistent: epoch {meta['epoch']} but {progress.epochs_done} epochs of history")
    best = {"params": tree["best_params"], "state": tree["best_state"]}
    return tree["params"], tree["state"], tree["opt_state"], best, progress


def _diverged_message(fn, step_losses, epoch, steps, progress: _Progress, factor, checkpoint_dir) -> str | None:
    """Why epoch ``epoch`` diverged (a NaN/inf loss, or a mean loss above ``factor`` times the
    untrained net's loss), or None if it did not."""
    kept = f"; the checkpoint of epoch {epoch - 1} in {checkpoint_dir} is kept" if checkpoint_dir and epoch > 1 else ""
    if not np.all(np.isfinite(step_losses)):
        bad = int(np.argmax(~np.isfinite(step_losses)))
        return (f"{fn}: the training loss became {step_losses[bad]} at epoch {epoch}, step {bad + 1} of {steps}{kept}; "
                "try a smaller learning rate")
    mean = float(step_losses.mean())
    if factor is not None and mean > factor * progress.initial_loss:
        return (f"{fn}: the training loss diverged at epoch {epoch}: its mean {mean:.4g} is more than {factor:g} times "
                f"the untrained network's loss {progress.initial_loss:.4g}{kept}; try a smaller learning rate")
    return None


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
      checkpoint_dir: if given, ``checkpoint.npz`` there is rewritten atomically after every
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
    _check_data(fn, net, "training", x, y)
    if val is not None:
        _check_data(fn, net, "validation", *val)
    epochs = _checks.integer(fn, "epochs", epochs, minimum=1)
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1, maximum=len(x),
                                 what="(the number of training samples)")
    seed = _checks.integer(fn, "seed", seed)
    if early_stopping is not None:
        early_stopping = _checks.integer(fn, "early_stopping", early_stopping, minimum=1, what="(epochs)")
    if divergence_factor is not None and not (math.isfinite(divergence_factor) and divergence_factor > 1):
        raise ValueError(f"{fn}: divergence_factor must be a finite number > 1 or None, got {divergence_factor!r}")
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs a checkpoint_dir")
    epoch_fn = make_epoch(net, opt, batch_size=batch_size, grad=grad, mesh=mesh)
    # Every process of a multi-process mesh runs fit; one of them talks and writes.
    lead = distributed.is_lead()
    progress = progress and lead

    seed_key = jax.random.PRNGKey(seed)
    init_key, train_key = xla_options.compiled_init(_split_in_two, _spec(seed_key))(seed_key)
    if params is None:
        params, init_state = xla_options.compiled_init(net.init, _spec(init_key))(init_key)
        state = init_state if state is None else state
    _check_finite_tree(fn, "params", params)
    _check_finite_tree(fn, "state", state)
    # The compiled epoch donates its inputs: keep our own copies of anything the caller passed.
    params, state = jax.tree_util.tree_map(jnp.copy, (params, {} if state is None else state))
    opt_state = jax.jit(opt.init)(params)  # one small program, not one eager zeros_like per leaf
    best = {"params": params, "state": state}
    run = _Progress({k: [] for k in HISTORY_KEYS}, -math.inf, 0, math.nan, False)
    ckpt_path = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_NAME)
    if resume and os.path.exists(ckpt_path):
        params, state, opt_state, best, run = _load_checkpoint(ckpt_path, params, state, opt_state)

    if mesh is None:
        xd, yd = jnp.asarray(x), jnp.asarray(y)
    else:
        params, state, opt_state, xd, yd = replicate((params, state, opt_state, x, y), mesh)
        best["params"], best["state"] = replicate((best["params"], best["state"]), mesh)
    n_eval = min(train_eval_samples, len(x))
    # The evaluations' data on the host, copied once (they cut it into batches there).
    eval_train = (np.asarray(x[:n_eval]), np.asarray(y[:n_eval]))
    eval_val = None if val is None else (np.asarray(val[0]), np.asarray(val[1]))
    steps = len(x) // batch_size
    # Epochs since the best one; a resumed run continues the count, so early stopping stops
    # where the uninterrupted run would.
    stale = run.epochs_done - run.best_epoch
    start_epoch = run.epochs_done + 1
    last_epoch = start_epoch - 1 if run.stopped_early else epochs  # a run that stopped early stays stopped
    fold_in = xla_options.compiled_init(jax.random.fold_in, _spec(train_key), _spec(np.uint32(0)))
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        key = fold_in(train_key, np.uint32(epoch))
        params, state, opt_state, step_losses = epoch_fn(
            params, state, opt_state, xd, yd, key if mesh is None else replicate(key, mesh)
        )
        step_losses = np.asarray(step_losses)
        dt = time.perf_counter() - t0
        if epoch == 1:
            run = run._replace(initial_loss=float(step_losses[0]))
        if message := _diverged_message(fn, step_losses, epoch, steps, run, divergence_factor, checkpoint_dir):
            raise TrainingDiverged(message, run.history)
        train_m = _evaluate(net, params, state, *eval_train)
        val_m = _evaluate(net, params, state, *eval_val) if val is not None else {"loss": math.nan, "accuracy": math.nan}
        record = {
            "epoch": epoch,
            "train_loss": float(step_losses.mean()),
            "train_acc": train_m["accuracy"],
            "val_loss": val_m["loss"],
            "val_acc": val_m["accuracy"],
            "lr": _learning_rate(opt_state),
            "epoch_time": dt,
            "samples_per_s": steps * batch_size / dt,
        }
        for k in HISTORY_KEYS:
            run.history[k].append(record[k])
        # Best by validation accuracy (by validation loss for regression); the last epoch
        # without validation data.
        score = -val_m["loss"] if math.isnan(val_m["accuracy"]) else val_m["accuracy"]
        if val is None or score > run.best_score:
            run = run._replace(best_score=score if val is not None else -math.inf, best_epoch=epoch)
            best = {"params": jax.tree_util.tree_map(jnp.copy, params), "state": jax.tree_util.tree_map(jnp.copy, state)}
            stale = 0
        else:
            stale += 1
        if progress:
            print_fn(_progress_line(record, epochs))
        run = run._replace(stopped_early=early_stopping is not None and stale >= early_stopping)
        if ckpt_path is not None and lead:
            os.makedirs(os.fspath(checkpoint_dir), exist_ok=True)
            _save_checkpoint(ckpt_path, params, state, opt_state, best, run)
        if run.stopped_early:
            if progress:
                print_fn(f"early stopping: no better validation score for {early_stopping} epochs (best: epoch {run.best_epoch})")
            break
    return FitResult(params, state, opt_state, best["params"], best["state"], run.best_epoch, run.history,
                     run.stopped_early, run.epochs_done - start_epoch + 1)


def _learning_rate(opt_state) -> float:
    """The rate the last update used, or NaN for an optimizer whose state does not record it
    (e.g. a plain optax optimizer; ``optax.inject_hyperparams`` ones do)."""
    try:
        return float(optim.current_learning_rate(opt_state))
    except ValueError:
        return math.nan


def _progress_line(r: dict, epochs: int, width: int = 20) -> str:
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
