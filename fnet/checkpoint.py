"""Save and load pytrees of arrays (params, batch-norm state, optimizer state) as safetensors files.

Format (version 2): a `safetensors <https://github.com/huggingface/safetensors>`_ file, readable
with ``safetensors.numpy.load_file`` (and so by PyTorch, flax and Hugging Face tools), holding

- one tensor per leaf, named by its tree path: ``params/dense1/W`` for ``tree["params"]["dense1"]["W"]``
  (dict keys, sequence indices and NamedTuple/dataclass field names joined by ``/``; a ``~`` or
  ``/`` inside a key is written ``~0`` / ``~1``; a tree that is a single array: the name ``""``).
  dtypes that ``safetensors.numpy`` cannot hold are stored as raw bits: ``bfloat16`` and other
  ``ml_dtypes`` types as unsigned integers of the same width (``U16`` for bfloat16), wider ones
  (``complex128``) as ``U8`` with a trailing axis of the item size; typed PRNG keys as their
  ``uint32`` key data;
- in the safetensors metadata (string -> string), under :data:`METADATA_KEY`, fnet's header as
  JSON: the format and version, the user's ``metadata`` dict, and for every leaf in
  ``jax.tree_util`` flatten order its tensor name, path (``jax.tree_util.keystr`` and the raw path
  entries), dtype, shape, and whether it was a Python scalar or a PRNG key.

``load(path)`` rebuilds plain nested dicts (for dict keys and NamedTuple/dataclass fields) and lists
(for list/tuple indices) from the paths, with NumPy leaves; empty subtrees (``None``, ``()``, ``{}``)
have no leaves and are not restored (a tree without leaves loads as ``{}``). ``load(path, like=tree)``
restores the exact structure of ``tree`` (NamedTuples included) after checking every path, shape and
dtype; ``like`` may hold arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``). Values
round-trip bit for bit.

Writes are atomic and never follow links (:func:`fnet.files.atomic_open`): the file goes to a new
temporary beside ``path``, is fsynced and renamed over ``path``; a failed save leaves any previous
file untouched. Reading opens only a regular file (a FIFO or a folder is refused without waiting),
checks the 8-byte header length against the file's size and :data:`MAX_HEADER_BYTES`, then every
tensor's dtype, shape and byte range against the file's size and fnet's header, BEFORE allocating
anything: a crafted or random file is refused as a :class:`CorruptCheckpointError` ("corrupt
checkpoint: ..."), and nothing in the file is ever executed. A ``.npz`` checkpoint of earlier fnet
versions is refused in one line (:class:`LegacyCheckpointError`).

>>> import os
>>> import tempfile
>>> import numpy as np
>>> from fnet import checkpoint
>>> folder = tempfile.TemporaryDirectory()
>>> path = os.path.join(folder.name, "checkpoint.safetensors")
>>> tree = {"params": {"dense1": {"W": np.arange(6.0).reshape(2, 3), "b": np.zeros(3, np.float32)}}, "step": 7}
>>> checkpoint.save(path, tree, metadata={"epoch": 3})
>>> back = checkpoint.load(path)
>>> back["params"]["dense1"]["W"].tolist(), back["params"]["dense1"]["b"].dtype, back["step"]
([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], dtype('float32'), 7)
>>> checkpoint.load_metadata(path)
{'epoch': 3}
>>> folder.cleanup()
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnet import files

FORMAT = "fnet.checkpoint"
VERSION = 2
#: The safetensors metadata key that holds fnet's JSON header.
METADATA_KEY = "fnet.checkpoint"
#: The largest safetensors header fnet reads (safetensors' own limit).
MAX_HEADER_BYTES = 100_000_000
_PYTHON_SCALARS = (bool, int, float)  # bool first: bool is a subclass of int
#: safetensors dtype codes and the NumPy dtypes ``safetensors.numpy`` reads them as.
_DTYPES = {code: np.dtype(t) for code, t in (
    ("BOOL", np.bool_), ("U8", np.uint8), ("I8", np.int8), ("U16", np.uint16), ("I16", np.int16),
    ("F16", np.float16), ("U32", np.uint32), ("I32", np.int32), ("F32", np.float32), ("U64", np.uint64),
    ("I64", np.int64), ("F64", np.float64), ("C64", np.complex64))}
_NATIVE = set(_DTYPES.values())
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_RESERVED = "__metadata__"  # the safetensors header's own key; no tensor may have this name


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


def _tensor_name(entries: list) -> str:
    """The tensor name of a leaf: its path entries' keys joined by ``/`` (``~`` and ``/`` escaped)."""
    return "/".join(str(key).replace("~", "~0").replace("/", "~1") for _, key in entries)


def _storage(dtype: np.dtype) -> tuple[np.dtype, tuple]:
    """``(storage dtype, extra trailing axis)`` of a leaf dtype: itself where safetensors.numpy
    has it, else its bits as an unsigned int of its width, or as bytes (a trailing axis)."""
    if dtype in _NATIVE:
        return dtype, ()
    if dtype.itemsize in (1, 2, 4, 8):
        return np.dtype(f"u{dtype.itemsize}"), ()
    return np.dtype(np.uint8), (dtype.itemsize,)


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
    if arr.dtype.byteorder == ">":  # the file is little-endian
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    record.update(dtype=arr.dtype.name, shape=list(arr.shape))
    storage, extra = _storage(arr.dtype)
    return np.ascontiguousarray(arr).reshape(-1).view(storage).reshape(arr.shape + extra), record


def save(path, tree, metadata: dict | None = None) -> None:
    """Atomically save a pytree of arrays (and Python scalars) to ``path`` (used as given).

    Args:
        path: file to write; its directory must exist. An existing file is replaced only once the
            new one is complete and fsynced.
        tree: pytree whose leaves are arrays (NumPy, JAX, including bfloat16 and typed PRNG keys)
            or Python bool/int/float; dict keys must be str or int, and two leaves may not have
            the same tensor name (e.g. the keys ``0`` and ``"0"`` of one dict).
        metadata: optional JSON-serializable dict (epoch, config, ...), read back by
            :func:`load_metadata`.

    Raises:
        TypeError: a leaf or dict key that cannot be stored, or metadata that is not JSON.
    """
    fn = "checkpoint.save"
    tensors, records = {}, {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr, record = _encode_leaf(fn, jax.tree_util.keystr(key_path), leaf)
        record["entries"] = [_path_entry(fn, e) for e in key_path]
        name = record["tensor"] = _tensor_name(record["entries"])
        if name in records or name == _RESERVED:
            other = f"the leaf at {records[name]['path']}" if name in records else "safetensors' own header"
            raise TypeError(f"{fn}: the leaf at {record['path']} would be stored as tensor {name!r}, the name of "
                            f"{other}; rename its key")
        tensors[name], records[name] = arr, record
    header = {"format": FORMAT, "version": VERSION, "metadata": metadata or {}, "leaves": list(records.values())}
    try:
        text = json.dumps(header)
    except TypeError as e:
        raise TypeError(f"{fn}: metadata must be JSON-serializable: {e}") from None
    with files.atomic_open(path, "wb") as f:
        _write_safetensors(f, tensors, {METADATA_KEY: text})


def _write_safetensors(f, tensors: dict, metadata: dict) -> None:
    """Write the safetensors layout: the header's length (8 bytes, little-endian), the JSON header
    (tensor name -> dtype code, shape and byte range in the data; ``"__metadata__"`` -> a dict of
    strings), padded with spaces to a multiple of 8 bytes, then every tensor's bytes back to back
    in header order. Written here (fnet reads it with its own bounded reader too), so the
    format needs no package beyond NumPy; ``safetensors.numpy.load_file`` reads the result."""
    header, offset = {_RESERVED: metadata}, 0
    for name, arr in tensors.items():
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for arr in tensors.values():
        f.write(arr.tobytes())


class CorruptCheckpointError(ValueError):
    """A file that is not a well-formed fnet checkpoint (truncated, random bytes, a crafted header)."""


class LegacyCheckpointError(CorruptCheckpointError):
    """A checkpoint in the ``.npz`` format of earlier fnet versions, which this one does not read."""


def _corrupt(fn: str, path, detail: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{fn}: corrupt checkpoint: {path} is not a readable fnet checkpoint: {detail}")


def _open_regular(fn: str, path: Path):
    """``(file, size)`` of ``path`` opened for reading, refused unless a regular file
    (:func:`fnet.files.open_regular`: a FIFO is refused without waiting for a writer)."""
    try:
        return files.open_regular(path, what="checkpoint", follow_links=True)  # FileNotFoundError as documented
    except files.NotRegularFileError as e:
        raise _corrupt(fn, path, f"it is {e.kind}, not a regular file") from None


def _fill(f, buffer) -> bool:
    """Read exactly ``len(buffer)`` bytes into ``buffer``; False if the file ends first."""
    view, got = memoryview(buffer).cast("B"), 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


def _check_header(fn, path, header) -> None:
    """Validate fnet's JSON header and every leaf record before any tensor is read."""
    if not isinstance(header, dict):
        raise _corrupt(fn, path, "fnet's header is not a JSON object")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise _corrupt(fn, path, f"format {header.get('format')!r} version {header.get('version')!r}, "
                                 f"expected {FORMAT!r} version {VERSION}")
    if not isinstance(header.get("metadata"), dict) or not isinstance(header.get("leaves"), list):
        raise _corrupt(fn, path, "fnet's header needs a 'metadata' object and a 'leaves' list")
    for i, r in enumerate(header["leaves"]):
        ok = (isinstance(r, dict) and isinstance(r.get("path"), str) and isinstance(r.get("tensor"), str)
              and isinstance(r.get("dtype"), str) and _sizes(r.get("shape"))
              and isinstance(r.get("entries"), list) and r.get("python") in (None, "bool", "int", "float")
              and (r.get("key_impl") is None or isinstance(r.get("key_impl"), str)))
        if not ok:
            raise _corrupt(fn, path, f"leaf record {i} is malformed: {str(r)[:200]}")
        try:
            dtype = np.dtype(jnp.dtype(r["dtype"]))
        except (TypeError, ValueError, SyntaxError):  # NumPy parses some dtype strings as Python literals
            raise _corrupt(fn, path, f"leaf record {i} has an unknown dtype {r['dtype'][:50]!r}") from None
        # Only what save writes (a named numeric or boolean dtype): never a view as Python objects.
        if dtype.kind not in "biufcV" or dtype.name != r["dtype"] or dtype.fields or dtype.subdtype:
            raise _corrupt(fn, path, f"leaf record {i} has dtype {r['dtype'][:50]!r}, not a numeric or boolean one")


def _sizes(value) -> bool:
    """True for a JSON list of ints >= 0 (a shape, or a byte range)."""
    return isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)


def _tensor_table(fn, path, table: dict, data_size: int) -> dict:
    """name -> ``(dtype, shape, begin, end)`` of every tensor in the safetensors header ``table``,
    each checked to fit the data section (of ``data_size`` bytes), which they must tile exactly."""
    specs = {}
    for name, info in table.items():
        if not (isinstance(info, dict) and _sizes(info.get("shape")) and _sizes(info.get("data_offsets"))
                and len(info["data_offsets"]) == 2 and info["data_offsets"][0] <= info["data_offsets"][1]):
            raise _corrupt(fn, path, f"tensor {name!r} has a malformed entry: {str(info)[:200]}")
        if info.get("dtype") not in _DTYPES:
            raise _corrupt(fn, path, f"tensor {name!r} has dtype {str(info.get('dtype'))[:50]!r}, not one of "
                                     f"{', '.join(_DTYPES)}")
        dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if end > data_size or end - begin != nbytes:
            raise _corrupt(fn, path, f"tensor {name!r} ({info['dtype']}{list(shape)}, {nbytes} bytes) claims bytes "
                                     f"{begin}..{end} of a data section of {data_size} bytes")
        specs[name] = (dtype, shape, begin, end)
    end = 0
    for name, (_, _, begin, stop) in sorted(specs.items(), key=lambda item: item[1][2:]):
        if begin != end:
            raise _corrupt(fn, path, f"tensor {name!r} starts at byte {begin} of the data section, expected {end} "
                                     f"(tensors overlap or leave a gap)")
        end = stop
    if end != data_size:
        raise _corrupt(fn, path, f"the tensors hold {end} bytes of a data section of {data_size} bytes")
    return specs


def _header_and_table(fn, path, f, size: int) -> tuple[dict, dict, int]:
    """fnet's header, the checked tensor table and the data section's offset in the file."""
    length = bytearray(8)
    if size < 8 or not _fill(f, length):
        raise _corrupt(fn, path, f"{size} bytes, too short for a safetensors file")
    if length[:4] == b"PK\x03\x04":
        raise LegacyCheckpointError(f"{fn}: {path} is a checkpoint in the .npz format of earlier fnet versions; "
                                    f"fnet now reads and writes safetensors checkpoints: train again, or load it "
                                    f"with the fnet version that wrote it")
    n = int.from_bytes(length, "little")
    if n > size - 8 or n > MAX_HEADER_BYTES:
        raise _corrupt(fn, path, f"the header claims {n} bytes in a file of {size} bytes (at most "
                                 f"{MAX_HEADER_BYTES} are read)")
    raw = bytearray(n)
    if not _fill(f, raw):
        raise _corrupt(fn, path, "the file ends inside its header")
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(fn, path, f"the header is not UTF-8 JSON ({e})") from None
    meta = table.pop(_RESERVED, None) if isinstance(table, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(METADATA_KEY), str):
        raise _corrupt(fn, path, f"no fnet header (a JSON object with a string at {_RESERVED}.{METADATA_KEY})")
    try:
        header = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise _corrupt(fn, path, f"fnet's header in the metadata is not JSON ({e})") from None
    _check_header(fn, path, header)
    return header, _tensor_table(fn, path, table, size - 8 - n), 8 + n


def _read(path, fn: str, *, with_leaves: bool = True) -> tuple[dict, list[np.ndarray]]:
    """Read fnet's header and (optionally) all leaves, cross-checked; any inconsistency is a
    :class:`CorruptCheckpointError` (a ValueError) naming the file and what is wrong."""
    path = Path(path)
    f, size = _open_regular(fn, path)
    with f:
        header, specs, data_start = _header_and_table(fn, path, f, size)
        records = header["leaves"]
        names = [r["tensor"] for r in records]
        if sorted(names) != sorted(specs):
            raise _corrupt(fn, path, f"fnet's header lists the tensors {sorted(set(names))[:5]}, the file holds "
                                     f"{sorted(specs)[:5]}")
        layouts = []
        for record in records:
            dtype = np.dtype(jnp.dtype(record["dtype"]))
            storage, extra = _storage(dtype)
            shape = tuple(record["shape"])
            found_dtype, found_shape, begin, _ = specs[record["tensor"]]
            if (found_dtype, found_shape) != (storage, shape + extra):
                raise _corrupt(fn, path, f"leaf at {record['path']} should be {storage.name}{list(shape + extra)}, "
                                         f"found {found_dtype.name}{list(found_shape)}")
            layouts.append((dtype, storage, shape + extra, shape, begin))
        leaves = []
        for dtype, storage, stored_shape, shape, begin in layouts if with_leaves else ():
            arr = np.empty(stored_shape, storage)
            f.seek(data_start + begin)
            if arr.size and not _fill(f, arr.reshape(-1).view(np.uint8)):
                raise _corrupt(fn, path, "the file ended while it was read")
            leaves.append(arr.reshape(-1).view(dtype).reshape(shape))
    return header, leaves


def _restore_leaf(record: dict, arr: np.ndarray):
    """Undo the storage encoding (Python scalars, PRNG keys); arrays stay NumPy."""
    if record["python"] is not None:
        return {"bool": bool, "int": int, "float": float}[record["python"]](arr.item())
    if record["key_impl"] is not None:
        return jax.random.wrap_key_data(arr, impl=record["key_impl"])
    return arr


def _nest(items: list[tuple[list, Any]]):
    """Rebuild nested dicts/lists from ``(path entries, value)`` pairs in flatten order (no pairs:
    a tree without leaves, ``{}``)."""
    if not items:
        return {}
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

