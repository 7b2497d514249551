"""The limits a training run must fit in, checked before anything is allocated or written.

- :data:`SEED_BOUND`: a seed is an int with ``0 <= seed < 2**63``. ``jax.random.PRNGKey`` takes a
  signed 64-bit seed; fnet also refuses negative ones, so that every seed names one run.
- :data:`MAX_STEPS`: the optimizers count their updates in an int32 (``count`` in every state of
  :mod:`fnet.optim`, the step at which a schedule is evaluated), so a run takes at most
  ``2**31 - 1`` steps (epochs x steps per epoch); :func:`check_steps`.
- :func:`step_memory`: an estimate of one training step's memory, from shapes alone
  (``jax.eval_shape`` and the traced step's ``jaxpr``: nothing is allocated), and
  :func:`available_memory`, what the device or the machine has free; :func:`check_memory`
  compares them, so that a network too large for the machine is refused in one line instead of
  aborting the interpreter inside XLA's allocator.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnet import files

SEED_BOUND = 2**63
MAX_STEPS = 2**31 - 1
#: An environment variable that sets the memory fnet assumes available (bytes), instead of what
#: the device or the machine reports; for tests and for sharing a machine.
ENV_MEMORY_LIMIT = "FNET_MEMORY_LIMIT_BYTES"
GIB = 1 << 30


def check_seed(name: str, seed) -> int:
    """``seed`` as an int, or a ValueError "<name> must be an integer with 0 <= seed < 2**63, got X"."""
    ok = not isinstance(seed, bool) and isinstance(seed, (int, float, np.integer)) and math.isfinite(seed) \
        and seed == int(seed) and 0 <= int(seed) < SEED_BOUND
    if not ok:
        raise ValueError(f"{name} must be an integer with 0 <= seed < 2**63, got {seed}")
    return int(seed)


def check_steps(epochs: int, steps_per_epoch: int, *, option: str = "--epochs") -> None:
    """Refuse a run of more than :data:`MAX_STEPS` optimizer steps (the int32 step counter)."""
    total = epochs * steps_per_epoch
    if total > MAX_STEPS:
        raise ValueError(f"{option} {epochs} x {steps_per_epoch:,} steps per epoch is {total:,} steps, more than the "
                         f"{MAX_STEPS:,} that the optimizer's step counter (int32) can count; choose fewer epochs")


class MemoryEstimate(NamedTuple):
    """One training step's memory, in bytes, as :func:`step_memory` estimates it.

    Fields:
      num_params: the number of parameters (array elements of ``params``).
      persistent: what lives through the whole run: params, their gradients, the best epoch's
        copy, the optimizer state, and the network state (batch-norm statistics) with its copy.
      activation: the largest single array of one step's forward and backward pass on a batch.
    """

    num_params: int
    persistent: int
    activation: int

    @property
    def total(self) -> int:
        """A lower bound on the step's memory: XLA's temporaries and the data come on top."""
        return self.persistent + self.activation


def _nbytes(tree) -> int:
    return sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(tree))


def _largest_array(jaxpr) -> int:
    """The largest array (bytes) that any equation of ``jaxpr`` or of its sub-programs makes."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            try:
                largest = max(largest, math.prod(var.aval.shape) * np.dtype(var.aval.dtype).itemsize)
            except (AttributeError, TypeError):  # a token, or an extended dtype (a PRNG key)
                continue
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(sub, "eqns"):
                    largest = max(largest, _largest_array(sub))
    return largest


def step_memory(net, opt, x, y) -> MemoryEstimate:
    """Estimate the memory of training ``net`` with ``opt`` on one batch, without allocating.

    Args:
      net: a :class:`fnet.nets.Net`.
      opt: its optimizer (``init``/``update``).
      x, y: one batch's inputs and targets: arrays or ``jax.ShapeDtypeStruct`` (shapes (B, ...)).

    Returns:
      A :class:`MemoryEstimate`: parameters, gradients, best copy and network state from
      ``jax.eval_shape(net.init)``, the optimizer state from ``jax.eval_shape(opt.init)``, and the
      largest array of the traced ``net.loss_and_grad`` on the batch (``jax.make_jaxpr``).
    """
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    params, state = jax.eval_shape(net.init, key)
    opt_state = jax.eval_shape(opt.init, params)
    spec = lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype)
    program = jax.make_jaxpr(lambda p, s, xb, yb, k: net.loss_and_grad(p, xb, yb, state=s, key=k))(
        params, state, spec(x), spec(y), key)
    num_params = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(params))
    return MemoryEstimate(num_params, 3 * _nbytes(params) + _nbytes(opt_state) + 2 * _nbytes(state),
                          _largest_array(program.jaxpr))


def host_memory() -> tuple[int, str] | None:
    """``(bytes, where)``: the memory this machine can still give a process, or None where
    nothing reports it: :data:`ENV_MEMORY_LIMIT` when set, else ``MemAvailable``
    (``/proc/meminfo``), else the available pages (``os.sysconf``)."""
    if os.environ.get(ENV_MEMORY_LIMIT):
        text = os.environ[ENV_MEMORY_LIMIT]
        if not text.isdigit():
            raise ValueError(f"{ENV_MEMORY_LIMIT} must be a number of bytes, got {text!r}")
        return int(text), f"set by {ENV_MEMORY_LIMIT}"
    try:
        for line in files.read_regular("/proc/meminfo", limit=1 << 20, what="memory info").decode().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available on this machine"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available on this machine"
    except (OSError, ValueError, AttributeError):
        return None


def available_memory(device=None) -> tuple[int, str] | None:
    """``(bytes, where)``: the memory a run on ``device`` (default: this process's first device)
    may use, or None when nothing reports it.

    In order: :data:`ENV_MEMORY_LIMIT`; the device's own free memory where it reports one (a GPU's
    ``bytes_limit - bytes_in_use``); the machine's (:func:`host_memory`).
    """
    if os.environ.get(ENV_MEMORY_LIMIT):
        return host_memory()
    device = device if device is not None else jax.local_devices()[0]  # one this process can ask
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - a backend that cannot say: fall back on the machine's memory
        stats = None
    if stats and stats.get("bytes_limit"):
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"free on {device.platform} device {device.id}"
    return host_memory()


def _gib(n: int) -> str:
    return f"{n / GIB:,.1f} GiB" if n >= GIB / 10 else f"{n / GIB:.2g} GiB"


def check_memory(estimate: MemoryEstimate, options: str, available: tuple[int, str] | None) -> None:
    """Refuse a step whose estimate exceeds ``available`` (:func:`available_memory`), naming
    ``options`` (the command-line options that set the sizes) and the estimate in GiB."""
    if available is None or estimate.total <= available[0]:
        return
    raise ValueError(f"{options}: a network of {estimate.num_params:,} parameters needs about {_gib(estimate.total)} "
                     f"for one training step (parameters, gradients, optimizer state and best copy "
                     f"{_gib(estimate.persistent)}, largest activation of a batch {_gib(estimate.activation)}), more "
                     f"than the {_gib(available[0])} {available[1]}; choose smaller sizes")
