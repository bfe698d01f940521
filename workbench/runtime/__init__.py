"""The lean runtime: executes engines. Imports neither onnx, onnx-ir nor the optimizer."""

from __future__ import annotations

from ..errors import EngineCompatibilityError, WorkbenchError
from .context import ExecutionContext, NonFiniteWarning
from .executor import LayerError


def create_context(engine, device: str | None = None, **options):
    backend = engine.backend
    device = device or backend
    if device in ("auto",):
        device = backend
    if device != backend:
        raise WorkbenchError(f"engine was built for {backend}; it cannot run on {device} — rebuild with --device {device}")
    if backend == "cpu":
        return ExecutionContext(engine, **options)
    try:
        import cupy  # noqa: F401, PLC0415 - CuPy only when a GPU engine runs
    except ImportError as exc:
        raise EngineCompatibilityError(
            f"this engine was built for the GPU ({engine.target.get('device', 'gpu')}, {engine.target.get('arch', '?')}) "
            f"and this machine has no CuPy/CUDA ({exc}) — rebuild with --device cpu, or install 'workbench[gpu]'") from None
    from .gpu import GpuExecutionContext  # noqa: PLC0415

    return GpuExecutionContext(engine, **options)


__all__ = ["ExecutionContext", "LayerError", "NonFiniteWarning", "create_context"]
