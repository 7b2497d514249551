"""Random hyperparameter search, every trial trained together in one vmapped program.

The source material's recipe (Deep Learning from Scratch, 6.5): sample each hyperparameter
log-uniformly from a wide range (e.g. ``weight_decay = 10**U(-8, -4)``, ``lr = 10**U(-6, -2)``),
train briefly, rank the trials by validation accuracy, narrow the ranges around the best ones
and search again (here 4 trials of 2 epochs on 64 random samples; the source runs 100 trials of
a 5-layer network on MNIST):

>>> import numpy as np
>>> import fnet
>>> rng = np.random.default_rng(0)
>>> x, y = rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64).astype(np.int32)
>>> make_net = lambda h: fnet.mlp(4, [8], 3, weight_decay=h["weight_decay"])
>>> result = fnet.search.random_search(make_net, x, y, (x[:16], y[:16]), num_trials=4, epochs=2, batch_size=16)
>>> best = result.trials[0]                                    # its hyperparameters and curves
>>> sorted(best["hparams"]), len(best["val_acc"])
(['learning_rate', 'weight_decay'], 2)
>>> ranges = fnet.search.narrow_ranges(result, top=2)          # around the 2 best trials
>>> low, high, scale = ranges["learning_rate"]
>>> 1e-6 <= low <= high <= 1e-2, scale
(True, 'log')
>>> second = fnet.search.random_search(make_net, x, y, (x[:16], y[:16]), ranges=ranges, num_trials=4,
...                                    epochs=2, batch_size=16, seed=1)   # the same compiled program

Unlike the source's Python loop over trials, all trials run as ONE jit-compiled program
(:func:`fnet.fit_trials`): the hyperparameters are traced per-trial values, so a second round
with new values (and the same ``make_net`` object) reuses the compiled program.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, NamedTuple

import numpy as np

from fnet import _checks, optim, trials
from fnet.nets import Net

#: The source's ranges: ``10**U(-6, -2)`` for the learning rate, ``10**U(-8, -4)`` for weight decay.
DEFAULT_RANGES = {"learning_rate": (1e-6, 1e-2), "weight_decay": (1e-8, 1e-4)}
SCALES = ("log", "linear")


class SearchResult(NamedTuple):
    """What :func:`random_search` returns.

    Fields:
      trials: one dict per trial, sorted best first (highest final validation accuracy;
        diverged trials last): "hparams" ({name: float}), "seed", "final_val_acc",
        "best_val_acc", "diverged", and the per-epoch curves "val_acc", "val_loss",
        "train_acc", "train_loss" (lists of floats; NaN where a trial diverged).
      ranges: the ranges sampled from, as ``{name: (low, high, scale)}``.
    """

    trials: list
    ranges: dict


def _parse_ranges(fn: str, ranges: dict) -> dict:
    if not isinstance(ranges, dict) or not ranges:
        raise ValueError(f"{fn}: ranges must be a non-empty dict {{name: (low, high[, 'log'|'linear'])}}, got {ranges!r}")
    parsed = {}
    for name, spec in ranges.items():
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ValueError(f"{fn}: ranges[{name!r}] must be (low, high) or (low, high, scale), got {spec!r}")
        low, high, scale = (*spec, "log") if len(spec) == 2 else spec
        if scale not in SCALES:
            raise ValueError(f"{fn}: ranges[{name!r}] scale must be one of {SCALES}, got {scale!r}")
        if not (math.isfinite(low) and math.isfinite(high)) or low > high or (scale == "log" and low <= 0):
            raise ValueError(f"{fn}: ranges[{name!r}] needs finite low <= high (and low > 0 on a log scale), got {spec!r}")
        parsed[name] = (float(low), float(high), scale)
    return parsed


def sample(ranges: dict, num_trials: int, seed: int = 0) -> dict:
    """Draw ``num_trials`` values of every hyperparameter independently.

    ``(low, high)`` or ``(low, high, "log")`` is log-uniform, ``10**U(log10 low, log10 high)``
    (the source's ``10 ** np.random.uniform(-8, -4)``); ``(low, high, "linear")`` is ``U(low, high)``.

    Returns:
      ``{name: float64 array of shape (num_trials,)}``, reproducible from ``seed``.
    """
    fn = "search.sample"
    ranges = _parse_ranges(fn, ranges)
    num_trials = _checks.integer(fn, "num_trials", num_trials, minimum=1)
    rng = np.random.default_rng(seed)
    out = {}
    for name, (low, high, scale) in ranges.items():
        if scale == "log":
            out[name] = 10.0 ** rng.uniform(math.log10(low), math.log10(high), num_trials)
        else:
            out[name] = rng.uniform(low, high, num_trials)
    return out


def optimizer_keys(optimizer: Callable) -> frozenset:
    """The keyword arguments of an optimizer constructor (e.g. ``learning_rate``, ``momentum``)."""
    return frozenset(inspect.signature(optimizer).parameters)


@functools.lru_cache(maxsize=16)
def optimizer_factory(optimizer: Callable) -> Callable:
    """``hparams -> optimizer(**optimizer_hparams)``: every searched key that is a keyword
    argument of the constructor (:func:`optimizer_keys`, e.g. ``learning_rate``, ``momentum``)
    goes to it; the others are the network's. Cached per constructor, so that repeated searches
    reuse :func:`fnet.fit_trials`'s compiled program."""
    keys = optimizer_keys(optimizer)
    return lambda h: optimizer(**{k: v for k, v in h.items() if k in keys})


def random_search(
    make_net,
    x,
    y,
    val,
    *,
    num_trials: int = 100,
    ranges: dict = DEFAULT_RANGES,
    epochs: int = 50,
    batch_size: int = 100,
    optimizer: Callable = optim.sgd,
    seed: int = 0,
    grad: str = "manual",
) -> SearchResult:
    """Random search: sample ``num_trials`` settings, train them all together, rank them.

    Every trial is :func:`fnet.fit` of ``make_net(hparams_i)`` with the optimizer built from its
    own hyperparameters and seed ``seed + i``, but all trials run as ONE vmapped, jit-compiled
    program (:func:`fnet.fit_trials`). Trials are ranked by their validation accuracy after the
    last epoch (the source's criterion); a trial whose loss became NaN/inf ranks last.

    Args:
      make_net: a factory ``hparams -> Net`` that receives every sampled hyperparameter as a
        traced scalar and uses the network's, e.g. ``lambda h: fnet.mlp(64, [100], 10,
        weight_decay=h["weight_decay"], dropout=h["dropout"], init=h["init_scale"])``; or any
        :class:`~fnet.nets.Net`, when every searched name is the optimizer's.
      x, y: training data, x of shape (N, D), y of shape (N,).
      val: ``(x_val, y_val)``, x_val of shape (M, D), y_val of shape (M,).
      num_trials: T, the number of settings.
      ranges: ``{name: (low, high)}`` (log-uniform) or ``(low, high, "linear")``; a name that
        is a keyword argument of ``optimizer`` (e.g. "learning_rate") goes to it, every name
        to ``make_net``.
      epochs, batch_size: per trial.
      optimizer: an fnet (or optax) optimizer constructor, e.g. ``fnet.optim.sgd``.
      seed: draws the settings (``numpy.random.default_rng(seed)``) and the trials' seeds.

    Returns:
      A :class:`SearchResult`, trials sorted best first.
    """
    fn = "random_search"
    if val is None or len(val) != 2:
        raise ValueError(f"{fn}: val must be (x_val, y_val); the trials are ranked by validation accuracy")
    parsed = _parse_ranges(fn, ranges)
    unused = sorted(set(parsed) - optimizer_keys(optimizer))
    if isinstance(make_net, Net) and unused:
        raise ValueError(f"{fn}: ranges {unused} are not keyword arguments of {optimizer.__name__} and make_net is a "
                         "ready Net: pass a factory hparams -> Net that uses them")
    hparams = sample(parsed, num_trials, seed)
    result = trials.fit_trials(
        make_net, optimizer_factory(optimizer), x, y, hparams=hparams, val=val, epochs=epochs,
        batch_size=batch_size, seed=seed * num_trials, grad=grad,
    )
    hist = result.history
    ranked = []
    for i in range(num_trials):
        curves = {k: [float(v) for v in hist[k][i]] for k in trials.TRIAL_HISTORY_KEYS}
        ranked.append({
            "hparams": {k: float(v[i]) for k, v in hparams.items()},
            "seed": int(result.seeds[i]),
            "final_val_acc": curves["val_acc"][-1],
            "best_val_acc": max(curves["val_acc"]),
            "diverged": bool(result.diverged[i]),
            **curves,
        })
    ranked.sort(key=lambda t: -math.inf if t["diverged"] else t["final_val_acc"], reverse=True)
    return SearchResult(ranked, parsed)


def narrow_ranges(result: SearchResult, *, top: int = 10) -> dict:
    """New ranges spanning the ``top`` best trials' values of every hyperparameter (the source's
    second step: "narrow the range to where the good values lie, and search again").

    Returns:
      ``{name: (min, max, scale)}`` over the best ``top`` trials, scales as in ``result.ranges``;
      pass it as ``ranges=`` to :func:`random_search`.
    """
    fn = "narrow_ranges"
    top = _checks.integer(fn, "top", top, minimum=1, maximum=len(result.trials), what="(the number of trials)")
    best = result.trials[:top]
    return {
        name: (min(t["hparams"][name] for t in best), max(t["hparams"][name] for t in best), scale)
        for name, (_, _, scale) in result.ranges.items()
    }
