"""Weight initializers, each ``(key, shape, dtype=float32) -> array``.

For a weight matrix of shape (n_in, n_out), ``n_in = shape[0]`` is the fan-in. The scales are the
source material's (deep-learning-from-scratch ch. 6):

- ``xavier``: std ``sqrt(1 / n_in)`` (Glorot & Bengio's fan-in form; note that Keras/flax's
  "glorot_normal" uses ``sqrt(2 / (n_in + n_out))`` instead);
- ``he``: std ``sqrt(2 / n_in)``, for ReLU networks;
- ``normal(std)``: a fixed std, the curriculum's ``weight_scale`` (e.g. 0.01);
- ``zeros``: all zeros (biases; for weights it shows the symmetry problem).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def zeros(key, shape, dtype=jnp.float32):
    """All-zeros array of ``shape``; ``key`` is ignored (kept for a uniform signature)."""
    del key
    return jnp.zeros(shape, dtype)


def normal(std):
    """Initializer drawing from N(0, std**2).

    Args:
      std: standard deviation, a float or a scalar array (may be traced, e.g. vmapped over a
        batch of init scales).

    Returns:
      ``init(key, shape, dtype=float32) -> std * N(0, 1) samples``.
    """

    def init(key, shape, dtype=jnp.float32):
        return (std * jax.random.normal(key, shape, dtype)).astype(dtype)

    return init


def _fan_in(fn, shape):
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"{fn}: shape must have a positive fan-in shape[0], got shape {tuple(shape)}")
    return shape[0]


def xavier(key, shape, dtype=jnp.float32):
    """Xavier init, N(0, 1 / n_in) with ``n_in = shape[0]``."""
    return normal(math.sqrt(1.0 / _fan_in("xavier", shape)))(key, shape, dtype)


def he(key, shape, dtype=jnp.float32):
    """He init, N(0, 2 / n_in) with ``n_in = shape[0]``."""
    return normal(math.sqrt(2.0 / _fan_in("he", shape)))(key, shape, dtype)


#: Initializers by name, as accepted by ``fnet.mlp(init=...)``.
#: The name "normal" means the curriculum's default ``weight_scale`` of 0.01.
INITIALIZERS = {"zeros": zeros, "normal": normal(0.01), "xavier": xavier, "he": he}


def get(spec):
    """Resolve an initializer spec: a name in :data:`INITIALIZERS`, a float std, or a callable.

    Raises:
      ValueError: for an unknown name or a negative std.
    """
    if callable(spec):
        return spec
    if isinstance(spec, str):
        try:
            return INITIALIZERS[spec]
        except KeyError:
            raise ValueError(f"init.get: unknown initializer {spec!r}; choose one of {sorted(INITIALIZERS)} or a float std") from None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError(f"init.get: std must be >= 0, got {spec}")
        return normal(float(spec))
    raise TypeError(f"init.get: init must be a name, a float std or a callable, got {type(spec).__name__}")
