"""Character language models with recurrent cells (:func:`char_lm`): token ids (N, T) -> scores
for the next token (N, T, V), one composition."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from fnet import _checks, combinators, modules
from fnet.models._common import check_common, present, shown
from fnet.modules import Module
from fnet.nets import Net, network


#: The recurrent cells of :func:`char_lm`, by name (the registry's language models).
CELLS = {"rnn": modules.rnn, "lstm": modules.lstm, "gru": modules.gru}


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Everything that defines a character language model; JSON-serialisable with
    :func:`dataclasses.asdict`. Fields mirror :func:`char_lm`'s arguments."""

    vocab_size: int
    cell: str = "lstm"
    embed: int = 64
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.0
    context: int = 128
    init: str | float = "xavier"
    weight_decay: float = 0.0
    dtype: str = "float32"


def char_lm(vocab_size: int, *, cell: str = "lstm", embed: int = 64, hidden: int = 512, layers: int = 1,
            dropout: float = 0.0, context: int = 128, init="xavier", weight_decay: float = 0.0,
            dtype="float32") -> Net:
    """A character (token) language model as one composition (:func:`char_lm_module`)::

        embedding(V, embed) - [cell(hidden) - dropout] x layers - temporal_dense(V)

    It takes token ids x (N, context) and scores the NEXT token at every step, (N, context, V);
    its loss is ``"temporal_softmax_cross_entropy"``, the mean over the N*T tokens in nats, and
    its targets are x shifted by one (:func:`fnet.data.random_windows`). Dropout acts on each
    recurrent layer's outputs (between layers, and before the scores: the non-recurrent
    connections, as Zaremba et al. 2014 regularize LSTMs), never inside the recurrence. The
    parameters do not depend on ``context``: ``from_config(dataclasses.replace(net.config,
    context=L))`` evaluates the same parameters on windows of L tokens, and
    :func:`fnet.generate.generate` runs them one token at a time.

    Args:
      vocab_size: V, the number of token ids (e.g. ``len(TextDataset.vocab)``).
      cell: "lstm", "rnn" (tanh) or "gru" (:data:`CELLS`).
      embed: the embedding's width (its table is N(0, 1), PyTorch's ``nn.Embedding``).
      hidden: the width of every recurrent layer.
      layers: the number of stacked recurrent layers.
      dropout: drop probability after each recurrent layer, in [0, 1) (may be traced, as in
        :func:`mlp`).
      context: T, the window length the network takes.
      init: the initializer of the recurrent and output weights ("xavier": cs231n's scales).
      weight_decay: L2 lambda on every weight, the embedding table included (see
        :func:`fnet.network`).
      dtype: parameter dtype.

    Returns:
      A :class:`Net` whose ``config`` is the :class:`CharLMConfig`; params ``{"embedding1":
      {"W"}, "lstm1": {"Wx", "Wh", "b"}, ..., "temporal_dense1": {"W", "b"}}``.
    """
    size = {k: _checks.integer("char_lm", k, v, minimum=1) for k, v in
            (("vocab_size", vocab_size), ("embed", embed), ("hidden", hidden), ("layers", layers), ("context", context))}
    return char_lm_from_config(CharLMConfig(size["vocab_size"], cell, size["embed"], size["hidden"], size["layers"], dropout,
                                    size["context"], init, weight_decay, jnp.dtype(dtype).name))


def validate_char_lm_config(cfg: CharLMConfig) -> None:
    fn = "char_lm"
    for name in ("vocab_size", "embed", "hidden", "layers", "context"):
        _checks.integer(fn, name, getattr(cfg, name), minimum=1)
    if cfg.cell not in CELLS:
        raise ValueError(f"{fn}: unknown cell {cfg.cell!r}; choose one of {', '.join(CELLS)}")
    _checks.rate(fn, "dropout", cfg.dropout)
    check_common(fn, cfg.weight_decay, cfg.dtype, cfg.init)


def char_lm_module(cfg: CharLMConfig) -> Module:
    """The composition of :func:`char_lm`: ``serial(embedding, cell, [dropout], ..., temporal_dense)``;
    a dropout rate given as a JAX array (a sweep's) inserts the dropout layers even at 0."""
    drop = [modules.dropout(cfg.dropout)] if present(cfg.dropout) else []
    cells = [layer for _ in range(cfg.layers) for layer in (CELLS[cfg.cell](cfg.hidden, init=cfg.init), *drop)]
    return combinators.serial(modules.embedding(cfg.vocab_size, cfg.embed), *cells,
                              modules.temporal_dense(cfg.vocab_size, init=cfg.init))


def describe_char_lm(cfg: CharLMConfig) -> str:
    """Short name of a language model's configuration, e.g. ``"lstm char LM (65 tokens, embed 64,
    1x512, context 128)"``."""
    parts = [f"{cfg.vocab_size} tokens", f"embed {cfg.embed}", f"{cfg.layers}x{cfg.hidden}", f"context {cfg.context}"]
    if present(cfg.dropout):
        parts.append(f"dropout={shown(cfg.dropout)}")
    if present(cfg.weight_decay):
        parts.append(f"wd={shown(cfg.weight_decay)}")
    return f"{cfg.cell} char LM ({', '.join(parts)})"


def char_lm_from_config(cfg: CharLMConfig) -> Net:
    """The network of a (checked) :class:`CharLMConfig`."""
    validate_char_lm_config(cfg)
    return network(char_lm_module(cfg), (cfg.context,), loss="temporal_softmax_cross_entropy",
                   weight_decay=cfg.weight_decay, dtype=cfg.dtype, name=describe_char_lm(cfg), config=cfg)
