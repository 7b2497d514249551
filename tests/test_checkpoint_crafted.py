"""Crafted and random checkpoint files are refused as "corrupt checkpoint: ..." before anything is
allocated (issue: a 1.8 MB crafted file allocated ~1.5 GB first; random bytes gave a hint to load
the file with pickle)."""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from fnet import checkpoint


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_header_only(shape, dtype="<f8") -> bytes:
    """A .npy member that CLAIMS ``shape`` (magic string and header) but holds no data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _archive(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _header(leaves) -> bytes:
    text = json.dumps({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "metadata": {}, "leaves": leaves})
    return _npy(np.frombuffer(text.encode(), np.uint8))


def _record(shape, dtype="float64"):
    return {"path": "['w']", "entries": [["dict", "w"]], "dtype": dtype, "shape": shape, "python": None, "key_impl": None}


def _load_peak(path):
    """Load ``path`` expecting a corrupt-checkpoint error; returns (message, peak bytes allocated)."""
    tracemalloc.start()
    try:
        with pytest.raises(checkpoint.CorruptCheckpointError) as e:
            checkpoint.load(path)
        return str(e.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_claimed_leaf_is_refused_without_allocating(tmp_path):
    path = tmp_path / "crafted.npz"
    big = (20_000, 10_000)  # 1.6 GB of float64 claimed, none present
    _archive(path, {"__fnet_checkpoint__.npy": _header([_record(list(big))]), "leaf_0.npy": _npy_header_only(big)})
    message, peak = _load_peak(path)
    assert message.startswith("checkpoint.load: corrupt checkpoint:") and "claims" in message
    assert peak < 50_000_000


def test_a_leaf_member_larger_than_its_record_is_refused(tmp_path):
    path = tmp_path / "crafted.npz"
    # The JSON says 2 values, the member's .npy header says 10**9: the member header is checked.
    _archive(path, {"__fnet_checkpoint__.npy": _header([_record([2])]), "leaf_0.npy": _npy_header_only((10**9,))})
    message, peak = _load_peak(path)
    assert "leaf at ['w'] should be float64[2], found float64[1000000000]" in message
    assert peak < 50_000_000


def test_a_compressed_member_is_refused(tmp_path):
    """A deflated member could expand far beyond the file's size (a zip bomb); fnet writes none."""
    path = tmp_path / "bomb.npz"
    _archive(path, {"__fnet_checkpoint__.npy": _header([_record([10**6])]), "leaf_0.npy": _npy(np.zeros(10**6))},
             compression=zipfile.ZIP_DEFLATED)
    message, _ = _load_peak(path)
    assert "compression" in message


@pytest.mark.parametrize("content", [
    b"", b"\x00" * 100, np.random.default_rng(0).bytes(4096), b"PK\x03\x04" + b"\xff" * 200,
], ids=["empty", "zeros", "random", "zip-magic-then-garbage"])
def test_random_bytes_are_a_corrupt_checkpoint_with_no_pickle_hint(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CorruptCheckpointError, match="corrupt checkpoint") as e:
        checkpoint.load(path)
    assert "pickle" not in str(e.value)


@pytest.mark.parametrize("header, detail", [
    (_npy(np.frombuffer(b"not json", np.uint8)), "not UTF-8 JSON"),
    (_npy(np.frombuffer(b'{"format": "other"}', np.uint8)), "format 'other'"),
    (_header([{"path": 3}]), "leaf record 0 is malformed"),
    (_header([_record([-1])]), "leaf record 0 is malformed"),
    (_header([_record([2], dtype="complex-ish")]), "unknown dtype"),
    (_npy(np.array([object()], dtype=object)), "should be uint8"),
], ids=["not-json", "wrong-format", "bad-path", "negative-dim", "bad-dtype", "pickled-object"])
def test_a_malformed_header_is_named(tmp_path, header, detail):
    path = tmp_path / "bad.npz"
    _archive(path, {"__fnet_checkpoint__.npy": header, "leaf_0.npy": _npy(np.zeros(2))})
    with pytest.raises(checkpoint.CorruptCheckpointError, match="corrupt checkpoint") as e:
        checkpoint.load(path)
    assert detail in str(e.value) and "pickle" not in str(e.value)


def test_a_pickled_leaf_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    _archive(path, {"__fnet_checkpoint__.npy": _header([_record([1])]), "leaf_0.npy": _npy(np.array([{}], dtype=object))})
    with pytest.raises(checkpoint.CorruptCheckpointError, match=r"leaf at \['w'\] should be float64\[1\], found object"):
        checkpoint.load(path)
