"""Random search (fnet.search): sampling, ranking, narrowing, and one compiled program for all rounds."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnet import data, nets, optim, search
from tests.test_trials import count_compiles


@settings(max_examples=30, deadline=None)
@given(lo=st.floats(-8, 2), width=st.floats(0, 6), n=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_sample_is_log_uniform_within_the_range(lo, width, n, seed):
    low, high = 10.0**lo, 10.0 ** (lo + width)
    draws = search.sample({"learning_rate": (low, high), "dropout": (0.1, 0.5, "linear")}, n, seed)
    assert draws["learning_rate"].shape == (n,)
    assert np.all((draws["learning_rate"] >= low * (1 - 1e-12)) & (draws["learning_rate"] <= high * (1 + 1e-12)))
    assert np.all((draws["dropout"] >= 0.1) & (draws["dropout"] <= 0.5))
    np.testing.assert_array_equal(search.sample({"learning_rate": (low, high)}, n, seed)["learning_rate"],
                                  draws["learning_rate"])


def test_sample_spreads_over_decades():
    lr = search.sample(search.DEFAULT_RANGES, 4000, 0)["learning_rate"]
    counts = np.histogram(np.log10(lr), bins=4, range=(-6, -2))[0]
    assert np.all(np.abs(counts - 1000) < 120)  # ~1000 per decade (binomial sd ~ 27)


@pytest.mark.parametrize("ranges, match", [
    ({"learning_rate": (0.0, 1.0)}, "low > 0"),
    ({"learning_rate": (1.0, 0.1)}, "low <= high"),
    ({"learning_rate": (0.1, 1.0, "cubic")}, "scale"),
    ({}, "non-empty"),
])
def test_bad_ranges(ranges, match):
    with pytest.raises(ValueError, match=match):
        search.sample(ranges, 3)


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits")
    return (ds.x_train[:400], ds.y_train[:400]), (ds.x_val, ds.y_val)


def make_net(h):
    """The searched weight decay is the network's (the learning rate goes to the optimizer)."""
    return nets.mlp(64, [32], 10, weight_decay=h["weight_decay"])


def test_search_ranks_trials_and_prefers_large_learning_rates(digits):
    (x, y), val = digits
    ranges = {"learning_rate": (1e-5, 1e-1), "weight_decay": (1e-8, 1e-4)}
    kw = {"num_trials": 12, "epochs": 4, "batch_size": 40, "optimizer": optim.sgd}
    first = search.random_search(make_net, x, y, val, ranges=ranges, seed=0, **kw)
    scores = [t["final_val_acc"] for t in first.trials]
    assert scores == sorted(scores, reverse=True) and len(first.trials) == 12
    assert {t["seed"] for t in first.trials} == set(range(12))
    # Within 4 epochs SGD only learns with the larger rates: the best trials sit in the upper
    # half of the log range (above 10**-3), and the best one clearly beats chance.
    assert all(t["hparams"]["learning_rate"] > math.sqrt(1e-5 * 1e-1) for t in first.trials[:3])
    assert first.trials[0]["final_val_acc"] > 0.3  # chance: 0.1
    narrowed = search.narrow_ranges(first, top=3)
    best_lrs = [t["hparams"]["learning_rate"] for t in first.trials[:3]]
    assert narrowed["learning_rate"] == (min(best_lrs), max(best_lrs), "log")
    with count_compiles() as compiles:  # the second round reuses the first round's program
        second = search.random_search(make_net, x, y, val, ranges=narrowed, seed=1, **kw)
    assert compiles == []
    lo, hi, _ = narrowed["learning_rate"]
    assert all(lo <= t["hparams"]["learning_rate"] <= hi for t in second.trials)
    with pytest.raises(ValueError, match="top must be"):
        search.narrow_ranges(first, top=13)


def test_search_sends_each_name_to_the_optimizer_or_the_network(digits):
    (x, y), val = digits
    # adamw's own weight_decay is an optimizer argument; sgd has none, so a ready Net cannot use it
    assert search.optimizer_keys(optim.adamw) >= {"learning_rate", "weight_decay"}
    with pytest.raises(ValueError, match=r"ranges \['weight_decay'\] are not keyword arguments of sgd"):
        search.random_search(nets.mlp(64, [32], 10), x, y, val, ranges={"learning_rate": (1e-3, 1e-1),
                                                                         "weight_decay": (1e-8, 1e-4)})
