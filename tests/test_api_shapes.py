"""Bad shapes at the API are clear errors naming the function, the argument and the shapes
(issue: test images of another size than the training images ran a full epoch before failing)."""

import dataclasses

import numpy as np
import pytest

from fnet import data


def test_parts_of_a_dataset_must_hold_samples_of_one_shape():
    ds = data.load("digits", flatten=False)
    smaller = dataclasses.replace(ds, x_test=np.zeros((len(ds.x_test), 1, 7, 7), np.float32))
    with pytest.raises(ValueError, match=r"check_dataset\('digits'\): x_test has samples of shape \(1, 7, 7\) but "
                                         r"x_train has \(1, 8, 8\)"):
        data.check_dataset(smaller)
