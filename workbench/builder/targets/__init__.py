"""Targets the builder builds for: each states what it can run and picks a tactic per layer.

``cpu.py``: the NumPy reference kernels through the CPU tactic source (fp16 / bf16 emulated).
``gpu.py``: the GPU tactic sources of ``kernels/cuda``, autotuned; imported only when a GPU build is
asked for (it needs CuPy).

May import everything above the builder (``core``, ``ops``, ``kernels``, ``runtime.engine``,
``precision``) and the builder's own modules; never the UI, CLI or public API.
"""

from __future__ import annotations

from typing import Protocol

from ...core.plan import Plan
from ...errors import BuildError
from .cpu import CpuTarget


class Target(Protocol):
    """What the builder asks of a target, in this order: ``assign`` (precision and a tactic for every
    layer), ``target`` (the facts an engine records about where it runs), ``finish`` (what the
    target adds to the engine: compiled kernels, run options, its reports). ``build_stats``:
    timings of this build for people, never saved."""

    name: str
    precisions: tuple[str, ...]
    build_stats: dict

    def target(self) -> dict: ...

    def assign(self, plan: Plan, config, quant=None) -> None: ...

    def finish(self, engine, config) -> None: ...


def gpu_available() -> bool:
    try:
        import cupy  # optional: a CPU-only install has none

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(device: str) -> str:
    """"cpu" or "gpu" for a requested device ("auto": the GPU when one is present)."""
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        raise BuildError("--device gpu was asked for, but no CUDA GPU (with CuPy) is available here")
    return device


def get_target(device: str) -> Target:
    if device == "cpu":
        return CpuTarget()
    from .gpu import GpuTarget  # only here: it loads CuPy and every GPU tactic source

    return GpuTarget()
