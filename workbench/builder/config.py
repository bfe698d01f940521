"""BuilderConfig: every knob of a build, validated when it is made."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.precisions import DEVICES, REQUESTABLE
from ..errors import ShapeError, WorkbenchError


@dataclass
class BuilderConfig:
    """How to build an engine.

    device:     "cpu", "gpu", or "auto" (gpu when one is present).
    precision:  default precision for layers ("fp32", "tf32", "fp16", "bf16", "best", ...).
    shapes:     input name -> concrete shape; fixes symbolic dims before optimization.
    disable:    names of passes / fusion rules to skip (see ``workbench.passes.pipeline``).
    layer_precisions: layer or ONNX node name -> precision override.
    timing_cache: path of a persistent autotuning cache (GPU builds).
    optimize:   False runs no graph optimization (only what lowering needs).
    autotune:   False takes each layer's first candidate instead of timing them (GPU builds).
    cuda_graph: False runs the engine eagerly instead of replaying CUDA graphs (GPU engines).
    max_elements: cap on the elements a shape taken from tensor values (ConstantOfShape, Expand,
                Tile, ...) may allocate, at build and in the engine's runs.
    progress:   True shows a bar; a callable(stage, index, count) receives ``Builder.STAGES``.
    """

    device: str = "auto"
    precision: str = "fp32"
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    disable: list[str] = field(default_factory=list)
    layer_precisions: dict[str, str] = field(default_factory=dict)
    timing_cache: str | os.PathLike | None = None
    optimize: bool = True
    autotune: bool = True
    cuda_graph: bool = True
    max_elements: int = 2**31
    progress: Any = False  # True: a tqdm bar; a callable(stage, index, count) for a UI

    def __post_init__(self) -> None:
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
        if isinstance(self.disable, str):  # "a,b" as on the command line
            self.disable = [d for d in self.disable.split(",") if d.strip()]
        self.disable = [d.strip() for d in self.disable]


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
    for entry in text.split(","):
        entry = entry.strip()
        name, sep, dims = entry.rpartition(":")
        if not sep or not name:
            raise ShapeError(f"bad --shapes entry {entry!r}: expected NAME:DxD (e.g. input:1x3x224x224)")
        parts = dims.lower().split("x") if dims else []
        if any(not _DIM.match(p) for p in parts):
            raise ShapeError(f"bad --shapes entry {entry!r}: dimensions must be non-negative integers separated by 'x'")
        if name in shapes:
            raise ShapeError(f"--shapes names input {name!r} twice")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes
