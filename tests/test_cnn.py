"""Convolutional networks: the conv/pool/norm modules as compositions, the three ready networks
against their sources' parameter shapes, images with a channel axis from fnet.data, and
`fnet train --model ...` end to end (train, resume, evaluate) on the bundled 8x8 digits. (The
layers themselves: tests/test_conv_layers.py; their gradients and a small CNN's: `fnet gradcheck`.)"""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _cli_helpers import one_line_error

import fnet
from fnet import cli, data, models, nets, optim
from fnet import train as fnet_train
from fnet.combinators import serial
from fnet.modules import avg_pool, conv2d, dense, flatten, global_avg_pool, groupnorm, max_pool, relu

CNN_SMALL = ["--data", "digits", "--model", "small_cnn", "--filters", "4,8", "--dense-width", "16", "--epochs", "2",
             "--batch-size", "128", "--quiet"]


@pytest.mark.parametrize("model, params", [
    # The sources' parameter shapes for 28x28 MNIST, written out:
    ("simple_convnet", 30 * 25 + 30 + 30 * 12 * 12 * 100 + 100 + 100 * 10 + 10),      # DLFS ch. 7
    ("three_layer_convnet", 32 * 49 + 32 + 32 * 14 * 14 * 100 + 100 + 100 * 10 + 10),  # cs231n
    ("deep_convnet", 16 * 9 + 16 + 16 * 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 * 32 * 9 + 32 + 64 * 32 * 9 + 64
     + 64 * 64 * 9 + 64 + 64 * 4 * 4 * 50 + 50 + 50 * 10 + 10),                        # DLFS ch. 8
])
def test_ready_networks_have_their_sources_shapes(model, params):
    net = nets.cnn(model, (1, 28, 28), 10)
    assert nets.num_params(net) == params
    assert net.input_shape == (1, 28, 28) and net.output_shape == (10,)
    assert fnet.summary(net).splitlines()[-1] == f"total: {params:,} parameters"


def test_a_cnn_composes_like_any_network_and_trains_with_fit():
    ds = data.load("digits", flatten=False)
    assert ds.x_train.shape[1:] == (1, 8, 8)
    module = serial(conv2d(16, 3, pad=1), groupnorm(4), relu(), max_pool(2), conv2d(32, 3, pad=1), relu(),
                    avg_pool(2, stride=1), global_avg_pool(), dense(10))
    net = fnet.network(module, (1, 8, 8))
    result = fnet_train.fit(net, optim.adam(3e-3), ds.x_train, ds.y_train, epochs=8, batch_size=64, progress=False)
    test = fnet_train.evaluate(net, result.params, result.state, ds.x_test, ds.y_test)
    assert test["accuracy"] > 0.8


def test_flat_images_are_refused_with_a_hint():
    net = nets.cnn("simple_convnet", (1, 28, 28), 10)
    variables = net.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"net.apply: x has shape \(2, 784\) but the network expects samples of shape "
                                         r"\(1, 28, 28\).*flatten=False"):
        net.apply(variables, jnp.zeros((2, 784)))
    with pytest.raises(ValueError, match=r"fit: training features have shape \(5, 784\) .*flatten=False"):
        fnet_train.fit(net, optim.sgd(), np.zeros((5, 784), np.float32), np.zeros(5, np.int32), batch_size=5)


@pytest.mark.parametrize("build, message", [
    (lambda: conv2d(4, 9), r"serial\[0\] \(conv2d1\): conv2d: the 9x9 kernel is larger than the input \(8x8\)"),
    (lambda: max_pool(9), r"max_pool: the 9x9 pooling window is larger than the input \(8x8\)"),
    (lambda: groupnorm(3), r"groupnorm: 3 groups do not divide the 1 channels"),
    (lambda: flatten(), None),
], ids=["kernel", "pool", "groups", "ok"])
def test_bad_convolutional_shapes_are_named_at_init(build, message):
    module = serial(build(), flatten(), dense(2))
    if message is None:
        module.init(jax.random.PRNGKey(0), (None, 1, 8, 8))
        return
    with pytest.raises(ValueError, match=message):
        module.init(jax.random.PRNGKey(0), (None, 1, 8, 8))


def test_conv_module_arguments_are_checked_when_built():
    with pytest.raises(ValueError, match=r"conv2d: stride must be a positive int, got 0"):
        conv2d(4, 3, stride=0)
    with pytest.raises(ValueError, match=r"conv2d: kernel_size must be an int or a pair \(h, w\)"):
        conv2d(4, (3, 3, 3))
    with pytest.raises(ValueError, match=r"cnn: unknown model 'alexnet'"):
        nets.cnn("alexnet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match=r"cnn: deep_convnet has 6 convolutions, so filters needs 6 widths"):
        nets.cnn("deep_convnet", (1, 28, 28), 10, filters=(8, 8))
    with pytest.raises(ValueError, match=r"serial\[0\] \(conv2d1\): conv2d: expects images of shape \(N, C, H, W\), "
                                         r"got \(None, 64\).*flatten=False"):
        fnet.network(serial(conv2d(4, 3), flatten(), dense(2)), (64,))


def test_model_names_agree_between_the_command_line_and_the_library():
    # The command reads the registry: every model it trains is listed in its help and accepted by
    # name; the language models are refused in one line until the command trains them.
    train_help = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions
                      if "--model" in a.option_strings).help
    trained = [name for name, model in models.MODELS.items() if model.cell is None]
    assert all(name in train_help for name in trained)
    assert all(cli._model_name(name.replace("_", "-")) == name for name in trained)
    for name in set(models.MODELS) - set(trained):
        assert name not in train_help.split(" (")[0]
        with pytest.raises(ValueError, match=rf"--model {name} is a character language model, which fnet train "
                                             "does not train yet; build it with fnet.models.char_lm"):
            cli._model_name(name)
    assert cli._model_name("cnn") == "small_cnn"  # the old name, for run folders saved before the rename
    assert set(cli.ACTIVATIONS) == set(fnet.modules.ACTIVATIONS)
    # one place for a model's facts: its builder uses the registry's widths and dropout
    for name, model in models.MODELS.items():
        if model.images:
            cfg = nets.cnn(name, (1, 28, 28), 10).config
            assert cfg.model == name and models.describe_cnn(cfg).startswith(name)
            assert models.preset(name, "mnist")["epochs"] >= 1 and models.preset(name, "sin") == {
                "hidden": (), "filters": (), "dense_width": 0, "dropout": None, **model.presets[None]}


def test_train_resume_and_evaluate_a_cnn_on_digits(tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli.main(["train", *CNN_SMALL, "--out", str(whole)]) == 0
    assert cli.main(["train", *CNN_SMALL, "--epochs", "1", "--out", str(parts)]) == 0
    assert cli.main(["train", *CNN_SMALL, "--out", str(parts), "--resume"]) == 0
    h_whole, h_parts = (json.loads((d / "history.json").read_text()) for d in (whole, parts))
    assert h_parts["train_loss"] == h_whole["train_loss"]  # bitwise resume, as for the MLP
    a, b = (fnet.checkpoint.load(d / "checkpoint.safetensors")["params"] for d in (whole, parts))
    chex.assert_trees_all_equal(a, b)
    config = json.loads((whole / "config.json").read_text())
    assert config["net"]["model"] == "small_cnn" and config["net"]["input_shape"] == [1, 8, 8]
    assert config["net"]["filters"] == [4, 8] and config["args"]["model"] == "small_cnn"
    assert config["net"]["dense_width"] == 16 and config["args"]["dense_width"] == 16 and config["args"]["hidden"] == []
    accuracy = json.loads((whole / "results.json").read_text())["test"]["accuracy"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(whole)]) == 0
    assert f"test accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out
    # A run folder saved before the renames (model "cnn", its dense width as hidden) still loads.
    del config["args"]["dense_width"]
    config["args"].update(model="cnn", hidden=[16])
    config["net"]["hidden"] = config["net"].pop("dense_width")
    config["net"]["model"] = "cnn"
    (whole / "config.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", str(whole)]) == 0
    assert f"test accuracy {100 * accuracy:.2f}%" in capsys.readouterr().out
    assert models.from_config(config["net"]).config == nets.cnn("small_cnn", (1, 8, 8), 10, filters=(4, 8),
                                                               dense_width=16).config


@pytest.mark.parametrize("options, message", [
    (["--model", "small_cnn", "--data", "sin"],
     "--model small_cnn is a convolutional network for images; --data sin holds regression"),
    (["--model", "cnn", "--data", "spiral"],
     "--model small_cnn is a convolutional network for images; --data spiral holds samples"),
    (["--model", "small_cnn", "--hidden", "8,8"],
     "--hidden 8,8: --hidden sets the MLP's hidden sizes; --model small_cnn takes --dense-width (the width of its "
     "dense layer) and --filters"),
    (["--dense-width", "8"], "--dense-width 8: --model mlp has no convolutions; --dense-width applies to the CNNs"),
    (["--model", "deep_convnet", "--filters", "8,8"], "deep_convnet has 6 convolutions, so filters needs 6 widths"),
    (["--model", "resnet"], "--model must be one of mlp, small_cnn, three_layer_convnet, simple_convnet, deep_convnet"),
], ids=["regression", "not-images", "hidden", "dense-width-mlp", "filters", "unknown"])
def test_bad_model_options_write_nothing(options, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out), *options]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()
