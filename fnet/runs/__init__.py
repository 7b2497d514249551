"""Run folders: the one place that knows what the folder of an ``fnet train`` run holds and how it
is created, resumed, replaced, locked and read back.

A run folder holds fnet's marker :data:`MARKER` (``fnet-run.json``, the run record: format,
version, the fnet version that created it, the creation time), :data:`CONFIG_NAME`
(``config.json``, see :func:`new_config` for its schema), ``history.json``, the checkpoint
(``fnet.train.CHECKPOINT_NAME``), ``results.json``, ``curves.png`` and the lock file ``.fnet.lock``.

The rules that keep a user's files safe (the folder rules are :mod:`fnet.files`' own, shared with
the experiment and cache folders):

- :func:`check_out_path`: ``.``, ``~``, ``/`` and any folder that contains the current folder
  (an ancestor of it) are never used as a run folder (:func:`fnet.files.refuse_special`);
- :func:`inspect`: an output path is ``missing``, ``empty``, a ``run`` folder (has the marker) or
  ``other`` (a non-empty folder without the marker, or a file) (:func:`fnet.files.folder_state`).
  ``--resume`` and ``--overwrite`` act only on ``run`` folders (:func:`check_out_kind`); ``other``
  is refused and never touched;
- :func:`start`: the first side effect of a run, done only after every option, every size and
  the data were validated: one process per run folder (an advisory ``fcntl.flock`` on
  ``.fnet.lock`` held for the whole run; a second process is told "run folder X is in use by
  process P"), the marker and config.json written;
- nothing old is removed before the new exists: ``--overwrite`` builds the new run in a staging
  folder beside the old one, ``.<name>.staging-<hex>``, and :meth:`Lease.commit` swaps it in
  (one atomic :func:`fnet.files.exchange_folders`) only once the new run's first checkpoint is
  written; an error, a crash or Ctrl-C before that leaves the old run as it was, and the stale
  staging folder is removed at the next start;
- a resumed run keeps the options that define it (:data:`RUN_OPTIONS`): :func:`resume_options`
  refuses any other value, except the :data:`RESUMABLE_CHANGES`; its checkpoint is loaded and
  checked (:func:`check_resumable`: structure, shapes, finite values, epochs done) before
  config.json is rewritten;
- every file is written with :func:`fnet.files.atomic_open` (never through a link), and read with
  :func:`fnet.files.read_regular` or the checkpoint reader (regular files only, bounded: a FIFO
  planted as config.json is refused, not waited on); stale temporaries of a killed run are
  removed at the next start (:func:`fnet.files.remove_stale_temporaries`).

``fnet evaluate`` rebuilds a finished run from :func:`load` (its options and recorded net, as a
:class:`Run`), checks the rebuilt net against the record (:func:`check_net`) and reads the best
parameters with :func:`load_best`, refusing non-finite ones.

The pieces: :mod:`fnet.runs.config` (config.json's schema and the resume rule),
:mod:`fnet.runs.folder` (kinds, marker, lock, start, the staging swap, outputs) and
:mod:`fnet.runs.readback` (a run read back: checks before resuming or evaluating it).

What an output path is, before anything is written to it:

>>> import pathlib
>>> import tempfile
>>> from fnet import runs
>>> with tempfile.TemporaryDirectory() as d:
...     folder = pathlib.Path(d)
...     kinds = [runs.inspect(folder / "new"), runs.inspect(folder)]
...     _ = (folder / "notes.txt").write_text("mine")
...     kinds.append(runs.inspect(folder))
...     runs.write_marker(folder, "0.1.0")
...     kinds.append(runs.inspect(folder))
>>> kinds == [runs.MISSING, runs.EMPTY, runs.OTHER, runs.RUN], kinds
(True, ['missing', 'empty', 'other', 'owned'])
"""


from fnet.runs.config import (CONFIG_FORMAT, CONFIG_NAME, CONFIG_VERSION, JSON_LIMIT, RESUMABLE_CHANGES, RUN_OPTIONS,
                              RunOptions, describe, new_config, parse_options, read_config, resume_options, show)
from fnet.runs.folder import (CURVES_NAME, EMPTY, FORMAT, HISTORY_NAME, LOCK_NAME, MARKER, MISSING, OTHER, RESULTS_NAME,
                              RUN, VERSION, Lease, check_out_kind, check_out_path, inspect, lock, missing_outputs,
                              read_marker, start, write_marker, write_outputs, write_results)
from fnet.runs.readback import (LEGACY_CHECKPOINT_NAME, Run, check_checkpoint, check_net, check_resumable, load,
                                load_best, stored_options)

__all__ = [
    "CONFIG_FORMAT", "CONFIG_NAME", "CONFIG_VERSION", "CURVES_NAME", "EMPTY", "FORMAT", "HISTORY_NAME", "JSON_LIMIT",
    "LEGACY_CHECKPOINT_NAME", "LOCK_NAME", "MARKER", "MISSING", "OTHER", "RESULTS_NAME", "RESUMABLE_CHANGES", "RUN",
    "RUN_OPTIONS", "VERSION", "Lease", "Run", "RunOptions", "check_checkpoint", "check_net", "check_out_kind",
    "check_out_path", "check_resumable", "describe", "inspect", "load", "load_best", "lock", "missing_outputs",
    "new_config", "parse_options", "read_config", "read_marker", "resume_options", "show", "start", "stored_options",
    "write_marker", "write_outputs", "write_results",
]
