"""Data sets, splits and preprocessing.

Every loader returns a :class:`Dataset` of NumPy arrays (the trainer moves them to the device):

- features ``x_*``: float32, shape (N, D) (or (N, 1, H, W) for images with ``flatten=False``);
- classification labels ``y_*``: int32, shape (N,), values in [0, num_classes);
- regression targets ``y_*``: float32, shape (N, 1), and ``num_classes == 0``.

Data sets (``load(name)`` dispatches on the name, ``KNOWN_DATASETS`` lists them):

- ``digits``: scikit-learn's 8x8 digits, shipped inside the package (no download), the default;
- ``mnist``, ``fashion-mnist``: the IDX files, looked up in ``data_dir``, then ``$FNET_DATA``, then
  ``~/.cache/fnet/<name>/`` (see :func:`find_files`); :func:`download` fetches them;
- synthetic sets from the curriculum: ``sin``, ``spiral``, ``planar``, ``linear``.

Splits are seeded and reproducible: the test set is taken first (``test_fraction`` of all samples,
or the official test files for MNIST/Fashion-MNIST), then the validation set (``val_fraction`` of
what remains); each part keeps the samples' original relative order. Pixels are scaled to [0, 1];
``load(..., standardize=True)`` additionally standardizes every feature with training statistics.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import os
import shutil
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from fnet import _checks, files

# ----------------------------------------------------------------------------------------------
# Dataset container and checks


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
    if ds.num_classes < 0:
        raise ValueError(f"{fn}: num_classes must be >= 0 (0 for regression), got {ds.num_classes}")
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


# ----------------------------------------------------------------------------------------------
# Splits and preprocessing


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
        seed: int or ``np.random.Generator``.

    Returns:
        ``(x_train, y_train, x_val, y_val, x_test, y_test)``.
    """
    fn = "train_val_test_split"
    _checks.rate(fn, "val_fraction", val_fraction)
    _checks.rate(fn, "test_fraction", test_fraction)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"{fn}: x has {n} samples but y has {len(y)}; they must match")
    n_test = int(round(n * test_fraction))
    n_val = int(round((n - n_test) * val_fraction))
    order = np.random.default_rng(seed).permutation(n)
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
        num_classes: number of classes C.
        dtype: dtype of the result (float32 by default).

    Returns:
        jax array of shape (N, C) with ``out[i, y[i]] == 1`` and zeros elsewhere.
    """
    _checks.labels("one_hot", "y", y, len(y), num_classes)
    return (jnp.asarray(y)[:, None] == jnp.arange(num_classes)).astype(dtype)


def _finish(name, x, y, num_classes, *, val_fraction, test_fraction, seed, info=None) -> Dataset:
    """Split ``(x, y)`` with :func:`train_val_test_split` and validate the result."""
    parts = train_val_test_split(x, y, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return check_dataset(Dataset(*parts, num_classes=num_classes, name=name, info=info or {}))


# ----------------------------------------------------------------------------------------------
# digits (bundled)


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
    return _finish("digits", x, target.astype(np.int32), 10,
                   val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


# ----------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (detected from the content).

    Format: two zero bytes, a type code byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``k``, ``k`` big-endian uint32 sizes,
    then the values in row-major order, big-endian.

    Returns:
        array of shape (d1, ..., dk) in native byte order (uint8 for MNIST's files).

    Raises:
        ValueError: the file is truncated, has trailing bytes, a bad magic number or type code,
            or is a broken gzip stream; the message names the path and what was expected.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"read_idx: {path} is a corrupt or truncated gzip file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"read_idx: {path} is not an IDX file: expected a magic number 00 00 <type code in "
            f"{sorted(_IDX_DTYPES)}> <ndim>, found bytes {raw[:4].hex(' ') or '(empty file)'}"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated: expected a {header}-byte header, found {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "is truncated" if found < expected else "has trailing bytes"
        raise ValueError(
            f"read_idx: {path} {what}: expected {expected} bytes of {dtype.name} data for shape "
            f"{shape}, found {found}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
"""The four standard file names; each may also be present uncompressed (without ``.gz``)."""

SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
"""sha256 of the published gzipped files, per data set and file name."""

MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
"""Base URLs tried in order by :func:`download`; a file's URL is the base plus its name."""


class DatasetNotFoundError(FileNotFoundError):
    """The IDX files of a data set are in none of the searched folders."""


class DownloadError(OSError):
    """No mirror delivered a file (offline, HTTP error, timeout); nothing was written."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 did not match; nothing was written."""


def default_cache_dir() -> Path:
    """``~/.cache/fnet``: where :func:`download` stores files (one sub-folder per data set)."""
    return Path.home() / ".cache" / "fnet"


def canonical_name(name: str) -> str:
    """The canonical name of a data set (``"fashion_mnist"`` -> ``"fashion-mnist"``); ValueError
    listing :data:`KNOWN_DATASETS` for an unknown one."""
    key = name.lower().replace("_", "-")
    if key not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(KNOWN_DATASETS)}")
    return key


def _search_dirs(name: str, data_dir) -> list[Path]:
    """Folders searched for ``name``'s files, in order (see :func:`find_files`)."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get("FNET_DATA"):
        roots.append(Path(os.environ["FNET_DATA"]).expanduser())
    dirs = [d for root in roots for d in (root / name, root)]
    return dirs + [default_cache_dir() / name]


def _file_in(folder: Path, gz_name: str) -> Path | None:
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_files(name: str, data_dir=None) -> dict[str, Path]:
    """Locate the four IDX files of ``mnist`` or ``fashion-mnist``.

    Search order, first folder holding all four files wins (each gzipped or not):
    ``data_dir/<name>/``, ``data_dir/``, ``$FNET_DATA/<name>/``, ``$FNET_DATA/``,
    ``~/.cache/fnet/<name>/``. So ``data_dir`` and ``$FNET_DATA`` may point either at a folder with
    the files or at a folder with ``mnist/`` and ``fashion-mnist/`` sub-folders.

    Returns:
        ``{standard file name: path}`` for the names in :data:`IDX_FILES`.

    Raises:
        DatasetNotFoundError: listing every folder searched and how to get the files.
        ValueError: the files found are the other data set's (MNIST and Fashion-MNIST share names
            and shapes, so a folder pointing at the wrong one would otherwise load silently).
    """
    name = canonical_name(name)
    if name not in SHA256:
        raise ValueError(f"find_files: {name!r} is not a file-based data set; choose from {sorted(SHA256)}")
    searched = []
    for folder in _search_dirs(name, data_dir):
        found = {f: _file_in(folder, f) for f in IDX_FILES}
        missing = [f for f, p in found.items() if p is None]
        if not missing:
            labels = found["train-labels-idx1-ubyte.gz"]
            for other, sums in SHA256.items():
                if other != name and labels.suffix == ".gz" and _sha256(labels) == sums[labels.name]:
                    raise ValueError(f"find_files: {folder} holds {other} files, not {name}")
            return found
        note = "" if len(missing) == len(IDX_FILES) else f" (has some files; missing {', '.join(missing)})"
        searched.append(f"  {folder}{note}")
    raise DatasetNotFoundError(
        f"{name}: the IDX files were not found. Searched:\n" + "\n".join(searched) + "\n"
        f"Download them with `fnet data download {name}` (or fnet.data.download({name!r})), or put "
        f"{', '.join(IDX_FILES)} (gzipped or not) in one of those folders or in a folder named by "
        f"$FNET_DATA or --data-dir."
    )


def _idx_dataset(name: str, data_dir, val_fraction: float, seed, flatten: bool) -> Dataset:
    files = find_files(name, data_dir)
    arrays = {f: read_idx(p) for f, p in files.items()}
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

    Files are looked up as described in :func:`find_files`. Pixels are scaled to [0, 1] (/255).
    The test part is the official 10,000-image test set; the validation part is a seeded
    ``val_fraction`` of the 60,000 training images (default 5,000, leaving 55,000 for training;
    ``val_fraction=0`` keeps all 60,000 in their file order).

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


def _fetch_verified(url: str, folder: Path, filename: str, sha256: str, timeout: float) -> Path:
    """Stream ``url`` into a new partial file in ``folder``; return it only if its sha256 matches."""
    fd, tmp = files.create_temporary(folder, filename, files.PART_SUFFIX)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise ChecksumError(f"{url}: sha256 mismatch: expected {sha256}, got {h.hexdigest()}")
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        cache_dir: root folder; default ``~/.cache/fnet`` (:func:`default_cache_dir`).
        mirrors: base URLs to try in order; default :data:`MIRRORS` ``[name]``.
        checksums: ``{file name: sha256 hex}``; default :data:`SHA256` ``[name]``.
        timeout: seconds allowed for each connection and read.
        log: called with one line per file (e.g. ``print``); silent by default.

    Returns:
        the folder holding the four files.

    Raises:
        ChecksumError: a mirror served a file with the wrong sha256 (and no mirror a right one).
        DownloadError: no mirror could be reached; the message says where to put the files by hand.
    """
    name = canonical_name(name)
    if name not in SHA256:
        raise ValueError(f"download: {name!r} needs no download; downloadable: {sorted(SHA256)}")
    mirrors = MIRRORS[name] if mirrors is None else tuple(mirrors)
    checksums = SHA256[name] if checksums is None else dict(checksums)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / name
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    # One downloader per folder (a second one waits, then finds the files verified); the
    # partial files of a download that was killed outright are removed first.
    folder_lock = files.FolderLock(folder, wait=True, what="download folder")
    files.remove_stale_temporaries(folder)
    fetched: dict[str, Path] = {}
    try:
        for filename in IDX_FILES:
            if (folder / filename).is_file() and _sha256(folder / filename) == checksums[filename]:
                if log is not None:
                    log(f"{name}: {filename} already present and verified")
                continue
            errors = []
            for base in mirrors:
                url = base.rstrip("/") + "/" + filename
                try:
                    fetched[filename] = _fetch_verified(url, folder, filename, checksums[filename], timeout)
                    break
                except ChecksumError as e:
                    errors.append(e)
                except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts, resets
                    errors.append(DownloadError(f"{url}: {e}"))
            else:
                kind = ChecksumError if any(isinstance(e, ChecksumError) for e in errors) else DownloadError
                raise kind(
                    f"download {name}: could not get {filename}:\n"
                    + "\n".join(f"  {e}" for e in errors)
                    + f"\nNothing was written. To install the files by hand, put {', '.join(IDX_FILES)} in "
                    f"{folder} (or in a folder named by $FNET_DATA or --data-dir)."
                )
            if log is not None:
                log(f"{name}: {filename} verified ({url})")
        for filename, tmp in fetched.items():
            os.replace(tmp, folder / filename)
        fetched.clear()
    finally:
        for tmp in fetched.values():
            tmp.unlink(missing_ok=True)
        if created and all(p.name == files.LOCK_NAME for p in folder.iterdir()):
            shutil.rmtree(folder)  # nothing was written: leave no empty folder behind
        folder_lock.release()
    return folder


# ----------------------------------------------------------------------------------------------
# Synthetic sets


def sin(n: int = 1000, *, noise: float = 0.0, val_fraction: float = 0.1, test_fraction: float = 0.2, seed=0) -> Dataset:
    """1-D regression: ``y = sin(x) + noise * eps`` with ``x ~ Uniform[0, 2*pi)``, ``eps ~ N(0, 1)``.

    Returns:
        a regression :class:`Dataset` (num_classes 0): x of shape (N, 1), y of shape (N, 1).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    y = np.sin(x) + noise * rng.standard_normal((n, 1))
    return _finish("sin", x.astype(np.float32), y.astype(np.float32), 0,
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
    """
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.0, 1.0, n_per_class), num_classes)
    k = np.repeat(np.arange(num_classes), n_per_class)
    t = 4 * k + 4 * np.tile(np.linspace(0.0, 1.0, n_per_class), num_classes) + noise * rng.standard_normal(k.size)
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    return _finish("spiral", x.astype(np.float32), k.astype(np.int32), num_classes,
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
    rng = np.random.default_rng(seed)
    m = n // 2
    j = np.repeat(np.arange(2), m)
    t = 3.12 * j + 3.12 * np.tile(np.linspace(0.0, 1.0, m), 2) + noise * rng.standard_normal(2 * m)
    r = petal_length * np.sin(4 * t) + noise * rng.standard_normal(2 * m)
    x = np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
    return _finish("planar", x.astype(np.float32), j.astype(np.int32), 2,
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
    rng = np.random.default_rng(seed)
    w = np.asarray(w, dtype=np.float64)
    x = rng.standard_normal((n, w.size))
    y = x @ w[:, None] + b + noise * rng.standard_normal((n, 1))
    return _finish("linear", x.astype(np.float32), y.astype(np.float32), 0,
                   val_fraction=val_fraction, test_fraction=test_fraction, seed=rng,
                   info={"w": w.astype(np.float32), "b": np.float32(b)})


# ----------------------------------------------------------------------------------------------
# Dispatch

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "sin": sin,
    "spiral": spiral,
    "planar": planar,
    "linear": linear,
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
        seed: seed of the split (and of the generated samples for synthetic sets).
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
        if key not in SHA256:
            raise ValueError(f"load: data_dir applies only to {sorted(SHA256)}, not to {key!r}")
        options["data_dir"] = data_dir
    ds = _LOADERS[key](seed=seed, **options)
    return standardize_dataset(ds) if standardize else ds
