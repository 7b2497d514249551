"""Regenerate fnet/datasets/digits.npz from scikit-learn's bundled copy of the UCI 8x8 digits.

Run from the repository root:  python scripts/make_digits.py

The file holds two arrays: ``data`` (1797, 64) uint8 with pixel counts 0..16, row-major 8x8, and
``target`` (1797,) uint8 with the digit 0..9, in scikit-learn's order. fnet ships this file so that
the default data set needs neither scikit-learn nor a download at run time.
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "fnet" / "datasets" / "digits.npz"


def main() -> None:
    bunch = load_digits()
    data = bunch.data.astype(np.uint8)
    target = bunch.target.astype(np.uint8)
    # The conversion to uint8 must be lossless: the source holds small integer counts stored as floats.
    assert np.array_equal(data, bunch.data) and np.array_equal(target, bunch.target)
    assert data.shape == (1797, 64) and data.max() == 16 and sorted(set(target)) == list(range(10))
    np.savez_compressed(OUT, data=data, target=target)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
