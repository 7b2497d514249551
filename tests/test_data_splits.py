"""fnet.data.splits: train/validation/test splits (disjoint, complete, ordered, seeded),
standardizing with the training statistics only, one-hot labels, ``check_dataset`` (non-finite
features, labels out of range, parts whose samples differ in shape), and the integer arguments of
every data function (NumPy integers accepted, bools and floats refused naming the argument)."""

import dataclasses
from functools import partial

import chex
import jax
import numpy as np
import pytest

from fnet import data


def test_train_val_test_split_is_disjoint_complete_and_ordered():
    idx = np.arange(1000)
    tr, _, va, _, te, _ = data.train_val_test_split(idx, idx, val_fraction=0.25, test_fraction=0.2, seed=3)
    assert (len(tr), len(va), len(te)) == (600, 200, 200)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), idx)
    for part in (tr, va, te):
        assert np.all(np.diff(part) > 0)  # original relative order kept
    tr0, *_ = data.train_val_test_split(idx, idx, val_fraction=0.0, test_fraction=0.0)
    np.testing.assert_array_equal(tr0, idx)


@pytest.mark.parametrize("bad", [{"val_fraction": 1.0}, {"test_fraction": -0.1}])
def test_train_val_test_split_rejects_bad_fractions(bad):
    with pytest.raises(ValueError, match="train_val_test_split: .*_fraction must be in"):
        data.train_val_test_split(np.zeros(10), np.zeros(10), **bad)


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, (200, 4)).astype(np.float32)
    train[:, 2] = 5.0  # a constant feature
    other = rng.normal(0.0, 1.0, (50, 4)).astype(np.float32)
    train_s, other_s, mean, std = data.standardize(train, other)
    np.testing.assert_allclose(train_s[:, [0, 1, 3]].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_s[:, [0, 1, 3]].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(train_s[:, 2], 0.0)  # constant feature -> 0, not NaN
    assert std[2] == 1.0
    np.testing.assert_allclose(other_s, (other - train.mean(axis=0)) / std, rtol=1e-5)
    with pytest.raises(TypeError, match="standardize: train must be a floating-point array"):
        data.standardize(np.arange(4)[:, None])


def test_one_hot_eager_and_jit():
    y = np.array([2, 0, 1, 2], dtype=np.int32)
    expected = np.eye(3, dtype=np.float32)[y]
    chex.assert_trees_all_equal(np.asarray(data.one_hot(y, 3)), expected)
    out = jax.jit(partial(data.one_hot, num_classes=3))(y)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match=r"one_hot: y must lie in \[0, 3\).*got values in \[0, 3\]"):
        data.one_hot(np.array([0, 3]), 3)


@pytest.mark.parametrize("part", ["x_train", "x_val", "x_test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_dataset_rejects_non_finite_features(part, bad):
    ds = data.digits()
    x = getattr(ds, part).copy()
    x[3, 5] = bad
    kind = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(ValueError, match=rf"check_dataset\('digits'\): {part} must be finite.* 1 {kind}.*\(3, 5\)"):
        data.check_dataset(dataclasses.replace(ds, **{part: x}))


def test_check_dataset_rejects_labels_out_of_range():
    ds = data.digits()
    y = ds.y_val.copy()
    y[0] = 10
    with pytest.raises(ValueError, match=r"check_dataset\('digits'\): y_val must lie in \[0, 10\).*\[0, 10\]"):
        data.check_dataset(dataclasses.replace(ds, y_val=y))
    y[0] = -1
    with pytest.raises(ValueError, match=r"y_val must lie in \[0, 10\).*\[-1, 9\]"):
        data.check_dataset(dataclasses.replace(ds, y_val=y))
    with pytest.raises(TypeError, match="y_val must be integer class labels"):
        data.check_dataset(dataclasses.replace(ds, y_val=ds.y_val.astype(np.float32)))


def test_check_dataset_rejects_bad_regression_targets():
    ds = data.sin(n=50)
    y = ds.y_train.copy()
    y[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"check_dataset\('sin'\): y_train must be finite"):
        data.check_dataset(dataclasses.replace(ds, y_train=y))
    with pytest.raises(ValueError, match="y_test has 3 rows but x_test has"):
        data.check_dataset(dataclasses.replace(ds, y_test=ds.y_test[:3]))


def test_parts_of_a_dataset_must_hold_samples_of_one_shape():
    ds = data.load("digits", flatten=False)
    smaller = dataclasses.replace(ds, x_test=np.zeros((len(ds.x_test), 1, 7, 7), np.float32))
    with pytest.raises(ValueError, match=r"check_dataset\('digits'\): x_test has samples of shape \(1, 7, 7\) but "
                                         r"x_train has \(1, 8, 8\)"):
        data.check_dataset(smaller)


# Every integer argument: a NumPy integer means what the Python int means; a bool or a float is
# refused with the function and the argument named (a bool would silently be 0 or 1).
INTEGER_ARGUMENTS = [
    ("one_hot", "num_classes", lambda v: data.one_hot(np.array([0, 1, 2]), v), 3),
    ("sin", "n", lambda v: data.sin(n=v), 20),
    ("spiral", "n_per_class", lambda v: data.spiral(n_per_class=v), 10),
    ("spiral", "num_classes", lambda v: data.spiral(n_per_class=10, num_classes=v), 3),
    ("planar", "n", lambda v: data.planar(n=v), 20),
    ("linear", "n", lambda v: data.linear(n=v), 20),
    ("sin", "seed", lambda v: data.sin(n=20, seed=v), 3),
    ("train_val_test_split", "seed",
     lambda v: data.train_val_test_split(np.arange(20), np.arange(20), seed=v), 3),
    ("load", "seed", lambda v: data.load("spiral", n_per_class=10, seed=v), 3),
]


def _parts(result):
    return dataclasses.astuple(result)[:6] if isinstance(result, data.Dataset) else result


@pytest.mark.parametrize("fn, name, call, good", INTEGER_ARGUMENTS, ids=lambda a: a if isinstance(a, str) else "")
def test_integer_arguments_accept_numpy_ints_and_refuse_bools_and_floats(fn, name, call, good):
    chex.assert_trees_all_equal(_parts(call(np.int64(good))), _parts(call(good)))
    for bad, shown in ((True, r"True \(bool\)"), (float(good), rf"{float(good)} \(float\)"),
                       (np.float32(good), r"np.float32")):
        with pytest.raises(TypeError, match=rf"{fn}: {name} must be an int, got {shown}"):
            call(bad)


def test_sizes_and_seeds_have_lower_bounds():
    with pytest.raises(ValueError, match=r"one_hot: num_classes must be a positive int, got 0"):
        data.one_hot(np.array([0]), 0)
    with pytest.raises(ValueError, match=r"planar: n must be an int >= 2 \(one point per class at least\), got 1"):
        data.planar(n=1)
    with pytest.raises(ValueError, match=r"load: seed must be an int >= 0, got -1"):
        data.load("sin", seed=-1)
    rng = np.random.default_rng(7)
    a = data.train_val_test_split(np.arange(20), np.arange(20), seed=rng)
    chex.assert_trees_all_equal(a, data.train_val_test_split(np.arange(20), np.arange(20), seed=7))
