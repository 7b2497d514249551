"""A run read back from its folder: the checks before ``--resume`` continues it (its checkpoint
loaded and checked before anything is written) and before ``fnet evaluate`` scores it (see
:mod:`fnet.runs`)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import NamedTuple

import jax

from fnet import _checks, checkpoint, history, models, train
from fnet.runs.config import CONFIG_NAME, RunOptions, describe, parse_options, read_config
from fnet.runs.folder import read_marker

#: The checkpoint name of fnet's earlier ``.npz`` format, recognized to say so in one line.
LEGACY_CHECKPOINT_NAME = "checkpoint.npz"


def stored_options(run_dir) -> RunOptions:
    """The options of the run in ``run_dir`` (to resume it), from its config.json.

    Raises:
      ValueError: the run's checkpoint is in an older format, or config.json is missing, malformed
        or lacks an option; each names the file.
    """
    _check_checkpoint_format(run_dir, "--resume", "continue")
    return parse_options(read_config(run_dir), os.path.join(run_dir, CONFIG_NAME))


def check_checkpoint(run_dir) -> None:
    """Refuse, before anything is loaded or written, to resume a run without a usable checkpoint:
    none (the run was stopped before its first epoch ended), one in an older format, or a damaged
    one (its header is read, not its arrays; :func:`check_resumable` reads them later)."""
    path = Path(run_dir) / train.CHECKPOINT_NAME
    if not path.exists() and not path.is_symlink():
        raise ValueError(f"--resume: {run_dir} has no {train.CHECKPOINT_NAME} (the run was stopped before its first "
                         f"epoch ended); there is nothing to continue: start it over with --overwrite")
    checkpoint.load_metadata(path)


def check_resumable(run_dir, net, opt, total: int, unit: str = "epoch") -> None:
    """Load the checkpoint of the run in ``run_dir`` and check that training can continue from it:
    the structure, shapes and dtypes that ``net`` and ``opt`` give, finite values everywhere
    (params, state, optimizer state, best copies), and no more done than ``total`` epochs (or,
    with ``unit="step"``, a language model's steps).

    Raises:
      fnet.checkpoint.CorruptCheckpointError: a damaged checkpoint.
      ValueError: a checkpoint that does not match, holds NaN or inf (naming the first such leaf,
        e.g. "params['dense2']['b']"), or has more epochs (steps) than ``total``.
    """
    path = Path(run_dir) / train.CHECKPOINT_NAME
    check_checkpoint(run_dir)
    meta = checkpoint.load_metadata(path)
    done = meta.get(unit)
    if isinstance(done, bool) or not isinstance(done, int) or done < 0 or not isinstance(meta.get("history"), dict):
        raise ValueError(f"--resume: {path} holds no valid record of the {unit}s done ({unit}, history); it was edited "
                         f"or damaged: start the run over with --overwrite")
    if total < done:
        raise ValueError(f"--resume --{unit}s {total}: the run in {run_dir} has already trained {done} {unit}s; give "
                         f"--{unit}s {done} or more to continue it (or leave --{unit}s out)")
    tree = _load_checked(path, net, opt, "--resume")
    try:
        for part in ("params", "state", "opt_state", "best_params", "best_state"):
            _checks.finite_tree(f"--resume: {path}", part, tree[part])
    except ValueError as e:
        raise ValueError(f"{e}; a run cannot continue from non-finite values: start it over with --overwrite") from None


def _load_checked(path, net, opt, what: str, options: RunOptions | None = None) -> dict:
    """The whole checkpoint at ``path``, checked against the structure, shapes and dtypes that
    ``net`` and ``opt`` give (``jax.eval_shape``: nothing is allocated before the check); a
    mismatch names the file, the config and ``options``."""
    params, state = jax.eval_shape(net.init, jax.random.PRNGKey(0))
    like = history.checkpoint_like(params, state, jax.eval_shape(opt.init, params))
    try:
        return checkpoint.load(path, like=like)
    except checkpoint.CorruptCheckpointError:
        raise
    except ValueError as e:
        shown = f" (options {describe(options)})" if options is not None else ""
        raise ValueError(f"{what}: {path} does not match the run's options in {Path(path).parent / CONFIG_NAME}"
                         f"{shown}: {e}") from None


def _check_checkpoint_format(run_dir, what: str, verb: str) -> None:
    """Refuse, in one line, a run folder whose checkpoint is in fnet's earlier ``.npz`` format."""
    run_dir = Path(run_dir)
    if (run_dir / LEGACY_CHECKPOINT_NAME).exists() and not (run_dir / train.CHECKPOINT_NAME).exists():
        marker = read_marker(run_dir) or {}
        raise ValueError(f"{what}: {run_dir} holds {LEGACY_CHECKPOINT_NAME}, a checkpoint in the .npz format of fnet "
                         f"{marker.get('fnet', 'before safetensors')}; this fnet reads and writes "
                         f"{train.CHECKPOINT_NAME}: train the run again (--overwrite), or {verb} it with the fnet "
                         f"version that wrote it")


class Run(NamedTuple):
    """A finished run read back from its folder (:func:`load`)."""

    folder: Path
    options: RunOptions  # what to rebuild the network, data and optimizer from
    data_dir: str | None  # where the run found its data
    net: object  # config.json's "net" as found (any JSON value): the recorded network, see check_net
    dataset: object  # config.json's "dataset" as found: name, sizes (a text's vocab)

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / train.CHECKPOINT_NAME


def load(run_dir, what: str = "evaluate") -> Run:
    """Read the run in ``run_dir`` back, to rebuild and evaluate it (``what``: the command, for
    messages).

    Raises:
      FileNotFoundError: no config.json, or no checkpoint.
      ValueError: a checkpoint in an older format, or a config.json that is malformed or lacks
        an option (each message names the file).
    """
    folder = Path(run_dir)
    _check_checkpoint_format(folder, what, what)
    config = read_config(folder)
    if not (folder / train.CHECKPOINT_NAME).exists():
        raise FileNotFoundError(f"{what}: {folder / train.CHECKPOINT_NAME} not found; is {run_dir} a directory "
                                f"written by `fnet train`?")
    args = config.get("args")
    data_dir = args.get("data_dir") if isinstance(args, dict) else None
    return Run(folder, parse_options(config, folder / CONFIG_NAME), data_dir, config.get("net"), config.get("dataset"))


def check_net(run: Run, net_config) -> None:
    """Refuse a run whose recorded ``net`` differs from what its options build (``net_config``,
    the rebuilt ``Net.config``): an edit of either shows here, naming every differing field."""
    built = json.loads(json.dumps(dataclasses.asdict(net_config)))
    recorded = models.upgrade_config(run.net) if isinstance(run.net, dict) else run.net
    if recorded == built:
        return
    differ = sorted(built) if not isinstance(recorded, dict) else \
        [k for k in sorted(set(built) | set(recorded)) if recorded.get(k) != built.get(k)]
    shown = "; ".join(f"net.{k} is {recorded.get(k) if isinstance(recorded, dict) else None!r}, the options "
                      f"build {built.get(k)!r}" for k in differ)
    raise ValueError(f"evaluate: {run.config_path} is inconsistent: {shown}")


def load_best(run: Run, net, opt, what: str = "evaluate"):
    """The best parameters and state of ``run``'s checkpoint, ``(params, state)``, checked
    against the structure, shapes and dtypes that ``net`` and ``opt`` (rebuilt from the run's
    options) give, and to hold finite values only (a NaN is never scored).

    Raises:
      fnet.checkpoint.CorruptCheckpointError: a damaged checkpoint.
      ValueError: the checkpoint does not match the network, naming the options and the leaf, or
        holds NaN or inf in its best parameters or state, naming the first such leaf.
    """
    tree = _load_checked(run.checkpoint_path, net, opt, what, run.options)
    for part in ("best_params", "best_state"):
        _checks.finite_tree(f"{what}: {run.checkpoint_path}", part, tree[part])
    return tree["best_params"], tree["best_state"]
