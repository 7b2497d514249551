"""The curriculum's experiments, one module each.

Every experiment module defines ``NAME`` (the command-line name), ``DESCRIPTION`` (one line),
``run(*, quick=False, data_dir=None) -> dict`` (JSON-serialisable results; ``quick`` is the
scaled-down version the tests run), ``summary(result) -> str`` (a short plain-text table) and
``plot(result, path)`` (a PNG). ``fnet experiment NAME`` runs one and writes ``NAME.json`` and
``NAME.png`` into a folder fnet owns (:func:`write_outputs`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fnet import files

#: Module names (under ``fnet.experiments``) in the order ``fnet experiment --list`` shows them.
MODULES = (
    "optimizer_paths",
    "optimizer_mnist",
    "init_histograms",
    "init_compare",
    "batchnorm_scales",
    "depth_sensitivity",
    "overfit_weight_decay",
    "overfit_dropout",
    "hyperparameter_search",
    "adagrad_decay",
    "linear_regression",
    "logistic_regression",
    "loop_vs_vectorized",
    "shallow_net",
    "linear_collapse",
    "sin_regression",
    "numerical_descent",
    "conv_filters",
    "cnn_overfit",
    "conv_vs_mlp",
    "vanishing_gradients",
    "char_lm",
    "bptt_truncation",
    "attention_maps",
)


def registry() -> dict:
    """``{NAME: module}`` for every experiment, in :data:`MODULES` order."""
    mods = [importlib.import_module(f"fnet.experiments.{m}") for m in MODULES]
    return {m.NAME: m for m in mods}


def get(name: str):
    """The experiment module called ``name``; ValueError listing the known names otherwise."""
    found = registry()
    if name not in found:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(found)} (fnet experiment --list)")
    return found[name]


#: ``fnet experiment --out``'s kind of folder (see :func:`fnet.files.claim_folder`).
FOLDER_KIND = "experiments"


def check_outputs(out, name: str) -> tuple[Path, Path]:
    """Before an experiment runs: make ``out`` a folder fnet owns (created, or an empty or
    earlier experiment folder; never ``/``, ``~``, the current folder or a folder of other
    files) and check that ``NAME.json`` and ``NAME.png`` there are absent or were written by fnet
    (listed in the folder's marker), so that no file of the user's is replaced.

    Returns:
      The paths ``(json_path, png_path)``.

    Raises:
      fnet.files.UnsafeFolderError: naming ``--out``, the path and why.
    """
    folder = files.claim_folder(out, kind=FOLDER_KIND, option="--out", what="an experiment folder",
                                example="--out experiments")
    written = set(files.read_folder_marker(folder, FOLDER_KIND).get("written", ()))
    paths = folder / f"{name}.json", folder / f"{name}.png"
    for path in paths:
        if (path.exists() or path.is_symlink()) and path.name not in written:
            raise files.UnsafeFolderError(f"--out {out}: {path} exists and was not written by fnet; refusing to "
                                          "replace it (move it, or name another folder)")
    return paths


def record_outputs(out, *paths) -> None:
    """List ``paths`` (written by fnet into ``out``) in the folder's marker, so that a later run
    of the same experiment may replace them."""
    folder = Path(out).expanduser()
    with files.FolderLock(folder, wait=True, what="experiment folder"):
        written = set(files.read_folder_marker(folder, FOLDER_KIND).get("written", ()))
        files.write_folder_marker(folder, FOLDER_KIND, written | {Path(p).name for p in paths})
