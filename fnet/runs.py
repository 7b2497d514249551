"""Run folders: the one place that knows what the folder of an ``fnet train`` run holds and how it
is created, resumed, locked, cleared and read back.

A run folder holds fnet's marker :data:`MARKER` (``fnet-run.json``, the run record: format,
version, the fnet version that created it, the creation time), :data:`CONFIG_NAME`
(``config.json``, see :func:`new_config` for its schema), ``history.json``, the checkpoint
(``fnet.train.CHECKPOINT_NAME``), ``results.json``, ``curves.png`` and the lock file ``.fnet.lock``.

The rules that keep a user's files safe:

- :func:`check_out_path`: ``.``, ``~``, ``/`` and any folder that contains the current folder
  (an ancestor of it) are never used as a run folder;
- :func:`inspect`: an output path is ``missing``, ``empty``, a ``run`` folder (has the marker) or
  ``other`` (a non-empty folder without the marker, or a file). ``--resume`` and ``--overwrite``
  act only on ``run`` folders (:func:`check_out_kind`); ``other`` is refused and never touched;
- :func:`start`: the first side effect of a run, done only after every option and the data were
  validated: one process per run folder (an advisory ``fcntl.flock`` on ``.fnet.lock`` held for
  the whole run; a second process is told "run folder X is in use by process P"), the folder
  emptied for ``--overwrite``, the marker and config.json written;
- a resumed run keeps the options that define it (:data:`RUN_OPTIONS`): :func:`resume_options`
  refuses any other value, except the :data:`RESUMABLE_CHANGES`;
- every file is written with :func:`fnet.files.atomic_open` (never through a link), and stale
  temporaries of a killed run are removed at the next start (:func:`fnet.files.remove_stale_temporaries`).

``fnet evaluate`` rebuilds a finished run from :func:`load` (its options and recorded net, as a
:class:`Run`), checks the rebuilt net against the record (:func:`check_net`) and reads the best
parameters with :func:`load_best`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Mapping, NamedTuple

import jax

import fnet
from fnet import checkpoint, files, models, plots, train

MARKER = "fnet-run.json"
LOCK_NAME = files.LOCK_NAME
FORMAT = "fnet.run"
VERSION = 1
CONFIG_NAME = "config.json"
CONFIG_FORMAT = "fnet.config"
CONFIG_VERSION = 1
HISTORY_NAME, RESULTS_NAME, CURVES_NAME = "history.json", "results.json", "curves.png"
#: The checkpoint name of fnet's earlier ``.npz`` format, recognized to say so in one line.
LEGACY_CHECKPOINT_NAME = "checkpoint.npz"

MISSING, EMPTY, RUN, OTHER = "missing", "empty", "run", "other"


class RunFolderError(ValueError):
    """An output path that fnet refuses to use (or to use the way it was asked to)."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options that define a run: what config.json's ``args`` must hold, as parsed values.

    A resumed run takes them from config.json; ``fnet evaluate`` rebuilds the run's network, data
    and optimizer from them. ``hidden`` (the MLP's) and ``filters`` are tuples of ints (empty: the
    model's own widths), ``dense_width`` a CNN's (0: the model's own), ``dropout`` None for a CNN's
    own rate, ``init`` a name or a float std.
    """

    data: str
    model: str
    hidden: tuple
    filters: tuple
    dense_width: int
    activation: str
    norm: str
    dropout: float | None
    weight_decay: float
    init: str | float
    optimizer: str
    lr: float
    schedule: str
    lr_decay: float
    epochs: int
    batch_size: int
    early_stopping: int | None
    grad: str
    seed: int


RUN_OPTIONS = tuple(f.name for f in dataclasses.fields(RunOptions))
#: Options a resumed run may change: more epochs, or another patience, extend the same run.
RESUMABLE_CHANGES = ("epochs", "early_stopping")


def show(value) -> str:
    """An option's value as it is typed on the command line (sizes as ``100,100``)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def describe(options: RunOptions) -> str:
    """The options that shape the checkpoint, as command-line flags (for messages)."""
    return " ".join(f"--{k.replace('_', '-')} {show(getattr(options, k))}"
                    for k in ("data", "model", "hidden", "filters", "norm", "optimizer"))


# ---------------------------------------------------------------------------------------------
# the folder: paths, kinds, marker, clearing


def check_out_path(path) -> Path:
    """Refuse a path that must never become (or be emptied as) a run folder.

    Refused: the filesystem root, the home folder, the current folder and every ancestor of it
    (``--out .``, ``--out ..``, ``--out ~``, ``--out /``), compared after resolving links.

    Returns:
      ``path`` as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
      RunFolderError: naming the path and why.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        why = "the filesystem root"
    elif resolved == Path.home().resolve():
        why = "your home folder"
    elif resolved == cwd:
        why = "the current folder"
    elif resolved in cwd.parents:
        why = "a folder that contains the current folder"
    else:
        return path
    raise RunFolderError(f"--out {path}: refusing to use {why} ({resolved}) as a run folder; name a new folder, "
                         f"e.g. --out runs/my-run")


def inspect(path) -> str:
    """What ``path`` is: :data:`MISSING`, :data:`EMPTY` (an empty folder), :data:`RUN` (a folder
    with a valid marker) or :data:`OTHER` (anything else: a file, a foreign folder)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return MISSING
    if not path.is_dir():
        return OTHER
    if read_marker(path) is not None:
        return RUN
    # A lock file or temporaries alone: a run killed before it wrote its marker.
    leftovers = [n for n in os.listdir(path) if n != LOCK_NAME and not files.is_temporary(n)]
    return OTHER if leftovers else EMPTY


def check_out_kind(out, kind: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is touched, an output path of kind ``kind`` (:func:`inspect`) that
    ``--resume`` / ``--overwrite`` (or neither) may not use; one message naming the path each."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if resume and kind != RUN:
        what = "does not exist" if kind == MISSING else f"is not an fnet run folder (it has no {MARKER})"
        raise ValueError(f"--resume: {out} {what}; there is no run to continue")
    if kind == OTHER:
        raise FileExistsError(f"{out} exists and is not an fnet run folder (it has no {MARKER}); fnet will not write "
                              f"into it{' or delete it' if overwrite else ''}: choose a new --out")
    if kind == RUN and not (resume or overwrite):
        raise FileExistsError(f"output directory {out} already exists; pass --resume to continue it or --overwrite to replace it")


def read_marker(path) -> dict | None:
    """The run record of the run folder ``path``, or None when it has no valid marker."""
    marker = Path(path) / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("version") != VERSION:
        return None
    return record


def write_marker(path, fnet_version: str) -> None:
    """Make ``path`` a run folder: write its run record (atomically)."""
    record = {"format": FORMAT, "version": VERSION, "fnet": fnet_version,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    files.atomic_write(Path(path) / MARKER, json.dumps(record, indent=1) + "\n")


def lock(folder) -> files.FolderLock:
    """Take the run folder's lock for the whole run (see :class:`fnet.files.FolderLock`).

    Raises:
      fnet.files.FolderInUseError: "run folder X is in use by process P".
    """
    return files.FolderLock(folder, what="run folder")


def clear(folder) -> None:
    """Delete everything in the run folder ``folder`` except its lock file (never following links).

    Call it only on a :data:`RUN` folder whose :func:`lock` this process holds.
    """
    if inspect(folder) != RUN:
        raise RunFolderError(f"{folder} is not an fnet run folder (no {MARKER}); refusing to empty it")
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


# ---------------------------------------------------------------------------------------------
# config.json: its schema, reading it back, resuming


def new_config(args: Mapping, net_config, dataset) -> dict:
    """The content of a run's config.json (schema version :data:`CONFIG_VERSION`).

    Args:
      args: every parsed option of the command (JSON values), the :data:`RUN_OPTIONS` among them;
        stored as ``args``, a record of the command line.
      net_config: the built network's config dataclass (``Net.config``), stored as ``net``: what
        the options built, so that :func:`check_net` sees an edit of either.
      dataset: the loaded data set (``name`` and the ``x_train``/``x_val``/``x_test`` arrays),
        stored as ``dataset``: its name and split sizes.

    Returns:
      ``{"format", "version", "command", "args", "net", "dataset", "jax"}``; ``jax`` records the
      jax version and the device the run started on.
    """
    return {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "command": "train",
        "args": dict(args),
        "net": dataclasses.asdict(net_config),
        "dataset": {"name": dataset.name, "train": len(dataset.x_train), "val": len(dataset.x_val),
                    "test": len(dataset.x_test)},
        "jax": {"version": jax.__version__, "device": str(jax.devices()[0])},
    }


def read_config(run_dir) -> dict:
    """``run_dir/config.json`` as a dict of schema :data:`CONFIG_VERSION`; a missing, unreadable
    or malformed file is an error naming the file (and the JSON position)."""
    path = os.path.join(run_dir, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; is {run_dir} a directory written by `fnet train`?") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it was edited or damaged") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(config).__name__}")
    if config.get("format") != CONFIG_FORMAT or config.get("version") != CONFIG_VERSION:
        raise ValueError(f"{path} is not an fnet run config of version {CONFIG_VERSION} (format "
                         f"{config.get('format')!r}, version {config.get('version')!r}); it was edited, or written "
                         f"by another fnet version")
    return config


def _options(config: dict, path) -> RunOptions:
    """The :class:`RunOptions` in ``config["args"]``, each one present (values unchecked)."""
    stored = config.get("args")
    if isinstance(stored, dict):  # saved before the model zoo's renames: read as today's
        stored = models.upgrade_run_options(stored)
    missing = [k for k in RUN_OPTIONS if not isinstance(stored, dict) or k not in stored]
    if missing:
        raise ValueError(f"{path}: field 'args' lacks {', '.join(missing)}")
    values = {k: stored[k] for k in RUN_OPTIONS}
    try:
        values["hidden"], values["filters"] = tuple(values["hidden"]), tuple(values["filters"])
    except TypeError:
        raise ValueError(f"{path}: args.hidden and args.filters must be lists of sizes, got "
                         f"{values['hidden']!r} and {values['filters']!r}") from None
    return RunOptions(**values)


def stored_options(run_dir) -> RunOptions:
    """The options of the run in ``run_dir`` (to resume it), from its config.json.

    Raises:
      ValueError: the run's checkpoint is in an older format, or config.json is missing, malformed
        or lacks an option; each names the file.
    """
    _check_checkpoint_format(run_dir, "--resume", "continue")
    return _options(read_config(run_dir), os.path.join(run_dir, CONFIG_NAME))


def resume_options(stored: RunOptions, given: Mapping, run_dir) -> RunOptions:
    """The options of a resumed run: the stored ones, with the given :data:`RESUMABLE_CHANGES`.

    Args:
      stored: the run's options (:func:`stored_options`).
      given: option name -> value given on the command line, or None where left out.
      run_dir: the run folder (for messages).

    Raises:
      ValueError: a given option differs from the stored one (all of them named, with both
        values), or ``epochs`` changes for a cosine schedule (whose length is the run's steps).
    """
    differ = [k for k in RUN_OPTIONS if given.get(k) is not None and given[k] != getattr(stored, k)
              and k not in RESUMABLE_CHANGES]
    if differ:
        shown = "; ".join(f"--{k.replace('_', '-')} {show(given[k])} given, the run has {show(getattr(stored, k))}"
                          for k in differ)
        raise ValueError(f"--resume: options differ from the run's {os.path.join(run_dir, CONFIG_NAME)}: {shown}. "
                         "Resume with the run's own options (or leave them out), or start a new run with another --out")
    epochs = given.get("epochs")
    if epochs is not None and epochs != stored.epochs and stored.schedule == "cosine":
        raise ValueError(f"--resume: --epochs cannot change from {stored.epochs} for a run with --schedule "
                         f"cosine (the schedule's length is the run's total number of steps)")
    return dataclasses.replace(stored, **{k: given[k] for k in RESUMABLE_CHANGES if given.get(k) is not None})


def check_checkpoint(run_dir) -> None:
    """Refuse to resume a run whose checkpoint is damaged (before any file is written); a run
    without one, killed before its first epoch ended, starts over."""
    path = Path(run_dir) / train.CHECKPOINT_NAME
    if path.exists():
        checkpoint.load_metadata(path)


def _check_checkpoint_format(run_dir, what: str, verb: str) -> None:
    """Refuse, in one line, a run folder whose checkpoint is in fnet's earlier ``.npz`` format."""
    run_dir = Path(run_dir)
    if (run_dir / LEGACY_CHECKPOINT_NAME).exists() and not (run_dir / train.CHECKPOINT_NAME).exists():
        marker = read_marker(run_dir) or {}
        raise ValueError(f"{what}: {run_dir} holds {LEGACY_CHECKPOINT_NAME}, a checkpoint in the .npz format of fnet "
                         f"{marker.get('fnet', 'before safetensors')}; this fnet reads and writes "
                         f"{train.CHECKPOINT_NAME}: train the run again (--overwrite), or {verb} it with the fnet "
                         f"version that wrote it")


def start(out, kind: str, *, resume: bool, overwrite: bool, stored: RunOptions | None, config: dict) -> files.FolderLock:
    """Create (or reuse) the run folder, lock it for this process, and leave it ready: emptied for
    ``overwrite``, stale temporaries removed, marker and config written. The first side effects of
    ``fnet train``, done only once every option and the data were validated.

    Args:
      out: the run folder (:func:`check_out_path`); kind: what :func:`inspect` found there.
      resume, overwrite: the command's flags, already checked by :func:`check_out_kind`.
      stored: the resumed run's options as read before (None for a new run); a change of
        config.json since then is refused.
      config: the new config.json (:func:`new_config`).

    Returns:
      the held lock (:class:`fnet.files.FolderLock`); the caller releases it when the run ends.
    """
    out = Path(out)
    if kind == MISSING:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.mkdir()
        except FileExistsError:  # another process created it since: look again, under the lock
            pass
    held = lock(out)
    try:
        now = inspect(out)
        if now != kind and not (kind == MISSING and now == EMPTY):
            check_out_kind(out, now, resume=resume, overwrite=overwrite)  # it changed since it was validated
        if resume and stored_options(out) != stored:
            raise ValueError(f"--resume: {out / CONFIG_NAME} changed while this run was starting; try again")
        if overwrite and now == RUN:
            clear(out)
        files.remove_stale_temporaries(out)
        if not resume or read_marker(out) is None:
            write_marker(out, fnet.__version__)
        files.write_json(out / CONFIG_NAME, config)
    except BaseException:
        held.release()
        raise
    return held


# ---------------------------------------------------------------------------------------------
# outputs, and a finished run read back


def write_outputs(run_dir, history: dict) -> list[str]:
    """Write ``history.json`` and, after at least one epoch, ``curves.png`` (when matplotlib is
    installed); returns the names written."""
    train.save_history(os.path.join(run_dir, HISTORY_NAME), history)
    written = [HISTORY_NAME]
    if history["epoch"] and plots.training_curves(history, os.path.join(run_dir, CURVES_NAME)):
        written.append(CURVES_NAME)
    return written


def write_results(run_dir, best_epoch: int, test: dict) -> None:
    """Write ``results.json``: the best epoch and its metrics on the test set."""
    files.write_json(Path(run_dir) / RESULTS_NAME, {"best_epoch": best_epoch, "test": test})


def missing_outputs(run_dir) -> list[str]:
    """The outputs of a finished run (history, curves, results) missing from ``run_dir``."""
    return [n for n in (HISTORY_NAME, CURVES_NAME, RESULTS_NAME) if not (Path(run_dir) / n).exists()]


class Run(NamedTuple):
    """A finished run read back from its folder (:func:`load`)."""

    folder: Path
    options: RunOptions  # what to rebuild the network, data and optimizer from
    data_dir: str | None  # where the run found its data
    net: object  # config.json's "net" as found (any JSON value): the recorded network, see check_net

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / train.CHECKPOINT_NAME


def load(run_dir) -> Run:
    """Read the run in ``run_dir`` back, to rebuild and evaluate it.

    Raises:
      FileNotFoundError: no config.json, or no checkpoint.
      ValueError: a checkpoint in an older format, or a config.json that is malformed or lacks
        an option (each message names the file).
    """
    folder = Path(run_dir)
    _check_checkpoint_format(folder, "evaluate", "evaluate")
    config = read_config(folder)
    if not (folder / train.CHECKPOINT_NAME).exists():
        raise FileNotFoundError(f"evaluate: {folder / train.CHECKPOINT_NAME} not found; is {run_dir} a directory "
                                f"written by `fnet train`?")
    args = config.get("args")
    data_dir = args.get("data_dir") if isinstance(args, dict) else None
    return Run(folder, _options(config, folder / CONFIG_NAME), data_dir, config.get("net"))


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


def load_best(run: Run, net, opt):
    """The best parameters and state of ``run``'s checkpoint, ``(params, state)``, checked
    against the structure, shapes and dtypes that ``net`` and ``opt`` (rebuilt from the run's
    options) give.

    Raises:
      fnet.checkpoint.CorruptCheckpointError: a damaged checkpoint.
      ValueError: the checkpoint does not match the network, naming the options and the leaf.
    """
    params, state = jax.eval_shape(net.init, jax.random.PRNGKey(0))
    like = {"params": params, "state": state, "opt_state": jax.eval_shape(opt.init, params),
            "best_params": params, "best_state": state}
    try:
        tree = checkpoint.load(run.checkpoint_path, like=like)
    except checkpoint.CorruptCheckpointError:
        raise
    except ValueError as e:
        raise ValueError(f"evaluate: {run.checkpoint_path} does not match {run.config_path} (options "
                         f"{describe(run.options)}): {e}") from None
    return tree["best_params"], tree["best_state"]
