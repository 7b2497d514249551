"""The image data sets (bundled ``digits``, ``mnist``, ``fashion-mnist``) and :func:`load`, which
dispatches on a data set's name to these and to the synthetic sets.

Pixels are scaled to [0, 1]. MNIST-like sets keep their official 10,000-image test set; their
validation part is a seeded fraction of the training images (see :func:`mnist`).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from fnet.data import idx, synthetic, text
from fnet.data.splits import (Dataset, check_dataset, generator, split_dataset, standardize_dataset,
                              train_val_test_split)


def digits(*, val_fraction: float = 0.1, test_fraction: float = 0.2, seed=0, flatten: bool = True) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (UCI), bundled with fnet: 1,797 images, 10 classes.

    Pixels (counts 0..16) are scaled to [0, 1] by dividing by 16. With the defaults the split is
    1,294 train / 144 validation / 359 test samples (test 20% of all, validation 10% of the rest).

    Args:
        val_fraction, test_fraction, seed: see :func:`train_val_test_split`.
        flatten: features of shape (N, 64) if True, else (N, 1, 8, 8).

    Returns:
        a :class:`Dataset` with ``num_classes == 10``.
    """
    resource = importlib.resources.files("fnet") / "datasets" / "digits.npz"
    with importlib.resources.as_file(resource) as path, np.load(path) as f:
        data, target = f["data"], f["target"]
    x = data.astype(np.float32) / np.float32(16.0)
    x = x if flatten else x.reshape(-1, 1, 8, 8)
    return split_dataset("digits", x, target.astype(np.int32), 10,
                         val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def _idx_dataset(name: str, data_dir, val_fraction: float, seed, flatten: bool) -> Dataset:
    files = idx.find_files(name, data_dir)
    arrays = {f: idx.read_idx(p) for f, p in files.items()}
    parts = []
    for split in ("train", "t10k"):
        images = arrays[f"{split}-images-idx3-ubyte.gz"]
        labels = arrays[f"{split}-labels-idx1-ubyte.gz"]
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{name}: {files[f'{split}-images-idx3-ubyte.gz']} has shape {images.shape} and "
                f"{files[f'{split}-labels-idx1-ubyte.gz']} has shape {labels.shape}; expected (N, H, W) and (N,)"
            )
        x = images.astype(np.float32) / np.float32(255.0)
        n, h, w = images.shape
        parts.append((x.reshape(n, h * w) if flatten else x.reshape(n, 1, h, w), labels.astype(np.int32)))
    (x, y), (x_test, y_test) = parts
    x_train, y_train, x_val, y_val, _, _ = train_val_test_split(
        x, y, val_fraction=val_fraction, test_fraction=0.0, seed=seed
    )
    return check_dataset(Dataset(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=10, name=name))


def mnist(data_dir=None, *, val_fraction: float = 5000 / 60000, seed=0, flatten: bool = True) -> Dataset:
    """MNIST handwritten digits: 28x28 grey images, 10 classes, 60,000 train + 10,000 test.

    Files are looked up as described in :func:`fnet.data.idx.find_files`. Pixels are scaled to
    [0, 1] (/255). The test part is the official 10,000-image test set; the validation part is a
    seeded ``val_fraction`` of the 60,000 training images (default 5,000, leaving 55,000 for
    training; ``val_fraction=0`` keeps all 60,000 in their file order).

    Args:
        data_dir: folder searched first (optional).
        val_fraction, seed: see :func:`train_val_test_split`.
        flatten: features of shape (N, 784) if True, else (N, 1, 28, 28).
    """
    return _idx_dataset("mnist", data_dir, val_fraction, seed, flatten)


def fashion_mnist(data_dir=None, *, val_fraction: float = 5000 / 60000, seed=0, flatten: bool = True) -> Dataset:
    """Fashion-MNIST (Zalando): 28x28 grey clothing images, 10 classes, 60,000 train + 10,000 test.

    Same file names, lookup, scaling and split conventions as :func:`mnist`.
    """
    return _idx_dataset("fashion-mnist", data_dir, val_fraction, seed, flatten)


def download(
    name: str,
    *,
    cache_dir=None,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the four IDX files of ``mnist`` or ``fashion-mnist`` into ``<cache_dir>/<name>/``.

    Each file is tried on each mirror in turn, streamed into a temporary file inside the target
    folder and checked against its sha256. Only when all four files are verified are they renamed
    into place (atomically), so a failure never leaves a partial or unverified file behind (the
    partial files of a download killed outright are removed at the next start). Files already
    present with the right checksum are kept and not fetched again.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"`` (``"fashion_mnist"`` also accepted).
        cache_dir: root folder; default ``~/.cache/fnet`` (:func:`fnet.data.idx.default_cache_dir`).
        mirrors: base URLs to try in order; default :data:`fnet.data.idx.MIRRORS` ``[name]``.
        checksums: ``{file name: sha256 hex}``; default :data:`fnet.data.idx.SHA256` ``[name]``.
        timeout: seconds allowed for each connection and read.
        log: called with one line per file (e.g. ``print``); silent by default.

    Returns:
        the folder holding the four files.

    Raises:
        ChecksumError: a mirror served a file with the wrong sha256 (and no mirror a right one).
        DownloadError: no mirror could be reached; the message says where to put the files by hand.
    """
    name = canonical_name(name)
    if name not in idx.SHA256:
        raise ValueError(f"download: {name!r} needs no download; downloadable: {sorted(idx.SHA256)}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else idx.default_cache_dir()
    return idx.fetch_files(name, root / name, idx.MIRRORS[name] if mirrors is None else tuple(mirrors),
                           idx.SHA256[name] if checksums is None else dict(checksums), timeout=timeout, log=log)


def canonical_name(name: str) -> str:
    """The canonical name of a data set (``"fashion_mnist"`` -> ``"fashion-mnist"``); ValueError
    listing :data:`KNOWN_DATASETS` for an unknown one."""
    key = name.lower().replace("_", "-")
    if key not in _LOADERS:
        if text.text_dataset_name(name) is not None:
            raise ValueError(f"{name!r} is a text data set (a sequence of characters, not samples and labels): "
                             f"load it with fnet.data.load_text({name!r})")
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(KNOWN_DATASETS)}")
    return key


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "sin": synthetic.sin,
    "spiral": synthetic.spiral,
    "planar": synthetic.planar,
    "linear": synthetic.linear,
}
KNOWN_DATASETS = tuple(_LOADERS)
"""Canonical names accepted by :func:`load` (``fashion_mnist`` is accepted as an alias)."""
IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist")
"""The image sets: ``load(name, flatten=False)`` gives them as (N, 1, H, W) (digits 8x8, the others 28x28)."""


def load(name: str, *, data_dir=None, seed=0, standardize: bool = False, **options) -> Dataset:
    """Load a data set by name: ``load("digits")``, ``load("fashion_mnist", data_dir=...)``.

    Args:
        name: one of :data:`KNOWN_DATASETS`, case-insensitive; ``_`` and ``-`` are interchangeable.
        data_dir: folder searched first for the files of ``mnist``/``fashion-mnist``; an error
            for the other sets, which need no files.
        seed: seed of the split (and of the generated samples for synthetic sets): an int >= 0
            (Python or NumPy) or a ``np.random.Generator``.
        standardize: if True, standardize every feature with the training part's mean and std
            (:func:`standardize_dataset`).
            Otherwise features keep the loader's scaling ([0, 1] for images).
        **options: passed to the loader, e.g. ``val_fraction``, ``test_fraction`` (not for
            MNIST-like sets, whose test set is fixed), ``flatten`` (images), ``n``, ``noise``.

    Raises:
        ValueError: unknown name (listing the known ones), or ``data_dir`` for a set without files.
    """
    key = canonical_name(name)
    if data_dir is not None:
        if key not in idx.SHA256:
            raise ValueError(f"load: data_dir applies only to {sorted(idx.SHA256)}, not to {key!r}")
        options["data_dir"] = data_dir
    ds = _LOADERS[key](seed=generator("load", seed), **options)
    return standardize_dataset(ds) if standardize else ds
