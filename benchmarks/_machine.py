"""Where a benchmark ran: a short slug for result file names and a dict for the JSON record."""

from __future__ import annotations

import os
import platform
import re


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _cores() -> int:
    # The CPUs this process may run on (a container's limit), not the host's total.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict:
    """CPU model (from /proc/cpuinfo), usable core count, and JAX's default backend and device."""
    import jax

    device = jax.devices()[0]
    return {
        "cpu_model": _cpu_model(),
        "cores": _cores(),
        "jax_backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
    }


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu\b|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_slug() -> str:
    """E.g. ``intel-xeon-processor-2c-cpu`` or ``amd-epyc-7413-16c-gpu-nvidia-h100``: the CPU
    model, the core count and JAX's backend (plus the accelerator's kind when it is not the CPU)."""
    info = machine_info()
    parts = [_slug(info["cpu_model"]), f"{info['cores']}c", info["jax_backend"]]
    if info["jax_backend"] != "cpu":
        parts.append(_slug(info["device_kind"]))
    return "-".join(p for p in parts if p)
