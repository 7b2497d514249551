"""fnet.limits: the seed range, the int32 step counter and one step's memory, all known from
shapes before anything is allocated (a 150-billion-parameter network is estimated, not built)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import limits, nets, optim


def _batch(n, *shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct((n, *shape), dtype)


def _mlp_estimate(hidden, batch, opt=None):
    net = nets.mlp(64, hidden, 10)
    return net, limits.step_memory(net, opt or optim.adam(1e-3), _batch(batch, 64), _batch(batch, dtype=jnp.int32))


def test_the_estimate_counts_params_gradients_best_copy_and_optimizer_state():
    net, est = _mlp_estimate((16,), 128)
    p = nets.num_params(net)
    assert est.num_params == p == 64 * 16 + 16 + 16 * 10 + 10
    # params, gradients, best copy, Adam's two moments (float32), and two scalars (count, rate).
    assert 5 * 4 * p <= est.persistent <= 5 * 4 * p + 16
    _, sgd = _mlp_estimate((16,), 128, optim.sgd(0.1))
    assert 3 * 4 * p <= sgd.persistent < est.persistent


def test_the_largest_activation_grows_with_the_batch_and_the_width():
    _, small = _mlp_estimate((16,), 128)
    _, double = _mlp_estimate((16,), 256)
    _, wide = _mlp_estimate((4096,), 128)
    assert small.activation >= 128 * 16 * 4  # the hidden layer's output on a batch
    assert double.activation == 2 * small.activation
    assert wide.activation >= 128 * 4096 * 4


def test_a_network_too_large_to_build_is_estimated_from_shapes_alone():
    _, est = _mlp_estimate((2_000_000_000,), 128)
    assert est.num_params == 64 * 2_000_000_000 + 2_000_000_000 + 2_000_000_000 * 10 + 10
    assert est.activation >= 128 * 2_000_000_000 * 4 and est.total > 3 * 1024**4


def test_a_cnn_estimate_sees_its_convolutions():
    net = nets.cnn("cnn", (1, 28, 28), 10)
    est = limits.step_memory(net, optim.adam(1e-3), _batch(64, 1, 28, 28), _batch(64, dtype=jnp.int32))
    assert est.num_params == nets.num_params(net)
    assert est.activation >= 64 * 32 * 28 * 28 * 4  # the first convolution's 32 channels at 28x28


def test_check_memory_names_the_options_and_the_estimate_in_gib():
    est = limits.MemoryEstimate(num_params=10, persistent=3 * limits.GIB, activation=limits.GIB)
    limits.check_memory(est, "--hidden 10", None)  # nothing reported: nothing to compare with
    limits.check_memory(est, "--hidden 10", (4 * limits.GIB, "available"))
    with pytest.raises(ValueError, match=r"^--hidden 10 --batch-size 2: a network of 10 parameters needs about 4.0 GiB "
                                         r"for one training step .* more than the 2.0 GiB available here; "):
        limits.check_memory(est, "--hidden 10 --batch-size 2", (2 * limits.GIB, "available here"))
    small = limits.MemoryEstimate(num_params=10, persistent=1000, activation=24)
    with pytest.raises(ValueError, match=r"needs about 9.5e-07 GiB .* more than the 4.7e-07 GiB set by "):
        limits.check_memory(small, "--hidden 10", (500, "set by FNET_MEMORY_LIMIT_BYTES"))


def test_available_memory_takes_the_environment_limit_first(monkeypatch):
    monkeypatch.setenv(limits.ENV_MEMORY_LIMIT, "12345")
    assert limits.available_memory() == (12345, f"set by {limits.ENV_MEMORY_LIMIT}")
    monkeypatch.setenv(limits.ENV_MEMORY_LIMIT, "lots")
    with pytest.raises(ValueError, match=f"{limits.ENV_MEMORY_LIMIT} must be a number of bytes, got 'lots'"):
        limits.available_memory()
    monkeypatch.delenv(limits.ENV_MEMORY_LIMIT)
    found = limits.available_memory()
    assert found is None or found[0] > 0


def test_the_step_counter_is_an_int32():
    limits.check_steps(limits.MAX_STEPS, 1)
    assert limits.MAX_STEPS == np.iinfo(np.int32).max
    with pytest.raises(ValueError, match=r"--epochs 2147483648 x 1 steps per epoch is 2,147,483,648 steps, more than "
                                         r"the 2,147,483,647 that the optimizer's step counter \(int32\) can count"):
        limits.check_steps(limits.MAX_STEPS + 1, 1)


@pytest.mark.parametrize("seed", [0, 7, np.int64(3), 2**63 - 1, 5.0])
def test_seeds_in_range(seed):
    assert limits.check_seed("seed", seed) == int(seed)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70, 1.5, float("nan"), True, "3"])
def test_seeds_out_of_range_are_refused(seed):
    with pytest.raises(ValueError, match=r"^--seed must be an integer with 0 <= seed < 2\*\*63, got "):
        limits.check_seed("--seed", seed)
