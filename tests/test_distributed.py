"""fnet.distributed: data-parallel and multi-process training.

- Multi-process: two processes on 127.0.0.1 with gloo CPU collectives train together and end with
  the same params as one process; when one dies, the other fails within the heartbeat timeout and
  the last checkpoint (written by process 0 only) stays intact.
- Data-parallel fit(mesh=...) on 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8,
  which must be set before JAX starts, hence a subprocess): the same params as on one device,
  global batch-norm statistics, an all-reduce in the compiled epoch, and clear errors for bad
  meshes."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from _tolerances import assert_trees_close, rounding_rtol

from fnet import checkpoint, cli, distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEARTBEAT_S = 5

WORKER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from fnet import distributed
    distributed.initialize_from_env()
    import jax
    from fnet import nets, optim, train

    out = sys.argv[1]
    rank = jax.process_index()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    net = nets.mlp(5, [16, 16], 3, norm="batchnorm")
    kw = dict(batch_size=16, progress=False, val=(x[:8], y[:8]), checkpoint_dir=os.path.join(out, "ckpt"))
    together = train.fit(net, optim.momentum(0.1), x, y, epochs=2, mesh=distributed.data_mesh(), **kw)
    flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    np.savez(os.path.join(out, f"p{rank}.npz"), **flat(together.params))
    ref_path = os.path.join(out, "ref.npz")
    if rank == 0:
        alone = train.fit(net, optim.momentum(0.1), x, y, epochs=2, batch_size=16, progress=False, val=(x[:8], y[:8]))
        np.savez(ref_path + ".tmp.npz", **flat(alone.params))
        os.replace(ref_path + ".tmp.npz", ref_path)
    else:
        while not os.path.exists(ref_path):
            time.sleep(0.1)
        os._exit(3)  # dies: process 0 is now alone in the resumed run below
    print("resuming", flush=True)
    train.fit(net, optim.momentum(0.1), x, y, epochs=4, mesh=distributed.data_mesh(), resume=True, **kw)
    print("unreachable: the resumed run finished without process 1", flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_and_fail_cleanly_when_one_dies(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), FNET_NUM_PROCESSES="2",
                FNET_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", FNET_HEARTBEAT_TIMEOUT=str(HEARTBEAT_S),
                FNET_INIT_TIMEOUT="120")
    # One CPU device per process (the suite's compiler options stay).
    base["XLA_FLAGS"] = " ".join(f for f in base.get("XLA_FLAGS", "").split() if "device_count" not in f)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=dict(base, FNET_PROCESS_ID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        out1, err1 = procs[1].communicate(timeout=240)
        died_at = time.monotonic()
        out0, err0 = procs[0].communicate(timeout=240)
        waited = time.monotonic() - died_at
    finally:
        for p in procs:
            p.kill()
    assert procs[1].returncode == 3, err1[-3000:]
    # Trained together: identical replicated params in both processes, equal to a one-process run.
    p0, p1, ref = (np.load(tmp_path / f"{n}.npz") for n in ("p0", "p1", "ref"))
    assert set(p0) == set(ref) == set(p1)
    for k in ref:
        np.testing.assert_array_equal(p0[k], p1[k])
    # float32, 2 epochs of 4 steps of batch 16 through 5-16-16-3 with batch norm; the two processes
    # sum the batch in another order than one.
    assert_trees_close(dict(p0), dict(ref), dtype=np.float32, terms=(5 + 16 + 16) + (3 + 16) + 3 * 16, steps=2 * 4)
    # Process 0 does not hang: the coordination service notices the silent peer and ends it with
    # a clear message, within the heartbeat timeout plus scheduling slack.
    assert "resuming" in out0 and "unreachable" not in out0
    assert procs[0].returncode != 0
    assert "another task died" in err0 or "unhealthy" in err0 or "Gloo" in err0, err0[-3000:]
    assert waited < HEARTBEAT_S + 60
    # The checkpoint of the last completed epoch is intact (process 0 writes it atomically).
    assert checkpoint.load_metadata(tmp_path / "ckpt" / "checkpoint.safetensors")["epoch"] == 2
    saved = checkpoint.load(tmp_path / "ckpt" / "checkpoint.safetensors")["params"]
    assert {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(saved)[0]} == set(ref)
    assert [f.name for f in (tmp_path / "ckpt").iterdir()] == ["checkpoint.safetensors"]  # no stray temporary files


@pytest.mark.parametrize("env, match", [
    ({"FNET_COORDINATOR_ADDRESS": "127.0.0.1:1234", "FNET_NUM_PROCESSES": "2"}, r"\$FNET_PROCESS_ID must be set"),
    ({"FNET_COORDINATOR_ADDRESS": "h:1", "FNET_NUM_PROCESSES": "2", "FNET_PROCESS_ID": "2"}, "must be < "),
    ({"FNET_COORDINATOR_ADDRESS": "h:1", "FNET_NUM_PROCESSES": "two", "FNET_PROCESS_ID": "0"}, "must be an integer"),
])
def test_bad_environment(env, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize_from_env(env)


def test_cli_distributed_needs_a_shared_run_directory(capsys):
    assert cli.main(["train", "--distributed"]) == 2
    assert "--distributed needs --out" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Data-parallel fit(mesh=...) on 8 CPU devices of one process
# --------------------------------------------------------------------------------------------


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
