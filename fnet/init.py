"""Weight initializers, each ``(key, shape, dtype=float32) -> array``.

The fan-in ``n_in`` (:func:`fan_in`) follows fnet's layouts: a dense weight matrix is (n_in, n_out),
so ``n_in = shape[0]``; a convolution's filters are (F, C, HH, WW), so ``n_in = C * HH * WW``, the
inputs one output sees (as equinox and PyTorch count it). The scales are the source material's
(deep-learning-from-scratch ch. 6-7):

- ``xavier``: std ``sqrt(1 / n_in)`` (Glorot & Bengio's fan-in form; note that Keras/flax's
  "glorot_normal" uses ``sqrt(2 / (n_in + n_out))`` instead);
- ``he``: std ``sqrt(2 / n_in)``, for ReLU networks;
- ``normal(std)``: a fixed std, the curriculum's ``weight_scale`` (e.g. 0.01);
- ``zeros``: all zeros (biases; for weights it shows the symmetry problem).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks


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
      ``init(key, shape, dtype=float32) -> std * N(0, 1) samples``, with ``std`` rounded to
      ``dtype`` first, so that a float std and the same value as a (traced) array of any float
      dtype draw bitwise the same weights.
    """

    def init(key, shape, dtype=jnp.float32):
        return jnp.asarray(std, dtype) * jax.random.normal(key, shape, dtype)

    return init


def fan_in(shape, fn: str = "fan_in") -> int:
    """The number of inputs of one output unit for a weight of ``shape``.

    Args:
      shape: (n_in, n_out) for a dense layer (or (n,) for a vector), or (F, C, HH, WW) (any rank
        >= 3: (out, in, *kernel)) for a convolution.

    Returns:
      ``shape[0]`` for rank 1 and 2, ``prod(shape[1:])`` for rank >= 3, a Python int.

    Raises:
      TypeError: a dimension is not an int (Python or NumPy).
      ValueError: a negative dimension, or a fan-in of 0.

    >>> from fnet import init
    >>> init.fan_in((784, 100)), init.fan_in((16, 3, 5, 5))     # a dense matrix; 16 filters of 3x5x5
    (784, 75)
    """
    shape = tuple(_checks.integer(fn, f"shape[{i}]", d, minimum=0) for i, d in enumerate(shape))
    n = shape[0] if 1 <= len(shape) <= 2 else math.prod(shape[1:]) if shape else 0
    if n < 1:
        raise ValueError(f"{fn}: shape must have a positive fan-in, got shape {shape}")
    return n


def xavier(key, shape, dtype=jnp.float32):
    """Xavier init, N(0, 1 / n_in) with ``n_in = fan_in(shape)``."""
    return normal(math.sqrt(1.0 / fan_in(shape, "xavier")))(key, shape, dtype)


def he(key, shape, dtype=jnp.float32):
    """He init, N(0, 2 / n_in) with ``n_in = fan_in(shape)``.

    >>> import jax
    >>> from fnet import init
    >>> W = init.he(jax.random.PRNGKey(0), (1000, 500))
    >>> print(W.dtype, f"{float(W.std()) / (2 / 1000) ** 0.5:.2f}")    # std / sqrt(2 / n_in)
    float32 1.00
    """
    return normal(math.sqrt(2.0 / fan_in(shape, "he")))(key, shape, dtype)


#: Initializers by name, as accepted by ``fnet.mlp(init=...)``.
#: The name "normal" means the curriculum's default ``weight_scale`` of 0.01.
INITIALIZERS = {"zeros": zeros, "normal": normal(0.01), "xavier": xavier, "he": he}


def get(spec):
    """Resolve an initializer spec: a name in :data:`INITIALIZERS`, a std (a Python or NumPy
    number, or a 0-d float array, which may be traced: a sweep over init scales), or a callable.

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
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        if spec < 0:
            raise ValueError(f"init.get: std must be >= 0, got {spec}")
        return normal(float(spec))
    if isinstance(spec, (np.generic, np.ndarray, jax.Array)) and np.ndim(spec) == 0 and jnp.issubdtype(spec.dtype, jnp.floating):
        if _checks.is_concrete(spec) and not float(spec) >= 0:
            raise ValueError(f"init.get: std must be >= 0, got {float(spec)}")
        return normal(spec)
    raise TypeError(f"init.get: init must be a name, a float std or a callable, got {type(spec).__name__}")
