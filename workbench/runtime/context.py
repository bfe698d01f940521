"""The one execution-context interface (CPU and GPU) and ``create_context``, which picks one.

An execution context runs one engine: ``run(feeds)`` validates the feeds and returns the outputs;
``time_layers`` and ``time_end_to_end`` are the device's own measurements (host timers on the CPU,
CUDA events on the GPU), in milliseconds; ``profile`` tabulates them (``runtime/profile.py``) the
same way for every device. One context serializes its own runs with a lock (sharing one context
between threads is safe but not parallel); for parallel inference make one context per thread.
"""

from __future__ import annotations

from typing import Any

from ..errors import EngineCompatibilityError, WorkbenchError
from . import profile as profiling


class NonFiniteWarning(RuntimeWarning):
    """Debug mode found NaN/Inf; the message names the first layer that produced it."""


class LayerError(WorkbenchError, RuntimeError):
    """A layer failed while running; the message names the layer and its ONNX nodes."""


class ExecutionContext:
    """What every context offers. Subclasses set ``device`` and ``profile_note`` (how their
    per-layer and end-to-end samples were taken: shown with every profile)."""

    device: str
    profile_note: str
    active_profile: int | None = None  # set_profile: the one shape range runs must fall in (None: any)

    inputs = property(lambda self: self.engine.inputs, doc="The engine's input specs.")
    outputs = property(lambda self: self.engine.outputs, doc="The engine's output specs.")

    def __init__(self, engine):
        self.engine = engine

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run once; returns {output name: array}. Raises InputError naming a bad feed (for an engine
        with shape ranges: the input, its shape and the range it misses)."""
        raise NotImplementedError

    def set_profile(self, index: int | None) -> None:
        """Runs must fall in shape range (optimization profile) ``index`` of the engine; None (the
        default): any profile, the first that holds a run's shapes (``runtime/buckets.py``)."""
        from .buckets import check_profile_index  # noqa: PLC0415

        self.active_profile = check_profile_index(self.engine.plan, index)

    def time_layers(self, feeds: dict[str, Any], runs: int) -> list[list[float]]:
        """Milliseconds of every layer in each of ``runs`` runs: one sample list per layer."""
        raise NotImplementedError

    def time_end_to_end(self, feeds: dict[str, Any], runs: int) -> list[float]:
        """Milliseconds of each of ``runs`` whole-engine runs."""
        raise NotImplementedError

    def profile_attrs(self) -> dict:
        """Facts about how this context ran, added to a profile's ``attrs``."""
        return {}

    def profile(self, feeds: dict[str, Any] | None = None, runs: int = 10, warmup: int = 1, mode: str | None = None):
        """Per-layer profile as a pandas DataFrame (see ``workbench.runtime.profile``); ``mode``:
        "replay" (GPU: CUPTI on the replayed CUDA graph, the GPU default) or "events"."""
        return profiling.profile(self, feeds, runs=runs, warmup=warmup, mode=mode)


def create_context(engine, device: str | None = None, **options) -> ExecutionContext:
    """The context for ``engine`` on its backend (``device`` may only confirm it). Options: ``debug``,
    ``seed``, ``memory_budget`` (bytes); CPU only: ``threads`` (BLAS threads; default: the cores
    available to the process), ``max_elements``, ``max_loop_iterations``; GPU only: ``cuda_graph``."""
    backend = engine.backend
    device = device or backend
    if device == "auto":
        device = backend
    if device != backend:
        raise WorkbenchError(f"engine was built for {backend}; it cannot run on {device} — "
                             f"rebuild with --device {device}")
    if backend == "cpu":
        if engine.plan.buckets:
            from .buckets import BucketedContext  # noqa: PLC0415

            return BucketedContext(engine, **options)
        from .cpu import CpuExecutionContext  # noqa: PLC0415

        return CpuExecutionContext(engine, **options)
    if options.get("threads") is not None:
        raise WorkbenchError("threads= sets the CPU's BLAS threads; this engine runs on the GPU — leave it out")
    options.pop("threads", None)
    try:
        import cupy  # noqa: F401, PLC0415 - CuPy only when a GPU engine runs
    except ImportError as exc:
        where = f"{engine.target.get('device', 'gpu')}, {engine.target.get('arch', '?')}"
        raise EngineCompatibilityError(
            f"this engine was built for the GPU ({where}) and this machine has no CuPy/CUDA ({exc}) — "
            "rebuild with --device cpu, or install 'workbench[gpu]'") from None
    if engine.plan.buckets:
        from .gpu.bucketed import BucketedGpuContext  # noqa: PLC0415

        return BucketedGpuContext(engine, **options)
    from .gpu.context import GpuExecutionContext  # noqa: PLC0415

    return GpuExecutionContext(engine, **options)
