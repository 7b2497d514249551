"""fnet: functional neural networks from scratch in JAX, with hand-written backward passes.

Modules, one concept each: ``layers`` (forward/backward pairs), ``losses``, ``init``, ``nets``
(the MLP), ``gradcheck``, ``optim`` and ``schedules``, ``data``, ``train``, ``checkpoint``,
``plots``, ``search``, ``distributed``, ``custom_vjp`` (the hand-written rules as
``jax.custom_vjp``), ``experiments``. The most used names are re-exported here.
"""

from fnet import checkpoint, custom_vjp, data, gradcheck, init, layers, losses, nets, optim, schedules, search, train
from fnet.nets import MLPConfig, Net, mlp
from fnet.train import FitResult, TrainingDiverged, TrialsResult, evaluate, fit, fit_trials, make_epoch, make_train_step

__version__ = "0.1.0"

__all__ = [
    "FitResult",
    "MLPConfig",
    "Net",
    "TrainingDiverged",
    "TrialsResult",
    "checkpoint",
    "custom_vjp",
    "data",
    "evaluate",
    "fit",
    "fit_trials",
    "gradcheck",
    "init",
    "layers",
    "losses",
    "make_epoch",
    "make_train_step",
    "mlp",
    "nets",
    "optim",
    "schedules",
    "search",
    "train",
]
