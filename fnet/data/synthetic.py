"""Synthetic data sets from the curriculum: ``sin`` and ``linear`` (regression), ``spiral`` and
``planar`` (2-D classification). Each is generated from its seed, then split as
:func:`fnet.data.splits.train_val_test_split` does. Sizes (``n``, ``n_per_class``,
``num_classes``) are positive ints, Python or NumPy; ``seed`` is an int >= 0 or a
``np.random.Generator`` (:func:`fnet.data.splits.generator`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fnet import _checks
from fnet.data.splits import Dataset, generator, split_dataset


def sin(n: int = 1000, *, noise: float = 0.0, val_fraction: float = 0.1, test_fraction: float = 0.2, seed=0) -> Dataset:
    """1-D regression: ``y = sin(x) + noise * eps`` with ``x ~ Uniform[0, 2*pi)``, ``eps ~ N(0, 1)``.

    Returns:
        a regression :class:`Dataset` (num_classes 0): x of shape (N, 1), y of shape (N, 1).
    """
    n = _checks.integer("sin", "n", n, minimum=1)
    rng = generator("sin", seed)
    x = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return split_dataset("sin", x.astype(np.float32), y.astype(np.float32), 0,
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=rng)


def spiral(
    n_per_class: int = 100,
    num_classes: int = 2,
    *,
    noise: float = 0.2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed=0,
) -> Dataset:
    """cs231n's spiral: ``num_classes`` interleaved 2-D arms of ``n_per_class`` points each.

    Arm ``k`` has radius ``r = linspace(0, 1)`` and angle ``linspace(4k, 4(k+1)) + noise * eps``;
    a point is ``(r sin t, r cos t)``. Not linearly separable.

    Returns:
        a classification :class:`Dataset`: x of shape (N, 2), y of shape (N,) in [0, num_classes).

    >>> from fnet import data
    >>> ds = data.spiral(n_per_class=100, num_classes=3)       # 300 points: 60 test, 24 validation
    >>> ds.x_train.shape, ds.y_train.shape, ds.x_val.shape, ds.x_test.shape, ds.num_classes
    ((216, 2), (216,), (24, 2), (60, 2), 3)
    """
    n_per_class = _checks.integer("spiral", "n_per_class", n_per_class, minimum=1)
    num_classes = _checks.integer("spiral", "num_classes", num_classes, minimum=1)
    rng = generator("spiral", seed)
    r = np.tile(np.linspace(0.0, 1.0, n_per_class), num_classes)
    k = np.repeat(np.arange(num_classes), n_per_class)
    t = 4 * k + 4 * np.tile(np.linspace(0.0, 1.0, n_per_class), num_classes) + noise * rng.standard_normal(k.size)
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    return split_dataset("spiral", x.astype(np.float32), k.astype(np.int32), num_classes,
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=rng)


def planar(
    n: int = 400,
    *,
    petal_length: float = 4.0,
    noise: float = 0.2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed=0,
) -> Dataset:
    """Andrew Ng's 2-class planar "flower": petals ``r = a sin(4t)`` alternating between classes.

    Class ``j`` (``n // 2`` points each) has ``t = linspace(3.12 j, 3.12 (j+1)) + noise * eps`` and
    ``r = petal_length * sin(4t) + noise * eps``; a point is ``(r sin t, r cos t)``.

    Returns:
        a classification :class:`Dataset`: x of shape (N, 2), y of shape (N,) in {0, 1}.
    """
    n = _checks.integer("planar", "n", n, minimum=2, what="(one point per class at least)")
    rng = generator("planar", seed)
    m = n // 2
    j = np.repeat(np.arange(2), m)
    t = 3.12 * j + 3.12 * np.tile(np.linspace(0.0, 1.0, m), 2) + noise * rng.standard_normal(2 * m)
    r = petal_length * np.sin(4 * t) + noise * rng.standard_normal(2 * m)
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    return split_dataset("planar", x.astype(np.float32), j.astype(np.int32), 2,
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=rng)


def linear(
    n: int = 1000,
    *,
    w: Sequence[float] = (2.0, -3.4),
    b: float = 4.2,
    noise: float = 0.01,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed=0,
) -> Dataset:
    """Linear regression with noise: ``y = x @ w + b + noise * eps``, ``x, eps ~ N(0, 1)``.

    Returns:
        a regression :class:`Dataset`: x of shape (N, D) with D = len(w), y of shape (N, 1);
        ``info["w"]`` (shape (D,)) and ``info["b"]`` hold the true parameters.
    """
    n = _checks.integer("linear", "n", n, minimum=1)
    rng = generator("linear", seed)
    w = np.asarray(w, dtype=np.float64)
    x = rng.standard_normal((n, w.size))
    y = x @ w[:, None] + b + noise * rng.standard_normal((n, 1))
    return split_dataset("linear", x.astype(np.float32), y.astype(np.float32), 0,
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=rng,
                         info={"w": w.astype(np.float32), "b": np.float32(b)})

