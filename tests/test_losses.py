"""fnet.losses: hand-written dscores against jax.grad and central differences, numerical
stability for huge scores, the documented conventions (MSE's 1/2, weight decay), bad input; the
temporal softmax loss of sequence models (masked tokens, per-batch or per-token normalization)
against a loop over tokens."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layer_checks import AUTODIFF_TOL, NUMERICAL_TOL, rnd
from absl.testing import parameterized

from fnet import losses, modules
from fnet.gradcheck import NUMERICAL_FLOOR, numerical_gradient, rel_error


def _data(name, dtype, seed=0, n=6, c=4):
    rng = np.random.default_rng(seed)
    scores = jnp.asarray(2.0 * rng.standard_normal((n, c)), dtype)
    if name == "temporal_softmax_cross_entropy":  # 3 time steps
        scores = jnp.asarray(2.0 * rng.standard_normal((n, 3, c)), dtype)
        y = jnp.asarray(rng.integers(0, c, (n, 3)))
    elif name == "softmax_cross_entropy":
        y = jnp.asarray(rng.integers(0, c, n))
    elif name == "mse":
        y = jnp.asarray(rng.standard_normal((n, c)), dtype)
    else:
        y = jnp.asarray(rng.integers(0, 2, (n, c)), dtype)
    return losses.LOSSES[name], scores, y


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_dscores_matches_grad_and_finite_differences_float64(name):
    loss_fn, scores, y = _data(name, jnp.float64)
    loss, dscores = loss_fn(scores, y)
    chex.assert_shape(loss, ())
    chex.assert_equal_shape([dscores, scores])
    auto_loss, auto = jax.value_and_grad(lambda s: loss_fn(s, y)[0])(scores)
    np.testing.assert_allclose(loss, auto_loss, rtol=1e-15)
    assert rel_error(dscores, auto) < AUTODIFF_TOL
    numeric = numerical_gradient(lambda s: loss_fn(s, y)[0], scores)
    assert rel_error(dscores, numeric, floor=NUMERICAL_FLOOR) < NUMERICAL_TOL


def test_mse_with_1d_scores_matches_grad():
    s, y = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.0, 1.0, 0.5])
    loss, ds = losses.mean_squared_error(s, y)
    np.testing.assert_allclose(loss, 0.5 * (1 + 9 + 0) / 3)
    assert rel_error(ds, jax.grad(lambda s: losses.mean_squared_error(s, y)[0])(s)) < AUTODIFF_TOL


class Float32Test(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(n, n) for n in sorted(losses.LOSSES)])
    def test_dscores_float32(self, name):
        loss_fn, scores, y = _data(name, jnp.float32, seed=1)

        @self.variant
        def both(scores, y):
            return loss_fn(scores, y), jax.grad(lambda s: loss_fn(s, y)[0])(scores)

        (loss, dscores), auto = both(scores, y)
        assert loss.dtype == dscores.dtype == jnp.float32
        assert rel_error(dscores, auto) < 1e-3
        loss64, dscores64 = loss_fn(scores.astype(jnp.float64), y if "softmax" in name else y.astype(jnp.float64))
        np.testing.assert_allclose(loss, loss64, rtol=1e-5)


def test_l2_weight_decay_value_and_gradient():
    rng = np.random.default_rng(0)
    ws = {"W1": jnp.asarray(rng.standard_normal((4, 3))), "W2": jnp.asarray(rng.standard_normal((3, 2)))}
    lam = 0.3
    penalty, grads = losses.l2_weight_decay(ws, lam)
    expected = 0.5 * lam * sum(np.sum(np.asarray(w) ** 2) for w in ws.values())
    np.testing.assert_allclose(penalty, expected, rtol=1e-14)
    chex.assert_trees_all_close(grads, {k: lam * w for k, w in ws.items()}, rtol=1e-15)
    auto = jax.grad(lambda p: losses.l2_weight_decay(p, lam)[0])(ws)
    assert rel_error(grads, auto) < AUTODIFF_TOL
    numeric = numerical_gradient(lambda p: losses.l2_weight_decay(p, lam)[0], ws)
    assert rel_error(grads, numeric, floor=NUMERICAL_FLOOR) < NUMERICAL_TOL


def test_l2_weight_decay_traced_lambda_and_dtype():
    ws = {"W": jnp.ones((2, 2), jnp.float32)}
    penalties = jax.jit(jax.vmap(lambda lam: losses.l2_weight_decay(ws, lam)[0]))(jnp.array([0.0, 0.1, 1.0]))
    np.testing.assert_allclose(penalties, [0.0, 0.2, 2.0], rtol=1e-6)
    _, grads = losses.l2_weight_decay(ws, 0.5)
    assert grads["W"].dtype == jnp.float32
    penalty, grads = losses.l2_weight_decay({}, 0.5)
    assert float(penalty) == 0.0 and grads == {}


def test_l2_weight_decay_masked_to_the_weights_of_a_parameter_tree():
    """With ``mask=modules.weight_mask(params)`` the penalty and gradient are those of the "W" leaves
    alone (as if only they were passed), and every other leaf gets an exact zero gradient."""
    rng = np.random.default_rng(1)
    params = {"dense1": {"W": jnp.asarray(rng.standard_normal((4, 3))), "b": jnp.asarray(rng.standard_normal(3))},
              "batchnorm1": {"gamma": jnp.ones(3), "beta": jnp.zeros(3)},
              "dense2": {"W": jnp.asarray(rng.standard_normal((3, 2))), "b": jnp.asarray(rng.standard_normal(2))}}
    mask = modules.weight_mask(params)
    assert mask == {"dense1": {"W": True, "b": False}, "batchnorm1": {"gamma": False, "beta": False},
                    "dense2": {"W": True, "b": False}}
    penalty, grads = losses.l2_weight_decay(params, 0.3, mask=mask)
    alone, alone_grads = losses.l2_weight_decay([params["dense1"]["W"], params["dense2"]["W"]], 0.3)
    assert float(penalty) == float(alone)
    chex.assert_trees_all_equal([grads["dense1"]["W"], grads["dense2"]["W"]], alone_grads)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if not modules.is_weight(path):
            assert not np.any(np.asarray(g)), jax.tree_util.keystr(path)
    auto = jax.grad(lambda p: losses.l2_weight_decay(p, 0.3, mask=mask)[0])(params)
    assert rel_error(grads, auto) < AUTODIFF_TOL
    with pytest.raises(ValueError, match=r"l2_weight_decay: mask does not match weights: missing \['dense2'\]"):
        losses.l2_weight_decay(params, 0.3, mask={k: v for k, v in mask.items() if k != "dense2"})


def test_mse_half_convention():
    scores = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    loss, ds = losses.mean_squared_error(scores, jnp.zeros((2, 2)))
    # 1/(2N) * sum of squares = (1 + 4 + 9 + 16) / 4
    np.testing.assert_allclose(loss, 7.5)
    chex.assert_trees_all_close(ds, scores / 2)


def _softmax_ce_reference(scores, y):
    s = np.asarray(scores, np.float64)
    m = s.max(axis=1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(s - m).sum(axis=1))
    loss = np.mean(logz - s[np.arange(len(y)), np.asarray(y)])
    p = np.exp(s - logz[:, None])
    p[np.arange(len(y)), np.asarray(y)] -= 1
    return loss, p / len(y)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_softmax_cross_entropy_stable_for_huge_scores(dtype):
    scores = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [0.5, -0.5, 1e4]], dtype)
    y = jnp.array([1, 0, 2, 2])
    loss, ds = losses.softmax_cross_entropy(scores, y)
    assert np.isfinite(loss) and np.all(np.isfinite(ds))
    ref_loss, ref_ds = _softmax_ce_reference(scores, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(ds, ref_ds, rtol=1e-6, atol=1e-7)
    auto = jax.grad(lambda s: losses.softmax_cross_entropy(s, y)[0])(scores)
    assert np.all(np.isfinite(auto))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sigmoid_bce_stable_for_huge_scores(dtype):
    scores = jnp.array([[1e4, -1e4], [1e4, -1e4], [0.0, 30.0]], dtype)
    y = jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype)
    loss, ds = losses.sigmoid_binary_cross_entropy(scores, y)
    assert np.isfinite(loss) and np.all(np.isfinite(ds))
    s, t = np.asarray(scores, np.float64), np.asarray(y, np.float64)
    ref = np.mean(np.logaddexp(0.0, s) - s * t)  # -t log p - (1-t) log(1-p), stably
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    ref_ds = (0.5 * (1 + np.tanh(0.5 * s)) - t) / s.size
    np.testing.assert_allclose(ds, ref_ds, rtol=1e-6, atol=1e-12)


def test_mse_huge_scores_finite():
    loss, ds = losses.mean_squared_error(jnp.array([[1e4, -1e4]]), jnp.zeros((1, 2)))
    np.testing.assert_allclose(loss, 1e8)
    chex.assert_tree_all_finite(ds)


def test_losses_under_jit_equal_eager():
    for name in sorted(losses.LOSSES):
        loss_fn, scores, y = _data(name, jnp.float64, seed=5)
        chex.assert_trees_all_close(jax.jit(loss_fn)(scores, y), loss_fn(scores, y), rtol=1e-14)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

SCORES = jnp.zeros((4, 3))


def test_labels_must_be_1d_of_length_n():
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must have shape \(4,\) to match 4 samples, got shape \(4, 1\)"):
        losses.softmax_cross_entropy(SCORES, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must have shape \(4,\) to match 4 samples, got shape \(5,\)"):
        losses.softmax_cross_entropy(SCORES, jnp.zeros(5, jnp.int32))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must have shape \(4,\).*got shape \(\)"):
        losses.softmax_cross_entropy(SCORES, jnp.asarray(0))


@pytest.mark.parametrize("bad", [[0, 1, 2, 3], [-1, 0, 1, 2]])
def test_labels_out_of_range_eager(bad):
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must lie in \[0, 3\) for 3 classes, got values in"):
        losses.softmax_cross_entropy(SCORES, jnp.array(bad))


def test_label_range_check_skipped_under_jit():
    # no error at trace time: the values are unknown there
    loss, ds = jax.jit(losses.softmax_cross_entropy)(SCORES, jnp.array([0, 1, 2, 3]))
    assert loss.shape == () and ds.shape == (4, 3)
    # shape checks still run at trace time
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: y must have shape \(4,\)"):
        jax.jit(losses.softmax_cross_entropy)(SCORES, jnp.array([0, 1, 2]))


def test_labels_accept_lists_and_numpy():
    loss_list, _ = losses.softmax_cross_entropy(SCORES, [0, 1, 2, 0])
    loss_np, _ = losses.softmax_cross_entropy(SCORES, np.array([0, 1, 2, 0]))
    np.testing.assert_allclose(loss_list, np.log(3.0))
    np.testing.assert_allclose(loss_np, np.log(3.0))


def test_non_integer_labels():
    with pytest.raises(TypeError, match=r"softmax_cross_entropy: y must be integer class labels, got dtype float"):
        losses.softmax_cross_entropy(SCORES, jnp.zeros(4))


@pytest.mark.parametrize("name, fn", [("softmax_cross_entropy", losses.softmax_cross_entropy),
                                      ("mean_squared_error", losses.mean_squared_error),
                                      ("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy)])
def test_integer_scores_rejected(name, fn):
    with pytest.raises(TypeError, match=rf"{name}: scores must be a floating-point array, got dtype int"):
        fn(jnp.zeros((4, 3), jnp.int32), jnp.zeros(4, jnp.int32) if "softmax" in name else jnp.zeros((4, 3)))


def test_wrong_ranks_and_shapes():
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: scores must have 2 dimensions, got shape \(3,\)"):
        losses.softmax_cross_entropy(jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"mean_squared_error: y has shape \(4,\) but scores has shape \(4, 3\)"):
        losses.mean_squared_error(SCORES, jnp.zeros(4))
    with pytest.raises(TypeError, match=r"mean_squared_error: y must be a floating-point array, got dtype int"):
        losses.mean_squared_error(SCORES, jnp.zeros((4, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"mean_squared_error: scores must have at least 1 dimensions, got shape \(\)"):
        losses.mean_squared_error(jnp.asarray(1.0), jnp.asarray(1.0))
    with pytest.raises(ValueError, match=r"sigmoid_binary_cross_entropy: y has shape \(4, 2\) but scores has shape \(4, 3\)"):
        losses.sigmoid_binary_cross_entropy(SCORES, jnp.zeros((4, 2)))


# --------------------------------------------------------------------------------------------
# temporal_softmax_loss: a sequence model's loss over (N, T) tokens with a mask
# --------------------------------------------------------------------------------------------


def temporal_softmax_naive(scores, y, mask, normalize):
    scores, y, mask = np.asarray(scores), np.asarray(y), np.asarray(mask)
    n, t, _ = scores.shape
    total, count = 0.0, 0
    for i in range(n):
        for j in range(t):
            if mask[i, j]:
                s = scores[i, j]
                total += np.log(np.sum(np.exp(s - s.max()))) + s.max() - s[y[i, j]]
                count += 1
    return total / (n if normalize == "batch" else max(count, 1))


@pytest.mark.parametrize("normalize", losses.TEMPORAL_NORMALIZATIONS)
def test_temporal_softmax_loss_matches_a_loop_and_grad(normalize):
    rng = np.random.default_rng(9)
    n, t, v = 3, 4, 5
    scores = rnd(rng, (n, t, v), 3.0)
    y = jnp.asarray(rng.integers(0, v, (n, t)))
    mask = jnp.asarray(rng.uniform(size=(n, t)) > 0.3).at[0, 0].set(False)
    loss_fn = lambda s: losses.temporal_softmax_loss(s, y, mask, normalize=normalize)  # noqa: E731
    (loss, dscores), auto, numeric = jax.jit(
        lambda s: (loss_fn(s), jax.grad(lambda s: loss_fn(s)[0])(s), numerical_gradient(lambda s: loss_fn(s)[0], s)))(
        scores)
    np.testing.assert_allclose(loss, temporal_softmax_naive(scores, y, mask, normalize), rtol=1e-13)
    assert rel_error(dscores, auto) < AUTODIFF_TOL
    assert rel_error(dscores, numeric, floor=NUMERICAL_FLOOR) < NUMERICAL_TOL
    assert not np.any(np.asarray(dscores)[0, 0])  # a masked token gets no gradient


def test_temporal_softmax_loss_conventions_differ_by_the_token_count():
    rng = np.random.default_rng(10)
    scores, y = rnd(rng, (2, 3, 4)), jnp.asarray(rng.integers(0, 4, (2, 3)))
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])  # 0/1 numbers work as a mask too
    per_batch, _ = losses.temporal_softmax_loss(scores, y, mask)
    per_token, _ = losses.temporal_softmax_loss(scores, y, mask, normalize="tokens")
    np.testing.assert_allclose(per_batch * 2 / 3, per_token, rtol=1e-14)  # N = 2, 3 unmasked tokens
    empty, d = losses.temporal_softmax_loss(scores, y, jnp.zeros((2, 3), bool), normalize="tokens")
    assert float(empty) == 0.0 and not np.any(np.asarray(d))


def test_temporal_softmax_loss_bad_input():
    scores, y, mask = jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int), jnp.ones((2, 3), bool)
    with pytest.raises(ValueError, match=r"temporal_softmax_loss: mask must have shape \(N, T\) = \(2, 3\) for scores "
                                         r"of shape \(2, 3, 4\), got shape \(3, 2\)"):
        losses.temporal_softmax_loss(scores, y, mask.T)
    with pytest.raises(ValueError, match=r"temporal_softmax_loss: y must have shape \(N, T\) = \(2, 3\)"):
        losses.temporal_softmax_loss(scores, y[:, :2], mask)
    with pytest.raises(ValueError, match=r"temporal_softmax_loss: y must lie in \[0, 4\)"):
        losses.temporal_softmax_loss(scores, y + 4, mask)
    with pytest.raises(TypeError, match=r"temporal_softmax_loss: y must be integer token ids"):
        losses.temporal_softmax_loss(scores, y * 1.0, mask)
    with pytest.raises(ValueError, match=r"temporal_softmax_loss: normalize must be one of \('batch', 'tokens'\), "
                                         r"got 'mean'"):
        losses.temporal_softmax_loss(scores, y, mask, normalize="mean")
