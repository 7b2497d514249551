"""fnet: functional neural networks from scratch in JAX, with hand-written backward passes.

Modules, one concept each: ``layers`` (forward/backward pairs), ``modules`` (the module contract
and the layers as modules), ``combinators`` (serial, parallel, fan-out/fan-in, residual),
``losses``, ``init``, ``nets`` (a module and a loss as a ``Net``), ``models`` (the ready networks: MLP, CNNs,
recurrent language models, a GPT, and their registry), ``gradcheck``, ``optim`` and ``schedules``, ``data``, ``train`` (steps, epochs,
fit), ``lm`` (training a language model by steps: ``fit_lm``), ``evaluation``, ``trials`` (many trainings in one program), ``checkpoint``, ``files`` (safe writes), ``runs`` (run folders), ``plots``, ``search``, ``distributed``,
``custom_vjp`` (the hand-written rules as ``jax.custom_vjp``), ``sampling`` (generating tokens
from a language model), ``experiments``. The most used names
are re-exported here.

The submodules and names are imported on first use (PEP 562), so ``import fnet`` is instant and
the ``fnet`` command can set up its Ctrl-C handling before the (slow) jax import.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("checkpoint", "combinators", "custom_vjp", "data", "evaluation", "files", "gradcheck", "init", "layers",
               "lm", "losses", "models", "modules", "nets", "optim", "runs", "sampling", "schedules", "search", "train",
               "trials")
_NAMES = {
    "MLPConfig": "models", "Net": "nets", "Variables": "nets", "cnn": "models", "mlp": "models", "network": "nets",
    "summary": "nets",
    "FitResult": "train", "TrainingDiverged": "train", "TrialsResult": "trials", "evaluate": "evaluation",
    "fit": "train", "fit_trials": "trials", "make_epoch": "train", "make_train_step": "train",
    "CharLMConfig": "models", "char_lm": "models", "generate": "sampling", "LMResult": "lm", "fit_lm": "lm",
    "GPTConfig": "models", "gpt": "models",
}

__all__ = sorted((*_SUBMODULES, *_NAMES))


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"fnet.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"fnet.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'fnet' has no attribute {name!r}")


def __dir__():
    return sorted((*globals(), *__all__))
