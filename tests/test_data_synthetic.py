"""fnet.data.synthetic: the synthetic sets (sin, spiral, planar flower, linear) are seeded, sin is
noise-free by default, the classes are balanced, and linear's true weights are recovered by least
squares."""

import dataclasses

import chex
import numpy as np
import pytest

from fnet import data


@pytest.mark.parametrize("name", ["sin", "spiral", "planar", "linear"])
def test_synthetic_sets_are_seeded(name):
    a, b, c = data.load(name, seed=5), data.load(name, seed=5), data.load(name, seed=6)
    chex.assert_trees_all_equal(dataclasses.astuple(a)[:6], dataclasses.astuple(b)[:6])
    assert not np.array_equal(a.x_train, c.x_train)
    data.check_dataset(a)
    assert a.x_train.dtype == np.float32


def test_sin_is_noise_free_by_default():
    ds = data.sin(n=300)
    chex.assert_shape([ds.x_train, ds.y_train], (len(ds.x_train), 1))
    assert ds.num_classes == 0
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert x.min() >= 0.0 and x.max() < 2 * np.pi
    np.testing.assert_allclose(ds.y_train, np.sin(ds.x_train), atol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_spiral_classes_are_balanced(num_classes):
    ds = data.spiral(n_per_class=60, num_classes=num_classes)
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    np.testing.assert_array_equal(np.bincount(y), [60] * num_classes)
    assert np.abs(ds.x_train).max() <= 1.0 + 1e-6  # radius is at most 1


def test_planar_flower():
    ds = data.planar()
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    np.testing.assert_array_equal(np.bincount(y), [200, 200])
    chex.assert_shape(ds.x_train, (len(ds.y_train), 2))
    assert ds.num_classes == 2


def test_linear_returns_true_weights_that_least_squares_recovers():
    ds = data.linear(n=2000, w=(2.0, -3.4, 0.5), b=4.2, noise=0.01)
    np.testing.assert_array_equal(ds.info["w"], np.float32([2.0, -3.4, 0.5]))
    assert ds.info["b"] == np.float32(4.2)
    chex.assert_shape([ds.x_train, ds.y_train], [(len(ds.x_train), 3), (len(ds.x_train), 1)])
    design = np.c_[ds.x_train, np.ones(len(ds.x_train))]
    fit, *_ = np.linalg.lstsq(design, ds.y_train[:, 0], rcond=None)
    np.testing.assert_allclose(fit, [2.0, -3.4, 0.5, 4.2], atol=5e-3)
