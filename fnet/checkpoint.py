"""Save and load pytrees of arrays (params, batch-norm state, optimizer state) as NumPy ``.npz``.

Format (version 1): an uncompressed ``.npz`` archive, readable with plain NumPy, holding

- ``leaf_0``, ``leaf_1``, ...: the leaves in ``jax.tree_util`` flatten order. dtypes NumPy cannot
  store natively are stored as raw bits: ``bfloat16`` and other ``ml_dtypes`` types as unsigned
  integers of the same width, typed PRNG keys as their ``uint32`` key data;
- ``__fnet_checkpoint__``: UTF-8 JSON (as a uint8 array, so no pickle is ever needed) with the
  format version, the user's ``metadata`` dict, and for every leaf its path (``jax.tree_util.keystr``
  and the raw path entries), dtype, shape, and whether it was a Python scalar.

``load(path)`` rebuilds plain nested dicts (for dict keys and NamedTuple/dataclass fields) and lists
(for list/tuple indices) from the paths, with NumPy leaves; empty subtrees (``None``, ``()``, ``{}``)
have no leaves and are not restored. ``load(path, like=tree)`` restores the exact structure of
``tree`` (NamedTuples included) after checking every path, shape and dtype; ``like`` may hold arrays
or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``). Values round-trip bit for bit.

Writes are atomic: the archive is written to a temporary file in the target directory, fsynced, and
renamed over ``path`` with ``os.replace``; a failed save leaves any previous file untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "fnet.checkpoint"
VERSION = 1
_HEADER = "__fnet_checkpoint__"
_PYTHON_SCALARS = (bool, int, float)  # bool first: bool is a subclass of int


def _path_entry(fn: str, entry) -> list:
    """One key-path entry as JSON: ``[kind, key]``."""
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        if not isinstance(entry.key, (str, int)) or isinstance(entry.key, bool):
            raise TypeError(f"{fn}: dict key {entry.key!r} must be a str or int to be saved")
        return ["dict", entry.key]
    if isinstance(entry, tu.SequenceKey):
        return ["seq", entry.idx]
    if isinstance(entry, tu.GetAttrKey):
        return ["attr", entry.name]
    if isinstance(entry, tu.FlattenedIndexKey):
        return ["index", entry.key]
    raise TypeError(f"{fn}: unsupported pytree key {entry!r}")


def _encode_leaf(fn: str, path: str, leaf) -> tuple[np.ndarray, dict]:
    """Return the array to store and the leaf's JSON record."""
    record: dict[str, Any] = {"path": path, "python": None, "key_impl": None}
    if isinstance(leaf, _PYTHON_SCALARS):
        record["python"] = type(leaf).__name__
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        record["key_impl"] = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    arr = np.asarray(leaf)
    if arr.dtype.kind not in "biufcV":
        raise TypeError(
            f"{fn}: leaf at {path} has dtype {arr.dtype}; only numeric and boolean arrays and Python "
            f"scalars can be saved (put other values in metadata)"
        )
    record.update(dtype=arr.dtype.name, shape=list(arr.shape))
    if arr.dtype.kind == "V":  # bfloat16, float8, int4 (ml_dtypes): store the bits
        arr = arr.view(f"u{arr.dtype.itemsize}")
    return arr, record


def save(path, tree, metadata: dict | None = None) -> None:
    """Atomically save a pytree of arrays (and Python scalars) to ``path`` (used as given).

    Args:
        path: file to write; its directory must exist. An existing file is replaced only once the
            new one is complete and fsynced.
        tree: pytree whose leaves are arrays (NumPy, JAX, including bfloat16 and typed PRNG keys)
            or Python bool/int/float; dict keys must be str or int.
        metadata: optional JSON-serializable dict (epoch, config, ...), read back by
            :func:`load_metadata`.

    Raises:
        TypeError: a leaf or dict key that cannot be stored, or metadata that is not JSON.
    """
    fn = "checkpoint.save"
    path = Path(path)
    leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays, records = {}, []
    for i, (key_path, leaf) in enumerate(leaves_with_paths):
        arr, record = _encode_leaf(fn, jax.tree_util.keystr(key_path), leaf)
        record["entries"] = [_path_entry(fn, e) for e in key_path]
        arrays[f"leaf_{i}"] = arr
        records.append(record)
    header = {"format": FORMAT, "version": VERSION, "metadata": metadata or {}, "leaves": records}
    try:
        text = json.dumps(header)
    except TypeError as e:
        raise TypeError(f"{fn}: metadata must be JSON-serializable: {e}") from None
    arrays[_HEADER] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory, so this is best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path, fn: str, *, with_leaves: bool = True) -> tuple[dict, list[np.ndarray]]:
    """Read the header and (optionally) all leaves, cross-checked; any inconsistency is a ValueError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(archive[_HEADER].tobytes().decode("utf-8"))
            if header.get("format") != FORMAT or header.get("version") != VERSION:
                raise ValueError(f"format {header.get('format')!r} version {header.get('version')!r}, "
                                 f"expected {FORMAT!r} version {VERSION}")
            count = len(header["leaves"]) if with_leaves else 0
            stored = [archive[f"leaf_{i}"] for i in range(count)]
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise ValueError(f"{fn}: {path} is not a readable fnet checkpoint (truncated or corrupt?): {e}") from None
    leaves = []
    for record, arr in zip(header["leaves"], stored):
        dtype = np.dtype(jnp.dtype(record["dtype"]))
        if arr.dtype.kind == "u" and dtype.kind == "V" and arr.dtype.itemsize == dtype.itemsize:
            arr = arr.view(dtype)
        if arr.dtype != dtype or list(arr.shape) != record["shape"]:
            raise ValueError(
                f"{fn}: {path} is corrupt: leaf at {record['path']} should be {dtype.name}{record['shape']}, "
                f"found {arr.dtype.name}{list(arr.shape)}"
            )
        leaves.append(arr)
    return header, leaves


def _restore_leaf(record: dict, arr: np.ndarray):
    """Undo the storage encoding (Python scalars, PRNG keys); arrays stay NumPy."""
    if record["python"] is not None:
        return {"bool": bool, "int": int, "float": float}[record["python"]](arr.item())
    if record["key_impl"] is not None:
        return jax.random.wrap_key_data(arr, impl=record["key_impl"])
    return arr


def _nest(items: list[tuple[list, Any]]):
    """Rebuild nested dicts/lists from ``(path entries, value)`` pairs in flatten order."""
    if len(items) == 1 and not items[0][0]:
        return items[0][1]
    groups: dict[Any, list] = {}
    for entries, value in items:
        groups.setdefault(entries[0][1], []).append((entries[1:], value))
    children = {key: _nest(group) for key, group in groups.items()}
    return list(children.values()) if items[0][0][0][0] == "seq" else children


def _like_spec(leaf) -> tuple[tuple, np.dtype, str | None]:
    """Shape, storage dtype and PRNG impl that a leaf of ``like`` expects."""
    if isinstance(leaf, _PYTHON_SCALARS):
        return (), np.asarray(leaf).dtype, None
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        leaf = np.asarray(leaf)
        dtype = leaf.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        data = jax.eval_shape(jax.random.key_data, leaf)
        return tuple(data.shape), np.dtype(data.dtype), str(jax.random.key_impl(leaf))
    return tuple(np.shape(leaf)), np.dtype(dtype), None


def _as_like(leaf, value):
    """Give ``value`` the container type of the ``like`` leaf: NumPy stays NumPy, Python scalars
    stay Python scalars, anything else (jax.Array, ShapeDtypeStruct) becomes a jax.Array."""
    if isinstance(leaf, _PYTHON_SCALARS):
        return type(leaf)(np.asarray(value).item())
    if isinstance(leaf, np.ndarray) or np.isscalar(leaf):
        return np.asarray(value)
    return jnp.asarray(value)


def load(path, like=None):
    """Load a pytree saved by :func:`save`.

    Args:
        path: the checkpoint file.
        like: optional pytree with the expected structure; its leaves may be arrays, Python scalars
            or ``jax.ShapeDtypeStruct``. Only shapes and dtypes are used, never values.

    Returns:
        without ``like``: nested dicts/lists with NumPy array leaves (Python scalars and typed PRNG
        keys restored as such); with ``like``: a tree of ``like``'s exact structure whose leaves
        are jax arrays, or NumPy arrays / Python scalars where ``like`` has those.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated or corrupt, or ``like`` differs from the saved tree; the
            message names the tree path and the expected vs found shape/dtype.
    """
    fn = "checkpoint.load"
    header, stored = _read(path, fn)
    records = header["leaves"]
    values = [_restore_leaf(r, a) for r, a in zip(records, stored)]
    if like is None:
        return _nest([(r["entries"], v) for r, v in zip(records, values)])

    like_with_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [jax.tree_util.keystr(p) for p, _ in like_with_paths]
    saved_paths = [r["path"] for r in records]
    if like_paths != saved_paths:
        missing = [p for p in like_paths if p not in saved_paths]
        extra = [p for p in saved_paths if p not in like_paths]
        raise ValueError(
            f"{fn}: {path} does not match `like`: paths in `like` but not in the checkpoint: "
            f"{missing[:5] or 'none'}; in the checkpoint but not in `like`: {extra[:5] or 'none'}"
            + ("" if missing or extra else " (same paths in a different order)")
        )
    out = []
    for (_, leaf), record, arr, value in zip(like_with_paths, records, stored, values):
        shape, dtype, key_impl = _like_spec(leaf)
        found = (tuple(arr.shape), arr.dtype, record["key_impl"])
        if (shape, dtype, key_impl) != found:
            describe = lambda s, d, k: f"{d.name}{list(s)}" + (f" PRNG key ({k})" if k else "")
            raise ValueError(
                f"{fn}: {path}: leaf at {record['path']} expected {describe(shape, dtype, key_impl)} "
                f"(from `like`), found {describe(*found)}"
            )
        out.append(value if key_impl else _as_like(leaf, value))
    return jax.tree_util.tree_unflatten(treedef, out)


def load_metadata(path) -> dict:
    """The ``metadata`` dict given to :func:`save` (``{}`` if none), without reading the leaves."""
    return _read(path, "checkpoint.load_metadata", with_leaves=False)[0]["metadata"]

