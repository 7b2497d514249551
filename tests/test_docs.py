"""The ``>>>`` examples in fnet's docstrings run, and print what they show.

Every module of the package is collected from its files (no import needed to list them), and the
examples of the docstrings it defines run as doctests with ``NORMALIZE_WHITESPACE | ELLIPSIS``,
in float64 as the rest of the suite (conftest). Examples print numbers rounded or formatted, so
that the expected text is the same on every CPU."""

import doctest
import importlib
from pathlib import Path

import pytest

import fnet

ROOT = Path(fnet.__file__).parent

#: Modules whose examples cannot run here. A name also excludes the package's submodules
#: ("experiments" covers "experiments.sin_regression"). ``cli``: its examples are shell commands
#: (``fnet train``, ``fnet data download``) that train for minutes, download data and write run
#: folders; ``tests/test_cli_*.py`` run them. ``experiments``: each experiment trains for minutes,
#: most on the real MNIST files; ``tests/test_experiments.py`` runs their ``--quick`` modes.
NOT_YET_CHECKED = ("cli", "experiments")


def _module_names() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[0] in NOT_YET_CHECKED:
            continue
        names.append(".".join(("fnet", *parts)))
    return names


MODULES = _module_names()
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert not failed, f"{failed} of {attempted} docstring examples of {name} failed (the report is above)"


def test_the_documented_modules_have_examples():
    """The examples are spread over the library, not only in one module: every family named here
    shows its use in at least one example."""
    with_examples = set()
    for name in MODULES:
        if any(t.examples for t in doctest.DocTestFinder().find(importlib.import_module(name), name)):
            with_examples.add(name)
    expected = {"fnet.layers", "fnet.modules", "fnet.combinators", "fnet.losses", "fnet.init", "fnet.gradcheck",
                "fnet.optim", "fnet.schedules", "fnet.data.splits", "fnet.custom_vjp", "fnet.files", "fnet.nets",
                "fnet.models", "fnet.train", "fnet.trials", "fnet.search", "fnet.evaluation", "fnet.history",
                "fnet.checkpoint", "fnet.runs"}
    assert expected <= with_examples, f"no examples in {sorted(expected - with_examples)}"
