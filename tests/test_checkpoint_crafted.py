"""Crafted and random checkpoint files are refused as "corrupt checkpoint: ..." before anything is
allocated: the safetensors header's length is checked against the file's size and a cap before it
is read, and every tensor's dtype, shape and byte range against the file before any array exists."""

import json
import os
import threading
import tracemalloc

import numpy as np
import pytest

from fnet import checkpoint


def _record(shape, dtype="float64", tensor="w"):
    return {"path": f"['{tensor}']", "tensor": tensor, "entries": [["dict", tensor]], "dtype": dtype, "shape": shape,
            "python": None, "key_impl": None}


def _fnet_header(records, **fields) -> dict:
    header = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "metadata": {}, "leaves": records, **fields}
    return {"__metadata__": {checkpoint.METADATA_KEY: json.dumps(header)}}


def _tensor(shape, offsets, dtype="F64") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


def _write(path, table, data: bytes = b"", *, length: int | None = None):
    """A safetensors file: the 8-byte little-endian header length (``length`` if given, else the
    true one), the JSON header ``table`` (or raw bytes), then ``data``."""
    text = table if isinstance(table, bytes) else json.dumps(table).encode()
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)
    return path


def _one_w(shape, offsets, data: bytes = b"", record_shape=None, dtype="F64") -> dict:
    """The table of a checkpoint whose one leaf 'w' fnet's header records as float64 ``record_shape``."""
    return {**_fnet_header([_record(shape if record_shape is None else record_shape)]),
            "w": _tensor(shape, offsets, dtype)}


def _load_peak(path):
    """Load ``path`` expecting a corrupt-checkpoint error; returns (message, peak bytes allocated)."""
    tracemalloc.start()
    try:
        with pytest.raises(checkpoint.CorruptCheckpointError) as e:
            checkpoint.load(path)
        return str(e.value), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("shape", [[20_000, 10_000], [2**40, 2**40]], ids=["1.6GB", "2**83 bytes"])
def test_a_huge_claimed_tensor_is_refused_without_allocating(tmp_path, shape):
    nbytes = 8 * shape[0] * shape[1]
    path = _write(tmp_path / "crafted", _one_w(shape, [0, nbytes]))
    message, peak = _load_peak(path)
    assert message.startswith(f"checkpoint.load: corrupt checkpoint: {path} is not a readable fnet checkpoint:")
    assert f"tensor 'w' (F64{shape}, {nbytes} bytes) claims bytes 0..{nbytes} of a data section of 0 bytes" in message
    assert peak < 50_000_000


def test_a_header_length_beyond_the_file_or_the_cap_is_refused_before_reading(tmp_path, monkeypatch):
    path = _write(tmp_path / "long", _one_w([1], [0, 8]), bytes(8), length=10**12)
    message, peak = _load_peak(path)
    assert f"the header claims {10**12} bytes in a file of {path.stat().st_size} bytes" in message
    assert peak < 1_000_000
    path = _write(tmp_path / "capped", _one_w([1], [0, 8]), bytes(8))
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 100)
    message, _ = _load_peak(path)
    assert "bytes (at most 100 are read)" in message


@pytest.mark.parametrize("table, data, detail", [
    (_one_w([2], [0, 16]), bytes(8), "tensor 'w' (F64[2], 16 bytes) claims bytes 0..16 of a data section of 8 bytes"),
    (_one_w([3], [0, 16]), bytes(24), "tensor 'w' (F64[3], 24 bytes) claims bytes 0..16"),
    (_one_w([2], [8, 24]), bytes(24), "tensor 'w' starts at byte 8 of the data section, expected 0 (tensors overlap or "
                                      "leave a gap)"),
    ({**_fnet_header([_record([2]), _record([2], tensor="v")]), "w": _tensor([2], [0, 16]), "v": _tensor([2], [8, 24])},
     bytes(24), "tensor 'v' starts at byte 8 of the data section, expected 16"),
    (_one_w([2], [0, 16]), bytes(20), "the tensors hold 16 bytes of a data section of 20 bytes"),
    (_one_w([2], [16, 0]), bytes(16), "tensor 'w' has a malformed entry"),
    (_one_w([2], [0, 16, 32]), bytes(16), "tensor 'w' has a malformed entry"),
    (_one_w([-2], [0, 16], record_shape=[2]), bytes(16), "tensor 'w' has a malformed entry"),
], ids=["beyond-the-file", "short-for-its-shape", "gap", "overlap", "trailing-bytes", "reversed", "three-offsets",
        "negative-dim"])
def test_tensor_offsets_must_tile_the_data_section(tmp_path, table, data, detail):
    message, peak = _load_peak(_write(tmp_path / "crafted", table, data))
    assert detail in message
    assert peak < 1_000_000


@pytest.mark.parametrize("dtype", ["F128", "float64", 3, "F8_E4M3"])
def test_a_tensor_dtype_fnet_does_not_write_is_refused(tmp_path, dtype):
    message, _ = _load_peak(_write(tmp_path / "crafted", _one_w([2], [0, 16], dtype=dtype), bytes(16)))
    assert f"tensor 'w' has dtype {str(dtype)!r}, not one of BOOL, U8" in message


def test_a_tensor_that_differs_from_its_record_is_refused(tmp_path):
    # fnet's header says 2 values, the tensor table 1: the table is checked against the header.
    message, _ = _load_peak(_write(tmp_path / "crafted", _one_w([1], [0, 8], record_shape=[2]), bytes(8)))
    assert "leaf at ['w'] should be float64[2], found float64[1]" in message
    message, _ = _load_peak(_write(tmp_path / "crafted", _one_w([2], [0, 8], dtype="F32"), bytes(8)))
    assert "leaf at ['w'] should be float64[2], found float32[2]" in message
    # A record claiming Python objects over a tensor of 8-byte integers (pointers, if viewed so).
    for dtype in ("object", "O,i4", "(1,)O", "V8", "datetime64"):
        objects = {**_fnet_header([_record([1], dtype=dtype)]), "w": _tensor([1], [0, 8], "U64")}
        message, _ = _load_peak(_write(tmp_path / "crafted", objects, bytes(8)))
        assert f"leaf record 0 has dtype {dtype!r}, not a numeric or boolean one" in message
    extra = {**_one_w([1], [0, 8]), "v": _tensor([1], [8, 16])}
    message, _ = _load_peak(_write(tmp_path / "crafted", extra, bytes(16)))
    assert "fnet's header lists the tensors ['w'], the file holds ['v', 'w']" in message


@pytest.mark.parametrize("content", [
    b"", b"\x00" * 100, np.random.default_rng(0).bytes(4096), b"\x05" + b"\x00" * 7 + b"\xff" * 200,
], ids=["empty", "zeros", "random", "short-header-of-garbage"])
def test_random_bytes_are_a_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CorruptCheckpointError, match="corrupt checkpoint") as e:
        checkpoint.load(path)
    assert "pickle" not in str(e.value)


@pytest.mark.parametrize("table, detail", [
    (b"not json", "the header is not UTF-8 JSON"),
    (b"\xff\xfe{}", "the header is not UTF-8 JSON"),
    ([1, 2], "no fnet header"),
    ({"w": _tensor([1], [0, 8])}, "no fnet header"),
    ({"__metadata__": {checkpoint.METADATA_KEY: {"format": "fnet.checkpoint"}}}, "no fnet header"),
    ({"__metadata__": {checkpoint.METADATA_KEY: "{not json"}}, "fnet's header in the metadata is not JSON"),
    ({"__metadata__": {checkpoint.METADATA_KEY: "[1]"}}, "fnet's header is not a JSON object"),
    (_fnet_header([], format="other"), "format 'other' version 2, expected 'fnet.checkpoint' version 2"),
    (_fnet_header([], version=1), "format 'fnet.checkpoint' version 1, expected"),
    (_fnet_header([], leaves={}), "needs a 'metadata' object and a 'leaves' list"),
    (_fnet_header([{"path": 3}]), "leaf record 0 is malformed"),
    (_fnet_header([{**_record([1]), "tensor": None}]), "leaf record 0 is malformed"),
    (_fnet_header([_record([-1])]), "leaf record 0 is malformed"),
    (_fnet_header([_record([2], dtype="complex-ish")]), "leaf record 0 has an unknown dtype 'complex-ish'"),
    (_fnet_header([_record([2], dtype="f8,,")]), "leaf record 0 has an unknown dtype 'f8,,'"),
], ids=["not-json", "not-utf8", "not-an-object", "no-metadata", "metadata-not-a-string", "metadata-not-json",
        "metadata-not-an-object", "wrong-format", "old-version", "leaves-not-a-list", "bad-path", "no-tensor-name",
        "negative-dim", "bad-dtype", "dtype-syntax-error"])
def test_a_malformed_header_is_named(tmp_path, table, detail):
    message, _ = _load_peak(_write(tmp_path / "bad", table))
    assert detail in message and "pickle" not in message


def test_only_a_regular_file_is_read(tmp_path):
    with pytest.raises(checkpoint.CorruptCheckpointError, match="it is a folder, not a regular file"):
        checkpoint.load(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Opening a FIFO for reading would wait for a writer: the load runs in a thread with a deadline.
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(checkpoint.CorruptCheckpointError,
                                                                          checkpoint.load, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome and "it is a FIFO, not a regular file" in str(outcome[0].value)
