"""fnet.models.gpt: its gradient chain (three-way, float64), training with fit_lm, the
parameter count by hand, and the bad-input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnet
from fnet import combinators, gradcheck, modules


def test_gpt_gradients_three_ways_with_dropout_and_weight_decay():
    net = fnet.gpt(7, 4, layers=2, heads=2, width=4, dropout=0.2, weight_decay=0.1, dtype="float64")
    tokens = np.random.default_rng(0).integers(0, 7, (2, 5))
    assert gradcheck.check_network(net, tokens[:, :-1], tokens[:, 1:]).passed


def test_a_recomputing_gpt_checks_three_ways_and_keeps_its_config():
    net = fnet.gpt(7, 4, layers=2, heads=2, width=4, dropout=0.2, dtype="float64", recompute=True)
    tokens = np.random.default_rng(0).integers(0, 7, (2, 5))
    assert gradcheck.check_network(net, tokens[:, :-1], tokens[:, 1:]).passed
    # how the backward runs, not the model: the same config as the storing GPT's
    assert net.config == fnet.gpt(7, 4, layers=2, heads=2, width=4, dropout=0.2, dtype="float64").config


def test_a_tied_gpt_checks_three_ways_and_shares_one_table():
    net = fnet.gpt(7, 4, layers=1, heads=2, width=4, dropout=0.2, tie=True, dtype="float64")
    tokens = np.random.default_rng(1).integers(0, 7, (2, 5))
    assert gradcheck.check_network(net, tokens[:, :-1], tokens[:, 1:]).passed
    params = net.init(jax.random.PRNGKey(0)).params
    assert set(params) == {"embedding", "body", "head"} and set(params["head"]) == {"b"}
    # the scores are h @ W^T + b with the embedding's own table
    x = jnp.asarray(tokens[:, :-1])
    scores = net.apply(params, x)
    body = net.module.children[1][1]
    h, _, _ = body.forward(params["body"], {}, params["embedding"]["W"][x], train=False)
    # sums of 4 float64 products in another order: far inside 1e-12 of the scores' scale
    np.testing.assert_allclose(scores, h @ params["embedding"]["W"].T + params["head"]["b"], rtol=0,
                               atol=1e-12 * float(jnp.abs(scores).max()))


def test_tied_embedding_refuses_a_body_that_changes_the_width():
    module = combinators.tied_embedding(7, 4, modules.temporal_dense(5))
    with pytest.raises(ValueError, match=r"tied_embedding: body must keep the embedding's shape \(None, 3, 4\), it "
                                         r"returns \(None, 3, 5\)"):
        module.init(jax.random.PRNGKey(0), (None, 3))
    with pytest.raises(TypeError, match="tied_embedding: body must be a Module, got int"):
        combinators.tied_embedding(7, 4, 3)


def test_gpt_parameter_count_by_hand():
    v, t, layers, e = 65, 32, 3, 16
    per_block = 2 * 2 * e + 4 * (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e)  # 2 norms, attention, MLP
    expected = v * e + t * e + layers * per_block + 2 * e + e * v + v
    assert fnet.nets.num_params(fnet.gpt(v, t, layers=layers, heads=4, width=e)) == expected
    assert fnet.nets.num_params(fnet.gpt(v, t, layers=layers, heads=4, width=e, tie=True)) == expected - e * v


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
