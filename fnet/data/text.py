"""Character-level text data: tiny-shakespeare, a character vocabulary, and the two ways of cutting
a long text into training batches.

A text set is a :class:`TextDataset`: the text encoded as int32 ids into its vocabulary (the
sorted distinct characters), split into a training part (the first 90%) and a validation part
(the rest), with :meth:`~TextDataset.encode` / :meth:`~TextDataset.decode`.

Batches of a sequence ``ids`` of length N, each input ``x`` paired with the targets ``y`` one
character later (``y[.., t] = ids[i + t + 1]`` where ``x[.., t] = ids[i + t]``):

- :func:`random_windows` (nanoGPT's ``get_batch``): B windows at independent uniform offsets
  ``i ~ U{0, ..., N - T - 1}``. Every batch is a fresh sample, so a model starts each window from a
  zero state; a pure function of a JAX key, it runs inside ``jit``.
- :func:`contiguous_windows` (truncated backpropagation through time, *Deep Learning from Scratch
  2*'s way): the text is cut into B parallel streams of ``L = (N - 1) // B`` characters each, stream
  b starting at ``b * L``, and batch s holds characters ``s*T ... s*T + T - 1`` of every stream.
  Row b of batch s + 1 continues row b of batch s, so a recurrent model carries its hidden state
  from one batch to the next (and cuts the gradient there). Unlike the book's ``(offset + t) %
  N``, fnet drops the last ``L - steps * T`` characters of each stream instead of wrapping around,
  so no window runs from the end of the text into its beginning.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks
from fnet.data import idx

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
"""sha256 of tiny-shakespeare's ``input.txt`` (1,115,394 bytes), checked whichever copy is read."""
_SHAKESPEARE_BYTES = 1_115_394


# ----------------------------------------------------------------------------- vocabulary


def char_vocab(text: str) -> str:
    """The vocabulary of ``text``: its distinct characters, sorted by code point (id = position)."""
    return "".join(sorted(set(text)))


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def encode(text: str, vocab: str) -> np.ndarray:
    """Encode ``text`` as ids into ``vocab`` (sorted distinct characters, as :func:`char_vocab`).

    Returns:
        int32 array of shape (len(text),), ``ids[i] = vocab.index(text[i])``.

    Raises:
        ValueError: a character of ``text`` is not in ``vocab`` (the first one is named, with its
            position), or ``vocab`` is not sorted and distinct.
    """
    codes, table = _code_points(text), _code_points(vocab)
    if np.any(np.diff(table.astype(np.int64)) <= 0):
        raise ValueError(f"encode: vocab must be distinct characters sorted by code point (char_vocab), got {vocab!r}")
    ids = np.searchsorted(table, codes)
    known = ids < len(table)
    known[known] = table[ids[known]] == codes[known]
    if not known.all():
        i = int(np.argmin(known))
        raise ValueError(f"encode: character {text[i]!r} (U+{ord(text[i]):04X}) at position {i} of text is not in "
                         f"the vocabulary of {len(vocab)} characters")
    return ids.astype(np.int32)


def decode(ids, vocab: str) -> str:
    """The text of integer ``ids`` (any shape, read in row-major order) in ``vocab``.

    Raises:
        TypeError: ``ids`` are not integers.
        ValueError: an id outside [0, len(vocab)).
    """
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"decode: ids must be integer token ids, got dtype {ids.dtype} (shape {ids.shape})")
    if ids.size and (ids.min() < 0 or ids.max() >= len(vocab)):
        raise ValueError(f"decode: ids must lie in [0, {len(vocab)}) for a vocabulary of {len(vocab)} characters, "
                         f"got values in [{ids.min()}, {ids.max()}]")
    return _code_points(vocab)[ids.ravel()].tobytes().decode("utf-32-le")


# ----------------------------------------------------------------------------- the data set


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
    """A character-level text, encoded and split.

    Attributes:
        train: int32 ids of shape (N_train,), the first ``1 - val_fraction`` of the text.
        val: int32 ids of shape (N_val,), the rest (``N_train = floor((1 - val_fraction) * N)``).
        vocab: the sorted distinct characters of the whole text; id ``k`` is ``vocab[k]``.
        name: the canonical name (e.g. ``"shakespeare"``).
        info: facts about the source: ``path`` (the file read, or ``"bundled"``), ``sha256``.
    """

    train: np.ndarray
    val: np.ndarray
    vocab: str
    name: str
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        """V, the number of distinct characters (65 for tiny-shakespeare)."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """:func:`encode` in this set's vocabulary: int32 ids of shape (len(text),)."""
        return encode(text, self.vocab)

    def decode(self, ids) -> str:
        """:func:`decode` in this set's vocabulary."""
        return decode(ids, self.vocab)


def _read_shakespeare(path, stream) -> str:
    """tiny-shakespeare's text from ``stream``, refused unless it has exactly its size and sha256
    (one byte more is read to detect a longer file, never the rest of it)."""
    size = _SHAKESPEARE_BYTES
    raw = stream.read(size + 1)
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) == size and digest == SHAKESPEARE_SHA256:
        return raw.decode("utf-8")
    found = f"more than {size} bytes" if len(raw) > size else f"{len(raw)} bytes with sha256 {digest}"
    raise ValueError(f"shakespeare: {path} is not tiny-shakespeare's input.txt: expected {size} bytes with sha256 "
                     f"{SHAKESPEARE_SHA256}, found {found}")


def _shakespeare_file(data_dir) -> Path | None:
    """The first of ``data_dir/tinyshakespeare/input.txt``, ``data_dir/input.txt`` and
    ``$FNET_DATA/tinyshakespeare/input.txt`` that exists, else None."""
    candidates = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates += [root / "tinyshakespeare" / "input.txt", root / "input.txt"]
    if os.environ.get("FNET_DATA"):
        candidates.append(Path(os.environ["FNET_DATA"]).expanduser() / "tinyshakespeare" / "input.txt")
    return next((p for p in candidates if p.exists()), None)


def shakespeare(data_dir=None, *, val_fraction: float = 0.1) -> TextDataset:
    """tiny-shakespeare (char-rnn's): 1,115,394 characters of Shakespeare's plays, 65 symbols.

    The text is read from ``data_dir/tinyshakespeare/input.txt``, ``data_dir/input.txt`` or
    ``$FNET_DATA/tinyshakespeare/input.txt``, the first that exists, else from the gzipped copy
    bundled with fnet (``fnet/datasets/tinyshakespeare.txt.gz``), so it loads offline. Either way
    its sha256 must be :data:`SHAKESPEARE_SHA256` (of the decompressed text), and a file is read
    only if it is a regular file.

    Args:
        data_dir: a folder searched first, or None.
        val_fraction: the last fraction of the text kept for validation, in (0, 1); the default
            0.1 is the standard split, 1,003,854 training and 111,540 validation characters.

    Returns:
        a :class:`TextDataset` with ``vocab_size == 65``.

    Raises:
        ValueError: a bad ``val_fraction``, or a found file that is not tiny-shakespeare (wrong
            size or sha256), or not a regular file.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating)) or not (
        0 < val_fraction < 1
    ):
        raise ValueError(f"shakespeare: val_fraction must be a number in (0, 1), got {val_fraction!r}")
    path = _shakespeare_file(data_dir)
    if path is not None:
        with idx.open_regular("shakespeare", path) as f:
            text = _read_shakespeare(path, f)
    else:
        resource = importlib.resources.files("fnet") / "datasets" / "tinyshakespeare.txt.gz"
        with resource.open("rb") as f, gzip.GzipFile(fileobj=f, mode="rb") as stream:
            text = _read_shakespeare(resource, stream)
    vocab = char_vocab(text)
    ids = encode(text, vocab)
    n_train = int((1 - val_fraction) * len(ids))
    info = {"path": str(path) if path is not None else "bundled", "sha256": SHAKESPEARE_SHA256}
    return TextDataset(train=ids[:n_train], val=ids[n_train:], vocab=vocab, name="shakespeare", info=info)


_LOADERS = {"shakespeare": shakespeare}
_ALIASES = {"tiny-shakespeare": "shakespeare", "tinyshakespeare": "shakespeare"}
TEXT_DATASETS = tuple(_LOADERS)
"""Canonical names accepted by :func:`load_text` (``tiny-shakespeare`` and ``tinyshakespeare`` are aliases)."""


def text_dataset_name(name: str) -> str | None:
    """The canonical name of text data set ``name`` (case-insensitive, ``_`` or ``-``, aliases
    resolved), or None when it is not one."""
    key = str(name).lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in _LOADERS else None


def load_text(name: str, *, data_dir=None, **options) -> TextDataset:
    """Load a text data set by name (one of :data:`TEXT_DATASETS`, case-insensitive, ``_`` or ``-``);
    ``options`` go to its loader (e.g. ``val_fraction``). ValueError for an unknown name."""
    key = text_dataset_name(name)
    if key is None:
        raise ValueError(f"load_text: unknown text data set {name!r}; known text data sets: {', '.join(TEXT_DATASETS)}")
    return _LOADERS[key](data_dir, **options)


# ----------------------------------------------------------------------------- batches


def _check_windows(fn: str, ids, batch_size, length) -> tuple[int, int, int]:
    """``(n, batch_size, length)`` after checking ``ids`` (1-D integers) and the two sizes."""
    dtype = getattr(ids, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer) or len(np.shape(ids)) != 1:
        raise TypeError(f"{fn}: ids must be a 1-D array of integer token ids, got "
                        f"{type(ids).__name__} of dtype {dtype} and shape {np.shape(ids)}")
    n = np.shape(ids)[0]
    batch_size = _checks.integer(fn, "batch_size", batch_size, minimum=1)
    length = _checks.integer(fn, "length", length, minimum=1)
    if length >= n:
        raise ValueError(f"{fn}: length must be shorter than the text (a window of T ids needs T + 1 for its "
                         f"targets), got length {length} for {n} ids")
    return n, batch_size, length


def random_windows(key, ids, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
    """B windows of T consecutive ids at random offsets, and their targets one id later
    (nanoGPT's ``get_batch``)::

        i_b ~ U{0, ..., N - T - 1}  (independent, drawn with ``key``)
        x[b, t] = ids[i_b + t],   y[b, t] = ids[i_b + t + 1]

    Args:
        key: a JAX PRNG key.
        ids: integer array of shape (N,) (e.g. :attr:`TextDataset.train`).
        batch_size: B >= 1; length: T in [1, N). Both Python ints (static under ``jit``).

    Returns:
        ``(x, y)``, each of shape (B, T) and ``ids``' dtype. Pure: jit it with
        ``static_argnums=(2, 3)``.
    """
    n, batch_size, length = _check_windows("random_windows", ids, batch_size, length)
    ids = jnp.asarray(ids)
    starts = jax.random.randint(key, (batch_size,), 0, n - length)
    windows = jax.vmap(lambda i: jax.lax.dynamic_slice(ids, (i,), (length + 1,)))(starts)
    return windows[:, :-1], windows[:, 1:]


def contiguous_windows(ids, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
    """The text as B parallel streams cut into consecutive windows, for truncated BPTT::

        L = (N - 1) // B,  steps = L // T
        x[s, b, t] = ids[b * L + s * T + t],   y[s, b, t] = ids[b * L + s * T + t + 1]

    so row b of batch s + 1 continues row b of batch s (carry the hidden state across batches),
    and the B streams together cover the text once (the last ``L - steps * T`` ids of each
    stream, and the last ``N - 1 - B * L`` of the text, are not used).

    Args:
        ids: integer array of shape (N,).
        batch_size: B >= 1; length: T >= 1 (Python ints), with ``B * T + 1 <= N``.

    Returns:
        ``(x, y)``, each of shape (steps, B, T) and ``ids``' dtype: batch s is ``(x[s], y[s])``.
    """
    n, batch_size, length = _check_windows("contiguous_windows", ids, batch_size, length)
    stream = (n - 1) // batch_size
    steps = stream // length
    if steps == 0:
        raise ValueError(f"contiguous_windows: batch_size * length + 1 ids are needed for one batch, got "
                         f"batch_size {batch_size} and length {length} for {n} ids")
    ids = jnp.asarray(ids)

    def batches(shifted):
        streams = shifted[: batch_size * stream].reshape(batch_size, stream)[:, : steps * length]
        return streams.reshape(batch_size, steps, length).transpose(1, 0, 2)

    return batches(ids), batches(ids[1:])
