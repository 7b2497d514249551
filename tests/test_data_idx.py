"""fnet.data.idx: the IDX parser (round trips, truncated and corrupt files, gzip bombs and headers
that claim more than the file holds refused with bounded memory, regular files only), the lookup
of the MNIST-like files, the downloader (against a local HTTP server: checksums verified, nothing
left behind on a mismatch or offline), and the real files' published checksums (via $FNET_DATA)."""

import gzip
import hashlib
import http.server
import os
import re
import socket
import threading
import tracemalloc
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from _data_fixtures import skip_or_fail, unblocked_fifo

from fnet import data

# ---------------------------------------------------------------------------------------------
# helpers


def idx_bytes(a: np.ndarray) -> bytes:
    """Encode ``a`` as an IDX file (the format read_idx parses), independently of fnet."""
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[a.dtype.str[1:]]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def tiny_idx_set(n_train=120, n_test=30, seed=0) -> dict[str, bytes]:
    """The four MNIST-named files (gzipped) for a tiny random image set with labels 0..9."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) % 10).astype(np.uint8),
    }
    return {name: gzip.compress(idx_bytes(a)) for name, a in arrays.items()}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No $FNET_DATA and an empty home, so lookups see only what a test puts there."""
    monkeypatch.delenv("FNET_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


# ---------------------------------------------------------------------------------------------
# IDX parser


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype) if dtype != np.uint8 else \
        np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    raw = idx_bytes(a)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = data.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_read_idx_labels_1d(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "l"), labels)


def test_read_idx_truncated_and_corrupt_files(tmp_path):
    raw = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    cases = {
        "short": (raw[:-10], r"is truncated: expected 3136 bytes of uint8 data for shape \(4, 28, 28\), found 3126"),
        "header": (raw[:9], r"is truncated: expected a 16-byte header, found 9 bytes"),
        "trailing": (raw + b"\x00", "has trailing bytes: expected 3136 bytes"),
        "magic": (b"\x01\x02" + raw[2:], "is not an IDX file: expected a magic number"),
        "dtype": (raw[:2] + b"\x07" + raw[3:], "is not an IDX file"),
        "empty": (b"", r"\(empty file\)"),
        "gz": (gzip.compress(raw)[:-20], "is a corrupt or truncated gzip file"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}-images-idx3-ubyte"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as e:
            data.read_idx(path)
        assert str(e.value).startswith(f"read_idx: {path} "), name


def gzip_bomb(header_shape=(10, 28, 28), zeros=50_000_000) -> bytes:
    """A gzip stream of a valid uint8 IDX file for ``header_shape`` followed by ``zeros`` extra zero
    bytes (50 MB compress to about 50 KB: deflate's limit is ~1032:1)."""
    head = idx_bytes(np.zeros(header_shape, np.uint8))
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    return z.compress(head) + z.compress(bytes(zeros)) + z.flush()


def peak_traced_memory(call) -> int:
    """Peak bytes allocated through Python's and NumPy's allocators while ``call()`` runs."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_read_idx_gzip_bomb_is_refused_with_bounded_memory(tmp_path):
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bomb())
    assert path.stat().st_size < 100_000

    def read():
        with pytest.raises(ValueError, match=r"has trailing bytes: expected 7840 bytes of uint8 data for shape "
                                             r"\(10, 28, 28\), found more than 7840$"):
            data.read_idx(path)

    # The whole 50 MB would be decompressed before the check without the header's bound; reading
    # the 7840 bytes it implies and one more costs at most one 1 MiB chunk plus gzip's buffers.
    assert peak_traced_memory(read) < 2 * 2**20


def test_read_idx_header_claiming_more_than_the_file_can_hold(tmp_path, monkeypatch):
    path = tmp_path / "claims-images-idx3-ubyte.gz"
    head = idx_bytes(np.zeros((1, 1, 1), np.uint8))[:4] + np.array([60000, 2800, 2800], ">u4").tobytes()
    path.write_bytes(gzip.compress(head + bytes(100)))

    def read():
        with pytest.raises(ValueError, match=r"is truncated: expected 470400000000 bytes .* found at most \d+ \(a "
                                             r"\d+-byte gzip file decompresses to at most 1032 times its size\)"):
            data.read_idx(path)

    assert peak_traced_memory(read) < 2**20  # refused before the 470 GB are allocated
    # A claim that a gzip file could hold but memory cannot: refused before it is allocated too.
    path.write_bytes(gzip_bomb(zeros=0))
    monkeypatch.setattr(data.idx, "available_memory", lambda: 4000)
    with pytest.raises(ValueError, match=r"claims shape \(10, 28, 28\): 7,840 bytes \(0.0 GiB\) of data, more "
                                         r"than the 4,000 bytes of memory available"):
        data.read_idx(path)


def test_read_idx_reads_only_regular_files(tmp_path):
    fifo = tmp_path / "fifo-images-idx3-ubyte.gz"
    os.mkfifo(fifo)  # reading it would block forever: refused before any read
    link = tmp_path / "link"
    link.symlink_to(fifo)
    with unblocked_fifo(fifo):
        for path in (fifo, link, tmp_path, Path("/dev/zero")):
            with pytest.raises(ValueError, match=f"^read_idx: {re.escape(str(path))} is not a regular file"):
                data.read_idx(path)


# ---------------------------------------------------------------------------------------------
# lookup of the MNIST-like files


def test_mnist_from_data_dir_flat_and_nested(isolated_env):
    files = tiny_idx_set()
    flat = write_files(isolated_env / "flat", files)
    nested_root = isolated_env / "nested"
    write_files(nested_root / "fashion-mnist", files)
    ds = data.mnist(flat)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (110, 10, 30)  # 5000/60000 of 120
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    images = data.read_idx(flat / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.x_test, images.reshape(30, 784) / np.float32(255))
    full = data.load("fashion_mnist", data_dir=nested_root, val_fraction=0.0, flatten=False)
    assert full.name == "fashion-mnist" and full.x_train.shape == (120, 1, 28, 28)
    np.testing.assert_array_equal(full.y_train, np.arange(120) % 10)  # file order kept


def test_lookup_env_var_both_layouts_and_cache(isolated_env, monkeypatch):
    files = tiny_idx_set()
    write_files(isolated_env / "shared" / "mnist", files)
    monkeypatch.setenv("FNET_DATA", str(isolated_env / "shared"))
    assert data.find_files("mnist")["train-images-idx3-ubyte.gz"].parent == isolated_env / "shared" / "mnist"
    monkeypatch.setenv("FNET_DATA", str(isolated_env / "shared" / "mnist"))
    assert data.find_files("mnist")["t10k-labels-idx1-ubyte.gz"].parent == isolated_env / "shared" / "mnist"
    monkeypatch.delenv("FNET_DATA")
    # Uncompressed files count as well.
    cache = data.default_cache_dir() / "mnist"
    write_files(cache, {name.removesuffix(".gz"): gzip.decompress(c) for name, c in files.items()})
    found = data.find_files("mnist")
    assert found["train-labels-idx1-ubyte.gz"] == cache / "train-labels-idx1-ubyte"
    assert len(data.mnist().x_test) == 30


def test_missing_files_error_lists_every_place_searched(isolated_env, monkeypatch):
    monkeypatch.setenv("FNET_DATA", str(isolated_env / "env"))
    partial_dir = write_files(isolated_env / "given", dict(list(tiny_idx_set().items())[:2]))
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("mnist", data_dir=partial_dir)
    message = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for place in (partial_dir / "mnist", partial_dir, isolated_env / "env" / "mnist", isolated_env / "env",
                  isolated_env / "home" / ".cache" / "fnet" / "mnist"):
        assert f"  {place}" in message
    assert "missing t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in message
    assert "fnet data download mnist" in message


# ---------------------------------------------------------------------------------------------
# downloader against a local HTTP server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def sha256s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_verifies_and_installs_files(http_root, tmp_path):
    root, url = http_root
    files = tiny_idx_set()
    write_files(root / "mnist", files)
    lines = []
    # The first mirror 404s, the second serves the files.
    folder = data.download("mnist", cache_dir=tmp_path / "cache", mirrors=[url, url + "mnist/"],
                           checksums=sha256s(files), timeout=5, log=lines.append)
    assert folder == tmp_path / "cache" / "mnist"
    assert sorted(os.listdir(folder)) == sorted([*files, ".fnet.lock"])  # the downloader's lock stays, harmless
    for name, content in files.items():
        assert (folder / name).read_bytes() == content
    assert len(lines) == 4 and all("verified" in line for line in lines)
    assert len(data.load("mnist", data_dir=tmp_path / "cache").x_test) == 30
    # Verified files are not fetched again, even with no reachable mirror.
    data.download("mnist", cache_dir=tmp_path / "cache", mirrors=[closed_port_url()],
                  checksums=sha256s(files), log=lines.append)
    assert all("already present" in line for line in lines[4:]) and len(lines) == 8


def test_download_checksum_mismatch_leaves_nothing(http_root, tmp_path):
    root, url = http_root
    files = tiny_idx_set()
    sums = sha256s(files)
    corrupted = dict(files)
    last = "t10k-labels-idx1-ubyte.gz"  # the three files before it are fetched and must be discarded
    corrupted[last] = files[last][:-1] + bytes([files[last][-1] ^ 0xFF])
    write_files(root, corrupted)
    cache = tmp_path / "cache"
    with pytest.raises(data.ChecksumError) as e:
        data.download("fashion_mnist", cache_dir=cache, mirrors=[url], checksums=sums, timeout=5)
    message = str(e.value)
    assert f"could not get {last}" in message and f"sha256 mismatch: expected {sums[last]}" in message
    assert "Nothing was written" in message
    assert not (cache / "fashion-mnist").exists()
    assert list(cache.rglob("*")) == []


def test_download_offline_says_where_to_put_files(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(data.DownloadError) as e:
        data.download("mnist", cache_dir=cache, mirrors=[closed_port_url()], timeout=2)
    message = str(e.value)
    assert not isinstance(e.value, data.ChecksumError)
    assert "could not get train-images-idx3-ubyte.gz" in message
    assert "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert str(cache / "mnist") in message and "$FNET_DATA" in message
    assert list(cache.rglob("*")) == []


def test_download_rejects_sets_without_files():
    with pytest.raises(ValueError, match="download: 'digits' needs no download"):
        data.download("digits")
    with pytest.raises(ValueError, match="unknown data set 'emnist'"):
        data.download("emnist")


def test_default_mirrors_and_checksums_cover_the_standard_files():
    for name in ("mnist", "fashion-mnist"):
        assert set(data.SHA256[name]) == set(data.IDX_FILES)
        assert all(len(h) == 64 for h in data.SHA256[name].values())
        assert data.MIRRORS[name] and all(m.endswith("/") for m in data.MIRRORS[name])


# ---------------------------------------------------------------------------------------------
# the real files, via $FNET_DATA


def test_real_files_match_published_checksums(shared_data_dir):
    for name in ("mnist", "fashion-mnist"):
        try:
            found = data.find_files(name)
        except data.DatasetNotFoundError as e:
            skip_or_fail(str(e))
        for standard, path in found.items():
            if path.suffix == ".gz":
                assert hashlib.sha256(path.read_bytes()).hexdigest() == data.SHA256[name][standard], path


def test_folder_of_the_other_data_set_is_refused(shared_data_dir):
    fashion = shared_data_dir / "fashion-mnist"
    if not (fashion / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"needs $FNET_DATA with a fashion-mnist/ sub-folder of gzipped files; {fashion} has none")
    with pytest.raises(ValueError, match="holds fashion-mnist files, not mnist"):
        data.find_files("mnist", data_dir=fashion)
