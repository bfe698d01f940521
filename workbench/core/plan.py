"""The execution plan: what an engine runs, as plain data.

A :class:`Plan` is a topologically ordered list of :class:`Layer` s over named tensors, plus the
constant tensors (weights) they read. Nothing here knows about onnx or onnx-ir: the builder lowers
the optimized graph into a Plan, the engine file stores it, and the runtime executes it.

Layer attributes are plain Python values: int, float, str, bytes, lists of those, ``numpy.ndarray``
(tensor attributes), lists of arrays, and :class:`Subgraph` (the bodies of If / Loop / Scan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import itemsize

Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass
class TensorSpec:
    """Name, element type and shape of a tensor; ``shape is None`` means unknown rank.

    ``scale`` (a GPU plan's int8 / float8e4m3fn activation between two quantized layers only): the
    tensor holds quantization codes, and ``code * scale`` are its values (``core/quant.py``,
    "Quantized tensors between layers"); None for every other tensor."""

    name: str
    dtype: str | None = None
    shape: list[Dim] | None = None
    scale: float | None = None

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def nbytes(self) -> int | None:
        """Bytes of the tensor (sub-byte types rounded up); None for an unknown type or shape, a
        dynamic shape or strings."""
        if self.dtype is None or self.dtype == "string" or not self.is_static:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return int(-(-n * itemsize(self.dtype) // 1))

    def to_dict(self) -> dict:
        d = {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}
        if self.scale is not None:
            d["scale"] = float(self.scale)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        scale = d.get("scale")
        return cls(d["name"], d.get("dtype"), None if d.get("shape") is None else list(d["shape"]),
                   None if scale is None else float(scale))


@dataclass
class Layer:
    """One executable step: an op (ONNX or our fused domain) with its chosen precision and tactic."""

    name: str
    op: str
    domain: str = ""
    opset: int = 0
    inputs: list[str] = field(default_factory=list)  # "" marks an absent optional input
    outputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    onnx_nodes: list[str] = field(default_factory=list)  # original ONNX node names this layer covers
    onnx_ops: list[str] = field(default_factory=list)
    precision: str = "fp32"
    # the chosen tactic: what the runtime builds this layer's kernel from (no autotuning at load)
    tactic: str = ""  # its registry name, e.g. "cublaslt.gemm", "cpu.numpy"
    tactic_config: dict[str, Any] = field(default_factory=dict)  # the chosen candidate's configuration
    binaries: dict[str, str] = field(default_factory=dict)  # kernel name -> engine blob (compiled cubins)
    # report only (never read to run): every candidate's time or the reason it was not used
    tactic_table: list[dict] = field(default_factory=list)  # [{"tactic", "config", "ms" | "reason"}]
    input_specs: list[TensorSpec] = field(default_factory=list)  # one per *present* input (see aligned_input_specs)
    output_specs: list[TensorSpec] = field(default_factory=list)
    flops: int = 0
    bytes_moved: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.op)

    def aligned_input_specs(self) -> list[TensorSpec | None]:
        """One entry per ``inputs`` position: the spec, or None for an absent optional input."""
        specs = iter(self.input_specs)
        return [next(specs, None) if name else None for name in self.inputs]


@dataclass
class Subgraph:
    """A nested plan (If branch, Loop / Scan body). It may read tensors of enclosing scopes by name."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layers: list[Layer]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""


@dataclass
class Arena:
    """The static memory plan: one buffer of ``bytes`` holding every intermediate tensor at its
    offset (tensors whose lifetimes do not overlap share bytes). Empty for plans with dynamic
    shapes, which the CPU runtime runs with per-run allocation."""

    bytes: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    alignment: int = 256

    def slot(self, nbytes: int) -> int:
        """The bytes a tensor of ``nbytes`` takes in the arena: at least 1, rounded up to the alignment."""
        a = max(int(self.alignment or 1), 1)
        return (max(nbytes, 1) + a - 1) // a * a


@dataclass
class RunOptions:
    """Decisions the builder made for the runtime that are not per layer."""

    cuda_graph: bool = False  # GPU: capture the engine into CUDA graphs and replay them
    max_elements: int | None = None  # the element cap the build ran with; runs keep it


@dataclass
class Bucket:
    """One static specialisation of a plan built for shape ranges (``Plan.buckets``): its own
    layers, tensors, arena and tactics for the input ``shapes`` it was built at; its layers read the
    parent plan's constants. ``batch``: the bucket's batch size when a smaller batch is padded up to
    it (the leading dim of every input and output), None when runs must match ``shapes`` exactly.
    ``profiles``: the indices of the profiles it serves."""

    shapes: dict[str, list[int]]
    plan: "Plan"
    profiles: list[int] = field(default_factory=list)
    batch: int | None = None


@dataclass
class Plan:
    """The top-level program of an engine: everything the runtime needs to run it, and nothing
    that is only for people (those are the engine's reports).

    ``profiles`` (shape ranges, like TensorRT's optimization profiles): one dict per profile,
    input name -> [min shape, opt shape, max shape]; empty for an engine of fixed or unchecked
    shapes. ``buckets``: static specialisations the runtime picks from per run (then ``layers``,
    ``tensors`` and ``arena`` are those of the largest bucket, for reports); empty when ``layers``
    run as they are."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    layers: list[Layer]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    # name -> TensorSpec for every intermediate tensor the builder knows the type of
    tensors: dict[str, TensorSpec] = field(default_factory=dict)
    arena: Arena = field(default_factory=Arena)
    options: RunOptions = field(default_factory=RunOptions)
    profiles: list[dict[str, list[list[int]]]] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)
