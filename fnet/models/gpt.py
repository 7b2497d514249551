"""A GPT (decoder-only transformer) as one composition of modules, so that its backward chain is
derived from the layers' hand-written passes (:mod:`fnet.layers.attention`):

    embedding(V, E) - position_embedding(T) - [dropout]
    - L x block - layernorm - temporal_dense(V)
    block = residual(layernorm - self_attention(h, causal) - [dropout])
          - residual(layernorm - temporal_dense(4E) - gelu - temporal_dense(E) - [dropout])

the pre-norm block of GPT-2 and nanoGPT. With ``tie=True`` the head is the token table
transposed (:func:`fnet.combinators.tied_embedding`; GPT-2 and nanoGPT tie them). It takes token
ids (N, T) and scores the next token at every position, (N, T, V); its loss is the temporal
softmax cross-entropy (mean over the N*T tokens, nats), so :func:`fnet.fit_lm` trains it like the
recurrent language models:

>>> import jax, fnet
>>> net = fnet.gpt(65, context=32, layers=2, heads=2, width=16)
>>> fnet.nets.num_params(net)
9249
>>> fnet.nets.num_params(fnet.gpt(65, context=32, layers=2, heads=2, width=16, tie=True))   # 16 x 65 fewer
8209
>>> net.apply(net.init(jax.random.PRNGKey(0)), jax.numpy.zeros((3, 32), int)).shape
(3, 32, 65)

Unlike a recurrent model, a GPT's position table fixes its window: it takes at most ``context``
tokens (:func:`fnet.sampling.generate` crops a longer prompt to its last ``context`` tokens).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from fnet import _checks, combinators, modules
from fnet.models._common import check_common, present, shown
from fnet.modules import Module
from fnet.nets import Net, network


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Everything that defines a GPT; JSON-serialisable with :func:`dataclasses.asdict`. Fields
    mirror :func:`gpt`'s arguments."""

    vocab_size: int
    context: int = 128
    layers: int = 4
    heads: int = 4
    width: int = 128
    dropout: float = 0.0
    tie: bool = False
    weight_decay: float = 0.0
    dtype: str = "float32"


def gpt(vocab_size: int, context: int, *, layers: int = 4, heads: int = 4, width: int = 128, dropout: float = 0.0,
        tie: bool = False, weight_decay: float = 0.0, dtype="float32", recompute: bool = False) -> Net:
    """A GPT character (token) model (see the module's docstring for its layers).

    Args:
      vocab_size: V; context: T, the window length (the position table's rows).
      layers, heads, width: L blocks, h heads, width E (h divides E; a head has E / h columns).
      dropout: after the embeddings, at the end of each residual branch and on the attention
        weights, in [0, 1).
      tie: the output layer is the token table transposed, plus a bias (V E fewer parameters).
      weight_decay: L2 lambda on every weight (``fnet.network``'s); with AdamW, give 0 here and
        the decay to the optimizer.
      dtype: parameter dtype.
      recompute: the attentions' backward recomputes their softmax weights instead of keeping
        them from the forward (:mod:`fnet.layers.attention`); how the step runs, not what it
        computes, so it is not part of the :class:`GPTConfig`.

    Initialization (GPT-2's): token and position tables N(0, 0.02), projections and MLP weights
    Xavier, biases 0, layer norms gamma 1, beta 0.

    Returns:
      A :class:`fnet.nets.Net` of token input (T,) with the loss "temporal_softmax_cross_entropy",
      whose ``config`` is the :class:`GPTConfig`.
    """
    fn = "gpt"
    size = {k: _checks.integer(fn, k, v, minimum=1) for k, v in
            (("vocab_size", vocab_size), ("context", context), ("layers", layers), ("heads", heads), ("width", width))}
    return gpt_from_config(GPTConfig(**size, dropout=dropout, tie=bool(tie), weight_decay=weight_decay,
                                     dtype=jnp.dtype(dtype).name), recompute=recompute)


def validate_gpt_config(cfg: GPTConfig) -> None:
    fn = "gpt"
    for name in ("vocab_size", "context", "layers", "heads", "width"):
        _checks.integer(fn, name, getattr(cfg, name), minimum=1)
    if cfg.width % cfg.heads:
        raise ValueError(f"{fn}: heads {cfg.heads} does not divide the width {cfg.width}")
    _checks.rate(fn, "dropout", cfg.dropout)
    check_common(fn, cfg.weight_decay, cfg.dtype, None)


def block(heads: int, width: int, dropout: float = 0.0, recompute: bool = False) -> Module:
    """One pre-norm transformer block on (N, T, E = width): causal multi-head self-attention and
    an MLP of hidden width 4E with GELU, each in a residual branch after a layer norm; with a
    dropout rate > 0, dropout at the end of each branch and on the attention weights;
    ``recompute`` as :func:`fnet.modules.self_attention`'s."""
    drop = [modules.dropout(dropout)] if present(dropout) else []
    attention = combinators.serial(modules.layernorm(),
                                   modules.self_attention(heads, dropout=dropout, recompute=recompute), *drop)
    mlp = combinators.serial(modules.layernorm(), modules.temporal_dense(4 * width), modules.gelu(),
                             modules.temporal_dense(width), *drop)
    return combinators.serial(combinators.residual(attention), combinators.residual(mlp))


def gpt_module(cfg: GPTConfig, recompute: bool = False) -> Module:
    """The composition of :func:`gpt` for ``cfg`` (``recompute``: :func:`gpt`'s)."""
    drop = [modules.dropout(cfg.dropout)] if present(cfg.dropout) else []
    body = [modules.position_embedding(cfg.context), *drop,
            *(block(cfg.heads, cfg.width, cfg.dropout, recompute) for _ in range(cfg.layers)), modules.layernorm()]
    if cfg.tie:
        return combinators.tied_embedding(cfg.vocab_size, cfg.width, combinators.serial(*body))
    return combinators.serial(modules.embedding(cfg.vocab_size, cfg.width, init=0.02), *body,
                              modules.temporal_dense(cfg.vocab_size))


def describe_gpt(cfg: GPTConfig) -> str:
    """Short name of a GPT's configuration, e.g. ``"GPT (65 tokens, 4 layers, 4 heads, width 128,
    context 64)"``."""
    parts = [f"{cfg.vocab_size} tokens", f"{cfg.layers} layer" + "s" * (cfg.layers > 1), f"{cfg.heads} heads",
             f"width {cfg.width}", f"context {cfg.context}"]
    if present(cfg.dropout):
        parts.append(f"dropout={shown(cfg.dropout)}")
    if cfg.tie:
        parts.append("tied")
    if present(cfg.weight_decay):
        parts.append(f"wd={shown(cfg.weight_decay)}")
    return f"GPT ({', '.join(parts)})"


def gpt_from_config(cfg: GPTConfig, recompute: bool = False) -> Net:
    """The network of a (checked) :class:`GPTConfig` (``recompute``: :func:`gpt`'s)."""
    validate_gpt_config(cfg)
    return network(gpt_module(cfg, recompute), (cfg.context,), loss="temporal_softmax_cross_entropy",
                   weight_decay=cfg.weight_decay, dtype=cfg.dtype, name=describe_gpt(cfg), config=cfg)
