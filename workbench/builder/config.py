"""BuilderConfig: every knob of a build, validated when it is made."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.precisions import DEVICES, REQUESTABLE
from ..core.budget import check_budget
from ..core.limits import MAX_ENGINE_BYTES, MAX_LOOP_ITERATIONS
from ..errors import ResourceLimitError, ShapeError, WorkbenchError
from .profiles import normalize_buckets, normalize_profiles
from ..precision.calibration import Calibration, CalibrationTable


@dataclass
class BuilderConfig:
    """How to build an engine.

    device:     "cpu", "gpu", or "auto" (gpu when one is present).
    precision:  default precision for layers ("fp32", "tf32", "fp16", "bf16", "best", ...).
    shapes:     input name -> concrete shape; fixes symbolic dims before optimization.
    profiles:   shape ranges instead of one shape: a list of {input name: (min, opt, max)} (see
                ``builder/profiles.py``); the engine takes any shape inside one of them. CPU: one
                plan with symbolic dims; GPU: one static plan per bucket.
    buckets:    the static plans of a build with profiles (GPU by default; a CPU build only when
                given): batch sizes [1, 2, 4, ...] (a run pads its batch up to the next one) or
                {dim name: [values]}; None: vLLM's sizes up to each profile's max batch, and the
                min, opt and max of every other dynamic dim (which are matched, never padded).
    disable:    names of passes / fusion rules to skip (see ``workbench.passes.pipeline``).
    layer_precisions: layer or ONNX node name -> precision override.
    timing_cache: path of a persistent autotuning cache (GPU builds).
    optimize:   False runs no graph optimization (only what lowering needs).
    autotune:   False takes each layer's first candidate instead of timing them (GPU builds).
    cuda_graph: False runs the engine eagerly instead of replaying CUDA graphs (GPU engines).
    max_elements: cap on the elements a shape taken from tensor values (ConstantOfShape, Expand,
                Tile, ...) may allocate, at build and in the engine's runs.
    progress:   True shows a bar; a callable(stage, index, count) receives ``Builder.STAGES``.
    threads:    CPU threads (BLAS) used while timing CPU tactics; None: the cores available to the
                process. Run with the same count: ``engine.create_context(threads=N)``.
    memory_budget: bytes the build may hold at once (constant folding declines past it, with a
                reason); None: a share of the memory available to the process (``core.budget``).
    max_loop_iterations: cap on the iterations of one Loop / Scan while folding; runs take theirs
                from ``create_context(max_loop_iterations=...)``.
    max_engine_bytes: the most bytes of constants the engine may hold; constant folding keeps a
                layer whose results would pass it (and says so in the fusion log).
    calibration: ranges for int8 / fp8 layers: a ``Calibration`` (data and method), a
                ``CalibrationTable``, or a path (an .npz or folder of calibration data, or a saved
                table); see ``workbench.precision.calibration``.
    accuracy_budget: with precision "best": the largest error vs fp32 allowed on held-out inputs;
                per-layer precisions are searched to minimise latency within it (``builder/mixed.py``).
                None: "best" is the target's fastest precision per layer, unchecked.
    accuracy_metric: callable(outputs, reference_outputs) -> float (dicts of output name -> array for
                one feed; averaged over the held-out feeds) replacing the default error, the largest
                relative L2 error of any output.
    strict_precision: False (default): "int8" / "fp8" on the GPU allow that precision: the layers
                the autotuner measured clearly faster at fp16 (by 5%) move there when that makes the
                engine faster end to end (as TensorRT picks among the precisions a build allows;
                ``builder/fallback.py``). True: every layer that can take the precision keeps it
                (always so for shape ranges and on the CPU).
    """

    device: str = "auto"
    precision: str = "fp32"
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    profiles: list = field(default_factory=list)  # [{input: (min, opt, max)}]
    buckets: Any = None  # None, [batch sizes] or {dim name: [values]}
    disable: list[str] = field(default_factory=list)
    layer_precisions: dict[str, str] = field(default_factory=dict)
    timing_cache: str | os.PathLike | None = None
    optimize: bool = True
    autotune: bool = True
    cuda_graph: bool = True
    max_elements: int = 2**31
    progress: Any = False  # True: a tqdm bar; a callable(stage, index, count) for a UI
    threads: int | None = None
    memory_budget: int | None = None
    max_loop_iterations: int = MAX_LOOP_ITERATIONS
    max_engine_bytes: int = MAX_ENGINE_BYTES
    calibration: Calibration | CalibrationTable | str | os.PathLike | None = None
    accuracy_budget: float | None = None
    accuracy_metric: Any = None  # callable(outputs, reference_outputs) -> float
    strict_precision: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        self.memory_budget = check_budget(self.memory_budget, "BuilderConfig.memory_budget")
        if self.device not in DEVICES:
            raise WorkbenchError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        if self.precision not in REQUESTABLE:
            raise WorkbenchError(f"unknown precision {self.precision!r}; expected one of {', '.join(REQUESTABLE)}")
        for name, p in self.layer_precisions.items():
            if p not in REQUESTABLE:
                raise WorkbenchError(f"unknown precision {p!r} for layer {name!r}")
        if isinstance(self.shapes, str):
            self.shapes = parse_shapes(self.shapes)
        self.shapes = {str(k): _check_shape(k, v) for k, v in dict(self.shapes).items()}
        self.profiles = normalize_profiles(self.profiles)
        self.buckets = normalize_buckets(self.buckets)
        if self.profiles and self.shapes:
            raise ShapeError("give shapes (one static shape per input) or profiles (shape ranges), not both")
        if self.buckets is not None and not self.profiles:
            raise ShapeError("buckets are the static plans of a build with shape ranges; give profiles too")
        if isinstance(self.disable, str):  # "a,b" as on the command line
            self.disable = [d for d in self.disable.split(",") if d.strip()]
        self.disable = [d.strip() for d in self.disable]
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise WorkbenchError(f"threads must be a positive integer, got {self.threads!r}")
        _check_accuracy(self)


# field -> (accepted types, what an error says it expects); bool is an int, so ints refuse it
_TYPES = {
    "device": ((str,), "a str"), "precision": ((str,), "a str"),
    "shapes": ((dict, str), "a dict of input name -> shape, or NAME:DxD text"),
    "disable": ((list, tuple, str), "a list of pass / rule names"),
    "layer_precisions": ((dict,), "a dict of layer name -> precision"),
    "timing_cache": ((str, os.PathLike, type(None)), "a path or None"),
    "optimize": ((bool,), "True or False"), "autotune": ((bool,), "True or False"),
    "cuda_graph": ((bool,), "True or False"), "strict_precision": ((bool,), "True or False"),
    "calibration": ((Calibration, CalibrationTable, str, os.PathLike, type(None)),
                    "a Calibration, a CalibrationTable, a path or None"),
}


def _check_types(cfg) -> None:
    """One-line errors for fields of the wrong type or range, before anything uses them."""
    for name, (types, expected) in _TYPES.items():
        value = getattr(cfg, name)
        if not isinstance(value, types):
            raise WorkbenchError(f"BuilderConfig.{name} must be {expected}, got {type(value).__name__} {value!r:.60}")
    if isinstance(cfg.disable, (list, tuple)) and not all(isinstance(d, str) for d in cfg.disable):
        raise WorkbenchError("BuilderConfig.disable must hold pass / rule names (str)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg.layer_precisions.items()):
        raise WorkbenchError("BuilderConfig.layer_precisions must map layer names (str) to precisions (str)")
    for name in ("max_elements", "max_loop_iterations", "max_engine_bytes"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ResourceLimitError(f"BuilderConfig.{name} must be a positive int, got {value!r:.60}")
    if not (cfg.progress in (True, False, None) or callable(cfg.progress)):
        raise WorkbenchError(f"BuilderConfig.progress must be True, False or a callable, got {cfg.progress!r:.60}")


def _check_accuracy(cfg) -> None:
    """accuracy_budget: a finite number > 0, only with precision "best"; accuracy_metric: a callable,
    only with a budget."""
    budget = cfg.accuracy_budget
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < float("inf"):
            raise WorkbenchError(f"BuilderConfig.accuracy_budget must be a finite number > 0, got {budget!r:.60}")
        if cfg.precision != "best":
            raise WorkbenchError(f"an accuracy budget is met by choosing precisions per layer: it needs "
                                 f"precision 'best', not {cfg.precision!r}")
        if getattr(cfg, "profiles", None):
            raise WorkbenchError("an accuracy budget is searched at fixed input shapes: give shapes, not shape "
                                 "ranges (profiles)")
        cfg.accuracy_budget = float(budget)
    if cfg.accuracy_metric is not None:
        if not callable(cfg.accuracy_metric):
            raise WorkbenchError(f"BuilderConfig.accuracy_metric must be a callable(outputs, reference_outputs) "
                                 f"-> float, got {type(cfg.accuracy_metric).__name__}")
        if budget is None:
            raise WorkbenchError("BuilderConfig.accuracy_metric is only used with an accuracy_budget; give one")


def _check_shape(name: str, shape) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"shape for input {name!r} must be a sequence of integers, got {shape!r}") from None
    for d, raw in zip(dims, shape):
        if d < 0 or (isinstance(raw, float) and raw != d):
            raise ShapeError(f"shape for input {name!r} has an invalid dimension {raw!r}: {shape!r}")
    return dims


_DIM = re.compile(r"^\d+$")


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """Parse ``"input_ids:8x128,mask:8x128"`` (``--shapes``). A scalar is ``name:`` with no dims."""
    shapes: dict[str, tuple[int, ...]] = {}
    if not text.strip():
        raise ShapeError("--shapes is empty; expected NAME:DxD[,NAME:DxD...]")
    entries = text.split(",")
    for i, entry in enumerate(entries):
        entry = entry.strip()
        name, sep, dims = entry.rpartition(":")
        if not sep and i and _DIM.match(entry) and ":" in entries[i - 1]:
            # "a:1,3,224,224": the dims were separated by ',' (which separates inputs)
            head = entries[i - 1].strip()
            j = i
            while j < len(entries) and _DIM.match(entries[j].strip()):
                j += 1
            fixed = "x".join([head.rpartition(":")[2]] + [e.strip() for e in entries[i:j]])
            raise ShapeError(f"bad --shapes entry {entry!r} after {head!r}: separate dimensions with 'x', not ',' "
                             f"(e.g. {head.rpartition(':')[0]}:{fixed})")
        if not sep or not name:
            raise ShapeError(f"bad --shapes entry {entry!r}: expected NAME:DxD (e.g. input:1x3x224x224)")
        parts = dims.lower().split("x") if dims else []
        if any(not _DIM.match(p) for p in parts):
            raise ShapeError(f"bad --shapes entry {entry!r}: dimensions must be non-negative integers separated by 'x'")
        if name in shapes:
            raise ShapeError(f"--shapes names input {name!r} twice")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes
