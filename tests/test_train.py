"""fnet.train: the jit-compiled step, the scanned epoch and fit(), with its divergence rule and
its refusal of non-finite data and params.

Small float64 problems check exact properties (manual == autodiff, epoch == loop of steps, resume
is bitwise); a few short runs on the bundled digits check what fit() records and how it fails.
Nearly all the time is XLA compilation, so the tests share nets and optimizers (fit() reuses the
compiled epoch of a (net, opt) pair) and compile about a dozen programs in all.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _data_fixtures import classification
from _tolerances import adam_noise_floor, assert_trees_close, scale

from fnet import checkpoint, data, nets, optim, schedules, train, trials, xla_options

N, D, C, B = 37, 5, 3, 8  # N is not a multiple of B: the last incomplete batch is dropped


def _copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def _assert_trees_equal(a, b):
    """Bitwise equality of two pytrees (same structure, every leaf np.array_equal)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(la, lb):
        assert np.array_equal(np.asarray(u), np.asarray(v))


def _run_steps(step, net, opt, x, y, steps=4):
    """``steps`` steps from init key 0 over fixed slices of (x, y) with keys fold_in(PRNGKey(100), i)."""
    params, state = net.init(jax.random.PRNGKey(0))
    opt_state = opt.init(params)
    key = jax.random.PRNGKey(100)
    losses = []
    for i in range(steps):
        lo = (i * B) % (N - B)
        batch = (x[lo:lo + B], y[lo:lo + B])
        params, state, opt_state, metrics = step(params, state, opt_state, batch, jax.random.fold_in(key, i))
        losses.append(metrics["loss"])
    return params, state, opt_state, jnp.stack(losses)


# One float64 net with batch norm (state), dropout (keys) and weight decay, one optimizer, and the
# manual jitted step without donation, shared by the tests below so that each compiles only once.
NET64 = nets.mlp(D, [6, 7], C, norm="batchnorm", dropout=0.25, weight_decay=1e-3, dtype="float64")
LR64 = 1e-2
OPT64 = optim.adam(LR64)
# The chain of sums in one of NET64's steps: the products forward (5, 6, 7) and backward (3, 7, 6),
# and the batch sums over 8 (the weight gradients, batch norm's statistics forward and backward).
TERMS64 = (D + 6 + 7) + (C + 7 + 6) + 3 * B
# Its biases feed batch norm, which removes any shift: their gradient is 0 but for rounding. Batch
# norm's running means average x W + b, so they carry the same noise.
BIASES_BEFORE_NORM = ("['dense1']['b']", "['dense2']['b']", "['batchnorm1'].mean", "['batchnorm2'].mean")


def _assert_adam_trajectories_close(actual, expected, steps):
    """Two float64 trajectories of NET64 / OPT64 from the same start agree to rounding; the
    biases before batch norm (pure rounding noise, scaled up by Adam) to the noise floor of their
    neighbours' gradients, whose RMS over the run Adam's second moment holds."""
    opt_state = expected[2]
    grad_scale = np.sqrt(scale(opt_state.nu) / (1 - 0.999 ** int(opt_state.count)))
    floor = adam_noise_floor(lr=LR64, grad_scale=grad_scale, dtype=np.float64, terms=TERMS64, steps=steps)
    assert_trees_close(actual, expected, dtype=np.float64, terms=TERMS64, steps=steps,
                       noise_leaves=BIASES_BEFORE_NORM, noise_floor=floor)


@pytest.fixture(scope="module")
def manual_step():
    return train.make_train_step(NET64, OPT64, donate=False)


@pytest.fixture(scope="module")
def manual_trajectory(manual_step):
    x, y = classification(N, D, C, dtype=np.float64)
    return _run_steps(manual_step, NET64, OPT64, x, y)


# ----------------------------------------------------------------------------- make_train_step


@pytest.mark.xla_defaults
def test_manual_and_autodiff_steps_give_the_same_trajectory(manual_trajectory):
    x, y = classification(N, D, C, dtype=np.float64)
    auto = _run_steps(train.make_train_step(NET64, OPT64, grad="autodiff"), NET64, OPT64, x, y)
    _assert_adam_trajectories_close(auto, manual_trajectory, steps=4)
    # The trajectory really moved (dropout and batch norm active): the check is not vacuous.
    params0, state0 = NET64.init(jax.random.PRNGKey(0))
    assert not np.allclose(manual_trajectory[0]["dense1"]["W"], params0["dense1"]["W"])
    assert not np.allclose(manual_trajectory[1]["batchnorm1"].mean, state0["batchnorm1"].mean)


@pytest.mark.xla_defaults
def test_jit_and_no_jit_steps_agree():
    # A plain net: without jit every primitive is dispatched (and compiled) on its own, which is
    # slow for dropout's random bits; the jit/no-jit question does not depend on the layers.
    net, opt = nets.mlp(D, [6], C, dtype="float64"), optim.momentum(0.1)
    x, y = classification(N, D, C, dtype=np.float64)
    jitted = _run_steps(train.make_train_step(net, opt), net, opt, x, y, steps=2)
    eager = _run_steps(train.make_train_step(net, opt, jit=False), net, opt, x, y, steps=2)
    assert_trees_close(eager, jitted, dtype=np.float64, terms=D + 6 + C + B, steps=2)


@pytest.mark.xla_defaults
def test_donation_consumes_the_inputs_only_when_asked(manual_step, manual_trajectory):
    """make_train_step donates params/state/opt_state by default (the caller must not reuse
    them); donate=False leaves them intact; fit() copies the params/state it is given, so its
    caller's arrays survive."""
    x, y = classification(N, D, C, dtype=np.float64)
    params, state = NET64.init(jax.random.PRNGKey(0))
    kept = _copy((params, state))
    manual_step(params, state, OPT64.init(params), (x[:B], y[:B]), jax.random.PRNGKey(1))
    _assert_trees_equal((params, state), kept)  # still readable and unchanged

    donating = train.make_train_step(NET64, OPT64)
    p, s = _copy((params, state))
    out = donating(p, s, OPT64.init(p), (x[:B], y[:B]), jax.random.fold_in(jax.random.PRNGKey(100), 0))
    assert p["dense1"]["W"].is_deleted() and s["batchnorm1"].mean.is_deleted()
    # Donation changes memory reuse, not results: a donated run follows the same trajectory.
    _assert_adam_trajectories_close(_run_steps(donating, NET64, OPT64, x, y), manual_trajectory, steps=4)
    assert out[0]["dense1"]["W"].shape == (D, 6)


def test_make_train_step_rejects_unknown_grad_mode():
    with pytest.raises(ValueError, match="make_train_step: grad must be one of"):
        train.make_train_step(NET64, OPT64, grad="numerical")


# ----------------------------------------------------------------------------- make_epoch


@pytest.mark.xla_defaults
def test_epoch_equals_a_python_loop_of_steps_over_the_same_batches_and_keys(manual_step):
    x, y = classification(N, D, C, dtype=np.float64)
    params, state = NET64.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(7)
    epoch = train.make_epoch(NET64, OPT64, batch_size=B)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    e_params, e_state, e_opt, e_losses = epoch(*_copy((params, state)), OPT64.init(params), xd, yd, key)
    assert e_losses.shape == (N // B,) and int(e_opt.count) == N // B  # the last 37 - 32 samples are dropped
    assert not xd.is_deleted() and not yd.is_deleted()  # the data is reused every epoch, never donated

    # The documented order: key -> (shuffle, dropout); a permutation cut into N // B batches;
    # step i uses fold_in(dropout_key, i).
    steps = N // B
    key_shuffle, key_dropout = jax.random.split(key)
    order = np.asarray(jax.random.permutation(key_shuffle, N))[: steps * B].reshape(steps, B)
    p, s, o, losses = params, state, OPT64.init(params), []
    for i, idx in enumerate(order):
        p, s, o, m = manual_step(p, s, o, (x[idx], y[idx]), jax.random.fold_in(key_dropout, i))
        losses.append(m["loss"])
    _assert_adam_trajectories_close((e_params, e_state, e_opt, e_losses), (p, s, o, jnp.stack(losses)), steps=steps)


def test_epoch_rejects_a_batch_larger_than_the_data():
    x, y = classification(N, D, C, dtype=np.float64)
    params, state = NET64.init(jax.random.PRNGKey(0))
    epoch = train.make_epoch(NET64, OPT64, batch_size=N + 1)
    with pytest.raises(ValueError, match=f"make_epoch: batch_size {N + 1} is larger than the {N} training samples"):
        epoch(params, state, OPT64.init(params), jnp.asarray(x), jnp.asarray(y), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="make_epoch: batch_size must be a positive int"):
        train.make_epoch(NET64, OPT64, batch_size=0)


# ----------------------------------------------------------------------------- fit

# The nets and optimizer the fit tests share: fit() reuses the compiled epoch of a (net, opt)
# pair, so every test below that trains NET with OPT at batch size 64 compiles nothing new.
NET = nets.mlp(64, [16], 10, norm="batchnorm", dropout=0.2)
PLAIN = nets.mlp(64, [16], 10)
DEEP = nets.mlp(64, [32, 32], 10, dropout=0.1)
OPT = optim.adam(1e-2)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_fit_history_best_params_and_quiet_mode(digits, capsys):
    epochs = 4
    result = train.fit(NET, OPT, digits.x_train, digits.y_train, val=(digits.x_val, digits.y_val),
                       epochs=epochs, batch_size=64, progress=False)
    assert capsys.readouterr().out == ""  # quiet mode prints nothing
    h = result.history
    assert tuple(h) == train.HISTORY_KEYS and all(len(v) == epochs for v in h.values())
    assert h["epoch"] == list(range(1, epochs + 1))
    assert all(t > 0 for t in h["epoch_time"]) and all(s > 0 for s in h["samples_per_s"])
    assert h["train_loss"][-1] < h["train_loss"][0]
    # best_params are those of best_epoch: evaluating them reproduces that epoch's history entry.
    assert h["val_acc"][result.best_epoch - 1] == max(h["val_acc"])
    best = train.evaluate(NET, result.best_params, result.best_state, digits.x_val, digits.y_val)
    assert best["accuracy"] == h["val_acc"][result.best_epoch - 1]
    assert best["loss"] == pytest.approx(h["val_loss"][result.best_epoch - 1], rel=1e-6)
    last = train.evaluate(NET, result.params, result.state, digits.x_val, digits.y_val)
    assert last["accuracy"] == h["val_acc"][-1]
    assert not result.stopped_early

    train.fit(NET, OPT, digits.x_train, digits.y_train, epochs=2, batch_size=64)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "epoch 2/2" in lines[1] and "samples/s" in lines[1]


@pytest.mark.xla_defaults
def test_fit_takes_an_optax_optimizer_and_matches_fnets(digits):
    optax = pytest.importorskip("optax")
    ours = train.fit(PLAIN, optim.adam(1e-2), digits.x_train, digits.y_train, epochs=2, batch_size=64, progress=False)
    theirs = train.fit(PLAIN, optax.adam(1e-2), digits.x_train, digits.y_train, epochs=2, batch_size=64,
                       progress=False)
    steps = 2 * (len(digits.x_train) // 64)
    assert_trees_close(theirs.params, ours.params, dtype=np.float32, terms=64 + 16 + 10 + 64, steps=steps)
    # optax's plain state records no learning rate: the history says so with NaN.
    assert all(math.isnan(lr) for lr in theirs.history["lr"]) and ours.history["lr"] == [1e-2, 1e-2]


@pytest.mark.parametrize("net", [
    nets.mlp(64, [100, 100], 10, dropout=0.1),  # fnet train's default MLP
    nets.mlp(20, [30, 30], 5, norm="batchnorm", init="xavier"),
    nets.mlp(20, [30], 5, init=0.05, dtype="float64"),
    nets.cnn("small_cnn", (1, 8, 8), 10, filters=(4, 8), dense_width=16),
], ids=["default-mlp", "xavier-batchnorm", "normal-float64", "cnn"])
def test_fit_compiles_its_init_faster_with_bitwise_the_same_draws(net):
    # fit compiles net.init at -O1 (3x faster than -O3): the draws must stay bitwise those of XLA's
    # default options, as fit_trials traces net.init into a program compiled with them. The fusion
    # emitters are set explicitly, whatever the suite's XLA_FLAGS.
    key = jax.random.PRNGKey(5)
    spec = jax.ShapeDtypeStruct(key.shape, key.dtype)
    emitters = {"xla_cpu_use_fusion_emitters": True}
    fast = net.init.lower(spec).compile({**xla_options.INIT_COMPILER_OPTIONS, **emitters})(key)
    default = net.init.lower(spec).compile({"xla_backend_optimization_level": 3, **emitters})(key)
    chex.assert_trees_all_equal(fast, default)


def test_fit_init_options_yield_to_an_optimization_level_in_xla_flags(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the options are for XLA:CPU")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert xla_options.init_compiler_options() == xla_options.INIT_COMPILER_OPTIONS
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert xla_options.init_compiler_options() is None


def test_fit_copies_the_params_it_is_given(digits):
    p0, s0 = NET.init(jax.random.PRNGKey(0))
    snapshot = _copy((p0, s0))
    train.fit(NET, OPT, digits.x_train, digits.y_train, epochs=1, batch_size=64, params=p0, state=s0, progress=False)
    assert not p0["dense1"]["W"].is_deleted()
    _assert_trees_equal((p0, s0), snapshot)


def test_fit_early_stopping_stops(digits, capsys):
    # With a zero learning rate nothing improves after epoch 1, so patience 2 stops after epoch 3.
    result = train.fit(PLAIN, optim.sgd(0.0), digits.x_train, digits.y_train, val=(digits.x_val, digits.y_val),
                       epochs=10, batch_size=128, early_stopping=2)
    assert result.stopped_early and result.best_epoch == 1
    assert result.history["epoch"] == [1, 2, 3]
    assert "early stopping" in capsys.readouterr().out


def test_resumed_run_stops_early_where_the_uninterrupted_one_does(digits, tmp_path):
    # Zero learning rate: epoch 1 stays the best, so patience 2 stops after epoch 3. A run
    # interrupted after epoch 2 must resume with its count of stale epochs, not from zero.
    args = (PLAIN, optim.sgd(0.0), digits.x_train, digits.y_train)
    kw = dict(val=(digits.x_val, digits.y_val), batch_size=128, early_stopping=2, progress=False)
    train.fit(*args, epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = train.fit(*args, epochs=10, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.stopped_early and resumed.history["epoch"] == [1, 2, 3]


def test_fit_records_the_schedule_in_history(digits):
    batch_size, lr, decay = 128, 0.1, 0.5
    steps = len(digits.x_train) // batch_size
    opt = optim.sgd(schedules.step_decay(lr, decay, steps))
    result = train.fit(PLAIN, opt, digits.x_train, digits.y_train, epochs=3, batch_size=batch_size, progress=False)
    # history["lr"] is the rate of the epoch's last update: epoch e (1-based) runs at lr * decay**(e-1).
    assert result.history["lr"] == pytest.approx([lr, lr * decay, lr * decay**2], rel=1e-6)


@pytest.mark.xla_defaults
def test_manual_and_autodiff_fit_end_with_the_same_params_to_float32_tolerance(digits):
    # No batch norm here: the bias in front of batch norm has an exact zero gradient, so both
    # runs would feed Adam pure float32 rounding noise there, which Adam scales up to steps of
    # size ~lr (harmless, as the normalization removes that bias, but not comparable).
    runs = [train.fit(DEEP, OPT, digits.x_train, digits.y_train, epochs=3, batch_size=64, grad=g, progress=False)
            for g in ("manual", "autodiff")]
    assert runs[0].params["dense1"]["W"].dtype == jnp.float32
    steps = 3 * (len(digits.x_train) // 64)
    assert_trees_close(runs[1].params, runs[0].params, dtype=np.float32, terms=(64 + 32 + 32) + (10 + 32) + 64,
                       steps=steps)


@pytest.mark.xla_defaults
def test_resume_after_epoch_k_is_bitwise_identical_to_an_uninterrupted_run(digits, tmp_path):
    args = (NET, OPT, digits.x_train, digits.y_train)
    kw = dict(val=(digits.x_val, digits.y_val), batch_size=64, seed=3, progress=False)
    full = train.fit(*args, epochs=3, **kw)
    train.fit(*args, epochs=1, checkpoint_dir=tmp_path, **kw)  # "killed" after epoch 1
    resumed = train.fit(*args, epochs=3, checkpoint_dir=tmp_path, resume=True, **kw)
    for field in ("params", "state", "opt_state", "best_params", "best_state"):
        _assert_trees_equal(getattr(resumed, field), getattr(full, field))
    assert resumed.best_epoch == full.best_epoch
    for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert resumed.history[k] == full.history[k]


def test_checkpoint_of_fit_restores_with_like(digits, tmp_path):
    result = train.fit(NET, OPT, digits.x_train, digits.y_train, epochs=2, batch_size=64, checkpoint_dir=tmp_path,
                       progress=False)
    params, state = NET.init(jax.random.PRNGKey(0))
    like = {"params": params, "state": state, "opt_state": OPT.init(params), "best_params": params, "best_state": state}
    tree = checkpoint.load(tmp_path / train.CHECKPOINT_NAME, like=like)
    assert isinstance(tree["opt_state"], optim.AdamState)
    _assert_trees_equal(
        (tree["params"], tree["state"], tree["opt_state"]), (result.params, result.state, result.opt_state)
    )
    meta = checkpoint.load_metadata(tmp_path / train.CHECKPOINT_NAME)
    assert meta["epoch"] == 2 and meta["history"]["epoch"] == [1, 2]


def test_nan_loss_raises_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    batch_size = 128
    steps = len(digits.x_train) // batch_size
    # A sane rate for epoch 1, an absurd one from epoch 2 on: the loss overflows early in epoch 2.
    opt = optim.sgd(lambda count: jnp.where(count < steps, 1e-2, 1e9))
    # Two hidden layers: their weights feed each other's growth, so the scores overflow float32
    # within a few steps (one ReLU layer just dies and the loss stays finite).
    args = (DEEP, opt, digits.x_train, digits.y_train)
    with pytest.raises(train.TrainingDiverged, match=rf"at epoch 2, step \d+ of {steps}; the checkpoint of epoch 1") as e:
        train.fit(*args, epochs=3, batch_size=batch_size, checkpoint_dir=tmp_path, progress=False)
    assert e.value.history["epoch"] == [1]
    path = tmp_path / train.CHECKPOINT_NAME
    assert checkpoint.load_metadata(path)["epoch"] == 1
    one_epoch = train.fit(*args, epochs=1, batch_size=batch_size, progress=False)
    _assert_trees_equal(checkpoint.load(path)["params"], jax.tree_util.tree_map(np.asarray, one_epoch.params))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 70, np.nan, x), y), ValueError,
         r"training features contain NaN or inf \(first at sample 1, feature 6\)"),
        (lambda x, y: (np.where(x > 0.9, np.inf, x), y), ValueError, "training features contain NaN or inf"),
        (lambda x, y: (x, np.where(y == 9, 10, y)), ValueError, r"training labels must lie in \[0, 10\)"),
        (lambda x, y: (x, y - 1), ValueError, r"training labels must lie in \[0, 10\)"),
        (lambda x, y: (x, y.astype(np.float32)), TypeError, "training labels must be integer class labels"),
        (lambda x, y: (x[:, :60], y), ValueError, r"training features have shape \(\d+, 60\) but the network expects samples of shape \(64,\)"),
        (lambda x, y: (x.astype(np.int32), y), TypeError, "training features must be floating point"),
    ],
    ids=["nan", "inf", "label-too-large", "label-negative", "float-labels", "feature-count", "int-features"],
)
def test_fit_rejects_bad_data_before_training(digits, change, error, match):
    x, y = change(digits.x_train, digits.y_train)
    with pytest.raises(error, match=f"fit: {match}"):
        train.fit(PLAIN, optim.sgd(), x, y, epochs=1, progress=False)


def test_fit_rejects_bad_validation_data_and_options(digits, tmp_path):
    x, y = digits.x_train, digits.y_train
    net = PLAIN
    with pytest.raises(ValueError, match="fit: validation features contain NaN"):
        train.fit(net, optim.sgd(), x, y, val=(np.full_like(digits.x_val, np.nan), digits.y_val), progress=False)
    with pytest.raises(ValueError, match=rf"fit: batch_size must be in \[1, {len(x)}\]"):
        train.fit(net, optim.sgd(), x, y, batch_size=len(x) + 1, progress=False)
    with pytest.raises(ValueError, match="fit: resume=True needs a checkpoint_dir"):
        train.fit(net, optim.sgd(), x, y, resume=True, progress=False)
    with pytest.raises(ValueError, match="fit: epochs must be a positive int"):
        train.fit(net, optim.sgd(), x, y, epochs=0, progress=False)
    with pytest.raises(ValueError, match="grad must be one of"):
        train.fit(net, optim.sgd(), x, y, grad="finite", progress=False)
    assert not any(tmp_path.iterdir())


def test_library_accepts_numpy_integers_and_names_bad_values(tmp_path):
    x, y = classification(40, 3, 2)
    net = nets.mlp(3, [4], 2)
    result = train.fit(net, optim.sgd(0.1), x, y, epochs=np.int64(2), batch_size=np.int32(8),
                            seed=np.int16(1), early_stopping=np.int64(5), progress=False)
    assert result.history["epoch"] == [1, 2]
    with pytest.raises(TypeError, match=r"fit: epochs must be an int, got 2.0"):
        train.fit(net, optim.sgd(0.1), x, y, epochs=2.0, progress=False)
    with pytest.raises(ValueError, match=r"fit: early_stopping must be a positive int \(epochs\), got 0"):
        train.fit(net, optim.sgd(0.1), x, y, batch_size=8, early_stopping=0, progress=False)
    with pytest.raises(ValueError, match="fit: validation data is empty"):
        train.fit(net, optim.sgd(0.1), x, y, batch_size=8, val=(x[:0], y[:0]), progress=False)
    with pytest.raises(ValueError, match="fit: divergence_factor must be a finite number > 1"):
        train.fit(net, optim.sgd(0.1), x, y, batch_size=8, divergence_factor=0.5, progress=False)


# ----------------------------------------------------------------------------- divergence, non-finite values
# An epoch whose mean loss exceeds divergence_factor times the untrained network's loss stops the
# run, naming the epoch (a finite explosion, not only NaN); non-finite data, params and seeds out
# of range are refused before training.


def test_a_finite_explosion_stops_fit_naming_the_epoch():
    x, y = classification(64, 4, 3)
    with pytest.raises(train.TrainingDiverged, match=r"diverged at epoch 1: its mean .* is more than 1000 times "
                                                          r"the untrained network's loss") as e:
        train.fit(nets.mlp(4, [16], 3), optim.adam(1e6), x, y, epochs=3, batch_size=16, progress=False)
    assert e.value.history["epoch"] == []


def test_the_rule_can_be_turned_off_and_does_not_fire_on_healthy_runs():
    x, y = classification(64, 4, 3)
    net = nets.mlp(4, [16], 3)
    healthy = train.fit(net, optim.adam(1e-2), x, y, epochs=5, batch_size=16, progress=False)
    assert healthy.history["epoch"] == [1, 2, 3, 4, 5]
    wild = train.fit(net, optim.adam(1e6), x, y, epochs=2, batch_size=16, progress=False, divergence_factor=None)
    assert max(wild.history["train_loss"]) > 1e3 * healthy.history["train_loss"][0]


def test_a_start_that_is_already_non_finite_is_not_blamed_on_the_learning_rate():
    x, y = classification(64, 4, 3)
    # He init scaled to 1e30: the very first scores overflow float32, before any update.
    with pytest.raises(train.TrainingDiverged, match="untrained network's loss is already .* a smaller learning "
                                                          "rate cannot help"):
        train.fit(nets.mlp(4, [16], 3, init=1e30), optim.sgd(1e-3), x, y, epochs=2, batch_size=16, progress=False)


def test_fit_refuses_non_finite_starting_params_and_seeds_out_of_range():
    x, y = classification(64, 4, 3)
    net = nets.mlp(4, [16], 3)
    params, state = net.init(jax.random.PRNGKey(0))
    params["dense1"]["b"] = params["dense1"]["b"].at[3].set(np.inf)
    with pytest.raises(ValueError, match=r"fit: params\['dense1'\]\['b'\] must be finite"):
        train.fit(net, optim.sgd(0.1), x, y, params=params, state=state, epochs=1, batch_size=16, progress=False)
    for seed, error in ((-1, ValueError), (2**63, ValueError), (2**70, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="fit: seed must be"):
            train.fit(net, optim.sgd(0.1), x, y, seed=seed, epochs=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="fit_trials: seeds must be integers with 0 <= seed"):
        trials.fit_trials(net, lambda h: optim.sgd(h["learning_rate"]), x, y,
                               hparams={"learning_rate": np.full(2, 0.1)}, seeds=np.array([0, -1]), epochs=1,
                               batch_size=16)


def test_fit_and_evaluate_refuse_non_finite_data_and_params():
    x, y = classification(32, 3, 2)
    net = nets.mlp(3, [4], 2)
    params, state = net.init(jax.random.PRNGKey(0))
    bad_params = dict(params, dense1=dict(params["dense1"], W=params["dense1"]["W"].at[1, 2].set(jnp.nan)))
    with pytest.raises(ValueError, match=r"fit: params\['dense1'\]\['W'\] must be finite, found 1 NaN"):
        train.fit(net, optim.sgd(0.1), x, y, batch_size=8, params=bad_params, progress=False)
    x_nan = np.full_like(x, np.nan)
    with pytest.raises(ValueError, match="fit: training features contain NaN or inf"):
        train.fit(net, optim.sgd(0.1), x_nan, y, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="evaluate: x must be finite, found 96 NaN"):
        train.evaluate(net, params, state, x_nan, y)
    with pytest.raises(ValueError, match=r"evaluate: x is empty \(shape \(0, 3\)\)"):
        train.evaluate(net, params, state, x[:0], y[:0])
    with pytest.raises(ValueError, match="evaluate: batch_size must be a positive int, got 0"):
        train.evaluate(net, params, state, x, y, batch_size=0)


# ----------------------------------------------------------------------------- real data


def test_one_epoch_on_mnist_reaches_90_percent(shared_data_dir):  # noqa: F811 (fixture)
    ds = data.load("mnist", data_dir=shared_data_dir)
    net = nets.mlp(784, [100], 10)
    result = train.fit(net, optim.adam(1e-3), ds.x_train, ds.y_train, epochs=1, batch_size=128, progress=False)
    test = train.evaluate(net, result.params, result.state, ds.x_test, ds.y_test)
    assert test["accuracy"] > 0.90
