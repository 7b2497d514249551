"""The XLA compiler options fnet sets on some of its programs, in one place, each with its why.

Both sets are for XLA:CPU and only for programs that compile once and run once, where compiling is
the whole cost; every other program (the training steps and epochs) compiles with XLA's defaults,
and on other backends everything does.

- :data:`INIT_COMPILER_OPTIONS`: ``fnet.fit``'s ``net.init`` and key splits (:func:`compiled_init`);
- :data:`CHECK_COMPILER_OPTIONS`: the gradient checks of :mod:`fnet.gradcheck` (the test suite
  compiles with them too, through ``XLA_FLAGS``).
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import jax

#: LLVM -O1 compiles a network's initial draws (threefry and the normal's inverse erf, per weight
#: shape) ~3x faster than the default -O3 with bitwise the same numbers (tested), so that trial i
#: of ``fnet.fit_trials``, which traces ``net.init`` into a program compiled with the defaults,
#: still equals ``fit(seed=i)`` exactly. (-O0 would round the draws differently; key splits are
#: integer arithmetic, exact at any level.)
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}

#: XLA's older elemental kernel emitter with LLVM -O0 compiles the gradient checks ~2x faster than
#: the defaults, with every gradient equal to the defaults' to rounding (relative 1e-16 over all
#: checks of ``fnet gradcheck``); the two go together, as -O0 with the default fusion emitters
#: miscompiles softmax's gradient to inf (jaxlib 0.10.2).
CHECK_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}


def _on_cpu(options: dict) -> dict | None:
    return options if jax.default_backend() == "cpu" else None


def init_compiler_options() -> dict | None:
    """:data:`INIT_COMPILER_OPTIONS` on a CPU; None (XLA's options) on other backends or when
    ``XLA_FLAGS`` sets an optimization level, which then applies to the init as to every other
    program (so that they still round alike)."""
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return _on_cpu(INIT_COMPILER_OPTIONS)


def check_compiler_options() -> dict | None:
    """:data:`CHECK_COMPILER_OPTIONS` on a CPU; None (XLA's options) on other backends."""
    return _on_cpu(CHECK_COMPILER_OPTIONS)


@functools.lru_cache(maxsize=64)
def compiled_init(fn: Callable, *specs: jax.ShapeDtypeStruct):
    """``fn`` (``net.init``, a key split) compiled with :func:`init_compiler_options` for
    arguments of the shapes and dtypes ``specs`` (cached: one compilation per function and shapes)."""
    return jax.jit(fn).lower(*specs).compile(init_compiler_options())
