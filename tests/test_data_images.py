"""fnet.data.images: the bundled 8x8 digits (shapes, ranges, split sizes, seeded splits), ``load``
(known names, options, standardizing), and MNIST/Fashion-MNIST's known facts (via $FNET_DATA,
loaded once per module)."""

import dataclasses

import chex
import numpy as np
import pytest
from _data_fixtures import skip_or_fail

from fnet import data


def test_digits_shapes_ranges_and_split_sizes():
    ds = data.digits()
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (1294, 144, 359)
    chex.assert_shape(ds.x_train, (1294, 64))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10 and ds.name == "digits" and ds.num_features == 64
    x_all = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert x_all.min() == 0.0 and x_all.max() == 1.0
    # Pixels were counts 0..16, so x * 16 is integral.
    np.testing.assert_array_equal(x_all * 16, np.round(x_all * 16))
    assert set(np.unique(np.concatenate([ds.y_train, ds.y_val, ds.y_test]))) == set(range(10))
    assert data.digits(flatten=False).x_test.shape == (359, 1, 8, 8)


def test_digits_split_is_reproducible_and_seeded():
    a, b, c = data.digits(seed=1), data.digits(seed=1), data.digits(seed=2)
    chex.assert_trees_all_equal(dataclasses.astuple(a), dataclasses.astuple(b))
    assert not np.array_equal(a.y_test, c.y_test)
    chex.assert_trees_all_equal(dataclasses.astuple(data.load("digits")), dataclasses.astuple(data.digits()))


def test_load_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown data set 'cifar'.*digits.*fashion-mnist.*spiral"):
        data.load("cifar")


def test_load_rejects_data_dir_for_sets_without_files(tmp_path):
    with pytest.raises(ValueError, match="data_dir applies only to"):
        data.load("digits", data_dir=tmp_path)


def test_load_forwards_options_and_standardizes():
    ds = data.load("spiral", n_per_class=50, num_classes=3, standardize=True, seed=4)
    assert ds.num_classes == 3 and len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 150
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, atol=1e-5)
    raw = data.spiral(n_per_class=50, num_classes=3, seed=4)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - ds.info["mean"]) / ds.info["std"], rtol=1e-6)


def _load_real(name):
    try:
        return data.load(name, val_fraction=0.0)
    except data.DatasetNotFoundError as e:
        skip_or_fail(f"{name} files not found via $FNET_DATA: {e}")


@pytest.fixture(scope="module")
def real_mnist(shared_data_dir):
    return _load_real("mnist")


@pytest.fixture(scope="module")
def real_fashion(shared_data_dir):
    return _load_real("fashion-mnist")


def test_real_mnist_known_facts(real_mnist):
    ds = real_mnist
    chex.assert_shape([ds.x_train, ds.x_test], [(60000, 784), (10000, 784)])
    assert len(ds.x_val) == 0
    np.testing.assert_array_equal(
        np.bincount(ds.y_train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(ds.y_train[:5], [5, 0, 4, 1, 9])
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.x_train.mean(dtype=np.float64) == pytest.approx(0.1307, abs=1e-4)
    assert ds.x_train.std(dtype=np.float64) == pytest.approx(0.3081, abs=1e-4)


def test_real_fashion_mnist_known_facts(real_fashion):
    ds = real_fashion
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    assert ds.x_train.mean(dtype=np.float64) == pytest.approx(0.2860, abs=1e-4)
    assert ds.x_train.std(dtype=np.float64) == pytest.approx(0.3530, abs=1e-4)
