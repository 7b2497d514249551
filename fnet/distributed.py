"""Multi-process (multi-host) training on JAX's own machinery: ``jax.distributed`` + a global mesh.

Every process runs the same program (``fnet train --distributed`` or a script calling
:func:`initialize_from_env` and then ``fnet.fit(..., mesh=fnet.distributed.data_mesh())``); JAX joins
them through a coordination service on process 0, the mesh spans the devices of all processes,
and XLA's collectives (NCCL on GPUs, gloo on CPUs) all-reduce the gradients. Every process loads
the same data and computes the same replicated params; only process 0 prints and writes
checkpoints (atomically, see :func:`fnet.checkpoint.save`), so a crash never leaves a torn file.

Environment variables read by :func:`initialize_from_env`:

- ``FNET_COORDINATOR_ADDRESS``: ``host:port`` of process 0 (reachable by every process);
- ``FNET_NUM_PROCESSES``, ``FNET_PROCESS_ID``: the number of processes and this one's id (0-based);
- ``FNET_HEARTBEAT_TIMEOUT`` (seconds, default JAX's 100): how long the coordination service waits
  for a silent process before declaring it dead and failing the others;
- ``FNET_INIT_TIMEOUT`` (seconds, default JAX's 300): how long to wait for all processes to join.

Without ``FNET_COORDINATOR_ADDRESS``, ``jax.distributed.initialize()`` detects the cluster itself
(SLURM, Open MPI, Kubernetes/JobSet, Cloud TPU); see docs/scale_out.md.

The mesh helpers (:func:`data_mesh`, :func:`check_mesh`, :func:`replicate`) serve one process
with several devices as well as several processes.
"""

from __future__ import annotations

import os

import jax
import numpy as np

ENV_ADDRESS = "FNET_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "FNET_NUM_PROCESSES"
ENV_PROCESS_ID = "FNET_PROCESS_ID"
ENV_HEARTBEAT = "FNET_HEARTBEAT_TIMEOUT"
ENV_INIT_TIMEOUT = "FNET_INIT_TIMEOUT"


def _int_env(environ, name: str, *, minimum: int) -> int:
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"initialize_from_env: ${name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"initialize_from_env: ${name} must be >= {minimum}, got {value}")
    return value


def initialize_from_env(environ=None) -> dict:
    """Join this process to a multi-process JAX run, configured by environment variables.

    Must run before anything touches a JAX device. CPU collectives use gloo (``jax_cpu_collectives_implementation``;
    without it a CPU mesh cannot span processes); GPUs use NCCL regardless.

    Args:
      environ: a mapping like ``os.environ`` (the default).

    Returns:
      The arguments given to ``jax.distributed.initialize`` (empty when the cluster was
      auto-detected), plus "process_index" and "process_count" as JAX reports them.

    Raises:
      ValueError: ``FNET_COORDINATOR_ADDRESS`` is set but ``FNET_NUM_PROCESSES`` or
        ``FNET_PROCESS_ID`` is missing or invalid.
    """
    environ = os.environ if environ is None else environ
    kwargs = {}
    if environ.get(ENV_ADDRESS):
        missing = [n for n in (ENV_NUM_PROCESSES, ENV_PROCESS_ID) if not environ.get(n)]
        if missing:
            raise ValueError(f"initialize_from_env: ${ENV_ADDRESS} is set, so ${' and $'.join(missing)} must be set too")
        kwargs = {
            "coordinator_address": environ[ENV_ADDRESS],
            "num_processes": _int_env(environ, ENV_NUM_PROCESSES, minimum=1),
            "process_id": _int_env(environ, ENV_PROCESS_ID, minimum=0),
        }
        if kwargs["process_id"] >= kwargs["num_processes"]:
            raise ValueError(f"initialize_from_env: ${ENV_PROCESS_ID}={kwargs['process_id']} must be < "
                             f"${ENV_NUM_PROCESSES}={kwargs['num_processes']}")
    if environ.get(ENV_HEARTBEAT):
        kwargs["heartbeat_timeout_seconds"] = _int_env(environ, ENV_HEARTBEAT, minimum=1)
    if environ.get(ENV_INIT_TIMEOUT):
        kwargs["initialization_timeout"] = _int_env(environ, ENV_INIT_TIMEOUT, minimum=1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return dict(kwargs, process_index=jax.process_index(), process_count=jax.process_count())


def is_lead() -> bool:
    """True in process 0, the one that prints and writes files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process has reached the barrier ``name`` (nothing to wait for in a run of
    one process); e.g. so that no process reads a file before process 0 has written it."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- data-parallel meshes

#: The mesh axis that data parallelism splits each minibatch along.
DATA_AXIS = "data"


def check_mesh(fn: str, mesh, batch_size: int) -> None:
    """Raise a clear error unless ``mesh`` is a :class:`jax.sharding.Mesh` with a ``"data"`` axis
    whose size divides ``batch_size`` (each device gets ``batch_size / size`` samples of a step)."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"{fn}: mesh has axes {tuple(mesh.axis_names)} but data parallelism needs an axis named {DATA_AXIS!r}, "
            f"e.g. jax.sharding.Mesh(jax.devices(), ({DATA_AXIS!r},))"
        )
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(
            f"{fn}: the global batch of {batch_size} samples cannot be split evenly over the {n} devices of the "
            f"mesh's {DATA_AXIS!r} axis; use a batch_size that is a multiple of {n}"
        )


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: every device of every process)."""
    return jax.sharding.Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicate(tree, mesh: jax.sharding.Mesh):
    """Copy every leaf of ``tree`` to every device of ``mesh`` (``NamedSharding(mesh, P())``).

    Built from each process's host copy with ``jax.make_array_from_callback``, so it also works
    when the mesh spans several processes (each must pass the same values).
    """
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree)
