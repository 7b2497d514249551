"""fnet.data.text: tiny-shakespeare (bundled and from a folder, checksummed), the character
vocabulary, encode/decode, and the two batching schemes (random windows, contiguous streams)."""

import gzip
import hashlib
import importlib.resources
import os
import re

import jax
import numpy as np
import pytest
from _data_fixtures import unblocked_fifo

from fnet import data

N_CHARS, N_TRAIN, N_VAL = 1_115_394, 1_003_854, 111_540  # the data's README: 90/10 split


@pytest.fixture(scope="module")
def bundled_text() -> bytes:
    resource = importlib.resources.files("fnet") / "datasets" / "tinyshakespeare.txt.gz"
    return gzip.decompress(resource.read_bytes())


@pytest.fixture(scope="module")
def ds():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FNET_DATA", raising=False)  # the bundled copy
        return data.shakespeare()


# ---------------------------------------------------------------------------------------------
# the data set


def test_bundled_shakespeare_known_facts(ds, bundled_text):
    assert hashlib.sha256(bundled_text).hexdigest() == data.SHAKESPEARE_SHA256 and len(bundled_text) == N_CHARS
    assert ds.info["path"] == "bundled" and ds.name == "shakespeare"
    assert ds.vocab_size == 65 and ds.vocab == "".join(sorted(set(bundled_text.decode())))
    assert ds.vocab.startswith("\n !$&',-.3:;?AB") and ds.vocab.endswith("xyz")
    assert (len(ds.train), len(ds.val)) == (N_TRAIN, N_VAL)
    assert ds.train.dtype == ds.val.dtype == np.int32 and ds.train.ndim == ds.val.ndim == 1
    assert ds.decode(ds.train[:14]) == "First Citizen:"
    # Decoding both parts gives back the exact text: nothing lost or reordered by the split.
    whole = ds.decode(np.concatenate([ds.train, ds.val])).encode()
    assert hashlib.sha256(whole).hexdigest() == data.SHAKESPEARE_SHA256


def test_folder_copy_is_used_when_present(tmp_path, monkeypatch, bundled_text, ds):
    monkeypatch.delenv("FNET_DATA", raising=False)
    (tmp_path / "env" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "env" / "tinyshakespeare" / "input.txt").write_bytes(bundled_text)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "input.txt").write_bytes(bundled_text)
    monkeypatch.setenv("FNET_DATA", str(tmp_path / "env"))
    from_env = data.load_text("tiny_shakespeare")
    assert from_env.info["path"] == str(tmp_path / "env" / "tinyshakespeare" / "input.txt")
    from_dir = data.shakespeare(tmp_path / "flat")  # data_dir comes before $FNET_DATA
    assert from_dir.info["path"] == str(tmp_path / "flat" / "input.txt")
    for loaded in (from_env, from_dir):
        assert loaded.vocab == ds.vocab
        np.testing.assert_array_equal(loaded.val, ds.val)
    # An empty folder falls through to the next place.
    assert data.shakespeare(tmp_path / "empty").info["path"] == from_env.info["path"]


def test_a_file_that_is_not_tiny_shakespeare_is_refused(tmp_path, bundled_text):
    path = tmp_path / "input.txt"
    edited = bundled_text.replace(b"First Citizen", b"First Citizen!", 1)[:N_CHARS]
    cases = {
        b"hello": "found 5 bytes with sha256 2cf24dba",
        edited: f"found {N_CHARS} bytes with sha256 ",
        bundled_text + b"\n": f"found more than {N_CHARS} bytes$",
    }
    for content, found in cases.items():
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"^shakespeare: {re.escape(str(path))} is not tiny-shakespeare's "
                                             f"input.txt: expected {N_CHARS} bytes with sha256 "
                                             f"{data.SHAKESPEARE_SHA256}, {found}"):
            data.shakespeare(tmp_path)


def test_only_a_regular_file_is_read(tmp_path):
    fifo = tmp_path / "tinyshakespeare" / "input.txt"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    with unblocked_fifo(fifo), pytest.raises(ValueError, match="^shakespeare: .* is not a regular file"):
        data.shakespeare(tmp_path)


def test_val_fraction_and_names(ds):
    small = data.shakespeare(val_fraction=0.5)
    assert (len(small.train), len(small.val)) == (N_CHARS // 2, N_CHARS - N_CHARS // 2)
    for bad in (0, 1, 1.5, -0.1, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match=r"^shakespeare: val_fraction must be a number in \(0, 1\)"):
            data.shakespeare(val_fraction=bad)
    with pytest.raises(ValueError, match="^load_text: unknown text data set 'war-and-peace'; known text data "
                                         "sets: shakespeare$"):
        data.load_text("war-and-peace")
    # The loader of samples and labels points at the text loader instead of calling the name unknown.
    with pytest.raises(ValueError, match=re.escape("load it with fnet.data.load_text('Shakespeare')")):
        data.load("Shakespeare")
    assert data.TEXT_DATASETS == ("shakespeare",) and "shakespeare" not in data.KNOWN_DATASETS


# ---------------------------------------------------------------------------------------------
# vocabulary


def test_encode_decode_round_trip(ds):
    np.testing.assert_array_equal(ds.encode(ds.vocab), np.arange(65))  # id k is vocab[k]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 65, 500).astype(np.int32)
    text = ds.decode(ids)
    assert len(text) == 500 and ds.decode(ids.reshape(20, 25)) == text  # row-major
    np.testing.assert_array_equal(ds.encode(text), ids)
    assert ds.encode("").shape == (0,) and ds.decode(np.zeros(0, np.int32)) == ""
    # Any text, beyond ASCII too.
    other = "héllo wörld, ✓ 𝄞"
    vocab = data.char_vocab(other)
    assert list(vocab) == sorted(set(other))
    assert data.decode(data.encode(other, vocab), vocab) == other


def test_encode_and_decode_errors(ds):
    with pytest.raises(ValueError, match=r"^encode: character 'é' \(U\+00E9\) at position 7 of text is not in the "
                                         r"vocabulary of 65 characters$"):
        ds.encode("Romeo, é")
    with pytest.raises(ValueError, match=r"^encode: character '~' \(U\+007E\) at position 0"):  # above every id
        ds.encode("~")
    with pytest.raises(ValueError, match="^encode: vocab must be distinct characters sorted by code point"):
        data.encode("ab", "ba")
    for bad, got in ((np.array([0, 65]), r"\[0, 65\]"), (np.array([[-1, 3]]), r"\[-1, 3\]")):
        with pytest.raises(ValueError, match=rf"^decode: ids must lie in \[0, 65\) for a vocabulary of 65 "
                                             rf"characters, got values in {got}$"):
            ds.decode(bad)
    with pytest.raises(TypeError, match=r"^decode: ids must be integer token ids, got dtype float32"):
        ds.decode(np.ones(3, np.float32))


# ---------------------------------------------------------------------------------------------
# batches

IDS = np.arange(103, dtype=np.int32)  # id = position: a window's values show where it was cut


def test_random_windows_are_slices_shifted_by_one():
    x, y = data.random_windows(jax.random.key(0), IDS, 2000, 93)
    assert x.shape == y.shape == (2000, 93) and x.dtype == y.dtype == np.int32
    x, y = np.asarray(x), np.asarray(y)
    starts = x[:, 0]
    np.testing.assert_array_equal(x, starts[:, None] + np.arange(93))  # contiguous windows
    np.testing.assert_array_equal(y, x + 1)  # the targets are the next characters
    # Offsets range over every start whose targets fit, 0 ... N - T - 1, and nothing else.
    assert set(starts.tolist()) == set(range(103 - 93))


def test_random_windows_under_jit_match_eager_and_follow_the_key(ds):
    windows = jax.jit(data.random_windows, static_argnums=(2, 3))
    key = jax.random.key(7)
    x, y = windows(key, ds.train, 8, 64)
    x_eager, y_eager = data.random_windows(key, ds.train, 8, 64)
    np.testing.assert_array_equal(x, x_eager)
    np.testing.assert_array_equal(y, y_eager)
    assert ds.decode(x[0])[1:] == ds.decode(y[0])[:-1]
    assert not np.array_equal(windows(jax.random.key(8), ds.train, 8, 64)[0], x)


def test_contiguous_windows_continue_each_stream_across_batches():
    x, y = data.contiguous_windows(IDS, 4, 5)
    stream, steps = (103 - 1) // 4, (103 - 1) // 4 // 5  # 25 ids per stream, 5 batches
    assert x.shape == y.shape == (steps, 4, 5)
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_array_equal(y, x + 1)
    # Row b of batch s + 1 starts where row b of batch s ended: the hidden state carries over.
    np.testing.assert_array_equal(x[1:, :, 0], x[:-1, :, -1] + 1)
    # Laid end to end, row b of all batches is stream b: ids b * L, b * L + 1, ..., unwrapped.
    for b in range(4):
        np.testing.assert_array_equal(x[:, b].reshape(-1), b * stream + np.arange(steps * 5))
    # The smallest text that makes one batch: B * T + 1 ids.
    x1, y1 = data.contiguous_windows(IDS[:21], 4, 5)
    assert x1.shape == (1, 4, 5) and int(y1.max()) == 20


def test_contiguous_windows_of_the_text(ds):
    x, y = data.contiguous_windows(ds.val, 32, 64)
    stream = (N_VAL - 1) // 32
    assert x.shape == (stream // 64, 32, 64)
    text = ds.decode(ds.val)
    assert ds.decode(x[:, 3]) == text[3 * stream: 3 * stream + x.shape[0] * 64]
    assert ds.decode(y[:, 3]) == text[3 * stream + 1: 3 * stream + 1 + x.shape[0] * 64]


@pytest.mark.parametrize("windows", [
    lambda ids, b, t: data.random_windows(jax.random.key(0), ids, b, t),
    data.contiguous_windows,
], ids=["random_windows", "contiguous_windows"])
def test_bad_window_arguments(windows):
    name = "random_windows" if windows is not data.contiguous_windows else "contiguous_windows"
    cases = [
        ((IDS, 4, 0), ValueError, f"{name}: length must be a positive int, got 0"),
        ((IDS, 0, 5), ValueError, f"{name}: batch_size must be a positive int, got 0"),
        ((IDS, 4, 103), ValueError, f"{name}: length must be shorter than the text (a window of T ids needs T + 1 "
                                    f"for its targets), got length 103 for 103 ids"),
        ((IDS, 4, 2.5), TypeError, f"{name}: length must be an int, got 2.5"),
        ((IDS.astype(np.float32), 4, 5), TypeError, f"{name}: ids must be a 1-D array of integer token ids, got "
                                                    f"ndarray of dtype float32 and shape (103,)"),
        ((IDS.reshape(1, 103), 4, 5), TypeError, f"{name}: ids must be a 1-D array"),
        ((list(IDS), 4, 5), TypeError, f"{name}: ids must be a 1-D array"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=f"^{re.escape(message)}"):
            windows(*args)


def test_contiguous_windows_need_one_batch():
    with pytest.raises(ValueError, match=r"^contiguous_windows: batch_size \* length \+ 1 ids are needed for one "
                                         r"batch, got batch_size 4 and length 5 for 20 ids$"):
        data.contiguous_windows(IDS[:20], 4, 5)


def test_shared_data_copy_matches_the_bundled_one(shared_data_dir, monkeypatch, ds):
    if not (shared_data_dir / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"no tinyshakespeare/input.txt in {shared_data_dir}")
    monkeypatch.setenv("FNET_DATA", str(shared_data_dir))
    shared = data.shakespeare()
    assert shared.info["path"] == str(shared_data_dir / "tinyshakespeare" / "input.txt")
    np.testing.assert_array_equal(shared.train, ds.train)
