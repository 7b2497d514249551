"""The source material's weight-decay experiment (Deep Learning from Scratch, ch. 6,
``overfit_weight_decay.py``): a 784-[100]*6-10 ReLU network overfits 300 MNIST training images
(SGD lr 0.01, minibatches of 100, 201 epochs); L2 weight decay with lambda 0.1 (on weights only,
``0.5 * lambda * sum W**2``) shrinks the gap between train and test accuracy. The unregularized
and the regularized run are one vmapped program (lambda is traced); see
:func:`fnet.experiments._common.overfit_run` for the details and the ``quick`` sizes.
"""

from __future__ import annotations

from fnet.experiments import _common

NAME = "overfit-weight-decay"
DESCRIPTION = "Train vs test accuracy of a 784-[100]*6-10 net on 300 MNIST images, without and with weight decay 0.1."

WEIGHT_DECAY, EPOCHS = 0.1, 201


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train without and with weight decay; see :func:`fnet.experiments._common.overfit_run`."""
    return _common.overfit_run("weight_decay", WEIGHT_DECAY, epochs=EPOCHS, quick=quick, data_dir=data_dir, seed=seed)


summary = _common.overfit_summary
plot = _common.overfit_plot
