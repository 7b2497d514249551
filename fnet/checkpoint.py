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

Writes are atomic and never follow links (:func:`fnet.files.atomic_open`): the archive goes to a new
temporary file beside ``path``, is fsynced and renamed over ``path``; a failed save leaves any previous
file untouched. Reading checks the JSON header and every member's size against the file's own size
BEFORE allocating anything, so a crafted or random file is refused as a
:class:`CorruptCheckpointError` ("corrupt checkpoint: ...") without reading a byte of pickle.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnet import files

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

    with files.atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


class CorruptCheckpointError(ValueError):
    """A file that is not a well-formed fnet checkpoint (truncated, random bytes, a crafted header)."""


def _corrupt(fn: str, path, detail: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{fn}: corrupt checkpoint: {path} is not a readable fnet checkpoint: {detail}")


def _member(fn, path, archive: zipfile.ZipFile, name: str, file_size: int) -> zipfile.ZipInfo:
    """The archive member ``<name>.npy``, checked to be stored uncompressed and to fit in the
    file, so that reading it can never allocate more than the file's own size."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise _corrupt(fn, path, f"member {name} is missing") from None
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size or info.file_size > file_size:
        raise _corrupt(fn, path, f"member {name} claims {info.file_size} bytes (stored as {info.compress_size}, "
                                 f"compression {info.compress_type}) in a file of {file_size} bytes")
    return info


def _npy_header(f) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``f``, positioned at its data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return tuple(shape), fortran, dtype


def _read_npy(fn, path, archive, info: zipfile.ZipInfo, shape: tuple | None, dtype: np.dtype) -> np.ndarray:
    """Read one ``.npy`` member whose header must say ``dtype`` (and ``shape``, unless None); the
    array is allocated only after the header and the member's size agree with them."""
    with archive.open(info) as f:
        found_shape, fortran, found_dtype = _npy_header(f)
        shape = found_shape if shape is None else shape
        if found_dtype.hasobject or found_shape != shape or found_dtype != dtype or fortran:
            raise ValueError(f"should be {dtype.name}{list(shape)}, found {found_dtype.name}{list(found_shape)}"
                             + (" in Fortran order" if fortran else ""))
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != f.tell() + nbytes:
            raise _corrupt(fn, path, f"member {info.filename} holds {info.file_size - f.tell()} data bytes, "
                                     f"expected {nbytes} for {dtype.name}{list(shape)}")
        arr = np.empty(shape, dtype)
        if nbytes and f.readinto(memoryview(arr.reshape(-1).view(np.uint8))) != nbytes:
            raise _corrupt(fn, path, f"member {info.filename} is truncated")
        return arr


def _check_header(fn, path, header) -> None:
    """Validate the JSON header's layout and every leaf record before any leaf is read."""
    if not isinstance(header, dict):
        raise _corrupt(fn, path, "the header is not a JSON object")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise _corrupt(fn, path, f"format {header.get('format')!r} version {header.get('version')!r}, "
                                 f"expected {FORMAT!r} version {VERSION}")
    if not isinstance(header.get("metadata"), dict) or not isinstance(header.get("leaves"), list):
        raise _corrupt(fn, path, "the header needs a 'metadata' object and a 'leaves' list")
    for i, r in enumerate(header["leaves"]):
        ok = (isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("dtype"), str)
              and isinstance(r.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in r["shape"])
              and isinstance(r.get("entries"), list) and r.get("python") in (None, "bool", "int", "float")
              and (r.get("key_impl") is None or isinstance(r.get("key_impl"), str)))
        if not ok:
            raise _corrupt(fn, path, f"leaf record {i} is malformed: {str(r)[:200]}")
        try:
            jnp.dtype(r["dtype"])
        except TypeError:
            raise _corrupt(fn, path, f"leaf record {i} has an unknown dtype {r['dtype']!r}") from None


def _storage_dtype(record: dict) -> np.dtype:
    """The dtype a leaf is stored with: ml_dtypes types (bfloat16, ...) as unsigned ints of their width."""
    dtype = np.dtype(jnp.dtype(record["dtype"]))
    return np.dtype(f"u{dtype.itemsize}") if dtype.kind == "V" else dtype


def _read(path, fn: str, *, with_leaves: bool = True) -> tuple[dict, list[np.ndarray]]:
    """Read the header and (optionally) all leaves, cross-checked; any inconsistency is a
    :class:`CorruptCheckpointError` (a ValueError) naming the file and what is wrong."""
    path = Path(path)
    file_size = path.stat().st_size  # FileNotFoundError for a missing file, as documented
    try:
        with zipfile.ZipFile(path) as archive:
            raw = _read_npy(fn, path, archive, _member(fn, path, archive, _HEADER, file_size), None, np.dtype(np.uint8))
            if raw.ndim != 1:
                raise _corrupt(fn, path, f"the header member has shape {raw.shape}, expected a uint8 vector")
            try:
                header = json.loads(raw.tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _corrupt(fn, path, f"the header is not UTF-8 JSON ({e})") from None
            _check_header(fn, path, header)
            records = header["leaves"] if with_leaves else []
            claimed = sum(math.prod(r["shape"]) * _storage_dtype(r).itemsize for r in records)
            if claimed > file_size:
                raise _corrupt(fn, path, f"the header claims {claimed} bytes of leaves in a file of {file_size} bytes")
            leaves = []
            for i, record in enumerate(records):
                storage = _storage_dtype(record)
                member = _member(fn, path, archive, f"leaf_{i}", file_size)
                try:
                    arr = _read_npy(fn, path, archive, member, tuple(record["shape"]), storage)
                except CorruptCheckpointError:
                    raise
                except ValueError as e:
                    raise _corrupt(fn, path, f"leaf at {record['path']} {e}") from None
                dtype = np.dtype(jnp.dtype(record["dtype"]))
                leaves.append(arr.view(dtype) if dtype != storage else arr)
    except CorruptCheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        # zipfile's and NumPy's own errors on a broken archive or .npy member header.
        raise _corrupt(fn, path, f"{type(e).__name__}: {e}") from None
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

