"""Generating token ids from a language model, one token at a time: a recurrent model carries its
state, a GPT re-runs its window.

:func:`generate` continues a prompt with a character language model of :func:`fnet.models.char_lm`
or :func:`fnet.models.gpt` (re-exported as ``fnet.generate``)::

    ds = fnet.data.load_text("shakespeare")
    ids = fnet.generate(net, result.variables, ds.encode("ROMEO:"), 200, temperature=0.8, key=key)
    print("ROMEO:" + ds.decode(ids))

The prompt runs through the network once (every layer's modules on the whole prompt, their last
hidden states kept); then each new token is drawn from the last step's scores and fed back as a
sequence of length 1, each recurrent layer starting from its carried state (the modules'
``initial_state``/``return_state`` forms). A GPT has no state to carry, and its position table
limits it to ``context`` tokens: as nanoGPT's ``generate``, it runs the whole window of the last
(at most) ``context`` tokens for every new token, and a longer prompt is CROPPED to its last
``context`` tokens (:func:`cropped`; ``fnet sample`` says so). Its window is a fixed buffer of
``context`` ids, filled from the left and shifted once full; the causal mask makes the scores of
the filled positions independent of the unfilled ones. The generated positions are a ``lax.scan`` in one
``jit``-compiled program per network, compiled once per prompt shape and length: the temperature
and the key are traced, so changing them never recompiles. Every layer runs in eval mode (no
dropout).

Sampling: token ``t`` is drawn from ``softmax(scores_t / temperature)`` (the Gumbel-max draw of
``jax.random.categorical`` with the key ``fold_in(key, t)``), so a fixed key gives the same ids.
``temperature=0`` means greedy decoding: the argmax of the scores (the most likely token, the
lowest index among ties), without randomness; a small temperature approaches it, a large one
approaches uniform sampling.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fnet import _checks, models
from fnet.nets import Net, Variables


def generate(net: Net, variables, prompt_ids, length: int, *, temperature: float = 1.0, key=None) -> jax.Array:
    """Continue ``prompt_ids`` by ``length`` tokens drawn from the language model ``net``.

    Args:
      net: a network of :func:`fnet.models.char_lm` (its ``config`` a
        :class:`~fnet.models.CharLMConfig`; the prompt may be longer or shorter than its
        ``context``, which only sets the window length of training) or of :func:`fnet.models.gpt`
        (a :class:`~fnet.models.GPTConfig`; a prompt longer than its ``context`` is cropped to
        its last ``context`` tokens).
      variables: the network's :class:`~fnet.nets.Variables` (e.g. ``result.variables`` of
        :func:`fnet.fit`), or its params.
      prompt_ids: integer token ids of shape (P,) or (N, P) (N prompts of the same length),
        P >= 1, in [0, V) (e.g. :meth:`fnet.data.TextDataset.encode` of a string).
      length: the number of tokens to generate, >= 1.
      temperature: a finite number >= 0: the scores are divided by it before sampling; 0 is
        greedy decoding (argmax).
      key: a JAX PRNG key for sampling; may be None only for ``temperature=0``.

    Returns:
      The generated ids (without the prompt), int32 of shape (length,) for a prompt (P,), or
      (N, length) for prompts (N, P).

    Raises:
      TypeError/ValueError: a network that is not a language model, params that are not the
        network's, float or out-of-vocabulary ids, an empty prompt, ``length < 1``, a negative
        or non-finite temperature, or no key for a temperature above 0.

    >>> import jax, fnet
    >>> net = fnet.char_lm(5, embed=4, hidden=8, context=16)
    >>> variables = net.init(jax.random.PRNGKey(0))
    >>> ids = fnet.generate(net, variables, [1, 2, 3], 10, temperature=0.8, key=jax.random.PRNGKey(1))
    >>> ids.shape, ids.dtype
    ((10,), dtype('int32'))
    >>> fnet.generate(net, variables, [[1, 2], [3, 4]], 4, temperature=0).shape   # two prompts, greedy
    (2, 4)
    """
    fn = "generate"
    if not isinstance(net, Net) or not isinstance(net.config, (models.CharLMConfig, models.GPTConfig)):
        got = type(net.config).__name__ if isinstance(net, Net) else type(net).__name__
        raise TypeError(f"{fn}: net must be a language model of fnet.models.char_lm or fnet.models.gpt (config a "
                        f"CharLMConfig or a GPTConfig), got {got}")
    params = variables.params if isinstance(variables, Variables) else variables
    _checks.tree(fn, "params", params, "the network's params (as net.init makes them)",
                 jax.eval_shape(net.init, jax.random.PRNGKey(0)).params)
    prompt = _check_prompt(fn, prompt_ids, net.config.vocab_size)
    length = _checks.integer(fn, "length", length, minimum=1)
    if not _checks.non_negative(temperature):
        raise ValueError(f"{fn}: temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")
    if key is None and temperature > 0:
        raise ValueError(f"{fn}: key is None but temperature {temperature} > 0 samples; pass key=jax.random.PRNGKey(...) "
                         "(or temperature=0 for greedy decoding)")
    key = jax.random.PRNGKey(0) if key is None else key
    program = _window_program(net) if isinstance(net.config, models.GPTConfig) else _program(net)
    ids = program(params, prompt.reshape(-1, prompt.shape[-1])[:, -cropped(net, prompt.shape[-1]):],
                  jnp.asarray(temperature, jnp.float32), key, length=length)
    return ids[0] if prompt.ndim == 1 else ids


def _check_prompt(fn: str, prompt_ids, vocab_size: int):
    """``prompt_ids`` as an int32 array (P,) or (N, P) with P >= 1 and N >= 1, ids in the vocabulary."""
    if isinstance(prompt_ids, str):
        raise TypeError(f"{fn}: prompt_ids must be token ids, got the string {prompt_ids!r}; encode text with the "
                        "data set's vocabulary first (dataset.encode(text))")
    shape = _checks.shape_of(prompt_ids)
    if len(shape) not in (1, 2):
        raise ValueError(f"{fn}: prompt_ids must have shape (P,) or (N, P), got shape {shape}")
    if math.prod(shape) == 0:
        raise ValueError(f"{fn}: prompt_ids is empty (shape {shape}); give at least one token id to condition on")
    _checks.token_ids(fn, "prompt_ids", prompt_ids, vocab_size)
    return jnp.asarray(np.asarray(prompt_ids), jnp.int32)


def cropped(net: Net, prompt_length: int) -> int:
    """How many of a prompt's last tokens :func:`generate` conditions on: all of them for a
    recurrent model, at most ``context`` for a GPT (its position table's length)."""
    return min(prompt_length, net.config.context) if isinstance(net.config, models.GPTConfig) else prompt_length


def _pick(scores, temperature, key):
    """A token per row of ``scores`` (N, V): sampled at ``temperature``, or the argmax at 0."""
    sampled = jax.random.categorical(key, scores / jnp.where(temperature > 0, temperature, 1.0), axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(scores, axis=-1)).astype(jnp.int32)


@functools.lru_cache(maxsize=16)
def _window_program(net: Net):
    """A GPT's ``(params, prompt (N, P <= context), temperature, key, *, length) -> ids (N,
    length)``: each token from the scores at the last filled position of a window of ``context``
    ids, run whole (jit-compiled)."""
    context = net.config.context

    def program(params, prompt, temperature, key, *, length):
        n, p = prompt.shape
        window = jnp.zeros((n, context), jnp.int32).at[:, :p].set(prompt)

        def step(carry, t):
            window, filled = carry
            scores, _, _ = net.module.forward(params, {}, window, train=False)
            token = _pick(jax.lax.dynamic_index_in_dim(scores, filled - 1, axis=1, keepdims=False), temperature,
                          jax.random.fold_in(key, t))
            # Once full, the window shifts left by one and the new token takes the last place.
            window = jnp.where(filled < context, window, jnp.roll(window, -1, axis=1))
            place = (jnp.zeros_like(filled), jnp.minimum(filled, context - 1))
            window = jax.lax.dynamic_update_slice(window, token[:, None], place)
            return (window, jnp.minimum(filled + 1, context)), token

        _, ids = jax.lax.scan(step, (window, jnp.asarray(p, jnp.int32)), jnp.arange(length))
        return ids.T

    return jax.jit(program, static_argnames="length")


@functools.lru_cache(maxsize=16)
def _program(net: Net):
    """``(params, prompt (N, P), temperature, key, *, length) -> ids (N, length)``, jit-compiled."""
    cfg = net.config
    num_states = 2 if cfg.cell == "lstm" else 1  # (h, c) or h
    # Each recurrent layer again, taking its initial state from the input and returning its last one.
    carried = models.CELLS[cfg.cell](cfg.hidden, initial_state=True, return_state=True)

    def run(params, ids, states):
        """Every layer on ids (N, T) from ``states`` (one tuple per recurrent layer): the scores
        (N, T, V) and the states after the last step."""
        x, layer_states, new_states = ids, iter(states), []
        for name, child in net.module.children:
            if child.name == cfg.cell:
                (x, *last), _, _ = carried.forward(params[name], {}, (x, *next(layer_states)), train=False)
                new_states.append(tuple(last))
            else:
                x, _, _ = child.forward(params.get(name, {}), {}, x, train=False)
        return x, new_states

    def program(params, prompt, temperature, key, *, length):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        zeros = jnp.zeros((prompt.shape[0], cfg.hidden), dtype)
        scores, states = run(params, prompt, [(zeros,) * num_states] * cfg.layers)
        first = _pick(scores[:, -1], temperature, jax.random.fold_in(key, 0))

        def step(carry, t):
            token, states = carry
            scores, states = run(params, token[:, None], states)
            token = _pick(scores[:, -1], temperature, jax.random.fold_in(key, t))
            return (token, states), token

        _, rest = jax.lax.scan(step, (first, states), jnp.arange(1, length))
        return jnp.concatenate([first[:, None], rest.T], axis=1)

    return jax.jit(program, static_argnames="length")
