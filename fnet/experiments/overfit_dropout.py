"""The source material's dropout experiment (Deep Learning from Scratch, ch. 6,
``overfit_dropout.py``): a 784-[100]*6-10 ReLU network overfits 300 MNIST training images
(SGD lr 0.01, minibatches of 100, 301 epochs); dropout with drop rate 0.2 after every hidden layer
(inverted dropout; eval mode keeps every unit) shrinks the gap between train and test accuracy.
The unregularized and the dropout run are one vmapped program (the rate is traced); see
:func:`fnet.experiments._common.overfit_run` for the details and the ``quick`` sizes.
"""

from __future__ import annotations

from fnet.experiments import _common

NAME = "overfit-dropout"
DESCRIPTION = "Train vs test accuracy of a 784-[100]*6-10 net on 300 MNIST images, without and with dropout 0.2."

DROPOUT, EPOCHS = 0.2, 301


def run(*, quick: bool = False, data_dir=None, seed: int = 0) -> dict:
    """Train without and with dropout; see :func:`fnet.experiments._common.overfit_run`."""
    return _common.overfit_run("dropout", DROPOUT, epochs=EPOCHS, quick=quick, data_dir=data_dir, seed=seed)


summary = _common.overfit_summary
plot = _common.overfit_plot
