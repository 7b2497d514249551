"""Many trainings as ONE vmapped, jit-compiled program: an ensemble, or a batch of hyperparameter
settings (what :mod:`fnet.search` builds on).

Each trial's network and optimizer come from factories that receive the trial's hyperparameters
as traced scalars, so that new VALUES reuse the compiled program. Three trials of two epochs,
the last at a learning rate that diverges:

>>> import numpy as np
>>> import fnet
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)
>>> def make_net(h):                       # h: {"weight_decay": traced scalar, ...}
...     return fnet.mlp(4, [8], 3, weight_decay=h["weight_decay"], dropout=h["dropout"])
>>> hparams = {"learning_rate": np.array([1e-2, 1e-1, 1e6]),         # arrays of shape (T,)
...            "weight_decay": np.array([0.0, 1e-3, 0.0]), "dropout": np.array([0.0, 0.1, 0.0])}
>>> result = fnet.fit_trials(make_net, lambda h: fnet.optim.sgd(h["learning_rate"]), x, y,
...                          hparams=hparams, val=(x[:16], y[:16]), epochs=2, batch_size=16)
>>> result.history["val_acc"].shape, result.seeds.tolist(), result.diverged.tolist()
((3, 2), [0, 1, 2], [False, False, True])

Trial ``i`` computes bit for bit what :func:`fnet.fit` computes with ``seed=seeds[i]``, the
network ``make_net(hparams_i)`` and the optimizer ``make_opt(hparams_i)``, where ``hparams_i``
holds trial ``i``'s values as JAX arrays (``{k: jnp.asarray(v[i])}``): a ready network built from
arrays has the structure of the sweep's (e.g. its dropout layers even at rate 0).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, evaluation, nets, train
from fnet.nets import Net

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
        mean loss exceeded :data:`fnet.train.DIVERGENCE_FACTOR` times the untrained network's
        loss, as :func:`fnet.fit` would report (such a trial's later metrics are meaningless; a
        search should rank it last).
    """

    params: dict
    state: dict
    opt_state: object
    history: dict
    hparams: dict
    seeds: np.ndarray
    diverged: np.ndarray


def _trial_net(make_net, hparams) -> Net:
    """The trial's network: ``make_net`` itself (a fixed :class:`Net`) or ``make_net(hparams)``."""
    net = make_net if isinstance(make_net, Net) else make_net(hparams)
    if not isinstance(net, Net):
        raise TypeError(f"fit_trials: make_net must return a Net, got {type(net).__name__}")
    return net


def _trial_opt(make_opt, hparams):
    """The trial's optimizer: ``make_opt`` itself (``(init, update)``) or ``make_opt(hparams)``."""
    return make_opt if train.is_optimizer(make_opt) else make_opt(hparams)


def _init_trial(net: Net, opt, seed):
    """One trial's ``(params, state, opt_state)``: the same keys as :func:`fnet.fit` with ``seed``."""
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
    params, state = net.init(init_key)
    return params, state, opt.init(params)


def init_trials(make_net, make_opt, seeds, hparams: dict):
    """Initial ``(params, state, opt_state)`` of T trials, stacked along a leading trial axis.

    Trial ``i`` starts exactly where :func:`fnet.fit` with ``seed=seeds[i]`` and the network
    ``make_net(hparams_i)`` starts (an init scale, e.g. ``init=h["init_scale"]`` in the factory,
    changes the draws).

    Args:
      make_net, make_opt: as in :func:`fit_trials`.
      seeds: int array of shape (T,).
      hparams: dict of arrays of shape (T,).
    """

    def one(seed, h):
        return _init_trial(_trial_net(make_net, h), _trial_opt(make_opt, h), seed)

    return jax.vmap(one)(jnp.asarray(seeds), hparams)


@functools.lru_cache(maxsize=32)
def _trials_program(make_net, make_opt, batch_size: int, grad: str, epochs: int, n_eval: int, shared_data: bool,
                    n_val: int):
    """The whole run of all trials as one jit-compiled, vmapped program (cached: new values of
    the hyperparameters, seeds or data of the same shapes reuse the compiled program)."""

    def run(seed, hparams, x, y, val):
        net, opt = _trial_net(make_net, hparams), _trial_opt(make_opt, hparams)
        epoch_fn = train.make_epoch(net, opt, batch_size=batch_size, grad=grad, jit=False)
        eval_train = evaluation.dataset_metrics(net, min(1000, n_eval))
        eval_val = evaluation.dataset_metrics(net, min(1000, n_val)) if n_val else None
        params, state, opt_state = _init_trial(net, opt, seed)
        train_key = jax.random.split(jax.random.PRNGKey(seed))[1]

        def one_epoch(carry, epoch):
            params, state, opt_state = carry
            params, state, opt_state, step_losses = epoch_fn(
                params, state, opt_state, x, y, jax.random.fold_in(train_key, epoch))
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


def _check_factories(fn: str, make_net, make_opt, hparams: dict) -> None:
    if not isinstance(make_net, Net) and not callable(make_net):
        raise TypeError(f"{fn}: make_net must be a Net or a factory hparams -> Net, got {type(make_net).__name__}")
    if not train.is_optimizer(make_opt) and not callable(make_opt):
        raise TypeError(f"{fn}: make_opt must be an (init, update) optimizer or a factory hparams -> optimizer, "
                        f"got {type(make_opt).__name__}")
    if isinstance(make_net, Net) and train.is_optimizer(make_opt):
        raise ValueError(f"{fn}: hparams {sorted(hparams)} reach neither the network nor the optimizer: make_net is a "
                         "ready Net and make_opt a ready optimizer; pass a network factory hparams -> Net or an "
                         "optimizer factory hparams -> optimizer")


def _check_trial_hparams(fn: str, hparams) -> int:
    """T, the number of trials, once ``hparams`` is a dict of finite arrays of one shape (T,);
    the usual names ("learning_rate", "init_scale", "weight_decay", "dropout") in their ranges."""
    if not isinstance(hparams, dict) or not hparams:
        raise ValueError(f"{fn}: hparams must be a non-empty dict of arrays of shape (T,), got {hparams!r}")
    shapes = {k: np.shape(v) for k, v in hparams.items()}
    if any(len(sh) != 1 for sh in shapes.values()) or len(set(shapes.values())) != 1 or not next(iter(shapes.values()))[0]:
        raise ValueError(f"{fn}: every hparams value must have the same shape (T,) with T >= 1, got shapes {shapes}")
    for k, v in hparams.items():
        if not np.all(np.isfinite(np.asarray(v))):
            raise ValueError(f"{fn}: hparams[{k!r}] contains NaN or inf")
    if "dropout" in hparams:
        _checks.rate(fn, "hparams['dropout']", np.asarray(hparams["dropout"]))
    for k in ("learning_rate", "init_scale"):
        if k in hparams and np.any(np.asarray(hparams[k]) <= 0):
            raise ValueError(f"{fn}: hparams[{k!r}] must be > 0, got min {np.min(hparams[k])}")
    if "weight_decay" in hparams and np.any(np.asarray(hparams["weight_decay"]) < 0):
        raise ValueError(f"{fn}: hparams['weight_decay'] must be >= 0, got min {np.min(hparams['weight_decay'])}")
    return next(iter(shapes.values()))[0]


def _check_trial_data(fn: str, net: Net, x, y, val, t: int, shared_data: bool) -> int:
    """N, the number of training samples of each trial, once the data fits ``net``."""
    if shared_data:
        nets.check_data(fn, net, "training", x, y)
        n = len(x)
    else:
        if x.ndim < 3 or len(x) != t or len(y) != t:
            raise ValueError(f"{fn}: with shared_data=False, x and y need a leading trial axis of length {t}, "
                             f"got shapes {x.shape} and {y.shape}")
        nets.check_data(fn, net, "training", x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:]))
        n = x.shape[1]
    if val is not None:
        nets.check_data(fn, net, "validation", *val)
    return n


def fit_trials(
    make_net,
    make_opt,
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

    Trial ``i`` computes exactly what :func:`fnet.fit` computes with ``seed=seeds[i]``, the
    network ``make_net(hparams_i)`` and the optimizer ``make_opt(hparams_i)``, ``hparams_i``
    holding the trial's values as JAX arrays (same init, shuffling and dropout keys, same
    steps), only batched: params, optimizer state and
    hyperparameters carry a leading trial axis, and ``jax.vmap`` turns the T small matrix
    products of a step into one batched product. The compiled program is cached per factory
    pair, so new hyperparameter VALUES (same T) do not recompile. There is no early stopping and
    no exception on divergence: a diverged trial is flagged in ``diverged``. For example::

        make_net = lambda h: fnet.mlp(64, [100], 10, weight_decay=h["weight_decay"],
                                      dropout=h["dropout"], init=h["init_scale"])
        make_opt = lambda h: fnet.optim.sgd(h["learning_rate"])
        result = fnet.fit_trials(make_net, make_opt, x, y, hparams=hp, val=(x_val, y_val))

    Args:
      make_net: a factory ``hparams -> Net`` called inside the traced program with the trial's
        hyperparameters, ``{name: traced scalar}`` (the ready networks take traced
        ``weight_decay``, ``dropout`` and float ``init`` stds; a dropout rate given as an array
        always inserts the dropout layers), or a :class:`~fnet.nets.Net` shared by all trials.
        It is also called once with trial 0's values, as concrete arrays, to check the data.
        Every trial's network must have the same parameter tree.
      make_opt: a factory ``hparams -> optimizer`` (e.g. ``lambda h: fnet.optim.sgd(
        h["learning_rate"])``), or an optimizer shared by all trials. Keep the same factory
        objects across calls to reuse the compiled program.
      x, y: training data shared by all trials, x of shape (N, D), y of shape (N,) or (N, C);
        with ``shared_data=False``, one data set per trial: x (T, N, D), y (T, N) or (T, N, C).
      hparams: dict of arrays of shape (T,), handed whole to both factories.
      val: optional ``(x_val, y_val)`` shared by all trials, evaluated after every epoch.
      epochs, batch_size: as in :func:`fnet.fit` (the last incomplete minibatch is dropped).
      seed, seeds: trial ``i`` uses ``seeds[i]`` (int array (T,)); default ``seed + arange(T)``.
        Equal seeds give every trial the same init, shuffling and dropout masks.
      grad: "manual" or "autodiff".
      train_eval_samples: training accuracy is measured on this many samples.

    Returns:
      A :class:`TrialsResult`.
    """
    fn = "fit_trials"
    t = _check_trial_hparams(fn, hparams)
    _check_factories(fn, make_net, make_opt, hparams)
    hp = {k: jnp.asarray(v, dtype=jnp.result_type(float)) for k, v in hparams.items()}
    x, y = np.asarray(x), np.asarray(y)
    n = _check_trial_data(fn, _trial_net(make_net, {k: v[0] for k, v in hp.items()}), x, y, val, t, shared_data)
    epochs = _checks.integer(fn, "epochs", epochs, minimum=1)
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1, maximum=n, what="(the number of training samples)")
    seeds = np.asarray(seed + np.arange(t) if seeds is None else seeds)
    if seeds.shape != (t,) or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"{fn}: seeds must be an int array of shape ({t},) (one per trial), got {seeds.dtype} {seeds.shape}")
    if seeds.min() < 0:  # fit's rule: 0 <= seed < 2**63 (int64 holds no larger)
        raise ValueError(f"{fn}: seeds must be integers with 0 <= seed < 2**63, got min {seeds.min()}")
    program = _trials_program(make_net, make_opt, batch_size, grad, epochs, min(train_eval_samples, n), shared_data,
                              0 if val is None else len(val[0]))
    val_d = None if val is None else (jnp.asarray(val[0]), jnp.asarray(val[1]))
    params, state, opt_state, history, initial = program(jnp.asarray(seeds), hp, jnp.asarray(x), jnp.asarray(y), val_d)
    history = {k: np.asarray(v) for k, v in history.items()}
    loss = history["train_loss"]
    with np.errstate(invalid="ignore"):  # NaN losses compare False; they count through isfinite
        exploded = np.any(loss > train.DIVERGENCE_FACTOR * np.asarray(initial)[:, None], axis=1)
    diverged = ~np.all(np.isfinite(loss), axis=1) | exploded
    return TrialsResult(params, state, opt_state, history, {k: np.asarray(v) for k, v in hp.items()}, seeds, diverged)
