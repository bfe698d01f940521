"""Engine: a built plan plus its target, build facts and reports; saves to / loads from one file.

The plan holds everything a context needs to run (tactics, configs, binaries, arena, run options);
``reports`` and each layer's ``tactic_table`` are for people and are never read to run, so an
engine with them stripped runs the same. This module and the runtime import neither onnx, onnx-ir
nor the optimizer: a deployment needs only NumPy (and CuPy for GPU engines).
"""

from __future__ import annotations

import os
import platform

import numpy as np

from .._version import __version__
from ..errors import EngineCompatibilityError, EngineFormatError
from ..format.container import read_container, write_container
from ..format.header import check_header
from ..core.liveness import subgraphs_of
from ..core.plan import Layer, Plan
from ..format.serialize import decode_plan, encode_plan
from .context import ExecutionContext, create_context
from .describe import describe, report_tables

BACKENDS = ("cpu", "gpu")


def cpu_target() -> dict:
    return {"backend": "cpu", "device": platform.machine() or "cpu", "numpy": np.__version__}


def _json_safe(value):
    """Reports may hold NaN/inf timings or NumPy scalars; the header is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _check_binaries(layers: list[Layer], kernels: dict[str, bytes]) -> None:
    """Every compiled kernel a layer refers to is in the file (a stripped or edited engine is
    refused at load, not when the layer's kernel is rebuilt)."""
    for layer in layers:
        for kernel, blob in layer.binaries.items():
            if blob not in kernels:
                raise EngineFormatError(f"layer {layer.name!r} refers to blob {blob!r} for kernel {kernel!r}, "
                                        "which the engine file does not hold")
        for sub in subgraphs_of(layer):
            _check_binaries(sub.layers, kernels)


class Engine:
    """An optimized, executable model. Make one with ``workbench.build``; run it through
    ``engine.create_context().run(feeds)``."""

    def __init__(self, plan: Plan, target: dict | None = None, build: dict | None = None,
                 reports: dict | None = None, blobs: dict[str, bytes] | None = None):
        self.plan = plan
        self.target = dict(target or cpu_target())
        self.build_info = dict(build or {})
        self.reports = dict(reports or {})
        self.blobs = dict(blobs or {})  # compiled kernels (cubins) and other backend data
        self.path: str | None = None
        self.build_stats: dict = {}  # timings of this process's build; not saved

    # ---- facts -----------------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        return self.plan.layers

    @property
    def inputs(self):
        return self.plan.inputs

    @property
    def outputs(self):
        return self.plan.outputs

    @property
    def backend(self) -> str:
        return self.target.get("backend", "cpu")

    def __repr__(self) -> str:
        return f"<Engine {self.backend} layers={len(self.layers)} inputs={[i.name for i in self.inputs]}>"

    # ---- file ------------------------------------------------------------------------------
    def to_header(self) -> tuple[dict, dict[str, bytes]]:
        """The container header and blobs: ``self.blobs[name]`` is stored as ``kernel/<name>``
        (see ``workbench.format.serialize`` for how layers refer to it)."""
        plan_d, blobs = encode_plan(self.plan)
        for name, data in self.blobs.items():
            blobs[f"kernel/{name}"] = data
        header = {
            "producer": {"name": "workbench", "version": __version__},
            "target": _json_safe(self.target),
            "build": _json_safe(self.build_info),
            "reports": _json_safe(self.reports),
            "plan": plan_d,
            "kernels": sorted(self.blobs),
        }
        return header, blobs

    def save(self, path: str | os.PathLike) -> dict:
        """Write the engine; returns {"path", "size", "sha256"}. Same engine -> same bytes."""
        header, blobs = self.to_header()
        info = write_container(path, header, blobs)
        self.path = os.fspath(path)
        return info

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Engine":
        """Read and validate an engine file. Raises EngineFormatError / EngineCompatibilityError.

        The whole header is checked against its schema (``format.header``) before any section is
        used, so ``describe`` and ``report`` only ever see typed values."""
        header, blobs = read_container(path)
        check_header(header)
        target = header["target"]
        if target["backend"] not in BACKENDS:
            raise EngineCompatibilityError(
                f"engine was built for backend {target['backend']!r:.60}; this workbench runs "
                f"{', '.join(BACKENDS)} — rebuild")
        try:
            plan = decode_plan(header["plan"], blobs)
        except MemoryError:
            raise EngineFormatError("engine plan is too large to hold in memory") from None
        names = header["kernels"]
        if len(set(names)) != len(names):
            raise EngineFormatError("engine header 'kernels' lists a name twice")
        kernels = {}
        for n in names:
            if f"kernel/{n}" not in blobs:
                raise EngineFormatError(f"engine lists kernel {n!r} but has no blob for it")
            kernels[n] = bytes(blobs[f"kernel/{n}"])
        _check_binaries(plan.layers, kernels)
        for bucket in plan.buckets:
            _check_binaries(bucket.plan.layers, kernels)
        engine = cls(plan, target, header.get("build") or {}, header.get("reports") or {}, kernels)
        engine.path = os.fspath(path)
        return engine

    # ---- running ---------------------------------------------------------------------------
    def create_context(self, device: str | None = None, **options) -> ExecutionContext:
        """An ExecutionContext (one per thread). ``device`` defaults to the engine's backend."""
        return create_context(self, device=device, **options)

    def accuracy(self, feeds, **options):
        """Per-layer accuracy against an fp32 reference of this plan on ``feeds`` (a feed dict or
        an iterable of them): an ``AccuracyReport`` (see ``workbench.runtime.accuracy.measure``)."""
        from .accuracy import measure  # noqa: PLC0415 - loaded only when asked for

        return measure(self, feeds, **options)

    # ---- reports ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """The JSON that ``workbench inspect ENGINE --json`` prints."""
        return describe(self)

    def report(self) -> dict:
        """Tables (pandas DataFrames): layers, fusions, precisions, tactics, memory, summary."""
        return report_tables(self)
