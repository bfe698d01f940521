"""The lean runtime: executes engines. Imports neither onnx, onnx-ir nor the optimizer."""

from __future__ import annotations

from ..errors import WorkbenchError
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
    from .gpu import GpuExecutionContext  # noqa: PLC0415 - CuPy only when a GPU engine runs

    return GpuExecutionContext(engine, **options)


__all__ = ["ExecutionContext", "LayerError", "NonFiniteWarning", "create_context"]
