"""fnet.schedules: values against closed forms, jit/vmap, warmup continuity, argument checks."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnet import schedules

STEPS = np.arange(0, 101)

CASES = {
    "constant": (schedules.constant(0.3), lambda s: np.full(s.shape, 0.3)),
    "step_decay": (schedules.step_decay(0.1, 0.5, 10), lambda s: 0.1 * 0.5 ** np.floor(s / 10)),
    "exponential": (schedules.exponential(0.1, 0.5, 10), lambda s: 0.1 * 0.5 ** (s / 10)),
    "exponential_staircase": (
        schedules.exponential(0.1, 0.5, 10, staircase=True),
        lambda s: 0.1 * 0.5 ** np.floor(s / 10),
    ),
    "inverse_time": (schedules.inverse_time(0.1, 0.5, 4), lambda s: 0.1 / (1 + 0.5 * s / 4)),
    "cosine": (
        schedules.cosine(0.1, 50, alpha=0.1),
        lambda s: 0.1 * (0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(s, 50) / 50)) + 0.1),
    ),
    "warmup_cosine": (
        schedules.warmup(schedules.cosine(0.1, 50), 10, init_value=0.01),
        lambda s: np.where(
            s < 10, 0.01 + (0.1 - 0.01) * s / 10, 0.1 * 0.5 * (1 + np.cos(np.pi * np.minimum(s - 10, 50) / 50))
        ),
    ),
    "warmup_constant": (schedules.warmup(0.2, 4), lambda s: np.where(s < 4, 0.2 * s / 4, 0.2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_closed_form_eager_jit_and_array_steps(name):
    sched, closed = CASES[name]
    want = closed(STEPS.astype(np.float64))
    # Elementwise over an int array of steps, eagerly and under jit, and one scalar step at a time.
    np.testing.assert_allclose(sched(jnp.asarray(STEPS)), want, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(sched)(jnp.asarray(STEPS, jnp.int32)), want, rtol=1e-12)
    for s in (0, 7, 10, 55):
        assert float(sched(s)) == pytest.approx(want[s], rel=1e-12)


def test_step_decay_is_cs231n_per_epoch_decay():
    """cs231n's Solver multiplies the rate by lr_decay after every epoch."""
    sched = schedules.step_decay(1e-2, 0.95, steps_per_epoch=7)
    lr, got, want = 1e-2, [], []
    for epoch in range(5):
        for i in range(7):
            got.append(float(sched(epoch * 7 + i)))
            want.append(lr)
        lr *= 0.95
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_warmup_is_continuous_and_zero_steps_is_identity():
    after = schedules.exponential(0.1, 0.5, 10)
    sched = schedules.warmup(after, 5)
    assert float(sched(5)) == pytest.approx(float(after(0)))
    assert float(sched(4)) == pytest.approx(0.1 * 4 / 5)
    assert schedules.warmup(after, 0) is after


def test_vmap_over_a_traced_initial_value():
    init = jnp.array([0.1, 0.2, 0.4])
    out = jax.vmap(lambda v: schedules.step_decay(v, 0.5, 3)(jnp.asarray(7)))(init)
    chex.assert_trees_all_close(out, init * 0.25)


def test_value_at_resolves_floats_arrays_and_schedules():
    assert schedules.value_at(0.5, 3) == 0.5
    arr = jnp.asarray(0.25)
    assert schedules.value_at(arr, 3) is arr
    assert float(schedules.value_at(schedules.inverse_time(1.0, 1.0), 3)) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: schedules.step_decay(0.1, 0.5, 0), ValueError, "step_decay: steps_per_epoch must be a positive int"),
        (lambda: schedules.exponential(0.1, 0.5, 2.5), TypeError, "exponential: transition_steps must be an int"),
        (lambda: schedules.cosine(0.1, -1), ValueError, "cosine: decay_steps must be a positive int"),
        (lambda: schedules.inverse_time(0.1, 0.5, 0), ValueError, "inverse_time: decay_steps must be a positive int"),
        (lambda: schedules.warmup(0.1, -1), ValueError, "warmup: warmup_steps must be an int >= 0"),
        (lambda: schedules.exponential(0.1, float("nan"), 10), ValueError, "exponential: decay_rate must be finite"),
        (lambda: schedules.step_decay(float("inf"), 0.5, 3), ValueError, "step_decay: init_value must be finite"),
        (lambda: schedules.cosine(np.array([0.1, np.nan]), 5), ValueError, "cosine: init_value must be finite"),
        (lambda: schedules.cosine(0.1, 5, alpha=float("-inf")), ValueError, "cosine: alpha must be finite"),
        (lambda: schedules.inverse_time(0.1, float("inf")), ValueError, "inverse_time: decay_rate must be finite"),
        (lambda: schedules.warmup(float("nan"), 3), ValueError, "warmup: schedule must be finite"),
        (lambda: schedules.warmup(0.1, 3, init_value=float("inf")), ValueError, "warmup: init_value must be finite"),
    ],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_integer_step_counts_are_accepted():
    a = schedules.cosine(1.0, np.int64(10))
    b = schedules.cosine(1.0, 10)
    assert float(a(3)) == float(b(3))
    assert float(schedules.warmup(1.0, np.int32(4))(2)) == pytest.approx(0.5)


def test_cosine_reaches_alpha_and_stays():
    sched = schedules.cosine(2.0, 10, alpha=0.25)
    assert float(sched(10)) == pytest.approx(0.5)
    assert float(sched(1000)) == pytest.approx(0.5)
    assert float(sched(5)) == pytest.approx(2.0 * (0.75 * 0.5 * (1 + math.cos(math.pi / 2)) + 0.25))
