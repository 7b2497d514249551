"""Data-parallel fit(mesh=...) on 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8,
which must be set before JAX starts, hence a subprocess): the same params as on one device, global
batch-norm statistics, an all-reduce in the compiled epoch, and clear errors for bad meshes."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _tolerances import rounding_rtol

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from fnet import distributed, nets, optim, train

    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    # Batch norm with 2 samples per device: per-device statistics would change every step.
    net = nets.mlp(5, [16, 16], 3, norm="batchnorm", dropout=0.1)
    mesh = distributed.data_mesh()
    out = {}
    for grad in ("manual", "autodiff"):
        kw = dict(epochs=2, batch_size=16, grad=grad, progress=False, val=(x[:8], y[:8]))
        one = train.fit(net, optim.momentum(0.1), x, y, **kw)
        eight = train.fit(net, optim.momentum(0.1), x, y, mesh=mesh, **kw)
        trees = [(one.params, one.state), (eight.params, eight.state)]
        out[grad] = {
            "max_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in zip(*map(jax.tree_util.tree_leaves, trees))),
            "max_abs": max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree_util.tree_leaves(trees[0])),
            "replicated": all(a.sharding.is_fully_replicated and len(a.sharding.device_set) == 8
                              for a in jax.tree_util.tree_leaves(eight.params)),
            "loss_diff": float(np.max(np.abs(np.subtract(one.history["train_loss"], eight.history["train_loss"])))),
            "max_loss": float(np.max(one.history["train_loss"])),
        }
    epoch = train.make_epoch(net, optim.momentum(0.1), batch_size=16, mesh=mesh)
    params, state = distributed.replicate(net.init(jax.random.PRNGKey(0)), mesh)
    hlo = epoch.lower(params, state, distributed.replicate(optim.momentum(0.1).init(params), mesh),
                      *distributed.replicate((x, y, jax.random.PRNGKey(1)), mesh)).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    errors = {}
    for name, kw in {"batch": dict(batch_size=12, mesh=mesh),
                     "axis": dict(batch_size=16, mesh=jax.sharding.Mesh(np.array(jax.devices()), ("batch",)))}.items():
        try:
            train.fit(net, optim.sgd(0.1), x, y, epochs=1, progress=False, **kw)
        except ValueError as e:
            errors[name] = str(e)
    out["errors"] = errors
    print(json.dumps(out))
""")


@pytest.mark.xla_defaults
def test_eight_devices_match_one_device():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"  # the suite's own, and 8 devices
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # float32: a sharded sum adds the same terms in another order (rounding only), tests/_tolerances.py's
    # bound 2 * rtol * scale for 2 epochs of 4 steps of batch 16 through 5-16-16-3 with batch norm.
    rtol = rounding_rtol(np.float32, terms=(5 + 16 + 16) + (3 + 16) + 3 * 16, steps=2 * 4)
    for grad in ("manual", "autodiff"):
        r = out[grad]
        assert r["replicated"], grad
        assert r["max_diff"] <= 2 * rtol * r["max_abs"], (grad, r)
        assert r["loss_diff"] <= 2 * rtol * r["max_loss"], (grad, r)
    assert out["all_reduce"]  # XLA inserted the gradient / statistics all-reduce
    assert "cannot be split evenly over the 8 devices" in out["errors"]["batch"]
    assert "needs an axis named 'data'" in out["errors"]["axis"] and "('batch',)" in out["errors"]["axis"]
