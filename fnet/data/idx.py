"""IDX files (the MNIST format): reading them, finding them on disk, downloading them verified.

MNIST and Fashion-MNIST each come as four IDX files (:data:`IDX_FILES`), gzipped or not.
:func:`find_files` looks them up in ``data_dir``, then ``$FNET_DATA``, then ``~/.cache/fnet/<name>/``;
:func:`fetch_files` downloads them from mirrors, checks each against its published sha256
(:data:`SHA256`) and renames them into place only when all four are verified.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import stat
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from fnet import files

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# deflate (gzip's compression) emits at least one bit per 258 bytes of a run: no gzip file
# decompresses to more than ~1032 times its size (zlib's documented limit), so a header claiming
# more is a truncated file, refused before anything is allocated.
_GZIP_MAX_RATIO = 1032
_CHUNK = 1 << 20  # bytes decompressed per read: what a gzip bomb can cost before it is refused


def open_regular(fn: str, path: Path):
    """Open ``path`` for reading in binary mode if it is a regular file (a symlink to one counts).

    A FIFO, socket or device is refused BEFORE it is read: reading a FIFO blocks forever and a
    device such as /dev/zero never ends. ``O_NONBLOCK`` keeps the open itself from blocking on a
    FIFO without a writer. Raises ``ValueError`` naming ``fn`` and the path, ``OSError`` (e.g.
    FileNotFoundError) when it cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{fn}: {path} is not a regular file (a FIFO, device or socket); refusing to read it")
    return os.fdopen(fd, "rb")


def available_memory() -> int | None:
    """Bytes of memory the system can still give a process (Linux's MemAvailable, else the free
    physical pages), or None where neither is known."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _read_up_to(stream, n: int) -> bytes:
    """At most ``n`` bytes of ``stream`` (fewer only at its end)."""
    parts, left = [], n
    while left > 0 and (part := stream.read(min(left, _CHUNK))):
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _size_error(path: Path, truncated: bool, expected: int, dtype: np.dtype, shape: tuple, found) -> ValueError:
    what = "is truncated" if truncated else "has trailing bytes"
    return ValueError(f"read_idx: {path} {what}: expected {expected} bytes of {dtype.name} data for shape {shape}, "
                      f"found {found}")


def _check_size(path: Path, expected: int, dtype: np.dtype, shape: tuple, payload_size: int, gz: bool) -> None:
    """Refuse a header whose data cannot be in the file (``payload_size`` bytes after the header,
    or a whole gzip file of that size) or would not fit in memory, before anything is allocated."""
    if not gz and expected != payload_size:
        raise _size_error(path, payload_size < expected, expected, dtype, shape, payload_size)
    if gz and expected > _GZIP_MAX_RATIO * payload_size:
        raise _size_error(path, True, expected, dtype, shape, f"at most {_GZIP_MAX_RATIO * payload_size} (a "
                          f"{payload_size}-byte gzip file decompresses to at most {_GZIP_MAX_RATIO} times its size)")
    available = available_memory()
    if available is not None and expected > available:
        raise ValueError(f"read_idx: {path} claims shape {shape}: {expected:,} bytes ({expected / 2**30:.1f} GiB) "
                         f"of data, more than the {available:,} bytes of memory available")


def _read_payload(path: Path, stream, expected: int, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """Exactly ``expected`` bytes of ``stream`` into a new array, read in bounded chunks; one more
    byte is read to detect trailing data, never the rest of the stream."""
    out = np.empty(expected, np.uint8)
    view, found = memoryview(out), 0
    while found < expected and (n := stream.readinto(view[found:found + _CHUNK])):
        found += n
    if found < expected:
        raise _size_error(path, True, expected, dtype, shape, found)
    if stream.read(1):
        raise _size_error(path, False, expected, dtype, shape, f"more than {expected}")
    return out.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (detected from the content).

    Format: two zero bytes, a type code byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``k``, ``k`` big-endian uint32 sizes,
    then the values in row-major order, big-endian.

    The header is read first; the data size it implies, ``prod(sizes) * itemsize``, is checked
    against the file (a gzip file holds at most ~1032 times its size) and the memory available
    before it is allocated, and then exactly that many bytes plus one are read (decompressed in
    1 MiB chunks). So a gzip bomb (a valid header followed by gigabytes of zeros) costs about one
    chunk of memory before it is refused, not its decompressed size. Only regular files are read
    (a FIFO or device is refused before reading).

    Returns:
        array of shape (d1, ..., dk) in native byte order (uint8 for MNIST's files).

    Raises:
        ValueError: the file is not a regular file, is truncated, has trailing bytes, a bad magic
            number or type code, claims more data than the file or memory can hold, or is a
            broken gzip stream; the message names the path and what was expected.
    """
    path = Path(path)
    with open_regular("read_idx", path) as f:
        file_size = os.fstat(f.fileno()).st_size
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
        try:
            head = _read_up_to(stream, 4)
            if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_DTYPES:
                raise ValueError(
                    f"read_idx: {path} is not an IDX file: expected a magic number 00 00 <type code in "
                    f"{sorted(_IDX_DTYPES)}> <ndim>, found bytes {head.hex(' ') or '(empty file)'}"
                )
            dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
            sizes = _read_up_to(stream, 4 * ndim)
            if len(sizes) < 4 * ndim:
                raise ValueError(f"read_idx: {path} is truncated: expected a {4 + 4 * ndim}-byte header, "
                                 f"found {4 + len(sizes)} bytes")
            shape = tuple(int(d) for d in np.frombuffer(sizes, ">u4"))
            expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            _check_size(path, expected, dtype, shape, file_size - (0 if gz else 4 + 4 * ndim), gz)
            return _read_payload(path, stream, expected, dtype, shape)
        except (OSError, EOFError, zlib.error) as e:
            if not gz:
                raise
            raise ValueError(f"read_idx: {path} is a corrupt or truncated gzip file ({e})") from None


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
"""Base URLs tried in order by :func:`fnet.data.download`; a file's URL is the base plus its name."""


class DatasetNotFoundError(FileNotFoundError):
    """The IDX files of a data set are in none of the searched folders."""


class DownloadError(OSError):
    """No mirror delivered a file (offline, HTTP error, timeout); nothing was written."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 did not match; nothing was written."""


def default_cache_dir() -> Path:
    """``~/.cache/fnet``: where :func:`fnet.data.download` stores files (one sub-folder per data set)."""
    return Path.home() / ".cache" / "fnet"


def file_set_name(fn: str, name: str) -> str:
    """The canonical name of a data set stored as IDX files (``"fashion_mnist"`` ->
    ``"fashion-mnist"``); ValueError naming ``fn`` for any other name."""
    key = name.lower().replace("_", "-")
    if key not in SHA256:
        raise ValueError(f"{fn}: {name!r} is not a file-based data set; choose from {sorted(SHA256)}")
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
    name = file_set_name("find_files", name)
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


def fetch_files(
    name: str,
    folder: Path,
    mirrors: Sequence[str],
    checksums: Mapping[str, str],
    *,
    timeout: float,
    log: Callable[[str], None] | None,
) -> Path:
    """Download the :data:`IDX_FILES` of data set ``name`` into ``folder``, all verified or none.

    Each file is tried on each mirror in turn, streamed into a temporary file inside ``folder`` and
    checked against ``checksums[file]``; only when all four are verified are they renamed into
    place. Files already present with the right checksum are kept. See :func:`fnet.data.download`
    (the public entry point, which picks the defaults) for the guarantees and errors.
    """
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
