"""Dropout as a module (:func:`fnet.layers.dropout_forward`)."""

from __future__ import annotations

from fnet import _checks
from fnet import layers
from fnet.modules.base import Module, one_shape


def dropout(rate: float) -> Module:
    """Inverted dropout (:func:`fnet.layers.dropout_forward`): ``rate`` is the probability of
    DROPPING a unit; kept units are scaled by ``1 / (1 - rate)`` in train mode, which needs a
    ``key``; eval mode is the identity. ``rate`` may be a traced scalar (built inside a traced
    function, e.g. a vmapped sweep)."""
    _checks.rate("dropout", "rate", rate)

    def init(key, input_shape):
        del key
        return {}, {}, one_shape("dropout", input_shape)

    def forward(params, state, x, *, train, key=None):
        del params
        if train and key is None:
            raise ValueError(f"dropout: key is None in train mode; dropout (rate {rate}) needs a PRNG key: "
                             "pass key=jax.random.PRNGKey(...) (or train=False for inference)")
        y, mask = layers.dropout_forward(x, rate, key, train=train)
        return y, state, mask

    def backward(params, cache, dy):
        del params
        return layers.dropout_backward(dy, cache), {}

    return Module(init, forward, backward, "dropout", f"rate {rate}" if isinstance(rate, (int, float)) else "")
