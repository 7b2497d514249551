"""The registry of the ready networks (:data:`MODELS`), and building any of them by name
(:func:`build`) or from its configuration (:func:`from_config`)."""

from __future__ import annotations

import math
from typing import NamedTuple

from fnet.models.char_lm import CharLMConfig, char_lm, char_lm_from_config
from fnet.models.cnn import ALIASES, CNNConfig, cnn, cnn_from_config, model_key
from fnet.models.gpt import GPTConfig, gpt, gpt_from_config
from fnet.models.mlp import MLPConfig, mlp, mlp_from_config
from fnet.nets import Net


class Model(NamedTuple):
    """One ready network of the zoo.

    Fields:
      description: one line, for listings (``fnet train --help``).
      family: "mlp", "cnn" (samples are images (C, H, W); layouts in
        :data:`fnet.models.cnn.ARCHITECTURES`), "char_lm" (a recurrent character model, built by
        :func:`char_lm`) or "gpt" (:func:`gpt`); the language models take token ids (T,).
      hidden: the default widths (the MLP's hidden sizes; a language model's one width per layer).
      presets: ``{data set: {option: value}}``, the ``fnet train`` defaults (epochs, batch size,
        ...) of this model on that data set; key None: every other data set.
      cell: a recurrent language model's cell (:data:`CELLS`); None for the others.
    """

    description: str
    family: str
    hidden: tuple = ()
    presets: dict = {}
    cell: str | None = None

    @property
    def images(self) -> bool:
        """Whether the model takes images (a CNN)."""
        return self.family == "cnn"

    @property
    def language_model(self) -> bool:
        """Whether the model is a language model (token ids in, next-token scores out)."""
        return self.family in ("char_lm", "gpt")


#: The CNNs' presets: their widths and dropout are the model's own; the MNIST one is the README's
#: default CNN run (99.2% test accuracy in under 6 minutes on 2 cores).
_CNN_PRESETS = {
    "digits": {"epochs": 30, "batch_size": 32},
    "mnist": {"epochs": 6, "batch_size": 64, "schedule": "cosine"},
    "fashion-mnist": {"epochs": 6, "batch_size": 64, "schedule": "cosine"},
    None: {"epochs": 10, "batch_size": 64},
}

#: The language models' ``fnet train`` defaults (trained by steps on text; see :mod:`fnet.lm`).
_LM_PRESET = {"data": "shakespeare", "steps": 3600, "batch_size": 32, "context": 128, "embed": 64, "lr": 2e-3,
              "schedule": "cosine", "clip": 1.0, "init": "xavier", "dropout": 0.25}

#: The GPT's ``fnet train`` defaults (nanoGPT's recipe for character models at a CPU's size).
_GPT_PRESET = {"data": "shakespeare", "steps": 11000, "batch_size": 16, "context": 128, "heads": 4, "lr": 2e-3,
               "warmup": 100, "schedule": "cosine", "clip": 1.0, "optimizer": "adamw", "beta2": 0.99,
               "weight_decay": 0.1, "dropout": 0.0, "init": "xavier"}

#: The zoo: name -> :class:`Model`.
MODELS = {
    # MLP presets tuned: digits reaches 97.5-98.9% test accuracy over split seeds 0-3 with these,
    # MNIST 98% in 10 epochs.
    "mlp": Model("cs231n's FullyConnectedNet: [dense-[norm]-activation-[dropout]] x L - dense(C)", "mlp",
                 hidden=(100, 100),
                 presets={"digits": {"epochs": 60, "batch_size": 32, "dropout": 0.1},
                          "mnist": {"epochs": 10, "batch_size": 128, "dropout": 0.0},
                          "fashion-mnist": {"epochs": 10, "batch_size": 128, "dropout": 0.0},
                          None: {"epochs": 30, "batch_size": 64, "dropout": 0.0}}),
    "small_cnn": Model("conv3x3(f1)-batchnorm-relu-pool2 - conv3x3(f2)-batchnorm-relu-pool2 - dense(d)-relu-dropout - "
                       "dense(C)", "cnn", presets=_CNN_PRESETS),
    "three_layer_convnet": Model("cs231n's ThreeLayerConvNet: conv7x7(f)-relu-pool2 - dense(d)-relu - dense(C)", "cnn",
                                 presets=_CNN_PRESETS),
    "simple_convnet": Model("Deep Learning from Scratch's SimpleConvNet: conv5x5(f)-relu-pool2 - dense(d)-relu - "
                            "dense(C)", "cnn", presets=_CNN_PRESETS),
    "deep_convnet": Model("Deep Learning from Scratch's DeepConvNet: 3 x [conv3x3-relu-conv3x3-relu-pool2] - "
                          "dense(d)-relu-dropout - dense(C)-dropout", "cnn", presets=_CNN_PRESETS),
    # Language models: one layer of 512 with dropout 0.25, embedding 64, windows of 128 (chosen by
    # benchmarks/char_lm_sizes.py; see docs/language_models.md).
    "lstm": Model("character language model: embedding(e) - [LSTM(h) - dropout] x L - temporal_dense(V)", "char_lm",
                  hidden=(512,), presets={None: _LM_PRESET}, cell="lstm"),
    "rnn": Model("character language model: embedding(e) - [tanh RNN(h) - dropout] x L - temporal_dense(V)", "char_lm",
                 hidden=(512,), presets={None: _LM_PRESET}, cell="rnn"),
    "gru": Model("character language model: embedding(e) - [GRU(h) - dropout] x L - temporal_dense(V)", "char_lm",
                 hidden=(512,), presets={None: _LM_PRESET}, cell="gru"),
    # The GPT: four blocks of width 128, 4 heads, no dropout, windows of 128, AdamW (betas 0.9,
    # 0.99; decay 0.1 on the weights) with 100 warmup steps, then cosine to lr/10 over 11,000 steps
    # (chosen by benchmarks/char_lm_sizes.py --model gpt; see docs/language_models.md).
    "gpt": Model("GPT: embedding(V, E) + positions - [pre-norm causal self-attention, MLP 4E] x L - layernorm - "
                 "temporal_dense(V)", "gpt", hidden=(128,) * 4, presets={None: _GPT_PRESET}),
}


def canonical_name(name: str, fn: str = "models") -> str:
    """The registry's name for ``name`` (case and "-" vs "_" ignored; :data:`ALIASES` resolved)."""
    key = model_key(name)
    if key not in MODELS:
        raise ValueError(f"{fn}: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return key


def preset(name: str, data: str) -> dict:
    """The ``fnet train`` defaults of model ``name`` on data set ``data``: "hidden", "filters"
    (() : the model's), "dense_width" (0: the model's), "dropout" (None: the model's), "epochs",
    "batch_size" and any other option its data preset sets."""
    model = MODELS[canonical_name(name)]
    return {"hidden": model.hidden, "filters": (), "dense_width": 0, "dropout": None,
            **model.presets.get(data, model.presets.get(None, {}))}


def build(name: str, input_shape, num_outputs: int, *, hidden=None, filters=(), dense_width: int = 0, dropout=None,
          **options) -> Net:
    """Model ``name`` for samples of ``input_shape`` and ``num_outputs`` scores: :func:`mlp` (of
    the flattened samples, ``hidden`` sizes), :func:`cnn` (``filters``, ``dense_width``),
    :func:`char_lm` or :func:`gpt` (``input_shape`` (T,), ``num_outputs`` the vocabulary;
    ``hidden`` one width per recurrent layer or transformer block, all equal, e.g. ``(512, 512)``
    for two layers of 512). None, () and 0 take the model's defaults; ``options`` go to the
    builder (``activation``, ``norm``, ``loss`` for the MLP; ``embed``, ``init`` for a recurrent
    language model; ``heads``, ``tie`` for the GPT; ``weight_decay``, ``dtype`` for all)."""
    name = canonical_name(name, "build")
    model = MODELS[name]
    if model.language_model:
        return _build_language_model(name, input_shape, num_outputs, hidden, dropout, options)
    if model.images:
        return cnn(name, input_shape, num_outputs, filters=filters, dense_width=dense_width, dropout=dropout, **options)
    return mlp(math.prod(input_shape), model.hidden if hidden is None else hidden, num_outputs,
               dropout=0.0 if dropout is None else dropout, **options)


def _build_language_model(name: str, input_shape, vocab_size: int, hidden, dropout, options: dict) -> Net:
    """:func:`build` of a language model: ``hidden`` one width per layer (recurrent layers or
    transformer blocks), all equal."""
    input_shape = tuple(input_shape)
    if len(input_shape) != 1:
        raise ValueError(f"build: the {name} language model takes windows of token ids, input_shape (T,), got "
                         f"{input_shape}")
    (context,) = input_shape
    sizes = {}
    if isinstance(hidden, (tuple, list)) and hidden:
        if len(set(hidden)) > 1:
            raise ValueError(f"build: a language model's layers have one width, got hidden {tuple(hidden)}")
        sizes = {"hidden": hidden[0], "layers": len(hidden)}
    elif hidden is not None and hidden != ():
        sizes = {"hidden": hidden}
    if dropout is not None:
        sizes["dropout"] = dropout
    if name == "gpt":
        if "hidden" in sizes:
            sizes["width"] = sizes.pop("hidden")
        return gpt(vocab_size, context, **sizes, **options)
    return char_lm(vocab_size, cell=MODELS[name].cell, context=context, **sizes, **options)


def upgrade_config(config: dict) -> dict:
    """A configuration dict (``dataclasses.asdict`` of a config) saved before the zoo's renames,
    as today's: model "cnn" is "small_cnn", a CNN's "hidden" width is "dense_width"."""
    config = dict(config)
    if isinstance(config.get("model"), str):
        config["model"] = ALIASES.get(config["model"], config["model"])
    if config.get("model", "mlp") != "mlp" and "hidden" in config:
        config["dense_width"] = config.pop("hidden")
    return config


def upgrade_run_options(options: dict) -> dict:
    """``fnet train`` options saved before the zoo's renames, as today's: model "cnn" is
    "small_cnn", and a CNN's dense width, once its ``hidden``, is ``dense_width``."""
    options = dict(options)
    if isinstance(options.get("model"), str):
        options["model"] = ALIASES.get(options["model"], options["model"])
    if "dense_width" not in options and "hidden" in options:
        images = options.get("model") in MODELS and MODELS[options["model"]].images
        options["dense_width"] = (list(options["hidden"]) or [0])[0] if images else 0
        options["hidden"] = [] if images else options["hidden"]
    return options


def from_config(config) -> Net:
    """Build (or rebuild) a ready network from its configuration: an :class:`MLPConfig`, a
    :class:`CNNConfig`, a :class:`CharLMConfig` or a :class:`GPTConfig`, or the
    ``dataclasses.asdict`` dict of one (a dict with a "vocab_size" key is a language model's, a
    GPT's if it has "heads"; one with a "model" key other than "mlp" a CNN's; one saved before
    the renames, with model "cnn" or a "hidden" width, loads too)."""
    if isinstance(config, dict) and "heads" in config:
        config = GPTConfig(**config)
    elif isinstance(config, dict) and "vocab_size" in config:
        config = CharLMConfig(**config)
    elif isinstance(config, dict):
        config = upgrade_config(config)
        if config.get("model", "mlp") == "mlp":
            config.pop("model", None)
            config = MLPConfig(**dict(config, hidden_dims=tuple(config["hidden_dims"])))
        else:
            config = CNNConfig(**dict(config, model=canonical_name(config["model"], "from_config"),
                                      input_shape=tuple(config["input_shape"]), filters=tuple(config["filters"])))
    builders = {MLPConfig: mlp_from_config, CNNConfig: cnn_from_config, CharLMConfig: char_lm_from_config,
                GPTConfig: gpt_from_config}
    if type(config) not in builders:
        raise TypeError(f"from_config: expected an MLPConfig, a CNNConfig, a CharLMConfig, a GPTConfig or a dict, got "
                        f"{type(config).__name__}")
    return builders[type(config)](config)
