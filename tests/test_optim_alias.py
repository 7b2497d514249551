"""fnet.optim.alias, the named optimizers: their selectable forms (``form=``) against
transcriptions of the texts that teach them, the checks of bad hyperparameters, and the errata of
docs/source_errata.md: for each error of a widely copied version, its NumPy transcription differs
from the right one and fnet computes the right one. (test_optim.py checks every optimizer against
a NumPy reference and optax, under jit and vmap, and the transformations and errors of
fnet.optim.base and transform.)

The transcriptions follow their sources' code shape (classes or config dicts over a dict of
arrays, updated in place) rather than fnet's, so that a shared mistake is unlikely."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_optim import fnet_run

from fnet import losses, optim, schedules

STEPS = 8
SHAPES = {"W1": (3, 2), "b1": (2,), "W2": (3, 2)}  # a flat cs231n-style params dict; few shapes, few compiles


def _tree(rng, scale=1.0):
    return {k: scale * rng.normal(size=s) for k, s in SHAPES.items()}


def _problem(seed=0, grad_scale=0.3):
    """float64 params and STEPS gradients, as NumPy dicts."""
    rng = np.random.default_rng(seed)
    return _tree(rng), [_tree(rng, grad_scale) for _ in range(STEPS)]


def _fnet(opt, params, grads_seq):
    """fnet's final params, as NumPy. Eager, which is faster than compiling for 8 steps;
    tests/test_optim.py runs the optimizers under jit and vmap."""
    final, _ = fnet_run(opt, params, grads_seq, jit=False)
    return {k: np.asarray(v) for k, v in final.items()}


def _run(ref, params, grads_seq, lr_at=None):
    """Drive a Deep-Learning-from-Scratch-style optimizer object (``update(params, grads)`` in
    place); ``lr_at(count)`` sets its rate before each update, as fnet evaluates schedules."""
    params = {k: v.copy() for k, v in params.items()}
    for count, grads in enumerate(grads_seq):
        if lr_at is not None:
            ref.lr = lr_at(count)
        ref.update(params, grads)
    return params


def _assert_close(got, want, rtol=1e-12):
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-14, err_msg=k)


def _rel_diff(a, b, p0):
    """``|da - db| / |db|`` for the displacements ``da = a - p0``, ``db = b - p0`` over the whole
    tree (a global norm: single displacements may be near 0)."""
    return np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in p0) / sum(np.sum((b[k] - p0[k]) ** 2) for k in p0))


def _assert_right_not_wrong(ours, right, wrong, p0, min_diff=1e-3):
    """fnet equals the right transcription, and the wrong one really is different."""
    _assert_close(ours, right)
    assert _rel_diff(wrong, right, p0) > min_diff


# ----------------------------------------------------------------------------- transcriptions


class NgMomentum:
    """deeplearning.ai's ``update_parameters_with_momentum`` (v starts at zeros, no bias correction)."""

    def __init__(self, lr=0.01, beta=0.9):
        self.lr, self.beta, self.v = lr, beta, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] = self.beta * self.v[key] + (1 - self.beta) * grads[key]
            params[key] -= self.lr * self.v[key]


class AdaGradEpsInSqrt:
    """AdaGrad with eps inside the root (optax's placement)."""

    def __init__(self, lr=0.01, eps=1e-7):
        self.lr, self.eps, self.h = lr, eps, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / np.sqrt(self.h[key] + self.eps)


class RMSpropEpsInSqrt:
    """RMSProp with eps inside the root (optax's placement)."""

    def __init__(self, lr=0.01, decay_rate=0.99, eps=1e-8):
        self.lr, self.decay_rate, self.eps, self.h = lr, decay_rate, eps, None

    def update(self, params, grads):
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / np.sqrt(self.h[key] + self.eps)


class DlfsAdam:
    """Deep Learning from Scratch's ``common/optimizer.py`` ``Adam``, eps 1e-7 inline as the book has it."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2, self.iter, self.m, self.v = lr, beta1, beta2, 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


def _forms(lr, const):
    """Each new form: (fnet's optimizer, the same hyperparameters in the default form, the
    transcription). ``const`` wraps the hyperparameters other than the rate. eps is large for
    AdaGrad/RMSProp so that its placement shows at gradients of 0.3."""
    return {
        "momentum_ema": (
            optim.momentum(lr, const(0.8), form="ema"), optim.momentum(lr, const(0.8)), NgMomentum(beta=0.8)
        ),
        "adagrad_eps_in_sqrt": (
            optim.adagrad(lr, const(1e-2), eps_in_sqrt=True), optim.adagrad(lr, const(1e-2)), AdaGradEpsInSqrt(eps=1e-2)
        ),
        "rmsprop_eps_in_sqrt": (
            optim.rmsprop(lr, const(0.9), const(1e-2), eps_in_sqrt=True),
            optim.rmsprop(lr, const(0.9), const(1e-2)),
            RMSpropEpsInSqrt(decay_rate=0.9, eps=1e-2),
        ),
        "adam_dlfs": (
            optim.adam(lr, const(0.8), const(0.99), form="dlfs"),
            optim.adam(lr, const(0.8), const(0.99), eps=1e-7),
            DlfsAdam(beta1=0.8, beta2=0.99),
        ),
    }


FORMS = sorted(_forms(0.1, float))


@pytest.mark.parametrize("name", FORMS)
def test_form_matches_its_textbook_transcription(name):
    params, grads_seq = _problem()
    ours, default, ref = _forms(0.05, float)[name]
    ref.lr = 0.05
    want = _run(ref, params, grads_seq)
    _assert_close(_fnet(ours, params, grads_seq), want)
    # The option is not a no-op: the default form, same hyperparameters, takes other steps.
    assert _rel_diff(_fnet(default, params, grads_seq), want, params) > 1e-6


@pytest.mark.parametrize("name", FORMS)
def test_form_takes_a_schedule_and_array_hyperparameters(name):
    params, grads_seq = _problem(1)
    sched = schedules.step_decay(0.1, 0.5, 3)
    ours, _, ref = _forms(sched, jnp.asarray)[name]
    want = _run(ref, params, grads_seq, lr_at=lambda count: float(sched(count)))
    _assert_close(_fnet(ours, params, grads_seq), want)


def test_ema_momentum_is_standard_momentum_at_lr_times_one_minus_rho():
    params, grads_seq = _problem(2)
    lr, rho = 0.05, 0.9
    ema = _fnet(optim.momentum(lr, rho, form="ema"), params, grads_seq)
    _assert_close(ema, _fnet(optim.momentum(lr * (1 - rho), rho), params, grads_seq))


def test_adam_dlfs_is_standard_adam_with_eps_over_sqrt_of_one_minus_b2_power_t():
    """The relation derived in adam's docstring, as a schedule of the standard form's eps."""
    params, grads_seq = _problem(3, grad_scale=1e-5)  # small gradients: eps matters
    b2, eps = 0.999, 1e-7
    eps_t = lambda count: eps / jnp.sqrt(1 - b2 ** (count + 1))  # noqa: E731 - t = count + 1
    dlfs = _fnet(optim.adam(1e-3, b2=b2, form="dlfs"), params, grads_seq)
    standard = _fnet(optim.adam(1e-3, b2=b2, eps=eps_t), params, grads_seq)
    assert _rel_diff(dlfs, standard, params) < 1e-10


@pytest.mark.parametrize(
    ("grad_scale", "low", "high"),
    [(1e-4, 0.01, 0.03), (1.0, 0.0, 1e-5)],  # about 2% where eps matters; 2e-6 where it does not
)
def test_adam_forms_differ_by_where_eps_sits(grad_scale, low, high):
    """Same eps (1e-7) in both forms: the dlfs steps are smaller where |g| is not >> eps.
    Gradients of one sign per entry, so that the displacements add up rather than cancel."""
    rng = np.random.default_rng(4)
    params, signs = _tree(rng), _tree(rng)
    grads_seq = [
        {k: np.sign(signs[k]) * grad_scale * (0.5 + rng.random(s)) for k, s in SHAPES.items()} for _ in range(STEPS)
    ]
    dlfs = _fnet(optim.adam(1e-3, form="dlfs"), params, grads_seq)
    standard = _fnet(optim.adam(1e-3, eps=1e-7), params, grads_seq)
    assert low <= _rel_diff(dlfs, standard, params) <= high
    # Each dlfs step is the smaller one (eps / sqrt(1 - b2**t) > eps); here, the first.
    first = [_fnet(optim.adam(1e-3, **kw), params, grads_seq[:1]) for kw in ({"form": "dlfs"}, {"eps": 1e-7})]
    assert all(np.all(np.abs(first[0][k] - params[k]) < np.abs(first[1][k] - params[k])) for k in params)


def test_adam_eps_default_follows_the_form():
    params, grads_seq = _problem(5, grad_scale=1e-5)
    for form, eps in (("standard", 1e-8), ("dlfs", 1e-7)):
        default = _fnet(optim.adam(form=form), params, grads_seq)
        _assert_close(default, _fnet(optim.adam(eps=eps, form=form), params, grads_seq))


# ----------------------------------------------------------------------------- bad hyperparameters

REJECTED = [
    (lambda: optim.sgd(-0.1), "sgd: learning_rate must be a finite number >= 0, got -0.1"),
    (lambda: optim.sgd(float("nan")), "sgd: learning_rate must be a finite number >= 0, got nan"),
    (lambda: optim.momentum(momentum=1.5), "momentum: momentum must be in [0, 1], got 1.5"),
    (lambda: optim.momentum(momentum=-0.1), "momentum: momentum must be in [0, 1], got -0.1"),
    (lambda: optim.momentum(momentum=1.0, form="ema"), "momentum: momentum must be in [0, 1), got 1.0"),
    (lambda: optim.momentum(-1e-2, form="ema"), "momentum: learning_rate must be a finite number >= 0, got -0.01"),
    (lambda: optim.momentum(form="nag"), "momentum: form must be one of 'standard', 'ema', got 'nag'"),
    (lambda: optim.nesterov(momentum=2.0), "nesterov: momentum must be in [0, 1], got 2.0"),
    (lambda: optim.nesterov(-0.1), "nesterov: learning_rate must be a finite number >= 0, got -0.1"),
    (lambda: optim.adagrad(eps=-1e-7), "adagrad: eps must be a finite number > 0, got -1e-07"),
    (lambda: optim.adagrad(eps=0.0, eps_in_sqrt=True), "adagrad: eps must be a finite number > 0, got 0.0"),
    (lambda: optim.adagrad(eps_in_sqrt="yes"), "adagrad: eps_in_sqrt must be one of False, True, got 'yes'"),
    (lambda: optim.adagrad(eps_in_sqrt=1), "adagrad: eps_in_sqrt must be one of False, True, got 1"),
    (lambda: optim.rmsprop(decay=1.0), "rmsprop: decay must be in [0, 1), got 1.0"),
    (lambda: optim.rmsprop(eps=0, eps_in_sqrt=True), "rmsprop: eps must be a finite number > 0, got 0.0"),
    (lambda: optim.rmsprop(eps_in_sqrt=None), "rmsprop: eps_in_sqrt must be one of False, True, got None"),
    (lambda: optim.adam(b1=1.0), "adam: b1 must be in [0, 1), got 1.0"),
    (lambda: optim.adam(b2=-0.5, form="dlfs"), "adam: b2 must be in [0, 1), got -0.5"),
    (lambda: optim.adam(eps=0.0, form="dlfs"), "adam: eps must be a finite number > 0, got 0.0"),
    (lambda: optim.adam(form="kingma"), "adam: form must be one of 'standard', 'dlfs', got 'kingma'"),
    (lambda: optim.adam(jnp.array([0.1, -0.1])), "adam: learning_rate must be a finite number >= 0, got values in [-0.1, 0.1]"),
    (lambda: optim.adamw(weight_decay=-1e-2), "adamw: weight_decay must be a finite number >= 0, got -0.01"),
    (lambda: optim.adamw(b2=1.0), "adamw: b2 must be in [0, 1), got 1.0"),
    (lambda: optim.add_weight_decay(np.float32(-1.0)), "add_weight_decay: weight_decay must be a finite number >= 0, got -1.0"),
    (lambda: optim.clip_by_global_norm(0.0), "clip_by_global_norm: max_norm must be a finite number > 0, got 0.0"),
]


@pytest.mark.parametrize(("build", "message"), REJECTED, ids=[m for _, m in REJECTED])
def test_bad_hyperparameter_is_rejected_at_construction(build, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build()


# Every optimizer and stand-alone transformation with the hyperparameters it takes, and the range
# each must lie in: a NaN or infinite value of any of them is refused where it is built.
HYPERPARAMETERS = {
    "sgd": (optim.sgd, {"learning_rate": "a finite number >= 0"}),
    "momentum": (optim.momentum, {"learning_rate": "a finite number >= 0", "momentum": "in [0, 1]"}),
    "momentum-ema": (lambda **h: optim.momentum(**h, form="ema"),
                     {"learning_rate": "a finite number >= 0", "momentum": "in [0, 1)"}),
    "nesterov": (optim.nesterov, {"learning_rate": "a finite number >= 0", "momentum": "in [0, 1]"}),
    "adagrad": (optim.adagrad, {"learning_rate": "a finite number >= 0", "eps": "a finite number > 0"}),
    "rmsprop": (optim.rmsprop, {"learning_rate": "a finite number >= 0", "decay": "in [0, 1)",
                                "eps": "a finite number > 0"}),
    "adam": (optim.adam, {"learning_rate": "a finite number >= 0", "b1": "in [0, 1)", "b2": "in [0, 1)",
                          "eps": "a finite number > 0"}),
    "adam-dlfs": (lambda **h: optim.adam(**h, form="dlfs"), {"eps": "a finite number > 0"}),
    "adamw": (optim.adamw, {"learning_rate": "a finite number >= 0", "b1": "in [0, 1)", "b2": "in [0, 1)",
                            "eps": "a finite number > 0", "weight_decay": "a finite number >= 0"}),
    "add_weight_decay": (optim.add_weight_decay, {"weight_decay": "a finite number >= 0"}),
    "clip_by_global_norm": (optim.clip_by_global_norm, {"max_norm": "a finite number > 0"}),
}
NON_FINITE = [
    (name, hparam, value)
    for name, (_, ranges) in HYPERPARAMETERS.items()
    for hparam in ranges
    for value in (float("nan"), float("inf"), float("-inf"))
]


@pytest.mark.parametrize(("name", "hparam", "value"), NON_FINITE)
def test_non_finite_hyperparameter_is_rejected_at_construction(name, hparam, value):
    build, ranges = HYPERPARAMETERS[name]
    fn = name.split("-")[0]
    message = f"{fn}: {hparam} must be {ranges[hparam]}, got {value}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build(**{hparam: value})
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):  # as a concrete array too
        build(**{hparam: jnp.float32(value)})


@pytest.mark.parametrize("name", list(HYPERPARAMETERS))
def test_large_finite_hyperparameters_in_range_are_accepted(name):
    build, ranges = HYPERPARAMETERS[name]
    # The largest float32 where the range is unbounded above: finite, so a valid choice however unwise.
    build(**{h: np.finfo(np.float32).max if r.startswith("a finite") else 0.5 for h, r in ranges.items()})


def test_hyperparameter_that_is_not_a_real_number():
    with pytest.raises(TypeError, match=r"^sgd: learning_rate must be a real number or array or a schedule"):
        optim.sgd("0.1")
    with pytest.raises(TypeError, match=r"^adam: b1 must be a real number"):
        optim.adam(b1=True)


def test_boundary_values_are_accepted():
    for build in (
        lambda: optim.sgd(0.0),  # a zero rate freezes the parameters (fnet.train's tests use it)
        lambda: optim.momentum(momentum=0.0),
        lambda: optim.momentum(momentum=1.0),  # undamped heavy ball: well defined
        lambda: optim.momentum(momentum=0.0, form="ema"),
        lambda: optim.nesterov(momentum=1.0),
        lambda: optim.rmsprop(decay=0.0),
        lambda: optim.adam(b1=0.0, b2=0.0, eps=1e-30),
        lambda: optim.adamw(weight_decay=0.0),
        lambda: optim.add_weight_decay(0),
        lambda: optim.adagrad(jnp.asarray(0.1, jnp.bfloat16)),
    ):
        build()


def test_schedules_and_traced_values_are_not_checked():
    optim.sgd(lambda count: -1.0)  # a schedule's values are not known at construction
    params = {"w": jnp.ones(2)}

    @jax.jit
    def first_update(lr, b1):
        opt = optim.adam(lr, b1)
        return opt.update(params, opt.init(params), params)[0]

    assert np.all(np.asarray(first_update(-0.1, 1.5)["w"]) != 0)


# ----------------------------------------------------------------------------- errata


def cs231n_adam(x, dx, config, bug=None):
    """cs231n assignment 2's ``adam(x, dx, config)``, with ``bug`` one of the copied errors:
    "g_squared" (first moment of g*g), "no_power_t" (1 - beta instead of 1 - beta**t),
    "t_starts_at_1" (``setdefault('t', 1)``, incremented before use) or "t_after_use"."""
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("m", np.zeros_like(x))
    config.setdefault("v", np.zeros_like(x))
    config.setdefault("t", 1 if bug == "t_starts_at_1" else 0)
    b1, b2 = config["beta1"], config["beta2"]
    if bug != "t_after_use":
        config["t"] += 1
    t = config["t"]
    config["m"] = b1 * config["m"] + (1 - b1) * (dx * dx if bug == "g_squared" else dx)
    config["v"] = b2 * config["v"] + (1 - b2) * (dx * dx)
    power = 1 if bug == "no_power_t" else t
    m_hat = config["m"] / (1 - b1**power)
    v_hat = config["v"] / (1 - b2**power)
    next_x = x - config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"])
    if bug == "t_after_use":
        config["t"] += 1
    return next_x, config


def _cs231n_run(rule, params, grads_seq, **kw):
    """cs231n's Solver loop: one config dict per parameter."""
    configs = {k: {"learning_rate": 1e-2} for k in params}
    params = dict(params)
    for grads in grads_seq:
        for k in params:
            params[k], configs[k] = rule(params[k], grads[k], configs[k], **kw)
    return params


@pytest.mark.parametrize("bug", ["g_squared", "no_power_t", "t_starts_at_1"])
def test_erratum_adam(bug):
    params, grads_seq = _problem(6)
    right = _cs231n_run(cs231n_adam, params, grads_seq)
    wrong = _cs231n_run(cs231n_adam, params, grads_seq, bug=bug)
    _assert_right_not_wrong(_fnet(optim.adam(1e-2), params, grads_seq), right, wrong, params)


def test_erratum_adam_step_counter_incremented_after_use():
    """With t incremented after use the first update divides by 1 - beta**0 = 0."""
    params, grads_seq = _problem(7)
    with np.errstate(divide="ignore", invalid="ignore"):
        wrong = _cs231n_run(cs231n_adam, params, grads_seq[:1], bug="t_after_use")
    assert not all(np.all(np.isfinite(w)) for w in wrong.values())
    ours = _fnet(optim.adam(1e-2), params, grads_seq[:1])
    # t = 1 at the first update: m_hat = g, sqrt(v_hat) = |g|.
    step = {k: ours[k] - params[k] for k in params}
    _assert_close(step, {k: -1e-2 * g / (np.abs(g) + 1e-8) for k, g in grads_seq[0].items()}, rtol=1e-10)


class DlfsMomentum:
    """Deep Learning from Scratch's ``Momentum`` (right)."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class MomentumUpdateInFirstCallBranch(DlfsMomentum):
    """The update loop indented into the ``if self.v is None:`` branch: it runs on the first call only."""

    def update(self, params, grads):
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
            for key in params:
                self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
                params[key] += self.v[key]


class MomentumVelocityReset(DlfsMomentum):
    """The velocity created on every call (no ``if``): momentum is lost, it is plain SGD."""

    def update(self, params, grads):
        self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


@pytest.mark.parametrize("wrong_cls", [MomentumUpdateInFirstCallBranch, MomentumVelocityReset])
def test_erratum_momentum_velocity_initialization(wrong_cls):
    params, grads_seq = _problem(8)
    right = _run(DlfsMomentum(0.05, 0.9), params, grads_seq)
    wrong = _run(wrong_cls(0.05, 0.9), params, grads_seq)
    _assert_right_not_wrong(_fnet(optim.momentum(0.05, 0.9), params, grads_seq), right, wrong, params)


def test_erratum_momentum_velocity_is_not_a_moving_average():
    """cs231n calls the velocity "a moving average of the gradients"; it is -lr times an
    exponentially weighted SUM, -lr / (1 - mu) times the average (10x its scale at mu = 0.9)."""
    params, grads_seq = _problem(9)
    lr, mu = 0.05, 0.9
    _, velocity = fnet_run(optim.momentum(lr, mu), params, grads_seq, jit=False)
    _, average = fnet_run(optim.momentum(lr, mu, form="ema"), params, grads_seq, jit=False)
    _assert_close(velocity.velocity, {k: -lr / (1 - mu) * a for k, a in average.velocity.items()})


def test_erratum_l2_penalty_sums_over_layers():
    """The penalty is ``+=`` over the weight matrices; ``=`` in the loop keeps the last layer's only."""
    rng = np.random.default_rng(10)
    weights, lam = {"W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=(4, 2))}, 0.1
    right = wrong = 0.0
    for W in weights.values():
        right += 0.5 * lam * np.sum(W**2)
        wrong = 0.5 * lam * np.sum(W**2)
    penalty, _ = losses.l2_weight_decay({k: jnp.asarray(W) for k, W in weights.items()}, lam)
    np.testing.assert_allclose(float(penalty), right, rtol=1e-12)
    assert abs(wrong - right) > 0.01 * right
