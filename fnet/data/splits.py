"""Train/validation/test splits and their preprocessing.

:class:`Dataset` is the record every loader returns (features ``x_*`` float32 of shape (N, D) or
(N, 1, H, W); labels ``y_*`` int32 of shape (N,), or float32 targets of shape (N, 1) for
regression), :func:`check_dataset` validates one. Splits are seeded and keep each part's samples in
their original relative order; :func:`standardize` uses training statistics only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from fnet import _checks


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/validation/test split of one data set, as NumPy arrays.

    Attributes:
        x_train, x_val, x_test: float32 features of shape (N_part, D), or (N_part, 1, H, W) for
            images loaded with ``flatten=False``. A part may be empty (N_part == 0).
        y_train, y_val, y_test: int32 labels of shape (N_part,) in [0, num_classes) for
            classification; float32 targets of shape (N_part, 1) for regression.
        num_classes: number of classes C, or 0 for a regression set.
        name: the data set's canonical name (e.g. ``"fashion-mnist"``).
        info: extra facts about the set, e.g. the true weights of ``linear`` or the feature
            mean/std applied by ``standardize=True``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_features(self) -> int:
        """Number of input features D of one flattened sample."""
        return int(np.prod(self.x_train.shape[1:]))

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
        return {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }


def check_dataset(ds: Dataset) -> Dataset:
    """Validate a :class:`Dataset` and return it unchanged.

    Checks, for each of the train/val/test parts: features are floating point and finite (no NaN
    or inf), with the training part's sample shape (e.g. no 27x27 test images for 28x28 training
    images); labels are int class indices of shape (N,) in [0, num_classes) for classification,
    or finite float targets with N rows for regression (num_classes == 0).

    Raises:
        TypeError, ValueError: naming ``check_dataset(<name>)``, the offending array (e.g.
            ``x_train``) and the offending values or index.
    """
    fn = f"check_dataset({ds.name!r})"
    _checks.integer(fn, "num_classes", ds.num_classes, minimum=0, what="(0 for regression)")
    for part, (x, y) in ds.splits().items():
        _checks.float_array(fn, f"x_{part}", x, min_ndim=2)
        if x.shape[1:] != ds.x_train.shape[1:]:
            raise ValueError(f"{fn}: x_{part} has samples of shape {x.shape[1:]} but x_train has {ds.x_train.shape[1:]}; "
                             "every part must hold samples of the same shape")
        _checks.finite(fn, f"x_{part}", x)
        n = len(x)
        if ds.num_classes:
            _checks.labels(fn, f"y_{part}", y, n, ds.num_classes)
        else:
            _checks.float_array(fn, f"y_{part}", y, min_ndim=1)
            if len(y) != n:
                raise ValueError(f"{fn}: y_{part} has {len(y)} rows but x_{part} has {n}; they must match")
            _checks.finite(fn, f"y_{part}", y)
    return ds


def generator(fn: str, seed) -> np.random.Generator:
    """The random generator of a seeded function ``fn``: a ``np.random.Generator`` is used as it
    is (drawing from it advances it), an int >= 0 (Python or NumPy; not a bool or a float) seeds
    a new one, ``np.random.default_rng(seed)``."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(_checks.integer(fn, "seed", seed, minimum=0))


def train_val_test_split(x, y, *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed=0):
    """Split samples into seeded, disjoint train/validation/test parts.

    The test part is ``round(N * test_fraction)`` samples; the validation part is
    ``round((N - n_test) * val_fraction)`` of the rest; the train part is what is left. The samples
    of each part are chosen at random but keep their original relative order.

    Args:
        x: array of shape (N, ...).
        y: array of shape (N, ...).
        val_fraction: fraction in [0, 1) of the non-test samples used for validation.
        test_fraction: fraction in [0, 1) of all samples used for testing.
        seed: an int >= 0 (Python or NumPy) or a ``np.random.Generator`` (see :func:`generator`).

    Returns:
        ``(x_train, y_train, x_val, y_val, x_test, y_test)``.

    >>> import numpy as np
    >>> from fnet import data
    >>> parts = data.train_val_test_split(np.arange(10), np.arange(10), seed=0)
    >>> [p.tolist() for p in parts[::2]]               # 2 test samples, 1 of the other 8 for validation
    [[0, 1, 3, 5, 7, 8, 9], [2], [4, 6]]
    """
    fn = "train_val_test_split"
    _checks.rate(fn, "val_fraction", val_fraction)
    _checks.rate(fn, "test_fraction", test_fraction)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"{fn}: x has {n} samples but y has {len(y)}; they must match")
    n_test = int(round(n * test_fraction))
    n_val = int(round((n - n_test) * val_fraction))
    order = generator(fn, seed).permutation(n)
    test_idx = np.sort(order[:n_test])
    val_idx = np.sort(order[n_test : n_test + n_val])
    train_idx = np.sort(order[n_test + n_val :])
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx], x[test_idx], y[test_idx]


def standardize(train, *others):
    """Standardize features to zero mean and unit variance using the training statistics only.

    Args:
        train: array of shape (N, ...); mean and std are taken over axis 0 (per feature).
        *others: arrays of shape (M_i, ...) transformed with the same statistics.

    Returns:
        ``(train_std, *others_std, mean, std)``; ``mean`` and ``std`` have shape ``train.shape[1:]``.
        A constant feature (std == 0) gets std 1, so it maps to 0 instead of NaN.
    """
    _checks.float_array("standardize", "train", train, min_ndim=1)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std == 0, np.ones_like(std), std)
    return (*((a - mean) / std for a in (train, *others)), mean, std)


def standardize_dataset(ds: Dataset) -> Dataset:
    """Return ``ds`` with all feature parts standardized by the training part's per-feature statistics.

    The mean and std (shape ``x_train.shape[1:]``) are recorded in ``info["mean"]`` and
    ``info["std"]`` so that new inputs can be transformed the same way.
    """
    x_train, x_val, x_test, mean, std = standardize(ds.x_train, ds.x_val, ds.x_test)
    return dataclasses.replace(ds, x_train=x_train, x_val=x_val, x_test=x_test,
                               info={**ds.info, "mean": mean, "std": std})


def one_hot(y, num_classes: int, dtype=jnp.float32):
    """One-hot encode integer labels; works eagerly and under ``jit``.

    Args:
        y: int array of shape (N,) with values in [0, num_classes) (checked when concrete).
        num_classes: number of classes C, a positive int (Python or NumPy).
        dtype: dtype of the result (float32 by default).

    Returns:
        jax array of shape (N, C) with ``out[i, y[i]] == 1`` and zeros elsewhere.

    >>> import numpy as np
    >>> from fnet import data
    >>> print(data.one_hot(np.array([2, 0]), 3))
    [[0. 0. 1.]
     [1. 0. 0.]]
    """
    num_classes = _checks.integer("one_hot", "num_classes", num_classes, minimum=1)
    _checks.labels("one_hot", "y", y, len(y), num_classes)
    return (jnp.asarray(y)[:, None] == jnp.arange(num_classes)).astype(dtype)


def split_dataset(name, x, y, num_classes, *, val_fraction, test_fraction, seed, info=None) -> Dataset:
    """Split ``(x, y)`` with :func:`train_val_test_split` into a checked :class:`Dataset` named ``name``."""
    parts = train_val_test_split(x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return check_dataset(Dataset(*parts, num_classes=num_classes, name=name, info=info or {}))
