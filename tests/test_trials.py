"""Many trials in one vmapped program (fnet.trials.fit_trials): each trial equals its own fit()
run, new hyperparameter values do not recompile, diverged trials are flagged, and bad input is
rejected before tracing."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _data_fixtures import classification
from _tolerances import assert_trees_close

from fnet import nets, optim, train, trials as fnet_trials

@contextlib.contextmanager
def count_compiles():
    """Collects one entry per XLA compilation inside the ``with`` block."""
    compiles = []

    def listener(event, *_, **__):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 5))
Y = RNG.integers(0, 3, 24).astype(np.int32)
VAL = (RNG.normal(size=(8, 5)), RNG.integers(0, 3, 8).astype(np.int32))
NET = nets.mlp(5, [6, 6], 3, norm="batchnorm", dtype="float64")
FACTORY = lambda h: optim.momentum(h["learning_rate"])  # noqa: E731 - one object, so the program is cached


def make_net(h):
    """The trial's network: weight decay, dropout and init scale are the trial's (traced) values."""
    return nets.mlp(5, [6, 6], 3, norm="batchnorm", dtype="float64", weight_decay=h["weight_decay"],
                    dropout=h["dropout"], init=h["init_scale"])


HP = {
    "learning_rate": np.array([0.1, 0.02, 0.05]),
    "weight_decay": np.array([0.0, 1e-3, 1e-2]),
    "dropout": np.array([0.2, 0.0, 0.4]),
    "init_scale": np.array([0.3, 0.5, 0.2]),
}
KW = {"val": VAL, "epochs": 2, "batch_size": 8}
STEPS = KW["epochs"] * (len(X) // KW["batch_size"])
# The chain of sums in one step: the products forward (5, 6, 6) and backward (3, 6), and the batch
# sums over 8 (the weight gradients, batch norm's statistics forward and backward).
TERMS = (5 + 6 + 6) + (3 + 6) + 3 * KW["batch_size"]


@pytest.fixture(scope="module")
def trials():
    return fnet_trials.fit_trials(make_net, FACTORY, X, Y, hparams=HP, seeds=np.array([3, 4, 5]), **KW)


@pytest.mark.xla_defaults
def test_each_trial_equals_its_own_fit_run(trials):
    """Trial i of the vmapped program == fit() with trial i's optimizer, net and seed (float64):
    the same init (the trial's init scale), shuffling, dropout masks and steps."""
    assert trials.history["val_acc"].shape == (3, 2) and not trials.diverged.any()
    for i in range(3):
        net_i = make_net({k: jnp.asarray(v[i]) for k, v in HP.items()})  # arrays: the sweep's structure
        single = train.fit(net_i, optim.momentum(float(HP["learning_rate"][i])), X, Y, seed=int(trials.seeds[i]),
                           progress=False, **KW)
        trial = jax.tree_util.tree_map(lambda a: a[i], (trials.params, trials.state))
        assert_trees_close(trial, (single.params, single.state), dtype=np.float64, terms=TERMS, steps=STEPS)
        losses = {key: np.asarray(single.history[key]) for key in ("train_loss", "val_loss")}
        assert_trees_close({key: trials.history[key][i] for key in losses}, losses, dtype=np.float64, terms=TERMS,
                           steps=STEPS)
        # Accuracies are counts of correct samples over n (the trials record them in float32).
        for key, n in (("train_acc", STEPS // KW["epochs"] * KW["batch_size"]), ("val_acc", len(VAL[1]))):
            np.testing.assert_array_equal(np.rint(trials.history[key][i] * n), np.rint(np.asarray(single.history[key]) * n))


def test_init_trials_matches_the_programs_start():
    params, state, opt_state = fnet_trials.init_trials(make_net, FACTORY, np.array([3, 4]),
                                                       {k: v[:2] for k, v in HP.items()})
    init_key, _ = jax.random.split(jax.random.PRNGKey(4))
    p1, _ = make_net({k: jnp.asarray(v[1]) for k, v in HP.items()}).init(init_key)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[1], b), params, p1)
    np.testing.assert_allclose(optim.current_learning_rate(opt_state), HP["learning_rate"][:2])


def test_new_hyperparameter_values_and_per_trial_data_do_not_recompile(trials):
    with count_compiles() as compiles:
        again = fnet_trials.fit_trials(make_net, FACTORY, X, Y, hparams={k: v[::-1].copy() for k, v in HP.items()},
                                 seeds=np.array([5, 4, 3]), **KW)
    assert compiles == []
    # Reversed hyperparameters and seeds give the reversed trials.
    np.testing.assert_allclose(again.history["train_loss"], trials.history["train_loss"][::-1], rtol=1e-12)


@pytest.mark.xla_defaults
def test_per_trial_data():
    """shared_data=False: each trial trains on its own data set (here: the shared one, repeated)."""
    hp = {"learning_rate": np.array([0.1, 0.05])}
    shared = fnet_trials.fit_trials(NET, FACTORY, X, Y, hparams=hp, epochs=1, batch_size=8)
    own = fnet_trials.fit_trials(NET, FACTORY, np.stack([X, X]), np.stack([Y, Y]), hparams=hp, epochs=1, batch_size=8,
                                 shared_data=False)
    steps = len(X) // 8
    assert_trees_close(own.params, shared.params, dtype=np.float64, terms=TERMS, steps=steps)
    assert np.isnan(shared.history["val_acc"]).all()


@pytest.mark.parametrize("hparams, opt, match", [
    ({"learning_rate": np.array([0.1, 0.2])}, optim.sgd(0.1), "optimizer factory"),
    ({"learning_rate": np.array([0.1, 0.2]), "weight_decay": np.array([0.1])}, FACTORY, "same shape"),
    ({"learning_rate": np.array([0.1, -0.2])}, FACTORY, "must be > 0"),
    ({"learning_rate": np.array([0.1]), "dropout": np.array([1.0])}, FACTORY, r"\[0, 1\)"),
    ({}, FACTORY, "non-empty dict"),
])
def test_bad_hparams(hparams, opt, match):
    with pytest.raises(ValueError, match=match):
        fnet_trials.fit_trials(NET, opt, X, Y, hparams=hparams)


def test_bad_data_and_seeds():
    hp = {"learning_rate": np.array([0.1, 0.2])}
    with pytest.raises(ValueError, match="leading trial axis"):
        fnet_trials.fit_trials(NET, FACTORY, X, Y, hparams=hp, shared_data=False)
    with pytest.raises(ValueError, match="seeds"):
        fnet_trials.fit_trials(NET, FACTORY, X, Y, hparams=hp, seeds=np.array([1, 2, 3]), batch_size=8)
    with pytest.raises(TypeError, match="make_opt must be an"):
        fnet_trials.fit_trials(NET, 0.1, X, Y, hparams=hp)
    with pytest.raises(TypeError, match="make_net must be a Net or a factory"):
        fnet_trials.fit_trials("mlp", FACTORY, X, Y, hparams=hp)
    with pytest.raises(TypeError, match="make_net must return a Net, got Module"):
        fnet_trials.fit_trials(lambda h: NET.module, FACTORY, X, Y, hparams=hp)
    # a factory's network that does not fit the data is refused before the program is traced
    with pytest.raises(ValueError, match="fit_trials: training features have shape"):
        fnet_trials.fit_trials(lambda h: nets.mlp(7, [4], 3), FACTORY, X, Y, hparams=hp)


def test_fit_trials_flags_the_same_trials():
    """The rule of fit's divergence test (test_train.py) per trial: only the trial at lr 1e6 is flagged."""
    x, y = classification(64, 4, 3)
    net = nets.mlp(4, [16], 3)
    lrs = np.array([1e-2, 1e6])
    trials = fnet_trials.fit_trials(net, lambda h: optim.adam(h["learning_rate"]), x, y,
                                   hparams={"learning_rate": lrs}, epochs=2, batch_size=16)
    assert trials.diverged.tolist() == [False, True]
