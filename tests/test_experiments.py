"""fnet.experiments, the curriculum's experiments: each ``--quick`` run, the qualitative result the
source material teaches, and the module protocol (JSON-serialisable result, a summary table, a
PNG); the 2-D optimizer paths against the optimizers; the hyperparameter search.

MNIST-based experiments read the real files through ``$FNET_DATA`` (``shared_data_dir``: skipped
without it, failing with ``FNET_REQUIRE_DATA=1``). The ``fnet experiment`` command's folder rules
are in test_cli_experiment.py.
"""

import json

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tolerances import rounding_rtol
from hypothesis import given, settings
from hypothesis import strategies as st

import fnet
from fnet import experiments, nets, optim, train
from fnet.experiments import _common
from fnet.experiments import hyperparameter_search as hs
from fnet.experiments import optimizer_paths as op

MINE = ("optimizer-mnist", "init-histograms", "init-compare", "batchnorm-scales", "depth-sensitivity",
        "overfit-weight-decay", "overfit-dropout", "adagrad-decay", "linear-regression", "logistic-regression",
        "loop-vs-vectorized", "shallow-net", "linear-collapse", "sin-regression", "numerical-descent", "conv-filters", "cnn-overfit", "conv-vs-mlp",
        "vanishing-gradients", "char-lm", "bptt-truncation", "attention-maps")


def _protocol(name, tmp_path, data_dir=None):
    """Run ``name`` quick, check the protocol, return the JSON round-tripped result."""
    mod = experiments.get(name)
    assert mod.NAME == name and mod.DESCRIPTION and "\n" not in mod.DESCRIPTION
    result = json.loads(json.dumps(mod.run(quick=True, data_dir=data_dir), allow_nan=False))
    assert isinstance(mod.summary(result), str) and mod.summary(result).count("\n") >= 1
    if pytest.importorskip("matplotlib"):
        out = tmp_path / f"{name}.png"
        mod.plot(result, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return result


def test_registry_lists_the_curriculum_order():
    names = list(experiments.registry())
    assert [n for n in names if n in MINE] == list(MINE)
    assert names[0] == "optimizer-paths"


# ------------------------------------------------------------------------------------- helpers


def _tiny_problem():
    """A float64 3-4-2 network, its params and 8 samples: (net, x, y, params)."""
    net = nets.mlp(3, [4], 2, dtype="float64")
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.float64)
    params, _ = net.init(jax.random.PRNGKey(1))
    return net, x, jnp.arange(8) % 2, params


def test_train_iterations_full_batch_equals_repeated_train_steps():
    net, x, y, params = _tiny_problem()
    opt = optim.momentum(0.1)
    got, _, _, trace = _common.train_iterations(net, opt, x, y, iterations=3, batch_size=None,
                                                key=jax.random.PRNGKey(2), params=params)
    step = train.make_train_step(net, opt, jit=False)
    p, s, o = params, {}, opt.init(params)
    for k in range(3):
        p, s, o, m = step(p, s, o, (x, y), None)
        np.testing.assert_allclose(trace["loss"][k], m["loss"], rtol=1e-12)
    chex.assert_trees_all_close(got, p, rtol=1e-12)


def test_train_epochs_records_metrics_per_epoch():
    net, x, y, params = _tiny_problem()
    _, _, curves = _common.train_epochs(net, optim.sgd(0.1), x, y, epochs=5, batch_size=4, key=jax.random.PRNGKey(2),
                                        params=params, metrics=lambda p, s: {"acc": _common.accuracy(net, p, s, x, y)})
    chex.assert_shape([curves["loss"], curves["acc"]], (5,))
    assert np.all((np.asarray(curves["acc"]) >= 0) & (np.asarray(curves["acc"]) <= 1))


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e3, 1e3)))
def test_smooth_curve_keeps_length_and_constants(values):
    out = _common.smooth_curve(values)
    assert out.shape == values.shape
    np.testing.assert_allclose(_common.smooth_curve(np.full_like(values, 3.0)), 3.0, rtol=1e-12)
    assert out.min() >= values.min() - 1e-9 and out.max() <= values.max() + 1e-9  # a weighted average


def test_smooth_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="smooth_curve"):
        _common.smooth_curve(np.zeros((2, 2)))


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 5)), elements=st.floats(-10, 10)))
def test_unit_spread_is_zero_for_identical_units(w):
    from fnet.experiments.init_compare import unit_spread

    identical = np.repeat(w[:, :1], w.shape[1], axis=1)
    assert float(unit_spread(identical)) <= 1e-14 * (1 + np.abs(w).max())  # 0 up to the rounding of the mean
    assert float(unit_spread(w)) >= 0.0


def test_normal_equation_matches_lstsq_and_checks_shapes():
    from fnet.experiments.linear_regression import normal_equation

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal(50)
    w, b = normal_equation(x, y)
    ref = np.linalg.lstsq(np.c_[x, np.ones(50)], y, rcond=None)[0]
    np.testing.assert_allclose(np.append(w, b), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="normal_equation"):
        normal_equation(x[:, 0], y)


# ------------------------------------------------------------------------------- experiments


def test_optimizer_mnist(tmp_path, shared_data_dir):  # noqa: F811
    r = _protocol("optimizer-mnist", tmp_path, shared_data_dir)
    opts = r["optimizers"]
    assert list(opts) == ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam"]
    for name, o in opts.items():
        assert len(o["loss"]) == r["iterations"]
        assert o["final_loss"] < o["loss"][0], name  # every optimizer learns
    # The source's lesson: plain SGD is the slowest of them.
    assert opts["SGD"]["final_loss"] > max(opts[k]["final_loss"] for k in ("Momentum", "AdaGrad", "Adam"))


def test_init_histograms(tmp_path):
    r = _protocol("init-histograms", tmp_path)["results"]
    relu_he, relu_small = r["relu"]["He"]["layer_std"], r["relu"]["std=0.01"]["layer_std"]
    assert relu_he[-1] > 0.5 * relu_he[0]            # He keeps ReLU activations spread through 5 layers
    assert relu_small[-1] < 1e-3 * relu_small[0]     # std 0.01 collapses them
    assert r["sigmoid"]["std=1"]["saturated"][-1] > 0.5  # std 1 + sigmoid: mass piles up at 0 and 1
    assert r["sigmoid"]["Xavier"]["saturated"][-1] < 0.05
    for act in r.values():
        for res in act.values():
            np.testing.assert_allclose(np.sum(res["counts"], axis=1) <= 1 + 1e-6, True)


def test_init_compare(tmp_path, shared_data_dir):  # noqa: F811
    runs = _protocol("init-compare", tmp_path, shared_data_dir)["runs"]
    assert runs["Xavier"]["final_loss"] < runs["std=0.01"]["final_loss"] - 0.02
    assert runs["He"]["final_loss"] < runs["std=0.01"]["final_loss"] - 0.02
    # Zero init: the units of every hidden layer stay identical; He's do not.
    for label in ("zeros", "zeros (sigmoid)"):
        assert max(runs[label]["unit_spread"]) < 1e-9, label
    assert min(runs["He"]["unit_spread"]) > 1e-2
    assert runs["zeros (sigmoid)"]["weight_change"][-1] > 0  # ... even though the weights do move


def test_batchnorm_scales(tmp_path, shared_data_dir):  # noqa: F811
    r = _protocol("batchnorm-scales", tmp_path, shared_data_dir)
    bn, plain = np.asarray(r["batchnorm"])[:, -1], np.asarray(r["plain"])[:, -1]
    small = np.asarray(r["scales"]) < 0.1
    assert np.sum(bn[small] > plain[small]) > 0.7 * small.sum()  # batch norm wins at most small scales
    assert r["bn_wins"] > len(r["scales"]) // 2


def test_depth_sensitivity(tmp_path, shared_data_dir):  # noqa: F811
    d = _protocol("depth-sensitivity", tmp_path, shared_data_dir)["depths"]
    assert d["3-layer"]["cells_at_100"] > d["5-layer"]["cells_at_100"]  # the deeper net is more sensitive
    assert d["5-layer"]["cells_at_100"] >= 1                               # ... but can still overfit


@pytest.mark.parametrize("name", ["overfit-weight-decay", "overfit-dropout"])
def test_regularization_shrinks_the_gap(tmp_path, shared_data_dir, name):  # noqa: F811
    runs = _protocol(name, tmp_path, shared_data_dir)["runs"]
    assert runs["none"]["train_acc"][-1] == 1.0  # the unregularized net memorizes its training set
    # The gap shrinks, over the run (the source's figure; about 0.04-0.07 for weight decay and
    # 0.14-0.21 for dropout over init seeds 0-3 in quick mode) and at its end.
    assert runs["regularized"]["mean_gap"] < runs["none"]["mean_gap"] - 0.03
    assert runs["regularized"]["final_gap"] < runs["none"]["final_gap"]


def test_adagrad_decay(tmp_path, shared_data_dir):  # noqa: F811
    opts = _protocol("adagrad-decay", tmp_path, shared_data_dir)["optimizers"]
    assert opts["AdaGrad"]["decay_ratio"] < 0.6                      # AdaGrad's steps shrink ...
    assert opts["AdaGrad"]["decay_ratio"] < opts["Adam"]["decay_ratio"] - 0.1  # ... faster than Adam's


def test_linear_regression(tmp_path):
    r = _protocol("linear-regression", tmp_path)
    ne, gd = r["normal_equation"], r["methods"]["batch GD"]
    np.testing.assert_allclose(gd["w"] + [gd["b"]], ne["w"] + [ne["b"]], atol=1e-3)  # they agree
    np.testing.assert_allclose(ne["w"] + [ne["b"]], r["true_w"] + [r["true_b"]], atol=0.15)
    for name, m in r["methods"].items():
        assert m["final_param_error"] < 0.1 * m["param_error"][0], name


def test_logistic_regression(tmp_path):
    r = _protocol("logistic-regression", tmp_path)
    assert r["accuracy"] > 0.85
    assert r["loss"][-1] < 0.5 * r["loss"][0]


def test_shallow_net(tmp_path):
    m = _protocol("shallow-net", tmp_path)["models"]
    assert m["n_h=4 (main)"]["accuracy"] > m["logistic regression"]["accuracy"] + 0.2
    assert m["logistic regression"]["accuracy"] < 0.65  # a line cannot separate the flower


def test_sin_regression(tmp_path):
    r = _protocol("sin-regression", tmp_path)
    source = r["setups"]["source"]
    np.testing.assert_allclose(source["x"], np.arange(0, 2 * np.pi, 0.1)[::3], rtol=1e-6)  # the source's grid
    for s in r["setups"].values():
        mse = list(s["mse"].values())
        assert mse[-1] < 0.5 * mse[0]  # the 1-3-1 net's error falls
        assert np.asarray(s["fits"][str(r["epochs"])]).shape == (200,)


def test_linear_collapse(tmp_path):
    from fnet.experiments import linear_collapse

    r = _protocol("linear-collapse", tmp_path)
    m = r["models"]
    assert r["collapse_max_diff"] < 1e-5  # float32 scores: the deep net IS x W_eff + b_eff
    assert r["cosine"] > 0.999 and r["boundary_agreement"] > 0.99  # logistic regression's line
    assert abs(m["deep linear"]["accuracy"] - m["logistic regression"]["accuracy"]) < 0.01
    assert m["2-4-1 tanh"]["accuracy"] > m["deep linear"]["accuracy"] + 0.1  # one nonlinearity bends it
    # collapse() at a random point, in float64: exact up to rounding
    net = nets.mlp(2, [3, 5], 2, activation="identity", dtype="float64")
    params, _ = net.init(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda a: a + 0.3, params)  # nonzero biases
    x = jnp.asarray(np.random.default_rng(0).standard_normal((6, 2)))
    w, b = linear_collapse.collapse(params, 3)
    np.testing.assert_allclose(net.apply(params, x), x @ w + b, rtol=1e-12)


def test_loop_vs_vectorized(tmp_path):
    from fnet.experiments import loop_vs_vectorized as lv

    r = _protocol("loop-vs-vectorized", tmp_path)
    (row,) = r["rows"]
    assert row["max_rel_diff"] < 1e-9  # the three implementations compute the same pass
    assert row["seconds"]["python loops"] > row["seconds"]["numpy vectorized"]  # by orders of magnitude
    # the loops against an independent reference: jax.grad of the same cost
    rng = np.random.default_rng(1)
    x, y, w = rng.standard_normal((7, 3)), rng.integers(0, 2, 7).astype(float), rng.standard_normal(3)
    cost, dw, db = lv.loops(x.tolist(), y.tolist(), w.tolist(), 0.2)

    def j(w, b):
        a = jax.nn.sigmoid(x @ w + b)
        return -jnp.mean(y * jnp.log(a) + (1 - y) * jnp.log(1 - a))

    gw, gb = jax.grad(j, argnums=(0, 1))(jnp.asarray(w), 0.2)
    np.testing.assert_allclose([cost, *dw, db], [j(w, 0.2), *gw, gb], rtol=1e-12)


def test_numerical_descent(tmp_path):
    r = _protocol("numerical-descent", tmp_path)
    assert r["dtype"] == "float64"
    assert r["max_abs"] < 1e-9
    np.testing.assert_allclose(r["final"], r["exact"], rtol=1e-6)


# ------------------------------------------------------------------------------- convolutional


def test_conv_filters(tmp_path, shared_data_dir):  # noqa: F811
    r = _protocol("conv-filters", tmp_path, shared_data_dir)
    assert np.asarray(r["before"]["filters"]).shape == (30, 5, 5)
    # Random filters have no spatial structure; trained ones are smooth (0.55 in the full run).
    assert abs(r["before"]["smoothness"]) < 0.1 and r["after"]["smoothness"] > r["before"]["smoothness"] + 0.15
    assert r["test_accuracy"] > 0.3


def test_cnn_overfit(tmp_path, shared_data_dir):  # noqa: F811
    r = _protocol("cnn-overfit", tmp_path, shared_data_dir)
    assert r["n_train"] == 100 and r["train_acc"][-1] == 1.0  # cs231n's sanity check: it memorizes 100 images
    assert r["epochs_to_100"] is not None and r["test_acc"][-1] < 0.9  # ... and overfits them


def test_conv_vs_mlp(tmp_path, shared_data_dir):  # noqa: F811
    r = _protocol("conv-vs-mlp", tmp_path, shared_data_dir)
    assert abs(r["params"]["cnn"] - r["params"]["mlp"]) < 0.01 * r["params"]["mlp"]  # the same budget
    assert set(r["results"]) == {"mnist", "fashion-mnist"}
    for res in r["results"].values():
        assert res["cnn"]["test_accuracy"] > 0.6 and res["mlp"]["test_accuracy"] > 0.6
        assert res["cnn"]["train_loss"][-1] < res["cnn"]["train_loss"][0]


# ------------------------------------------------------------------------------- recurrent


def test_vanishing_gradients(tmp_path):
    r = _protocol("vanishing-gradients", tmp_path)
    cells, t = r["cells"], r["T"]
    assert list(cells) == ["RNN", "LSTM", "GRU", "LSTM, forget bias 0"]
    # Manual BPTT against jax.grad, float32: the gradient reaching h_t passes through T - t steps,
    # each a sum over the 4H gate pre-activations (the LSTM's, the widest).
    rtol = rounding_rtol(np.float32, terms=t * 4 * r["hidden"])
    for name, c in cells.items():
        assert len(c["manual"]) == len(c["autodiff"]) == t + 1, name
        assert max(c["rel_diff"]) <= rtol, name
        assert c["dh0_rel_diff"] <= rtol, name  # the step-by-step reverse scan is the module's BPTT
    # The classic result: the tanh RNN's gradient vanishes faster than the LSTM's.
    assert cells["RNN"]["factor_per_step"] < cells["LSTM"]["factor_per_step"] - 0.05
    assert cells["RNN"]["manual"][0] < 0.1 * cells["LSTM"]["manual"][0]


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_vanishing_gradients_manual_equals_autodiff_in_float64(name):
    from fnet.experiments import vanishing_gradients as vg

    n, t, d, hidden, v = 3, 7, 5, 4, 6
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (n, t, d), jnp.float64)
    y = jax.random.randint(keys[1], (n, t), 0, v)
    cell = vg.CELLS[name]
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), vg.init_cell(cell, x, hidden, keys[2]))
    head = {"W": jax.random.normal(keys[3], (hidden, v), jnp.float64), "b": jnp.zeros(v, jnp.float64)}
    manual, auto, dh0, _ = vg.state_grads(cell, params, x, head, y)
    chex.assert_shape([manual, auto], (t + 1, n, hidden))
    rtol = rounding_rtol(np.float64, terms=t * 4 * hidden)
    np.testing.assert_allclose(manual, auto, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(auto))))
    np.testing.assert_allclose(manual[0], dh0, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(dh0))))
    assert float(jnp.max(jnp.abs(manual[:-1]))) > 0  # the loss at T reaches every earlier state


def test_char_lm(tmp_path):
    r = _protocol("char-lm", tmp_path)
    cells = r["cells"]
    assert list(cells) == ["rnn", "lstm", "gru"]
    lstm_params = cells["lstm"]["params"]
    assert all(abs(c["params"] - lstm_params) <= 0.05 * lstm_params for c in cells.values())  # equal budgets
    assert cells["rnn"]["hidden"] > cells["gru"]["hidden"] > cells["lstm"]["hidden"]
    for c in cells.values():
        assert c["step"][-1] == r["steps"] and np.log(65) - 1 < c["val_loss"] < np.log(65)  # it learned something
    vocab = set(fnet.data.load_text("shakespeare").vocab)
    samples = [*r["stages"].values(), *r["temperatures"].values()]
    assert list(r["stages"]) == ["20", "40"] and len(r["temperatures"]) == 5
    assert all(len(s) == 40 and set(s) <= vocab for s in samples)


def test_char_lm_matched_widths_are_the_closest_parameter_counts():
    from fnet.experiments import char_lm

    widths = char_lm.matched_widths(65, 64, 256)
    target = char_lm.num_params(65, "lstm", 64, 256)
    for cell, h in widths.items():
        count = lambda width: abs(char_lm.num_params(65, cell, 64, width) - target)  # noqa: E731
        assert count(h) <= min(count(h - 1), count(h + 1)), cell
    assert widths["lstm"] == 256 and widths["rnn"] > widths["gru"] > 256


def test_bptt_truncation(tmp_path):
    r = _protocol("bptt-truncation", tmp_path)
    runs = r["runs"]
    assert [run["truncation"] for run in runs] == [2, 16]
    assert len({run["updates"] for run in runs}) == 1  # the same updates of the same characters for every T
    assert all(run["batch"] * run["truncation"] == r["chars_per_update"] for run in runs)
    for run in runs:
        # float32 manual BPTT against jax.grad: a sum over T steps of the 4H gate pre-activations
        assert run["grad_rel_diff_vs_autodiff"] <= rounding_rtol(np.float32, terms=run["truncation"] * 4 * r["hidden"])
        assert run["val_loss"] < np.log(65)


def test_bptt_truncation_gradients_equal_autodiff_from_a_carried_state():
    from fnet.experiments import bptt_truncation as bt

    net = fnet.char_lm(7, embed=3, hidden=4, context=5, dtype="float64")  # the suite runs with float64 enabled
    params, _ = net.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 6)
    x, y, x2, y2 = (jax.random.randint(k, (2, 5), 0, 7) for k in keys[:4])
    h0, c0 = (jax.random.normal(k, (2, 4), jnp.float64) for k in keys[4:])
    loss, grads, (h_last, c_last) = bt.loss_and_grad(params, x, y, h0, c0)
    auto = jax.grad(lambda p: bt.loss_and_grad(p, x, y, h0, c0)[0])(params)
    chex.assert_trees_all_close(grads, auto, rtol=rounding_rtol(np.float64, terms=5 * 16), atol=1e-14)
    # the carried state continues the stream: two windows from it end where one of 10 steps does
    _, _, (h2, c2) = bt.loss_and_grad(params, x2, y2, h_last, c_last)
    lstm = params["lstm1"]
    e = params["embedding1"]["W"][jnp.concatenate([x, x2], axis=1)]
    h, c, _ = fnet.layers.lstm_state_forward(e, h0, c0, lstm["Wx"], lstm["Wh"], lstm["b"])
    np.testing.assert_allclose(h2, h[:, -1], rtol=1e-13)
    np.testing.assert_allclose(c2, c, rtol=1e-13)


# ------------------------------------------------------------------------------- attention


def test_attention_maps(tmp_path):
    from fnet.experiments import attention_maps as am

    r = _protocol("attention-maps", tmp_path)
    c = r["config"]
    w = np.asarray(r["line_weights"])
    t = len(am.LINE)
    assert w.shape == (c["layers"], c["heads"], t, t)
    # every row a distribution over the keys (float32 softmax: a sum of <= T terms; the JSON keeps
    # 4 decimals, so each of the T weights is off by up to 5e-5), zero above the diagonal (causal)
    np.testing.assert_allclose(w.sum(-1), 1, atol=t * 5e-5)
    assert np.all(np.triu(w, 1) == 0) and np.all(w >= 0)
    assert r["checks"]["row_sum_error"] <= rounding_rtol(np.float32, terms=c["context"])
    assert r["checks"]["future_weight"] == 0.0  # masked scores are the most negative float: exp underflows to 0
    assert len(r["heads"]) == c["layers"] * c["heads"] and r["windows"] == c["windows"]
    for h in r["heads"]:
        assert all(v is None or 0 <= v <= 1 for v in h["scores"].values())
        assert 0 <= h["entropy"] <= r["uniform_entropy"] * (1 + 1e-6)  # each position's is <= log(t + 1)
        assert set(h["follows"]) <= set(am.PATTERNS)
    assert r["positions"]["previous"] == r["windows"] * (c["context"] - 1)


def test_attention_maps_quote_pairs_and_word_starts():
    from fnet.experiments import attention_maps as am

    assert am.quote_pairs(am.LINE) == [(23, 0), (57, 36)]  # 'Frets, ... these?' and 'I'll fume\nwith them:'
    assert am.quote_pairs("talk'") == [] and am.quote_pairs("'tis talk'd") == []  # an unknown next char; elisions
    targets = am.pattern_targets("ab cde\nfg")
    assert targets["word_start"] == [(5, 3)]  # "e" -> "c"; "d" is c's neighbour, "fg" too short
    assert targets["newline"] == [(8, 6)]     # "g" -> "\n"; "f" is its neighbour
    assert targets["previous"][0] == (1, 0) and targets["self"][-1] == (8, 8)


def test_attention_maps_scores_of_known_patterns():
    """A head that puts all its weight on the previous character and one that attends uniformly:
    the scores, chance levels, entropies and labels follow from the definitions."""
    from fnet.experiments import attention_maps as am

    windows = ["ab cdefg hij klmn opq rstuv wxyz", "the quick brown fox jumps over t"]
    t = len(windows[0])  # long enough for 1 > LIFT x chance
    previous = np.eye(t, k=-1)
    previous[0, 0] = 1
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    maps = np.broadcast_to(np.stack([previous, uniform])[None, None], (1, 2, 2, t, t))
    r = am.head_scores([(maps, windows)])
    chance = np.mean(1 / np.arange(2, t + 1))
    np.testing.assert_allclose(r["scores"]["previous"], [[1.0, chance]], rtol=1e-12)
    np.testing.assert_allclose(r["chance"]["previous"], chance, rtol=1e-12)
    np.testing.assert_allclose(r["scores"]["word_start"][0][1], r["chance"]["word_start"], rtol=1e-12)
    np.testing.assert_allclose(r["entropy"], [[0.0, r["uniform_entropy"]]], atol=1e-12)
    assert r["scores"]["matching_quote"] == [[None, None]] and r["chance"]["matching_quote"] is None
    assert am.classify(r["scores"], r["chance"]) == [[["previous"], []]]
    assert r["checks"] == {"row_sum_error": pytest.approx(0, abs=1e-15), "future_weight": 0.0}


def _layernorm(z, p, eps=1e-5):
    return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps) * p["gamma"] + p["beta"]


def _numpy_attention_maps(body, table, x, heads):
    """The attention weights of every block of a GPT recomputed in NumPy from its parameters:
    the embeddings, then per block the layer norm, softmax(q k^T / sqrt(d)) under the causal mask,
    the heads' output and the GELU MLP, each added to the residual stream."""
    from scipy.special import erf

    n, t = x.shape
    h = table[x] + body["position_embedding1"]["P"][:t]
    maps, k = [], 1
    while f"serial{k}" in body:
        attn = body[f"serial{k}"]["residual1"]["branches"]["block"]
        mlp = body[f"serial{k}"]["residual2"]["branches"]["block"]
        z, sa = _layernorm(h, attn["layernorm1"]), attn["self_attention1"]
        q, key, v = ((z @ sa[f"W{c}"] + sa[f"b{c}"]).reshape(n, t, heads, -1).transpose(0, 2, 1, 3) for c in "qkv")
        scores = q @ key.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        maps.append(p)
        h = h + (p @ v).transpose(0, 2, 1, 3).reshape(n, t, -1) @ sa["Wo"] + sa["bo"]
        a = _layernorm(h, mlp["layernorm1"]) @ mlp["temporal_dense1"]["W"] + mlp["temporal_dense1"]["b"]
        h = h + (a * 0.5 * (1 + erf(a / np.sqrt(2)))) @ mlp["temporal_dense2"]["W"] + mlp["temporal_dense2"]["b"]
        k += 1
    return np.stack(maps)


@pytest.mark.parametrize("tie", [False, True])
def test_attention_maps_are_the_forward_pass_weights(tie):
    """The weights read from the forward cache equal an independent NumPy forward pass of the
    same parameters (float64), in every layer and head; rows sum to 1 and are causal."""
    from fnet.experiments import attention_maps as am

    layers_, heads, width, t = 2, 2, 8, 6
    net = fnet.gpt(11, context=t, layers=layers_, heads=heads, width=width, tie=tie, dtype="float64")
    variables = net.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)  # move every parameter off its init (biases 0, gammas 1)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a) + rng.normal(0, 0.3, a.shape), variables.params)
    x = rng.integers(0, 11, (3, t))
    maps = am.attention_maps(net, (params, variables.state), x)
    assert maps.shape == (layers_, 3, heads, t, t)
    body, table = (params["body"], params["embedding"]["W"]) if tie else (params, params["embedding1"]["W"])
    expected = _numpy_attention_maps(body, table, x, heads)
    # the longest chain of sums per block: layer norms (E), projections (E), q k^T (d), softmax
    # and weighted values (T), Wo (E), the MLP (E + 4E)
    terms = layers_ * (9 * width + width // heads + 2 * t)
    np.testing.assert_allclose(maps, expected, rtol=rounding_rtol(np.float64, terms=terms),
                               atol=rounding_rtol(np.float64, terms=terms))
    np.testing.assert_allclose(maps.sum(-1), 1, rtol=rounding_rtol(np.float64, terms=t))
    assert np.all(np.triu(maps, 1) == 0)
    _, _, cache = net.module.forward(params, variables.state, x, train=False)
    prefix = "body/" if tie else ""
    assert [path for path, _ in am.attention_weights(net.module, cache)] == [
        f"{prefix}serial{k}/residual1/branches/block/self_attention1" for k in (1, 2)]


# --------------------------------------------------------------------------------------------
# optimizer-paths: the 2-D optimizer comparison (the scanned path, numerical descent, the protocol)
# --------------------------------------------------------------------------------------------


def test_numerical_descent_reaches_the_origin_like_the_source():
    path = op.numerical_descent(lambda x: x[0] ** 2 + x[1] ** 2, jnp.array([-3.0, 4.0]), lr=0.1, steps=100)
    assert path.shape == (101, 2) and path.dtype == jnp.float64
    np.testing.assert_array_equal(path[0], [-3.0, 4.0])
    assert np.all(np.abs(path[-1]) < 1e-9)
    # The source prints [-6.11110793e-10  8.14814391e-10]; exact descent gives 0.8**100 * x0.
    np.testing.assert_allclose(path[-1], np.array([-3.0, 4.0]) * 0.8**100, rtol=1e-6)


def test_optimize_path_is_a_scan_of_the_optimizer():
    opt = optim.momentum(0.1)
    path = op.optimize_path(opt, op.f, op.X0, 5)
    assert path.shape == (6, 2)
    x, state = jnp.asarray(op.X0), opt.init(jnp.asarray(op.X0))
    for k in range(5):
        updates, state = opt.update(jax.grad(op.f)(x), state, x)
        x = optim.apply_updates(x, updates)
        np.testing.assert_allclose(path[k + 1], x, rtol=1e-12)


def test_sgd_path_closed_form():
    """On f = x**2/20 + y**2, SGD multiplies x by (1 - lr/10) and y by (1 - 2 lr) per step."""
    path = op.optimize_path(optim.sgd(0.95), op.f, op.X0, 30)
    k = np.arange(31)[:, None]
    np.testing.assert_allclose(path, np.array(op.X0) * np.array([1 - 0.095, 1 - 1.9]) ** k, rtol=1e-10)


def test_numerical_descent_matches_sgd_path():
    num = op.numerical_descent(op.f, op.X0, 0.95, 30)
    auto = op.optimize_path(optim.sgd(0.95), op.f, op.X0, 30)
    np.testing.assert_allclose(num, auto, atol=1e-8)


def test_experiment_protocol(tmp_path):
    assert op.NAME == "optimizer-paths" and "\n" not in op.DESCRIPTION
    result = op.run(quick=True)
    result = json.loads(json.dumps(result))  # JSON-serialisable
    assert set(result["optimizers"]) == {"SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam"}
    for name, r in result["optimizers"].items():
        assert np.asarray(r["path"]).shape == (31, 2)
        assert r["final_value"] < op.f(np.array(op.X0)) / 10, name  # every optimizer makes progress
    assert {k: r["learning_rate"] for k, r in result["optimizers"].items() if k in ("SGD", "Momentum", "AdaGrad", "Adam")} == {
        "SGD": 0.95, "Momentum": 0.1, "AdaGrad": 1.5, "Adam": 0.3}
    text = op.summary(result)
    assert all(name in text for name in result["optimizers"])
    pytest.importorskip("matplotlib")
    out = tmp_path / "paths.png"
    op.plot(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# hyperparameter-search in quick mode (real MNIST)
# --------------------------------------------------------------------------------------------


def test_quick_search(shared_data_dir, tmp_path):
    result = json.loads(json.dumps(hs.run(quick=True, data_dir=shared_data_dir)))  # JSON-serialisable
    assert hs.NAME == "hyperparameter-search" and "\n" not in hs.DESCRIPTION
    first, second = result["rounds"]
    assert len(first["trials"]) == hs.QUICK["num_trials"] and len(first["trials"][0]["val_acc"]) == hs.QUICK["epochs"]
    for rnd in result["rounds"]:
        scores = [t["final_val_acc"] for t in rnd["trials"]]
        assert scores == sorted(scores, reverse=True)
    # What the source teaches: with SGD and a short budget the good trials have learning rates in
    # the upper part of 10**U(-6, -2); weight decay hardly matters at these values.
    lrs = np.array([t["hparams"]["learning_rate"] for t in first["trials"][:3]])
    assert np.all(lrs > 1e-4), lrs
    # The second round searches the narrowed ranges.
    lo, hi, _ = second["ranges"]["learning_rate"]
    assert 1e-6 <= lo <= hi <= 1e-2 and np.log10(hi / lo) < 4
    text = hs.summary(result)
    assert "round 2" in text and "learning_rate" in text
    pytest.importorskip("matplotlib")
    hs.plot(result, tmp_path / "hs.png")
    assert (tmp_path / "hs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
