"""A GPT (decoder-only transformer) as one composition of modules, so that its backward chain is
derived from the layers' hand-written passes (:mod:`fnet.layers.attention`):

    embedding(V, E) - position_embedding(T) - [dropout]
    - L x block - layernorm - temporal_dense(V)
    block = residual(layernorm - self_attention(h, causal) - [dropout])
          - residual(layernorm - temporal_dense(4E) - gelu - temporal_dense(E) - [dropout])

the pre-norm block of GPT-2 and nanoGPT. It takes token ids (N, T) and scores the next token at
every position, (N, T, V); its loss is the temporal softmax cross-entropy (mean over the N*T
tokens, nats), so :func:`fnet.fit_lm` trains it like the recurrent language models:

>>> import jax, fnet
>>> net = fnet.gpt(65, context=32, layers=2, heads=2, width=16)
>>> fnet.nets.num_params(net)
9249
>>> net.apply(net.init(jax.random.PRNGKey(0)), jax.numpy.zeros((3, 32), int)).shape
(3, 32, 65)
"""

from __future__ import annotations

from fnet import _checks, combinators, modules, nets


def block(heads: int, width: int, dropout: float = 0.0):
    """One pre-norm transformer block on (N, T, E = width): causal multi-head self-attention and
    an MLP of hidden width 4E with GELU, each in a residual branch after a layer norm; with a
    dropout rate > 0, dropout at the end of each branch and on the attention weights."""
    drop = [modules.dropout(dropout)] if dropout else []
    attention = combinators.serial(modules.layernorm(), modules.self_attention(heads, dropout=dropout), *drop)
    mlp = combinators.serial(modules.layernorm(), modules.temporal_dense(4 * width), modules.gelu(),
                             modules.temporal_dense(width), *drop)
    return combinators.serial(combinators.residual(attention), combinators.residual(mlp))


def gpt(vocab_size: int, context: int, *, layers: int = 4, heads: int = 4, width: int = 128, dropout: float = 0.0,
        weight_decay: float = 0.0, dtype="float32") -> nets.Net:
    """A GPT character (token) model (see the module's docstring for its layers).

    Args:
      vocab_size: V; context: T, the window length (the position table's rows).
      layers, heads, width: L blocks, h heads, width E (h divides E).
      dropout: after the embeddings, at the end of each residual branch and on the attention
        weights, in [0, 1).
      weight_decay: L2 lambda on every weight (``fnet.network``'s); with AdamW, give 0 here and
        the decay to the optimizer.
      dtype: parameter dtype.

    Returns:
      A :class:`fnet.nets.Net` of token input (T,) with the loss "temporal_softmax_cross_entropy".
    """
    fn = "gpt"
    size = {k: _checks.integer(fn, k, v, minimum=1) for k, v in
            (("vocab_size", vocab_size), ("context", context), ("layers", layers), ("heads", heads), ("width", width))}
    if size["width"] % size["heads"]:
        raise ValueError(f"{fn}: heads {heads} does not divide the width {width}")
    _checks.rate(fn, "dropout", dropout)
    drop = [modules.dropout(dropout)] if dropout else []
    module = combinators.serial(
        modules.embedding(size["vocab_size"], size["width"], init=0.02), modules.position_embedding(size["context"]),
        *drop, *(block(size["heads"], size["width"], dropout) for _ in range(size["layers"])),
        modules.layernorm(), modules.temporal_dense(size["vocab_size"]))
    name = f"GPT ({layers} layers, {heads} heads, width {width}, context {context}" + \
        (f", dropout {dropout})" if dropout else ")")
    return nets.network(module, (size["context"],), loss="temporal_softmax_cross_entropy", weight_decay=weight_decay,
                        dtype=dtype, name=name)
