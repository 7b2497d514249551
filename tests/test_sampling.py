"""fnet.generate (fnet.sampling): deterministic for a fixed key; step-by-step decoding with the
carried state agrees with the full-sequence forward (greedy = the argmax of the net's own scores
on the generated prefix) for every cell; the sampled distribution is softmax(scores / T); one
compiled program whatever the temperature and key; a model trained on "abcabc..." continues it;
bad input."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnet
from fnet import data, models, optim, sampling

V = 6


@pytest.fixture(scope="module")
def lm():
    net = models.char_lm(V, embed=4, hidden=8, layers=2, dropout=0.5, context=4)
    return net, net.init(jax.random.PRNGKey(0))


def _full_scores(net, variables, ids):
    """The network's own scores for ids (N, L): the same parameters at context L."""
    longer = models.from_config(dataclasses.replace(net.config, context=ids.shape[1]))
    return np.asarray(longer.apply(variables, ids))


@pytest.mark.parametrize("cell, layers", [("lstm", 2), ("gru", 1), ("rnn", 1)])
def test_greedy_is_the_argmax_of_the_full_forward_on_the_generated_prefix(cell, layers):
    # float64, so that step-by-step and full-sequence rounding cannot flip an argmax.
    net = models.char_lm(V, cell=cell, embed=4, hidden=8, layers=layers, context=4, dtype="float64")
    variables = net.init(jax.random.PRNGKey(1))
    # A generic point: the initial biases are 0; random ones make the scores differ per step.
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape, a.dtype),
                          variables.params)
    prompt = np.array([[1, 4, 2], [0, 0, 5]])
    ids = np.asarray(fnet.generate(net, params, prompt, 8, temperature=0))
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    full = np.concatenate([prompt, ids], axis=1)
    scores = _full_scores(net, fnet.nets.Variables(params, {}), full[:, :-1])
    np.testing.assert_array_equal(scores[:, prompt.shape[1] - 1:].argmax(-1), ids)
    # One prompt alone gives its row of the batch.
    np.testing.assert_array_equal(fnet.generate(net, params, prompt[1], 8, temperature=0), ids[1])


def _gpt_scores(net, params, ids):
    """A GPT's own scores for ids (N, L <= context): its modules on the window of L tokens alone."""
    return np.asarray(net.module.forward(params, {}, np.asarray(ids), train=False)[0])


@pytest.mark.parametrize("prompt_length", [2, 7])
def test_gpt_greedy_is_the_argmax_of_the_forward_on_the_last_context_tokens(prompt_length):
    # The reference re-runs the network on the last min(L, context) tokens of the sequence so far,
    # as nanoGPT's generate does; fnet's program runs a fixed window of context ids instead. float64
    # so that the two shapes' rounding cannot flip an argmax.
    context = 5
    net = models.gpt(V, context, layers=2, heads=2, width=8, dtype="float64")
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape, a.dtype),
                          net.init(jax.random.PRNGKey(1)).params)
    prompt = np.arange(2 * prompt_length).reshape(2, prompt_length) % V
    ids = np.asarray(fnet.generate(net, params, prompt, 9, temperature=0))
    sequence = prompt[:, -context:]
    for t in range(9):
        expected = _gpt_scores(net, params, sequence[:, -context:])[:, -1].argmax(-1)
        np.testing.assert_array_equal(ids[:, t], expected)
        sequence = np.concatenate([sequence, ids[:, t:t + 1]], axis=1)
    assert sampling.cropped(net, prompt_length) == min(prompt_length, context)


def test_gpt_sampling_is_deterministic_per_key_and_compiles_once():
    net = models.gpt(V, 4, layers=1, heads=1, width=4)
    variables = net.init(jax.random.PRNGKey(0))
    sampling._window_program.cache_clear()
    a, b = (fnet.generate(net, variables, [1, 2], 12, temperature=0.8, key=jax.random.PRNGKey(5)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    fnet.generate(net, variables, [3, 4], 12, temperature=1.5, key=jax.random.PRNGKey(6))
    assert sampling._window_program(net)._cache_size() == 1


def test_a_fixed_key_gives_the_same_ids_and_the_program_compiles_once(lm):
    net, variables = lm
    prompt = np.array([3, 1])
    sampling._program.cache_clear()
    a, b = (fnet.generate(net, variables, prompt, 30, key=jax.random.PRNGKey(7)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c = fnet.generate(net, variables, prompt, 30, key=jax.random.PRNGKey(8), temperature=0.5)
    fnet.generate(net, variables, prompt, 30, temperature=0.0)
    assert not np.array_equal(a, c)  # 30 draws from 6 symbols: equal by chance with odds ~6**-30
    # The temperature and the key are traced: one compiled program serves every call above.
    assert sampling._program(net)._cache_size() == 1


def test_sampling_follows_softmax_of_the_scores_over_the_temperature(lm):
    net, variables = lm
    n, prompt = 4000, np.array([2, 5, 1])
    scores = _full_scores(net, variables, prompt[None])[0, -1].astype(np.float64)
    for temperature in (1.0, 2.5):
        first = np.asarray(fnet.generate(net, variables, np.tile(prompt, (n, 1)), 1, temperature=temperature,
                                         key=jax.random.PRNGKey(3)))[:, 0]
        expected = np.exp(scores / temperature - np.max(scores / temperature))
        expected /= expected.sum()
        # Each frequency of n independent draws has std sqrt(p(1-p)/n) <= 0.008: 5 std.
        np.testing.assert_allclose(np.bincount(first, minlength=V) / n, expected, atol=0.04)
    tiny = fnet.generate(net, variables, prompt, 20, temperature=1e-6, key=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(tiny, fnet.generate(net, variables, prompt, 20, temperature=0))


def test_a_model_trained_on_a_repeating_pattern_continues_it():
    vocab = "abc"
    ids = data.encode("abc" * 100, vocab)
    x, y = map(np.asarray, data.random_windows(jax.random.PRNGKey(0), ids, 64, 8))
    net = models.char_lm(len(vocab), embed=8, hidden=16, context=8)
    result = fnet.fit(net, optim.adam(0.05), x, y, epochs=6, batch_size=16, progress=False)
    assert result.history["train_loss"][-1] < 0.05  # nats per character: near certainty
    ids = fnet.generate(net, result.variables, data.encode("ab", vocab), 12, temperature=0)
    assert data.decode(ids, vocab) == "cabcabcabcab"


@pytest.mark.parametrize("call, error, message", [
    (lambda g: g(prompt_ids=np.array([], np.int32)), ValueError, r"generate: prompt_ids is empty \(shape \(0,\)\)"),
    (lambda g: g(prompt_ids=np.zeros((2, 0), np.int32)), ValueError, r"generate: prompt_ids is empty"),
    (lambda g: g(prompt_ids=np.array([1, V])), ValueError,
     r"generate: prompt_ids must lie in \[0, 6\) for a vocabulary of 6, got values in \[1, 6\]"),
    (lambda g: g(prompt_ids=np.array([1.0, 2.0])), TypeError,
     r"generate: prompt_ids must be integer token ids, got dtype float64"),
    (lambda g: g(prompt_ids="ab"), TypeError, r"generate: prompt_ids must be token ids, got the string 'ab'; encode"),
    (lambda g: g(prompt_ids=np.zeros((1, 1, 2), np.int32)), ValueError, r"must have shape \(P,\) or \(N, P\)"),
    (lambda g: g(length=0), ValueError, r"generate: length must be a positive int, got 0"),
    (lambda g: g(length=2.0), TypeError, r"generate: length must be an int"),
    (lambda g: g(temperature=-1.0), ValueError,
     r"generate: temperature must be a finite number >= 0 \(0: greedy\), got -1.0"),
    (lambda g: g(temperature=float("nan")), ValueError, r"generate: temperature must be a finite number >= 0"),
    (lambda g: g(key=None), ValueError, r"generate: key is None but temperature 1.0 > 0 samples"),
])
def test_bad_input_is_named(lm, call, error, message):
    net, variables = lm

    def g(*, prompt_ids=None, length=3, temperature=1.0, key=0):
        prompt_ids = np.array([1, 2]) if prompt_ids is None else prompt_ids
        key = None if key is None else jax.random.PRNGKey(key)
        return fnet.generate(net, variables, prompt_ids, length, temperature=temperature, key=key)

    with pytest.raises(error, match=message):
        call(g)


def test_only_language_models_with_their_own_params_generate(lm):
    net, variables = lm
    mlp = fnet.mlp(4, [3], V)
    with pytest.raises(TypeError, match=r"generate: net must be a language model of fnet.models.char_lm or "
                                        r"fnet.models.gpt \(config a CharLMConfig or a GPTConfig\), got MLPConfig"):
        fnet.generate(mlp, mlp.init(jax.random.PRNGKey(0)), np.array([1]), 3, temperature=0)
    other = models.char_lm(V, embed=4, hidden=5, layers=2, context=4)
    with pytest.raises(ValueError, match=r"generate: params does not match the network's params.*shapes differ"):
        fnet.generate(net, other.init(jax.random.PRNGKey(0)), np.array([1]), 3, temperature=0)
    assert jnp.shape(fnet.generate(net, variables.params, [1, 2], 3, temperature=0)) == (3,)  # params alone, a list
