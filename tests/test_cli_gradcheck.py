"""The ``fnet gradcheck`` command: its report and exit status (with short check lists
monkeypatched in), the one-line error convention, ``--debug``, and the real command end to end,
one test per section of its checks (so that xdist runs them side by side); a bad option is
refused before anything is printed."""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from fnet import cli, gradcheck, mlp


def _short_layers(seed=0):
    x = {"x": jnp.array([0.5, -1.0, 2.0])}
    return [gradcheck.three_way("square", lambda p: jnp.sum(p["x"] ** 2), x, {"x": 2 * x["x"]})]


def _short_networks(seed=0):
    rng = np.random.default_rng(seed)
    x, y = jnp.asarray(rng.standard_normal((4, 3))), jnp.asarray(rng.integers(0, 2, 4))
    net = mlp(3, [4], 2, weight_decay=0.1, dtype="float64")
    return [gradcheck.check_network(net, x, y, seed=seed, name="tiny net")]


@pytest.fixture
def short_lists(monkeypatch):
    monkeypatch.setattr(gradcheck, "check_layers", _short_layers)
    monkeypatch.setattr(gradcheck, "check_combinators", lambda seed=0: [])
    monkeypatch.setattr(gradcheck, "check_networks", _short_networks)


def test_gradcheck_command_passes(short_lists, capsys):
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "all 2 checks passed" in out
    rows = [line for line in out.splitlines() if line.startswith(("square", "tiny net"))]
    assert len(rows) == 2 and all(line.endswith("PASS") for line in rows)
    assert "manual~autodiff" in out


def test_gradcheck_verbose_lists_leaves(short_lists, capsys):
    assert cli.main(["gradcheck", "--verbose", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for leaf in ("dense1.W", "dense1.b", "dense2.W", "dense2.b"):
        assert f"    {leaf} " in out


def test_gradcheck_command_fails_on_a_bad_gradient(monkeypatch, capsys):
    def bad_layers(seed=0):
        x = {"x": jnp.array([0.5, -1.0, 2.0])}
        return [gradcheck.three_way("wrong square", lambda p: jnp.sum(p["x"] ** 2), x, {"x": 3 * x["x"]})]

    monkeypatch.setattr(gradcheck, "check_layers", bad_layers)
    monkeypatch.setattr(gradcheck, "check_combinators", lambda seed=0: [])
    monkeypatch.setattr(gradcheck, "check_networks", lambda seed=0: [])
    assert cli.main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: wrong square" in out
    assert "checks passed" not in out


def test_error_in_a_command_is_one_line_with_exit_2(monkeypatch, capsys):
    def boom(seed=0):
        raise ValueError("something broke: x has shape (2, 3)")

    monkeypatch.setattr(gradcheck, "check_layers", boom)
    assert cli.main(["gradcheck"]) == 2
    err = capsys.readouterr().err
    assert err == "fnet: error: something broke: x has shape (2, 3)\n"


def test_debug_reraises(monkeypatch):
    def boom(seed=0):
        raise ValueError("something broke")

    monkeypatch.setattr(gradcheck, "check_layers", boom)
    with pytest.raises(ValueError, match="something broke"):
        cli.main(["--debug", "gradcheck"])


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["gradcheck", "--seed", "x"])
    assert e.value.code == 2


SECTIONS = {
    "check_layers": ("dense (affine)", "relu", "leaky_relu", "sigmoid", "tanh", "identity", "batchnorm (train)",
                     "batchnorm (eval)", "layernorm", "dropout", "softmax", "flatten", "conv2d (3x3, pad 1)",
                     "conv2d (2x3, stride 2: floor rule)", "max_pool (2x2, stride 2)",
                     "max_pool (3x3, stride 1: overlapping)", "avg_pool (2x2, stride 1)", "global_avg_pool",
                     "batchnorm (images, train)", "groupnorm (2 groups)", "rnn_step", "lstm_step", "gru_step",
                     "lstm_forward (c0 = 0)", "rnn (h0 from the input", "lstm (h0, c0 from the input", "gru (all states)",
                     "embedding (repeated ids)", "temporal_dense", "self_attention (2 heads, causal)",
                     "self_attention (3 heads, dropout)", "cross_attention", "position_embedding", "gelu (erf)",
                     "gelu (tanh)", "layernorm (N, T, E)", "temporal_softmax_loss (batch)",
                     "temporal_softmax_loss (tokens)", "softmax_cross_entropy",
                     "mean_squared_error", "sigmoid_binary_cross_entropy", "l2_weight_decay"),
    "check_combinators": ("serial", "parallel", "fan_out + fan_in_sum", "fan_in_concat", "residual",
                          "tied_embedding", "pre-norm transformer block"),
    "check_networks": ("relu layernorm dropout", "leaky_relu batchnorm dropout", "sigmoid dropout",
                       "tanh layernorm dropout", "identity batchnorm dropout", "mse", "residual MLP", "two-branch network",
                       "small_cnn", "2-layer LSTM language model", "2-layer GPT"),
}


@pytest.mark.parametrize("section", list(SECTIONS))
def test_gradcheck_end_to_end(section, monkeypatch, capsys):
    """The real command, one section of it per test (so that the sections run in parallel): the
    one place where the whole of check_layers(), check_combinators() and check_networks() runs."""
    for other in SECTIONS:
        if other != section:
            monkeypatch.setattr(gradcheck, other, lambda seed=0: [])
    assert cli.main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("all ") and last.endswith(" checks passed"), last
    rows = [line for line in out.splitlines() if line.endswith(("PASS", "FAIL"))]
    assert rows and all(line.endswith("PASS") for line in rows)
    assert int(last.split()[1]) == len(rows)
    for name in SECTIONS[section]:
        assert any(name in line for line in rows), name


def test_python_m_fnet_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "fnet", "gradcheck", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: fnet gradcheck" in proc.stdout


def test_gradcheck_refuses_a_negative_seed_before_printing_anything(capsys):
    assert cli.main(["gradcheck", "--seed", "-1"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1
    assert err.err.startswith("fnet: error: --seed must be an integer with 0 <= seed < 2**63, got -1")
