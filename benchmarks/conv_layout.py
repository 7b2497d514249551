"""Convolution layout on this machine: NCHW (the API's layout) vs NHWC inside the layer.

    python -m benchmarks.conv_layout [--reps N] [--batch N]

Times forward + backward of two LeNet-sized convolution layers under ``jit`` (N=128 images of
28x28, 3x3 kernels, pad 1, 1->16 then 16->32 channels, float32), outside any loop:

- ``fnet.layers.conv_forward`` / ``conv_backward`` as they are: NCHW/OIHW at the API, the
  convolutions channel-last inside (NHWC/HWIO, a transpose at each boundary) and dW as one
  im2col matmul per chunk of the batch (see the layout note in ``fnet/layers/conv.py``);
- the three convolutions (forward, dx, dW) with NCHW/OIHW operands, no transposes;
- the same three with NHWC/HWIO operands, transposed from and back to NCHW at each layer's
  boundary;
- as a bound, the NHWC version without those transposes (an NHWC API).

The variants are checked to agree, compiled once, then run in alternating repetitions (so that
the shared machine's load hits all alike); the medians are printed, nothing is written. Inside a
scanned epoch the picture differs (XLA:CPU keeps NCHW convolutions on a slow path there); see
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fnet import layers

_conv = jax.lax.conv_general_dilated


def _nhwc_forward(x, w, b):
    """x (N, H, W, C), w (HH, WW, C, F): stride 1, pad 1 ('SAME' for 3x3)."""
    return _conv(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")) + b


def _nhwc_backward(dout, x, w):
    """fnet's conv_backward (stride 1, pad 1, 3x3) with NHWC/HWIO operands."""
    dx = _conv(dout, w[::-1, ::-1], (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWOI", "NHWC"))
    dw = _conv(x, dout, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("CHWN", "IHWO", "HWNC"))
    return dx, dw, jnp.sum(dout, axis=(0, 1, 2))


def _nchw_forward(x, w, b):
    """x (N, C, H, W), w (F, C, HH, WW): stride 1, pad 1."""
    return _conv(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW")) + b[:, None, None]


def _nchw_backward(dout, x, w):
    """fnet's conv_backward (stride 1, pad 1, 3x3) as two convolutions with NCHW/OIHW operands."""
    dx = _conv(dout, w[:, :, ::-1, ::-1], (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "IOHW", "NCHW"))
    dw = _conv(x, dout, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("CNHW", "IOHW", "CNHW"))
    return dx, dw, jnp.sum(dout, axis=(0, 2, 3))


def fnet_step(x, params, dout):
    """Two conv layers forward, then backward from ``dout``, with fnet.layers."""
    (w1, b1), (w2, b2) = params
    h, c1 = layers.conv_forward(x, w1, b1, pad=1)
    _, c2 = layers.conv_forward(h, w2, b2, pad=1)
    dh, dw2, db2 = layers.conv_backward(dout, c2)
    _, dw1, db1 = layers.conv_backward(dh, c1)
    return (dw1, db1), (dw2, db2)


def nchw_step(x, params, dout):
    """The same with NCHW/OIHW convolutions throughout, no transposes."""
    (w1, b1), (w2, b2) = params
    h = _nchw_forward(x, w1, b1)
    _nchw_forward(h, w2, b2)  # the output is unused, as in fnet_step
    dh, dw2, db2 = _nchw_backward(dout, h, w2)
    _, dw1, db1 = _nchw_backward(dh, x, w1)
    return (dw1, db1), (dw2, db2)


def _to_nhwc(a):
    return a.transpose(0, 2, 3, 1)


def _to_nchw(a):
    return a.transpose(0, 3, 1, 2)


def _to_hwio(w):
    return w.transpose(2, 3, 1, 0)


def _to_oihw(w):
    return w.transpose(3, 2, 0, 1)


def nhwc_inside_step(x, params, dout):
    """The same with NHWC inside each layer: NCHW in and out, transposed at every layer boundary."""
    (w1, b1), (w2, b2) = params
    h = _to_nchw(_nhwc_forward(_to_nhwc(x), _to_hwio(w1), b1))
    h_nhwc, w2_hwio = _to_nhwc(h), _to_hwio(w2)
    _nhwc_forward(h_nhwc, w2_hwio, b2)  # the output is unused, as in fnet_step
    dh, dw2, db2 = _nhwc_backward(_to_nhwc(dout), h_nhwc, w2_hwio)
    dh = _to_nchw(dh)
    _, dw1, db1 = _nhwc_backward(_to_nhwc(dh), _to_nhwc(x), _to_hwio(w1))
    return (_to_oihw(dw1), db1), (_to_oihw(dw2), db2)


def nhwc_only_step(x, params, dout):
    """Bound: NHWC arrays and HWIO kernels throughout, no transposes (an NHWC API)."""
    (w1, b1), (w2, b2) = params
    h = _nhwc_forward(x, w1, b1)
    _nhwc_forward(h, w2, b2)
    dh, dw2, db2 = _nhwc_backward(dout, h, w2)
    _, dw1, db1 = _nhwc_backward(dh, x, w1)
    return (dw1, db1), (dw2, db2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)

    def f32(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    x, dout = f32(args.batch, 1, 28, 28), f32(args.batch, 32, 28, 28)
    params = ((f32(16, 1, 3, 3), f32(16)), (f32(32, 16, 3, 3), f32(32)))
    nhwc_params = tuple((_to_hwio(w), b) for w, b in params)
    variants = {
        "fnet.layers (channel-last inside)": (jax.jit(fnet_step), (x, params, dout)),
        "NCHW convolutions, no transposes": (jax.jit(nchw_step), (x, params, dout)),
        "NHWC inside, transposed at the boundary": (jax.jit(nhwc_inside_step), (x, params, dout)),
        "NHWC only (bound, no transposes)": (jax.jit(nhwc_only_step), (_to_nhwc(x), nhwc_params, _to_nhwc(dout))),
    }
    grads = {name: jax.block_until_ready(f(*a)) for name, (f, a) in variants.items()}  # compile + warm up
    ref = grads["fnet.layers (channel-last inside)"]
    (dw1, db1), (dw2, db2) = grads["NHWC only (bound, no transposes)"]
    for got in (grads["NCHW convolutions, no transposes"], grads["NHWC inside, transposed at the boundary"],
                ((_to_oihw(dw1), db1), (_to_oihw(dw2), db2))):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-3)

    times = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, (f, a) in variants.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*a))
            times[name].append(time.perf_counter() - t0)
    print(f"forward + backward, 2 conv layers, N={args.batch}, {args.reps} alternating reps, "
          f"jax {jax.__version__} on {jax.default_backend()}, load average {os.getloadavg()[0]:.2f}")
    for name, t in times.items():
        print(f"  {name:42s} median {1e3 * statistics.median(t):7.2f} ms   min {1e3 * min(t):7.2f} ms")


if __name__ == "__main__":
    main()
