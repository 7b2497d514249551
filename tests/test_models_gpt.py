"""fnet.models.gpt: its gradient chain (three-way, float64), training with fit_lm, the
parameter count by hand, and the bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest

import fnet
from fnet import gradcheck


def test_gpt_gradients_three_ways_with_dropout_and_weight_decay():
    net = fnet.gpt(7, 4, layers=2, heads=2, width=4, dropout=0.2, weight_decay=0.1, dtype="float64")
    tokens = np.random.default_rng(0).integers(0, 7, (2, 5))
    assert gradcheck.check_network(net, tokens[:, :-1], tokens[:, 1:]).passed


def test_gpt_parameter_count_by_hand():
    v, t, layers, e = 65, 32, 3, 16
    per_block = 2 * 2 * e + 4 * (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e)  # 2 norms, attention, MLP
    expected = v * e + t * e + layers * per_block + 2 * e + e * v + v
    assert fnet.nets.num_params(fnet.gpt(v, t, layers=layers, heads=4, width=e)) == expected


def test_fit_lm_trains_a_gpt():
    text = fnet.data.load_text("shakespeare")
    net = fnet.gpt(text.vocab_size, 16, layers=1, heads=2, width=16)
    result = fnet.fit_lm(net, fnet.optim.adam(3e-3), text, steps=60, batch_size=8, eval_every=30, eval_windows=32,
                         progress=False)
    assert result.history["val_loss"][-1] < result.history["val_loss"][0] < np.log(65) + 0.5


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match=r"gpt: heads 3 does not divide the width 16"):
        fnet.gpt(65, 8, heads=3, width=16)
    with pytest.raises(ValueError, match=r"gpt: context must be a positive int, got 0"):
        fnet.gpt(65, 0)
    with pytest.raises(ValueError, match=r"gpt: dropout"):
        fnet.gpt(65, 8, dropout=1.0)
