"""config.json: the schema of a run's record of its options and network, reading it back, and
the rule of what a resumed run may change (see :mod:`fnet.runs`)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping

import jax

from fnet import files, models

CONFIG_NAME = "config.json"
CONFIG_FORMAT = "fnet.config"
CONFIG_VERSION = 1
#: The most bytes fnet reads of a run's config.json or marker: far above what fnet writes.
JSON_LIMIT = 16 << 20


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options that define a run: what config.json's ``args`` must hold, as parsed values.

    A resumed run takes them from config.json; ``fnet evaluate`` rebuilds the run's network, data
    and optimizer from them. ``hidden`` (the MLP's, or a language model's recurrent widths) and
    ``filters`` are tuples of ints (empty: the model's own widths), ``dense_width`` a CNN's (0: the
    model's own), ``dropout`` None for a CNN's own rate, ``init`` a name or a float std.

    A language model trains for ``steps`` (``epochs`` and ``early_stopping`` None) on windows of
    ``context`` characters with an embedding of width ``embed``; the other models train for
    ``epochs`` (``steps`` None, ``context`` and ``embed`` 0). ``clip`` is the global-norm bound of
    the gradients (0: none). A GPT has ``heads`` attention heads (0 for the other models), ties
    its head to its token table when ``tie``; ``warmup`` steps of linear warmup precede a
    language model's schedule; ``beta2`` is Adam's and AdamW's second-moment decay. The fields
    from ``steps`` on have defaults, so that a config.json written before they existed reads as
    the run it was.
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
    steps: int | None = None
    context: int = 0
    embed: int = 0
    clip: float = 0.0
    heads: int = 0
    tie: bool = False
    warmup: int = 0
    beta2: float = 0.999


RUN_OPTIONS = tuple(f.name for f in dataclasses.fields(RunOptions))
#: Options a resumed run may change: more epochs or steps, or another patience, extend the same run.
RESUMABLE_CHANGES = ("epochs", "early_stopping", "steps")
_OPTIONAL = {f.name: f.default for f in dataclasses.fields(RunOptions) if f.default is not dataclasses.MISSING}


def show(value) -> str:
    """An option's value as it is typed on the command line (sizes as ``100,100``)."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def describe(options: RunOptions) -> str:
    """The options that shape the checkpoint, as command-line flags (for messages)."""
    shown = ("data", "model", "hidden", "filters", "norm", "optimizer", "embed", "heads", "tie", "clip")
    return " ".join(f"--{k.replace('_', '-')} {show(getattr(options, k))}" for k in shown
                    if k not in _OPTIONAL or getattr(options, k) != _OPTIONAL[k])


def new_config(args: Mapping, net_config, dataset) -> dict:
    """The content of a run's config.json (schema version :data:`CONFIG_VERSION`).

    Args:
      args: every parsed option of the command (JSON values), the :data:`RUN_OPTIONS` among them;
        stored as ``args``, a record of the command line.
      net_config: the built network's config dataclass (``Net.config``), stored as ``net``: what
        the options built, so that :func:`fnet.runs.check_net` sees an edit of either.
      dataset: the loaded data set (``name`` and the ``x_train``/``x_val``/``x_test`` arrays, or
        a :class:`fnet.data.TextDataset`), stored as ``dataset``: its name and split sizes (and a
        text's vocabulary, which ``fnet sample`` decodes with).

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
        "dataset": _dataset_record(dataset),
        "jax": {"version": jax.__version__, "device": str(jax.devices()[0])},
    }


def _dataset_record(dataset) -> dict:
    if hasattr(dataset, "vocab"):  # a text: its characters, split in two
        return {"name": dataset.name, "train": len(dataset.train), "val": len(dataset.val), "vocab": dataset.vocab}
    return {"name": dataset.name, "train": len(dataset.x_train), "val": len(dataset.x_val), "test": len(dataset.x_test)}


def read_config(run_dir) -> dict:
    """``run_dir/config.json`` as a dict of schema :data:`CONFIG_VERSION`; a missing, unreadable
    or malformed file is an error naming the file (and the JSON position), and so is anything but
    a regular file of at most :data:`JSON_LIMIT` bytes (a FIFO is refused, not waited on)."""
    path = os.path.join(run_dir, CONFIG_NAME)
    try:
        config = json.loads(files.read_regular(path, limit=JSON_LIMIT, what="run config"))
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


def parse_options(config: dict, path) -> RunOptions:
    """The :class:`RunOptions` in ``config["args"]``, each one present (values unchecked)."""
    stored = config.get("args")
    if isinstance(stored, dict):  # saved before the model zoo's renames: read as today's
        stored = models.upgrade_run_options(stored)
    missing = [k for k in RUN_OPTIONS if k not in _OPTIONAL and (not isinstance(stored, dict) or k not in stored)]
    if missing:
        raise ValueError(f"{path}: field 'args' lacks {', '.join(missing)}")
    values = {k: stored.get(k, _OPTIONAL.get(k)) for k in RUN_OPTIONS}
    for k in ("hidden", "filters"):
        sizes = values[k]
        if not isinstance(sizes, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in sizes):
            raise ValueError(f"{path}: args.{k} must be a list of positive sizes, got {sizes!r}")
        values[k] = tuple(sizes)
    return RunOptions(**values)


def resume_options(stored: RunOptions, given: Mapping, run_dir) -> RunOptions:
    """The options of a resumed run: the stored ones, with the given :data:`RESUMABLE_CHANGES`.

    Args:
      stored: the run's options (:func:`fnet.runs.stored_options`).
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
    for unit in ("epochs", "steps"):
        if given.get(unit) is not None and given[unit] != getattr(stored, unit) and stored.schedule == "cosine":
            raise ValueError(f"--resume: --{unit} cannot change from {getattr(stored, unit)} for a run with --schedule "
                             f"cosine (the schedule's length is the run's total number of steps)")
    return dataclasses.replace(stored, **{k: given[k] for k in RESUMABLE_CHANGES if given.get(k) is not None})
