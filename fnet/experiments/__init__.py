"""The curriculum's experiments, one module each.

Every experiment module defines ``NAME`` (the command-line name), ``DESCRIPTION`` (one line),
``run(*, quick=False, data_dir=None) -> dict`` (JSON-serialisable results; ``quick`` is the
scaled-down version the tests run), ``summary(result) -> str`` (a short plain-text table) and
``plot(result, path)`` (a PNG). ``fnet experiment NAME`` runs one and writes ``NAME.json`` and
``NAME.png``.
"""

from __future__ import annotations

import importlib

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
