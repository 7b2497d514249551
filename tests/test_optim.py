"""fnet.optim: every optimizer against an independent NumPy implementation of its documented
equations, against optax where the forms coincide, under jit/vmap, and its error messages."""

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fnet import optim, schedules

STEPS = 50

# A random pytree with mixed shapes, containers and dtypes.
SPECS = {
    "W1": ((3, 4), np.float64),
    "b1": ((4,), np.float32),
    "nested": {"gamma": ((2, 3, 2), jnp.bfloat16), "scalar": ((), np.float64)},
    "pair": [((5,), np.float64), ((2, 2), np.float32)],
}
HPARAMS = {
    "sgd": dict(learning_rate=0.05),
    "momentum": dict(learning_rate=0.05, momentum=0.8),
    "nesterov": dict(learning_rate=0.05, momentum=0.8),
    "adagrad": dict(learning_rate=0.1, eps=1e-7),
    "rmsprop": dict(learning_rate=0.01, decay=0.95, eps=1e-8),
    "adam": dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-8),
    "adamw": dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-8, weight_decay=0.1),
}
# Tolerances by leaf dtype: float64 is the spec's 1e-6; float32 and bfloat16 state/params are
# rounded once per step in both implementations, but fnet also rounds inside fused arithmetic.
RTOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-4, np.dtype(jnp.bfloat16): 3e-2}


def _is_spec(x):
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)


def random_tree(rng, specs=SPECS):
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s[0]).astype(np.float64), dtype=s[1]), specs, is_leaf=_is_spec
    )


# ----------------------------------------------------------------------------- NumPy reference


def np_step(name, hp, p, g, slots, t):
    """One step of the documented equations in float64 NumPy; returns (new p, new slots)."""
    lr = hp["learning_rate"]
    if name == "sgd":
        return p - lr * g, slots
    if name == "momentum":
        (v,) = slots
        v = hp["momentum"] * v - lr * g
        return p + v, [v]
    if name == "nesterov":  # cs231n's form: p += -mu * v_prev + (1 + mu) * v
        (v_prev,) = slots
        mu = hp["momentum"]
        v = mu * v_prev - lr * g
        return p - mu * v_prev + (1 + mu) * v, [v]
    if name == "adagrad":
        (h,) = slots
        h = h + g * g
        return p - lr * g / (np.sqrt(h) + hp["eps"]), [h]
    if name == "rmsprop":
        (h,) = slots
        h = hp["decay"] * h + (1 - hp["decay"]) * g * g
        return p - lr * g / (np.sqrt(h) + hp["eps"]), [h]
    if name in ("adam", "adamw"):
        m, v = slots
        b1, b2 = hp["b1"], hp["b2"]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + hp["eps"])
        if name == "adamw":
            step = step + hp["weight_decay"] * p
        return p - lr * step, [m, v]
    raise ValueError(name)


N_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


def np_run(name, hp, p0, grads_seq):
    """Run the reference on one leaf; params and state are stored in the leaf's dtype (rounded
    after every step), as fnet stores them."""
    dtype = p0.dtype

    def stored(x):
        return np.asarray(np.asarray(x, dtype=dtype), dtype=np.float64)

    p = stored(p0)
    slots = [np.zeros_like(p) for _ in range(N_SLOTS[name])]
    for t, g in enumerate(grads_seq, start=1):
        p, slots = np_step(name, hp, p, np.asarray(g, dtype=np.float64), slots, t)
        p, slots = stored(p), [stored(s) for s in slots]
    return p


def fnet_run(opt, params, grads_seq, *, jit=True):
    state = opt.init(params)

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    for grads in grads_seq:
        params, state = step(params, state, grads)
    return params, state


@pytest.mark.parametrize("name", sorted(HPARAMS))
def test_matches_numpy_reference_on_mixed_dtypes(name):
    rng = np.random.default_rng(0)
    params = random_tree(rng)
    grads_seq = [random_tree(rng) for _ in range(STEPS)]
    opt = getattr(optim, name)(**HPARAMS[name])
    final, state = fnet_run(opt, params, grads_seq)

    # Every leaf keeps its dtype, in the params and in every state buffer.
    dtypes = jax.tree_util.tree_map(lambda x: x.dtype, params)
    assert jax.tree_util.tree_map(lambda x: x.dtype, final) == dtypes
    for buf in state[2:]:
        assert jax.tree_util.tree_map(lambda x: x.dtype, buf) == dtypes
    assert int(state.count) == STEPS

    leaves, treedef = jax.tree_util.tree_flatten(params)
    grads_by_leaf = zip(*[treedef.flatten_up_to(g) for g in grads_seq])
    for p0, got, gs in zip(leaves, treedef.flatten_up_to(final), grads_by_leaf):
        want = np_run(name, HPARAMS[name], np.asarray(p0), [np.asarray(g) for g in gs])
        got = np.asarray(got, dtype=np.float64)
        rtol = RTOL[np.dtype(p0.dtype)]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=f"{name} {p0.dtype}")


def test_schedule_and_array_hyperparameters_match_reference():
    """A scheduled rate and array-valued betas: the reference evaluates the schedule at t - 1."""
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)))}
    grads_seq = [{"w": jnp.asarray(rng.normal(size=(4, 3)))} for _ in range(20)]
    sched = schedules.step_decay(0.1, 0.5, 4)
    final, state = fnet_run(optim.adam(sched, b1=jnp.asarray(0.8), b2=jnp.asarray(0.99)), params, grads_seq)
    p = np.asarray(params["w"])
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads_seq, start=1):
        hp = dict(learning_rate=0.1 * 0.5 ** ((t - 1) // 4), b1=0.8, b2=0.99, eps=1e-8)
        p, (m, v) = np_step("adam", hp, p, np.asarray(g["w"]), [m, v], t)
    np.testing.assert_allclose(final["w"], p, rtol=1e-10)
    assert float(optim.current_learning_rate(state)) == pytest.approx(0.1 * 0.5**4)


# ----------------------------------------------------------------------------- worked examples


def _xy_path(opt, steps=3):
    """Points visited on f(x, y) = x * y (gradient (y, x)) from (1, 2)."""
    p = jnp.array([1.0, 2.0])
    state = opt.init(p)
    path = []
    for _ in range(steps):
        updates, state = opt.update(p[::-1], state, p)
        p = optim.apply_updates(p, updates)
        path.append(p.tolist())
    return path


def test_momentum_worked_example():
    assert _xy_path(optim.momentum(learning_rate=1.0, momentum=1.0)) == [[-1, 1], [-4, 1], [-8, 5]]


def test_nesterov_is_bengio_form_not_the_copied_variant():
    mu, lr = 0.9, 0.1
    rng = np.random.default_rng(2)
    grads = rng.normal(size=(5, 3))
    p_right = p_wrong = np.zeros(3)
    v_right = v_wrong = np.zeros(3)
    for g in grads:
        # Bengio's form, with the OLD velocity in the mu**2 term.
        p_right = p_right + mu**2 * v_right - (1 + mu) * lr * g
        v_right = mu * v_right - lr * g
        # The variant: update v first, then use the NEW v in the mu**2 term.
        v_wrong = mu * v_wrong - lr * g
        p_wrong = p_wrong + mu**2 * v_wrong - (1 + mu) * lr * g
    opt = optim.nesterov(lr, mu)
    p, state = jnp.zeros(3), opt.init(jnp.zeros(3))
    for g in grads:
        updates, state = opt.update(jnp.asarray(g), state, p)
        p = optim.apply_updates(p, updates)
    np.testing.assert_allclose(p, p_right, rtol=1e-12)
    assert np.max(np.abs(p_right - p_wrong)) > 1e-2  # the two forms really differ
    assert np.max(np.abs(np.asarray(p) - p_wrong)) > 1e-2


# ----------------------------------------------------------------------------- optax equivalence


def _optax_pairs(optax):
    lr, mu, wd = 0.05, 0.9, 0.1
    return {
        # Same parameters at a constant rate; fnet's velocity is -lr times optax's trace.
        "momentum": (optim.momentum(lr, mu), optax.sgd(lr, momentum=mu)),
        "momentum_ema": (optim.momentum(lr, mu, form="ema"), optax.chain(optax.ema(mu, debias=False), optax.scale(-lr))),
        "nesterov": (optim.nesterov(lr, mu), optax.sgd(lr, momentum=mu, nesterov=True)),
        "sgd": (optim.sgd(lr), optax.sgd(lr)),
        # optax starts h at 0.1 by default and puts eps inside the root.
        "adagrad_eps_in_sqrt": (
            optim.adagrad(lr, eps=1e-7, eps_in_sqrt=True), optax.adagrad(lr, initial_accumulator_value=0.0, eps=1e-7)
        ),
        "rmsprop": (optim.rmsprop(lr, 0.99, 1e-8), optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)),
        "rmsprop_eps_in_sqrt": (optim.rmsprop(lr, 0.9, 1e-8, eps_in_sqrt=True), optax.rmsprop(lr, decay=0.9, eps=1e-8)),
        "adam": (optim.adam(lr), optax.adam(lr)),
        "adamw": (optim.adamw(lr, weight_decay=wd), optax.adamw(lr, weight_decay=wd)),
        "adamw_masked": (
            optim.adamw(lr, weight_decay=wd, mask=optim.weights_only),
            optax.adamw(lr, weight_decay=wd, mask=optim.weights_only),
        ),
        "chain": (
            optim.chain(optim.clip_by_global_norm(1.0), optim.add_weight_decay(wd, mask=optim.weights_only), optim.momentum(lr, mu)),
            optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(wd, mask=optim.weights_only), optax.sgd(lr, mu)),
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["sgd", "momentum", "momentum_ema", "nesterov", "adagrad_eps_in_sqrt", "rmsprop", "rmsprop_eps_in_sqrt", "adam",
     "adamw", "adamw_masked", "chain"],
)
def test_equivalent_to_optax_at_constant_rate(name):
    optax = pytest.importorskip("optax")
    fnet_opt, optax_opt = _optax_pairs(optax)[name]
    rng = np.random.default_rng(3)
    params = {"W1": jnp.asarray(rng.normal(size=(3, 4))), "b1": jnp.asarray(rng.normal(size=4))}
    grads_seq = [jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params) for _ in range(20)]
    ours, _ = fnet_run(fnet_opt, params, grads_seq)
    theirs, state = params, optax_opt.init(params)
    update = jax.jit(optax_opt.update)
    for grads in grads_seq:
        updates, state = update(grads, state, theirs)
        theirs = optax.apply_updates(theirs, updates)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_momentum_velocity_is_minus_lr_times_optax_trace():
    optax = pytest.importorskip("optax")
    lr, params, grads = 0.05, {"w": jnp.arange(3.0)}, {"w": jnp.array([0.5, -1.0, 2.0])}
    _, ours = fnet_run(optim.momentum(lr, 0.9), params, [grads] * 3)
    opt = optax.sgd(lr, momentum=0.9)
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update(grads, state, params)
    chex.assert_trees_all_close(ours.velocity, jax.tree_util.tree_map(lambda t: -lr * t, state[0].trace))


def test_interoperates_with_optax_chain_and_apply_updates():
    optax = pytest.importorskip("optax")
    params = {"W1": jnp.ones((2, 2)), "b1": jnp.zeros(2)}
    grads = {"W1": jnp.full((2, 2), 0.5), "b1": jnp.ones(2)}
    # fnet inside optax.chain, optax inside fnet.chain: both give the same updates.
    a = optax.chain(optax.clip_by_global_norm(1.0), optim.adam(0.1))
    b = optim.chain(optax.clip_by_global_norm(1.0), optim.adam(0.1))
    ua, _ = jax.jit(a.update)(grads, a.init(params), params)
    ub, state_b = jax.jit(b.update)(grads, b.init(params), params)
    chex.assert_trees_all_close(ua, ub)
    chex.assert_trees_all_close(optax.apply_updates(params, ua), optim.apply_updates(params, ub))
    assert float(optim.current_learning_rate(state_b)) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- jit, vmap, recompiles


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_update_same_with_and_without_jit(self):
        params = {"W1": jnp.ones((2, 3)), "b1": jnp.zeros(3, jnp.float32)}
        grads = jax.tree_util.tree_map(lambda x: 0.3 * jnp.ones_like(x), params)
        opt = optim.chain(optim.add_weight_decay(0.1, mask=optim.weights_only), optim.adam(0.01))
        update = self.variant(opt.update)
        state = opt.init(params)
        for _ in range(3):
            updates, state = update(grads, state, params)
            params = optim.apply_updates(params, updates)
        chex.assert_trees_all_equal_dtypes(params, {"W1": jnp.ones((2, 3)), "b1": jnp.zeros(3, jnp.float32)})
        chex.assert_trees_all_close(params["b1"], jnp.full(3, -0.03, jnp.float32), rtol=1e-5)


def _train(lr, params, grads_seq, make=optim.adam):
    opt = make(lr)
    state = opt.init(params)

    def body(carry, grads):
        params, state = carry
        updates, state = opt.update(grads, state, params)
        return (optim.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(body, (params, state), grads_seq)
    return params, state


# One optimizer per kind of state (one velocity, one accumulator, two moments): the lifting to
# pytrees that vmap goes through is shared by all of them.
@pytest.mark.parametrize("make", [optim.momentum, optim.rmsprop, optim.adam])
def test_vmap_over_learning_rates(make):
    rng = np.random.default_rng(4)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)))}
    grads_seq = {"w": jnp.asarray(rng.normal(size=(10, 3, 2)))}
    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    batched, state = jax.vmap(lambda lr: _train(lr, params, grads_seq, make))(lrs)
    for i, lr in enumerate(lrs):
        single, _ = _train(float(lr), params, grads_seq, make)
        chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], batched), single, rtol=1e-12)
    np.testing.assert_allclose(optim.current_learning_rate(state), lrs)


def test_changing_a_traced_learning_rate_does_not_recompile():
    traces = []

    @jax.jit
    def step(lr, params, state, grads):
        traces.append(1)  # runs only while tracing
        opt = optim.chain(optim.add_weight_decay(lr / 10), optim.adam(lr))
        updates, state = opt.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    params = {"w": jnp.ones(3)}
    state = optim.chain(optim.add_weight_decay(0.0), optim.adam(0.1)).init(params)
    for lr in (0.1, 0.01, 0.5):
        params, state = step(jnp.asarray(lr), params, state, {"w": jnp.ones(3)})
    assert len(traces) == 1
    assert step._cache_size() == 1


# ----------------------------------------------------------------------------- errors


def test_grads_not_matching_params_names_the_paths():
    opt = optim.adam()
    params = {"W1": jnp.ones((2, 2)), "b1": jnp.ones(2), "W2": jnp.ones(3)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"adam: grads does not match.*missing \['W2'\].*unexpected \['W3'\]"):
        opt.update({"W1": jnp.ones((2, 2)), "b1": jnp.ones(2), "W3": jnp.ones(3)}, state, params)
    with pytest.raises(ValueError, match=r"shapes differ at \['b1'\]: \(3,\) vs \(2,\)"):
        opt.update({"W1": jnp.ones((2, 2)), "b1": jnp.ones(3), "W2": jnp.ones(3)}, state, params)
    with pytest.raises(ValueError, match=r"apply_updates: updates does not match params: missing \['W2'\]"):
        optim.apply_updates(params, {"W1": jnp.ones((2, 2)), "b1": jnp.ones(2)})


def test_chain_with_mismatched_state():
    params = {"W1": jnp.ones((2, 2)), "b1": jnp.ones(2)}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.momentum(0.1))
    state = opt.init(params)
    with pytest.raises(ValueError, match="chain: state must be the tuple of 2 states.*got a tuple of length 1"):
        opt.update(grads, state[:1], params)
    with pytest.raises(ValueError, match="got a MomentumState"):
        opt.update(grads, state[1], params)
    with pytest.raises(ValueError, match=r"chain: transformation 0 \(state\[0\]\): clip_by_global_norm: state must be a CountState"):
        opt.update(grads, state[::-1], params)
    other = optim.chain(optim.clip_by_global_norm(1.0), optim.momentum(0.1)).init({"W1": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match=r"transformation 1.*momentum: grads does not match state.velocity: unexpected \['b1'\]"):
        opt.update(grads, other, params)
    with pytest.raises(ValueError, match=r"clip_by_global_norm: grads does not match params: missing \['b1'\]"):
        opt.update({"W1": grads["W1"]}, state, params)


def test_weight_decay_needs_params_and_a_matching_mask():
    params = {"W1": jnp.ones(2), "b1": jnp.ones(2)}
    opt = optim.add_weight_decay(0.1, mask={"W1": True})
    with pytest.raises(ValueError, match="needs params"):
        opt.update(params, opt.init(params))
    with pytest.raises(ValueError, match=r"mask does not match params: missing \['b1'\]"):
        opt.update(params, opt.init(params), params)


def test_current_learning_rate_without_a_recorded_rate():
    optax = pytest.importorskip("optax")
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="records no learning rate"):
        optim.current_learning_rate(optax.adam(0.1).init(params))
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=0.3)
    assert float(optim.current_learning_rate(injected.init(params))) == pytest.approx(0.3)


# ----------------------------------------------------------------------------- transformations


def test_weight_decay_on_weights_only():
    params = {"W1": jnp.full((2, 2), 2.0), "b1": jnp.ones(2), "gamma1": jnp.ones(2), "layer": {"W": jnp.ones(1)}}
    assert optim.weights_only(params) == {"W1": True, "b1": False, "gamma1": False, "layer": {"W": True}}
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    opt = optim.add_weight_decay(0.5, mask=optim.weights_only)
    updates, _ = opt.update(grads, opt.init(params), params)
    chex.assert_trees_all_close(
        updates, {"W1": jnp.full((2, 2), 1.0), "b1": jnp.zeros(2), "gamma1": jnp.zeros(2), "layer": {"W": jnp.full(1, 0.5)}}
    )


def test_clip_by_global_norm():
    opt = optim.clip_by_global_norm(1.0)
    big = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}
    clipped, _ = opt.update(big, opt.init(big))
    assert float(optim.global_norm(clipped)) == pytest.approx(1.0)
    chex.assert_trees_all_close(clipped, {"a": jnp.array([0.6, 0.0]), "b": jnp.array([0.8])})
    small = jax.tree_util.tree_map(lambda x: x / 10, big)
    same, _ = opt.update(small, opt.init(small))
    chex.assert_trees_all_close(same, small)


def test_current_learning_rate_follows_a_schedule():
    sched = schedules.warmup(schedules.cosine(0.1, 10), 5)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(sched))
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    assert float(optim.current_learning_rate(state)) == pytest.approx(float(sched(0)))
    update = jax.jit(opt.update)
    for k in range(12):
        _, state = update({"w": jnp.ones(2)}, state, params)
        # After k + 1 updates, the recorded rate is the one the last update used: sched(k).
        assert float(optim.current_learning_rate(state)) == pytest.approx(float(sched(k)))


# ----------------------------------------------------------------------------- properties

float_dtypes = st.sampled_from([np.float32, np.float64, jnp.bfloat16])


@settings(max_examples=5, deadline=None)
@given(
    shapes=st.lists(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), min_size=1, max_size=3),
    dtype=float_dtypes,
    seed=st.integers(0, 2**16),
)
def test_adam_first_step_is_lr_times_sign(shapes, dtype, seed):
    """Adam's first update is -lr * g / (|g| + eps) for any tree shape; dtypes are kept."""
    rng = np.random.default_rng(seed)
    grads = [jnp.asarray(rng.normal(size=s) + 0.5, dtype=dtype) for s in shapes]
    params = [jnp.zeros(s, dtype) for s in shapes]
    opt = optim.adam(0.1)
    updates, state = jax.jit(opt.update)(grads, opt.init(params), params)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
    chex.assert_trees_all_equal_shapes_and_dtypes(state.mu, params)
    want = [-0.1 * np.asarray(g, np.float64) / (np.abs(np.asarray(g, np.float64)) + 1e-8) for g in grads]
    rtol = RTOL[np.dtype(dtype)]
    chex.assert_trees_all_close([np.asarray(u, np.float64) for u in updates], want, rtol=rtol, atol=rtol)


@settings(max_examples=8, deadline=None)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), p_dtype=float_dtypes, u_dtype=float_dtypes)
def test_apply_updates_keeps_param_dtype(shape, p_dtype, u_dtype):
    p = jnp.ones(shape, p_dtype)
    out = optim.apply_updates({"p": p}, {"p": jnp.full(shape, 0.5, u_dtype)})
    chex.assert_trees_all_equal_shapes_and_dtypes(out, {"p": p})
    np.testing.assert_allclose(np.asarray(out["p"], np.float64), 1.5)
