"""fnet.layers.recurrent (RNN, LSTM, GRU steps and sequences): forwards against slow NumPy loop
references on random shapes, every backward against jax.vjp (float64, < 1e-7) and central
differences, steps against sequences, state carried across batches, the gate orders against
PyTorch, and the argument checks."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _layer_checks import AUTODIFF_TOL, NUMERICAL_TOL, manual_and_vjp, rnd
from hypothesis import given, settings
from hypothesis import strategies as st

from fnet import layers as R
from fnet.gradcheck import NUMERICAL_FLOOR, numerical_gradient, rel_error

# Forward vs the loop reference: the same float64 operations in another order; T <= 5 steps of
# O(D + H) terms of size O(1) each, so a few hundred eps.
FORWARD_TOL = 1e-12


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


# --------------------------------------------------------------------------------------------
# Slow, obviously-correct references: one time step at a time, each gate by its own formula
# --------------------------------------------------------------------------------------------


def rnn_naive(x, h0, Wx, Wh, b):
    x, h, Wx, Wh, b = map(np.asarray, (x, h0, Wx, Wh, b))
    out = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ Wx + h @ Wh + b)
        out.append(h)
    return np.stack(out, axis=1)


def lstm_naive(x, h0, c0, Wx, Wh, b):
    """(all h, last c); gates i, f, o, g in the column blocks of Wx, Wh and b."""
    x, h, c, Wx, Wh, b = map(np.asarray, (x, h0, c0, Wx, Wh, b))
    H = h.shape[1]
    block = {name: slice(k * H, (k + 1) * H) for k, name in enumerate("ifog")}
    out = []
    for t in range(x.shape[1]):
        pre = {k: x[:, t] @ Wx[:, s] + h @ Wh[:, s] + b[s] for k, s in block.items()}
        i, f, o, g = _sigmoid(pre["i"]), _sigmoid(pre["f"]), _sigmoid(pre["o"]), np.tanh(pre["g"])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1), c


def gru_naive(x, h0, Wx, Wh, b, bh):
    """PyTorch's GRU equations, blocks r, z, n."""
    x, h, Wx, Wh, b, bh = map(np.asarray, (x, h0, Wx, Wh, b, bh))
    H = h.shape[1]
    r_, z_, n_ = (slice(k * H, (k + 1) * H) for k in range(3))
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        r = _sigmoid(xt @ Wx[:, r_] + b[r_] + h @ Wh[:, r_])
        z = _sigmoid(xt @ Wx[:, z_] + b[z_] + h @ Wh[:, z_])
        n = np.tanh(xt @ Wx[:, n_] + b[n_] + r * (h @ Wh[:, n_] + bh))
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def _lstm_state(x, h0, c0, Wx, Wh, b):
    h, c_last, cache = R.lstm_state_forward(x, h0, c0, Wx, Wh, b)
    return (h, c_last), cache


def _lstm_state_backward(d, cache):
    return R.lstm_state_backward(*d, cache)


# family -> (forward(*args) -> (out, cache), backward(dout, cache), gates, state count, hidden bias,
# reference(*args) -> out)
FAMILIES = {
    "rnn": (R.rnn_forward, R.rnn_backward, 1, 1, False, rnn_naive),
    "lstm": (R.lstm_forward, R.lstm_backward, 4, 1, False, lambda x, h0, *w: lstm_naive(x, h0, 0 * h0, *w)[0]),
    "lstm_state": (_lstm_state, _lstm_state_backward, 4, 2, False, lstm_naive),
    "gru": (R.gru_forward, R.gru_backward, 3, 1, True, gru_naive),
}


def _family_args(family, rng, n, t, d, h, scale=0.7):
    """The forward's arguments: x, the states, Wx, Wh, b[, bh], weights at ``scale`` (gates
    away from saturation, where every term of the gradient matters)."""
    _, _, gates, states, hidden_bias, _ = FAMILIES[family]
    args = [rnd(rng, (n, t, d))] + [rnd(rng, (n, h)) for _ in range(states)]
    args += [rnd(rng, (d, gates * h), scale), rnd(rng, (h, gates * h), scale), rnd(rng, (gates * h,), scale)]
    return tuple(args + ([rnd(rng, (h,), scale)] if hidden_bias else []))


# --------------------------------------------------------------------------------------------
# Random shapes: forward vs the loops, backward vs jax.vjp (one compiled program per example)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 5), d=st.integers(1, 4), h=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
def test_sequence_matches_loops_and_vjp(family, n, t, d, h, seed):
    forward, backward, *_, reference = FAMILIES[family]
    rng = np.random.default_rng(seed)
    args = _family_args(family, rng, n, t, d, h)
    dout = jax.tree_util.tree_map(lambda s: rnd(rng, s.shape), jax.eval_shape(lambda a: forward(*a)[0], args))
    out, manual, auto = jax.jit(lambda a, g: manual_and_vjp(forward, backward, a, g))(args, dout)
    chex.assert_trees_all_close(out, reference(*args), rtol=FORWARD_TOL, atol=FORWARD_TOL)
    chex.assert_trees_all_equal_shapes_and_dtypes(tuple(manual), args)
    assert rel_error(tuple(manual), auto) < AUTODIFF_TOL


@pytest.fixture(scope="module")
def numeric_grads():
    """{family: (manual, jax.vjp, central differences)} on tiny shapes, one program for all."""
    rng = np.random.default_rng(1)
    inputs = {f: _family_args(f, rng, 2, 3, 2, 3) for f in FAMILIES}
    douts = {f: jax.tree_util.tree_map(lambda s: rnd(rng, s.shape),
                                       jax.eval_shape(lambda a: FAMILIES[f][0](*a)[0], inputs[f])) for f in FAMILIES}

    def all_grads(inputs, douts):
        grads = {}
        for f, (forward, backward, *_) in FAMILIES.items():
            _, manual, auto = manual_and_vjp(forward, backward, inputs[f], douts[f])
            scalar = lambda a, f=f, forward=forward: sum(  # noqa: E731
                jnp.sum(o * g) for o, g in zip(jax.tree_util.tree_leaves(forward(*a)[0]), jax.tree_util.tree_leaves(douts[f])))
            grads[f] = (tuple(manual), auto, numerical_gradient(scalar, inputs[f]))
        return grads

    return jax.jit(all_grads)(inputs, douts)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_backward_matches_central_differences(family, numeric_grads):
    manual, auto, numeric = numeric_grads[family]
    assert rel_error(manual, auto) < AUTODIFF_TOL
    assert rel_error(manual, numeric, floor=NUMERICAL_FLOOR) < NUMERICAL_TOL


# --------------------------------------------------------------------------------------------
# Steps vs sequences; the LSTM state carried across batches
# --------------------------------------------------------------------------------------------

STEPS = {
    "rnn": (R.rnn_step_forward, R.rnn_step_backward, R.rnn_forward, R.rnn_backward),
    "lstm": (R.lstm_step_forward, R.lstm_step_backward, R.lstm_state_forward, R.lstm_state_backward),
    "gru": (R.gru_step_forward, R.gru_step_backward, R.gru_forward, R.gru_backward),
}


@pytest.mark.parametrize("family", list(STEPS))
def test_steps_in_a_loop_equal_the_sequence(family):
    """T steps chained by hand (forward in order, backward in reverse, weight gradients summed)
    give the sequence's hidden states and every gradient."""
    step_fwd, step_bwd, seq_fwd, seq_bwd = STEPS[family]
    lstm = family == "lstm"
    rng = np.random.default_rng(2)
    n, t, d, h = 2, 4, 3, 5
    x, *states = _family_args("lstm_state" if lstm else family, rng, n, t, d, h)[: 3 if lstm else 2]
    weights = _family_args("lstm_state" if lstm else family, rng, n, t, d, h)[3 if lstm else 2:]
    dh, dc_last = rnd(rng, (n, t, h)), rnd(rng, (n, h))

    def by_steps(x, states, weights, dh, dc_last):
        outs, caches = [], []
        for k in range(t):
            out = step_fwd(x[:, k], *states, *weights)
            states, cache = out[:-1], out[-1]
            outs.append(states[0])
            caches.append(cache)
        grads = [jnp.zeros_like(w) for w in weights]
        dstates = (jnp.zeros((n, h)), dc_last) if lstm else (jnp.zeros((n, h)),)
        dxs = []
        for k in reversed(range(t)):
            g = step_bwd(dh[:, k] + dstates[0], *dstates[1:], caches[k])
            dxs.append(g[0])
            dstates = g[1:1 + len(states)]
            grads = [a + b for a, b in zip(grads, g[1 + len(states):])]
        return jnp.stack(outs, axis=1), (jnp.stack(dxs[::-1], axis=1), *dstates, *grads)

    def by_sequence(x, states, weights, dh, dc_last):
        out = seq_fwd(x, *states, *weights)
        return out[0], (seq_bwd(dh, dc_last, out[-1]) if lstm else seq_bwd(dh, out[-1]))

    got = jax.jit(by_sequence)(x, states, weights, dh, dc_last)
    want = jax.jit(by_steps)(x, states, weights, dh, dc_last)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-13)


class CarriedStateTest(chex.TestCase):
    """Truncated BPTT's building block: an LSTM over x = [x1, x2] equals the LSTM over x1 and then
    over x2 from x1's last (h, c); the backward of the second half, fed into the first half's
    (dh[:, -1] and dc_last), gives the full sequence's gradients."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_lstm_state_across_two_batches(self):
        rng = np.random.default_rng(3)
        n, t, d, h = 2, 5, 3, 4
        x, h0, c0, Wx, Wh, b = _family_args("lstm_state", rng, n, t, d, h)
        dh, dc_last = rnd(rng, (n, t, h)), rnd(rng, (n, h))

        @self.variant
        def full(x, h0, c0, dh, dc_last):
            out, c_last, cache = R.lstm_state_forward(x, h0, c0, Wx, Wh, b)
            return out, c_last, R.lstm_state_backward(dh, dc_last, cache)

        @self.variant
        def halves(x, h0, c0, dh, dc_last):
            out1, c1, cache1 = R.lstm_state_forward(x[:, :2], h0, c0, Wx, Wh, b)
            out2, c2, cache2 = R.lstm_state_forward(x[:, 2:], out1[:, -1], c1, Wx, Wh, b)
            dx2, dh1, dc1, *g2 = R.lstm_state_backward(dh[:, 2:], dc_last, cache2)
            dx1, dh0, dc0, *g1 = R.lstm_state_backward(dh[:, :2].at[:, -1].add(dh1), dc1, cache1)
            grads = (jnp.concatenate([dx1, dx2], axis=1), dh0, dc0, *(a + b for a, b in zip(g1, g2)))
            return jnp.concatenate([out1, out2], axis=1), c2, grads

        chex.assert_trees_all_close(halves(x, h0, c0, dh, dc_last), full(x, h0, c0, dh, dc_last),
                                    rtol=1e-12, atol=1e-13)

    @chex.variants(with_jit=True, without_jit=True)
    def test_lstm_forward_is_the_state_form_from_zero(self):
        rng = np.random.default_rng(4)
        x, h0, _, Wx, Wh, b = _family_args("lstm_state", rng, 2, 3, 3, 4)
        dh = rnd(rng, (2, 3, 4))

        @self.variant
        def both(x, h0, dh):
            out, cache = R.lstm_forward(x, h0, Wx, Wh, b)
            out_s, _, cache_s = R.lstm_state_forward(x, h0, jnp.zeros_like(h0), Wx, Wh, b)
            g = R.lstm_state_backward(dh, jnp.zeros_like(h0), cache_s)
            return (out, R.lstm_backward(dh, cache)), (out_s, g[:2] + g[3:])

        got, want = both(x, h0, dh)
        chex.assert_trees_all_equal(got, want)


# --------------------------------------------------------------------------------------------
# The gate orders, as documented, against PyTorch's nn.LSTM and nn.GRU
# --------------------------------------------------------------------------------------------


def _torch_run(module, x, h0, c0=None):
    import torch

    with torch.no_grad():
        xt, ht = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(h0))[None]
        out, _ = module(xt, ht if c0 is None else (ht, torch.from_numpy(np.asarray(c0))[None]))
    return out.numpy()


def test_lstm_gate_order_maps_to_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    d, h = 3, 4
    m = torch.nn.LSTM(d, h, batch_first=True).double()
    blocks = lambda w: np.concatenate([w[k * h:(k + 1) * h] for k in (0, 1, 3, 2)])  # noqa: E731  i, f, g, o -> i, f, o, g
    Wx, Wh = blocks(m.weight_ih_l0.detach().numpy()).T, blocks(m.weight_hh_l0.detach().numpy()).T
    b = blocks((m.bias_ih_l0 + m.bias_hh_l0).detach().numpy())
    rng = np.random.default_rng(5)
    x, h0, c0 = rng.standard_normal((2, 5, d)), rng.standard_normal((2, h)), rng.standard_normal((2, h))
    out, _, _ = R.lstm_state_forward(x, h0, c0, Wx, Wh, b)
    np.testing.assert_allclose(out, _torch_run(m, x, h0, c0), rtol=1e-12, atol=1e-13)


def test_gru_convention_is_pytorchs():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    d, h = 3, 4
    m = torch.nn.GRU(d, h, batch_first=True).double()
    b_ih, b_hh = m.bias_ih_l0.detach().numpy(), m.bias_hh_l0.detach().numpy()
    Wx, Wh = m.weight_ih_l0.detach().numpy().T, m.weight_hh_l0.detach().numpy().T  # blocks r, z, n
    b = np.concatenate([b_ih[:2 * h] + b_hh[:2 * h], b_ih[2 * h:]])
    rng = np.random.default_rng(6)
    x, h0 = rng.standard_normal((2, 5, d)), rng.standard_normal((2, h))
    out, _ = R.gru_forward(x, h0, Wx, Wh, b, b_hh[2 * h:])
    np.testing.assert_allclose(out, _torch_run(m, x, h0), rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------------------------
# Bad input: one clear message naming the function, the argument and the shapes
# --------------------------------------------------------------------------------------------


def _lstm_args(n=2, t=3, d=3, h=4):
    return _family_args("lstm_state", np.random.default_rng(0), n, t, d, h)


def test_bad_shapes_name_the_argument():
    x, h0, c0, Wx, Wh, b = _lstm_args()
    with pytest.raises(ValueError, match=r"lstm_forward: x must have at least one time step, got shape \(2, 0, 3\)"):
        R.lstm_forward(x[:, :0], h0, Wx, Wh, b)
    with pytest.raises(ValueError, match=r"lstm_forward: h0 must have shape \(2, 4\) .*got shapes x \(2, 3, 3\), "
                                         r"h0 \(2, 3\)"):
        R.lstm_forward(x, h0[:, :3], Wx, Wh, b)
    with pytest.raises(ValueError, match=r"lstm_state_forward: c0 must have shape \(2, 4\)"):
        R.lstm_state_forward(x, h0, c0[:1], Wx, Wh, b)
    with pytest.raises(ValueError, match=r"lstm_forward: Wx must have shape \(3, 16\) .*4 gates of H columns"):
        R.lstm_forward(x, h0, Wx[:, :12], Wh, b)
    with pytest.raises(ValueError, match=r"rnn_forward: Wh must have shape \(4, 4\)"):
        R.rnn_forward(x, h0, Wx[:, :4], Wh, b[:4])
    with pytest.raises(ValueError, match=r"gru_step_forward: bh must have shape \(4,\)"):
        R.gru_step_forward(x[:, 0], h0, Wx[:, :12], Wh[:, :12], b[:12], b[:3])
    with pytest.raises(ValueError, match=r"rnn_step_forward: x must have shape \(N, D\), got shape \(2, 3, 3\)"):
        R.rnn_step_forward(x, h0, Wx[:, :4], Wh[:, :4], b[:4])
    _, cache = R.lstm_forward(x, h0, Wx, Wh, b)
    with pytest.raises(ValueError, match=r"lstm_backward: dh has shape \(2, 2, 4\) but the forward output has shape "
                                         r"\(2, 3, 4\)"):
        R.lstm_backward(jnp.zeros((2, 2, 4)), cache)
    _, _, cache = R.lstm_state_forward(x, h0, c0, Wx, Wh, b)
    with pytest.raises(ValueError, match=r"lstm_state_backward: dc_last has shape \(4,\)"):
        R.lstm_state_backward(jnp.zeros((2, 3, 4)), jnp.zeros(4), cache)
    with pytest.raises(ValueError, match=r"temporal_affine_forward: W must have shape \(D, M\) = \(3, M\)"):
        R.temporal_affine_forward(x, Wx.T, b)
