"""fnet: functional neural networks from scratch in JAX, with hand-written backward passes.

Modules, one concept each: ``layers`` (forward/backward pairs), ``losses``, ``init``, ``nets``
(the MLP), ``gradcheck``, ``optim`` and ``schedules``, ``data``, ``train``, ``checkpoint``,
``plots``, ``experiments``. The most used names are re-exported here.
"""

from fnet import checkpoint, data, gradcheck, init, layers, losses, nets, optim, schedules, train
from fnet.nets import MLPConfig, Net, mlp
from fnet.train import FitResult, TrainingDiverged, evaluate, fit, make_epoch, make_train_step

__version__ = "0.1.0"

__all__ = [
    "FitResult",
    "MLPConfig",
    "Net",
    "TrainingDiverged",
    "checkpoint",
    "data",
    "evaluate",
    "fit",
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
    "train",
]
