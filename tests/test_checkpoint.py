"""fnet.checkpoint: bit-exact round trips of pytrees (NamedTuple states, bfloat16, Python scalars,
PRNG keys) through safetensors files, `like=` checks, corrupt and old-format files and atomic writes.

Crafted and random files are refused as "corrupt checkpoint: ..." before anything is allocated:
the safetensors header's length is checked against the file's size and a cap before it is read,
and every tensor's dtype, shape and byte range against the file before any array exists."""

import json
import os
import threading
import tracemalloc
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from fnet import checkpoint


class AdamLikeState(NamedTuple):
    """Optimizer state shaped like optax's ScaleByAdamState."""

    count: jax.Array
    mu: dict
    nu: dict


class EmptyState(NamedTuple):
    pass


def make_tree():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "W1": jax.random.normal(k[0], (5, 4), jnp.float32),
        "b1": jnp.zeros((4,), jnp.float32),
        "W2": jax.random.normal(k[1], (4, 3), jnp.float64),
        "gamma": jax.random.normal(k[2], (3,)).astype(jnp.bfloat16),
    }
    zeros = jax.tree.map(jnp.zeros_like, params)
    return {
        "params": params,
        "bn_state": [{"mean": jnp.arange(3.0), "var": jnp.ones(3)}, {"steps": np.arange(4, dtype=np.int64)}],
        "opt_state": (AdamLikeState(count=jnp.asarray(7, jnp.int32), mu=zeros, nu=params), EmptyState()),
        "epoch": 3,
        "lr": 0.001,
        "done": False,
        "key": k[3],
        "mask": jnp.array([True, False]),
    }


def assert_bitwise_equal(a, b):
    """Same structure, leaf types, dtypes, shapes and bits (so NaN payloads and -0.0 count)."""
    chex.assert_trees_all_equal_structs(a, b)

    def same(x, y):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        assert getattr(x, "dtype", None) == getattr(y, "dtype", None)
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        xa, ya = np.asarray(x), np.asarray(y)
        assert xa.shape == ya.shape and xa.tobytes() == ya.tobytes()

    jax.tree.map(same, a, b)


def test_round_trip_with_like_restores_exact_structure_and_dtypes(tmp_path):
    tree = make_tree()
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, tree)
    restored = checkpoint.load(path, like=tree)
    assert_bitwise_equal(tree, restored)
    assert isinstance(restored["opt_state"][0], AdamLikeState)
    assert restored["params"]["gamma"].dtype == jnp.bfloat16
    assert type(restored["epoch"]) is int and type(restored["lr"]) is float and type(restored["done"]) is bool
    assert isinstance(restored["bn_state"][1]["steps"], np.ndarray)  # NumPy leaves stay NumPy


def test_round_trip_special_float_values_bitwise(tmp_path):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, np.finfo(np.float32).max], np.float32)
    c64 = np.zeros(x.shape, np.complex64)
    c64.real, c64.imag = x, x[::-1]
    tree = {"f32": x, "bf16": jnp.asarray(x).astype(jnp.bfloat16), "f64": x.astype(np.float64), "c64": c64}
    checkpoint.save(tmp_path / "c", tree)
    assert_bitwise_equal(tree, checkpoint.load(tmp_path / "c", like=tree))


def test_load_without_like_gives_plain_nested_containers(tmp_path):
    tree = make_tree()
    checkpoint.save(tmp_path / "c.safetensors", tree)
    plain = checkpoint.load(tmp_path / "c.safetensors")
    assert set(plain) == {"params", "bn_state", "opt_state", "epoch", "lr", "done", "key", "mask"}
    state = plain["opt_state"][0]  # NamedTuple -> dict of its fields; tuple -> list
    assert isinstance(plain["opt_state"], list) and isinstance(state, dict)
    assert set(state) == {"count", "mu", "nu"}
    assert len(plain["opt_state"]) == 1  # the empty state has no leaves
    assert isinstance(plain["params"]["W1"], np.ndarray) and plain["params"]["gamma"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(plain["params"]["W2"], tree["params"]["W2"])
    assert plain["epoch"] == 3 and type(plain["epoch"]) is int
    np.testing.assert_array_equal(plain["bn_state"][0]["mean"], [0.0, 1.0, 2.0])


def test_single_array_and_int_keyed_dicts(tmp_path):
    checkpoint.save(tmp_path / "a", jnp.arange(4))
    np.testing.assert_array_equal(checkpoint.load(tmp_path / "a"), np.arange(4))
    tree = {0: np.ones(2), 1: [np.zeros(1), np.ones(1)]}
    checkpoint.save(tmp_path / "b", tree)
    plain = checkpoint.load(tmp_path / "b")
    assert set(plain) == {0, 1} and len(plain[1]) == 2


def test_typed_prng_keys_round_trip(tmp_path):
    tree = {"key": jax.random.key(42), "keys": jax.random.split(jax.random.key(1), 3)}
    checkpoint.save(tmp_path / "k", tree)
    for restored in (checkpoint.load(tmp_path / "k"), checkpoint.load(tmp_path / "k", like=tree)):
        for name in tree:
            assert jnp.issubdtype(restored[name].dtype, jax.dtypes.prng_key)
            np.testing.assert_array_equal(jax.random.key_data(restored[name]), jax.random.key_data(tree[name]))
    np.testing.assert_array_equal(
        jax.random.normal(checkpoint.load(tmp_path / "k")["key"], (3,)), jax.random.normal(tree["key"], (3,))
    )


def test_like_may_be_shape_dtype_structs(tmp_path):
    tree = make_tree()
    checkpoint.save(tmp_path / "c", tree)
    arrays_only = {"params": tree["params"], "opt_state": tree["opt_state"]}
    checkpoint.save(tmp_path / "p", arrays_only)
    abstract = jax.eval_shape(lambda: arrays_only)
    restored = checkpoint.load(tmp_path / "p", like=abstract)
    assert_bitwise_equal(arrays_only, restored)


def test_metadata(tmp_path):
    checkpoint.save(tmp_path / "m", {"w": np.ones(2)}, metadata={"epoch": 4, "config": {"lr": 0.1, "hidden": [100]}})
    assert checkpoint.load_metadata(tmp_path / "m") == {"epoch": 4, "config": {"lr": 0.1, "hidden": [100]}}
    checkpoint.save(tmp_path / "n", {"w": np.ones(2)})
    assert checkpoint.load_metadata(tmp_path / "n") == {}


def test_an_empty_tree_round_trips(tmp_path):
    for empty in ({}, [], None, ()):
        checkpoint.save(tmp_path / "e", empty, metadata={"epoch": 0})
        assert checkpoint.load(tmp_path / "e") == {}
        if empty is not None:  # like=None: no `like`
            assert checkpoint.load(tmp_path / "e", like=empty) == empty
        assert checkpoint.load_metadata(tmp_path / "e") == {"epoch": 0}


def test_safetensors_reads_the_file_with_tensors_named_by_their_tree_path(tmp_path):
    tree = make_tree()
    checkpoint.save(tmp_path / "c", tree, metadata={"epoch": 3})
    tensors = safetensors.numpy.load_file(tmp_path / "c")
    assert set(tensors) == {"params/W1", "params/b1", "params/W2", "params/gamma", "bn_state/0/mean", "bn_state/0/var",
                            "bn_state/1/steps", "opt_state/0/count", "opt_state/0/mu/W1", "opt_state/0/mu/b1",
                            "opt_state/0/mu/W2", "opt_state/0/mu/gamma", "opt_state/0/nu/W1", "opt_state/0/nu/b1",
                            "opt_state/0/nu/W2", "opt_state/0/nu/gamma", "epoch", "lr", "done", "key", "mask"}
    np.testing.assert_array_equal(tensors["params/W1"], tree["params"]["W1"])
    # bfloat16 as its bits (uint16), a typed PRNG key as its uint32 key data, a Python int as an int64 scalar
    np.testing.assert_array_equal(tensors["params/gamma"], np.asarray(tree["params"]["gamma"]).view(np.uint16))
    np.testing.assert_array_equal(tensors["key"], jax.random.key_data(tree["key"]))
    assert tensors["epoch"].shape == () and tensors["epoch"] == 3
    header = json.loads(safetensors.safe_open(tmp_path / "c", "np").metadata()[checkpoint.METADATA_KEY])
    assert header["format"] == checkpoint.FORMAT and header["metadata"] == {"epoch": 3}
    gamma = next(r for r in header["leaves"] if r["tensor"] == "params/gamma")
    assert gamma["dtype"] == "bfloat16" and gamma["path"] == "['params']['gamma']"


def test_wide_and_odd_dtypes_and_keys_round_trip(tmp_path):
    """complex128 (wider than any safetensors.numpy dtype: stored as bytes), float8, keys holding
    "/" or "~" (escaped, so they cannot collide with nesting) and a bare array at the root."""
    import ml_dtypes

    tree = {"c128": np.array([1 + 2j, -0.0 - 1j]), "f8": np.arange(4, dtype=ml_dtypes.float8_e4m3fn),
            "a/b": np.ones(1), "a": {"b": np.zeros(1)}, "~1": np.full(2, 7, np.int8)}
    checkpoint.save(tmp_path / "w", tree)
    assert_bitwise_equal(tree, checkpoint.load(tmp_path / "w", like=tree))
    assert set(safetensors.numpy.load_file(tmp_path / "w")) == {"c128", "f8", "a~1b", "a/b", "~01"}
    checkpoint.save(tmp_path / "r", np.arange(3.0))
    assert set(safetensors.numpy.load_file(tmp_path / "r")) == {""}


# ---------------------------------------------------------------------------------------------
# mismatches and corrupt files


def test_like_with_different_shape_or_dtype_names_the_leaf(tmp_path):
    tree = make_tree()
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, tree)
    wrong_shape = jax.tree.map(lambda x: x, tree)
    wrong_shape["params"]["W1"] = jnp.zeros((5, 5), jnp.float32)
    with pytest.raises(ValueError, match=r"leaf at \['params'\]\['W1'\] expected float32\[5, 5\].*found float32\[5, 4\]"):
        checkpoint.load(path, like=wrong_shape)
    wrong_dtype = jax.tree.map(lambda x: x, tree)
    wrong_dtype["params"]["gamma"] = jnp.zeros((3,), jnp.float32)
    with pytest.raises(ValueError, match=r"\['params'\]\['gamma'\] expected float32\[3\].*found bfloat16\[3\]"):
        checkpoint.load(path, like=wrong_dtype)
    wrong_count = jax.tree.map(lambda x: x, tree)
    wrong_count["opt_state"] = (tree["opt_state"][0]._replace(count=jnp.asarray(7, jnp.int64)), EmptyState())
    with pytest.raises(ValueError, match=r"\['opt_state'\]\[0\]\.count expected int64\[\].*found int32\[\]"):
        checkpoint.load(path, like=wrong_count)


def test_like_with_different_paths_lists_them(tmp_path):
    tree = make_tree()
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, tree)
    fewer = dict(tree)
    del fewer["lr"]
    fewer["params"] = {**tree["params"], "W3": jnp.zeros(1)}
    with pytest.raises(ValueError) as e:
        checkpoint.load(path, like=fewer)
    message = str(e.value)
    assert str(path) in message
    assert "in `like` but not in the checkpoint: [\"['params']['W3']\"]" in message
    assert "in the checkpoint but not in `like`: [\"['lr']\"]" in message
    # A NamedTuple saved state is not silently loaded into a dict with the same field names.
    as_dict = dict(tree, opt_state=(tree["opt_state"][0]._asdict(), EmptyState()))
    with pytest.raises(ValueError, match=r"\['opt_state'\]\[0\]\['count'\]"):
        checkpoint.load(path, like=as_dict)


@pytest.mark.parametrize("cut", [0, 10, 0.5, -1])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, make_tree())
    content = path.read_bytes()
    n = int(len(content) * cut) if isinstance(cut, float) else (cut % len(content))
    path.write_bytes(content[:n])
    with pytest.raises(ValueError, match=f"checkpoint.load: corrupt checkpoint: {path} is not a readable fnet checkpoint"):
        checkpoint.load(path)
    with pytest.raises(ValueError, match="checkpoint.load_metadata: .* not a readable fnet checkpoint"):
        checkpoint.load_metadata(path)


def test_other_safetensors_files_and_inconsistent_leaves_are_rejected(tmp_path):
    safetensors.numpy.save_file({"a": np.ones(3)}, tmp_path / "plain.safetensors")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="not a readable fnet checkpoint: no fnet header"):
        checkpoint.load(tmp_path / "plain.safetensors")
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": np.ones((2, 3), np.float32)})
    header = safetensors.safe_open(path, "np").metadata()
    safetensors.numpy.save_file({"w": np.ones((3, 2), np.float32)}, path, metadata=header)
    with pytest.raises(ValueError, match=r"corrupt checkpoint: .* leaf at \['w'\] should be float32\[2, 3\], found float32\[3, 2\]"):
        checkpoint.load(path)
    safetensors.numpy.save_file({"v": np.ones((2, 3), np.float32)}, path, metadata=header)
    with pytest.raises(ValueError, match=r"fnet's header lists the tensors \['w'\], the file holds \['v'\]"):
        checkpoint.load(path)


def test_an_npz_checkpoint_of_earlier_versions_is_named_in_one_line(tmp_path):
    np.savez(tmp_path / "old.npz", leaf_0=np.ones(3), __fnet_checkpoint__=np.frombuffer(b"{}", np.uint8))
    for read in (checkpoint.load, checkpoint.load_metadata):
        with pytest.raises(checkpoint.LegacyCheckpointError) as e:
            read(tmp_path / "old.npz")
        message = str(e.value)
        assert "\n" not in message and "in the .npz format of earlier fnet versions" in message
        assert "safetensors" in message and "train again, or load it with the fnet version that wrote it" in message


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "tree, metadata, message",
    [
        ({"s": np.array(["a"])}, None, r"leaf at \['s'\] has dtype <U1; only numeric"),
        ({"o": object()}, None, r"leaf at \['o'\] has dtype object"),
        ({(1, 2): np.ones(1)}, None, r"dict key \(1, 2\) must be a str or int"),
        ({"w": np.ones(1)}, {"bad": np.ones(1)}, "metadata must be JSON-serializable"),
        ({"__metadata__": np.ones(1)}, None,
         r"the leaf at \['__metadata__'\] would be stored as tensor '__metadata__', the name of safetensors' own header"),
    ],
)
def test_save_rejects_unsupported_values_and_writes_nothing(tmp_path, tree, metadata, message):
    with pytest.raises(TypeError, match=f"checkpoint.save: {message}"):
        checkpoint.save(tmp_path / "c.safetensors", tree, metadata=metadata)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# atomic writes


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch, failing):
    path = tmp_path / "c.safetensors"
    old = {"w": np.arange(3.0)}
    checkpoint.save(path, old)
    before = path.read_bytes()

    def broken(*args):
        raise OSError("disk full" if failing == "fsync" else "rename failed")

    monkeypatch.setattr(os, failing, broken)  # after the new file's bytes were written to the temporary
    with pytest.raises(OSError, match="disk full|rename failed"):
        checkpoint.save(path, {"w": np.arange(5.0)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.safetensors"]  # no temp files left behind
    np.testing.assert_array_equal(checkpoint.load(path, like=old)["w"], old["w"])


def test_save_overwrites_and_uses_path_as_given(tmp_path):
    path = tmp_path / "state"  # no suffix added
    checkpoint.save(path, {"w": np.zeros(2)})
    checkpoint.save(path, {"w": np.ones(2)})
    assert os.listdir(tmp_path) == ["state"]
    np.testing.assert_array_equal(checkpoint.load(path)["w"], np.ones(2))


# --------------------------------------------------------------------------------------------
# Crafted and random files: refused as "corrupt checkpoint: ..." before anything is allocated
# --------------------------------------------------------------------------------------------


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
