"""The one tactic interface every GPU kernel source implements.

A *tactic* is a way to run a layer on the GPU (a library call or a generated kernel). For each
layer the builder asks every source (listed in ``sources.py``) whether it can run the layer
(``supports`` -> None or a reason), gathers the candidate configurations, builds each candidate,
times it with CUDA events (``workbench.kernels.cuda.events``), keeps the fastest, and records all
timings in the layer's tactic table. At engine load, the runtime calls ``build`` again with the
recorded config (no autotuning) and, for generated kernels, the cubin stored in the engine.

All device arrays are CuPy arrays; every kernel runs on the stream it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ...core.plan import Layer
from ...core.quant import FORMATS as QUANT_FORMATS


@dataclass
class GpuInfo:
    """The device a build targets / an engine runs on."""

    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    arch: str  # e.g. "sm_90"
    sm_count: int
    libraries: dict[str, str] = field(default_factory=dict)  # {"cuda": "13.0", "cudnn": "9.19.0", "cublas": ..., "nvmath": ...}

    @property
    def sm(self) -> int:
        """The compute capability as one number (``sm_90`` -> 90; 0 when unknown)."""
        digits = "".join(ch for ch in str(self.arch) if ch.isdigit())
        return int(digits or 0)


@dataclass
class BuiltKernel:
    """A tactic bound to one layer's shapes, dtypes and weights, ready to launch.

    ``run(inputs, outputs, stream)`` reads device arrays ``inputs`` (None for absent optional
    inputs) and writes into the preallocated device arrays ``outputs`` (views into the arena or the
    persistent output buffers); it must not allocate on the hot path (workspace comes from
    ``workspace_bytes``, given as ``workspace`` at run) so that the engine can be captured into a
    CUDA graph.
    """

    run: Callable[[list, list, Any, Any], None]  # (inputs, outputs, workspace, stream)
    workspace_bytes: int = 0
    # compiled code to store in the engine: name -> cubin bytes (NVRTC kernels)
    binaries: dict[str, bytes] = field(default_factory=dict)
    capturable: bool = True  # False: must not be captured in a CUDA graph (e.g. host sync inside)
    # an elementwise kernel that may read a graph input straight from the caller's array (the
    # runtime's direct input cast: no copy into the input buffer first)
    reads_inputs_directly: bool = False
    # facts for people (algorithm id, whether a raw launch path is used, ...): shown, never run
    info: dict[str, Any] = field(default_factory=dict)
    # library objects the launch closure needs alive (plans, descriptors, device constants)
    keepalive: tuple = ()


class TacticBase:
    """What the tactics of this package share: ``source`` is the module that defines the tactic
    (the key of ``sources.PROVIDES``, so it cannot drift from where the tactic lives), and
    ``supports_cost`` is 0 unless the tactic's ``supports`` plans a library graph."""

    supports_cost = 0
    formats: tuple[str, ...] = ()  # the int8 / fp8 layer precisions this tactic runs (core/quant.py)
    # how it writes codes (core/quant.py, "Quantized tensors between layers"): "output"
    # (q_output_scale), "copy" (q_copy_scale); a tactic without them writes neither
    writes_codes: tuple[str, ...] = ()

    @property
    def source(self) -> str:
        return type(self).__module__.rpartition(".")[2]


def format_refusal(tactic, precision: str) -> str | None:
    """Why ``tactic`` may not run a layer at ``precision`` by the int8 / fp8 formats it declares
    (``formats``), None otherwise: a quantized layer's float32 operands and int8 / e4m3 weight mean
    something else to a float tactic, so only the quantized tactics are asked about it."""
    if precision in QUANT_FORMATS and precision not in getattr(tactic, "formats", ()):
        return f"runs no {precision} layers"
    return None


def contract_refusal(tactic, layer: Layer, precision: str) -> str | None:
    """``format_refusal``, and why ``tactic`` may not run a layer that writes codes
    (``q_output_scale`` / ``q_copy_scale``) it does not declare in ``writes_codes``: a tactic that
    knew nothing of them would write floats where the readers take codes."""
    why = format_refusal(tactic, precision)
    if why:
        return why
    have = getattr(tactic, "writes_codes", ())
    for key, attr in (("output", "q_output_scale"), ("copy", "q_copy_scale")):
        if layer.attrs.get(attr) is not None and key not in have:
            return f"writes no {'output of codes' if key == 'output' else 'copy of codes'} ({attr})"
    return None


class Tactic(Protocol):
    name: str  # unique, "source.kernel", e.g. "cublaslt.gemm", "cudnn.conv", "nvrtc.pointwise"
    source: str  # the module of this package that defines it (a key of sources.PRIMARY / FALLBACK)
    # relative cost of calling ``supports`` (0: looks at shapes only; 1: plans a library graph):
    # the precision assigner asks the cheap sources first
    supports_cost: int
    formats: tuple[str, ...]  # int8 / fp8 layer precisions it runs (empty: float precisions only)
    writes_codes: tuple[str, ...]  # "output" / "copy": the codes it writes (TacticBase.writes_codes)

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        """None if this tactic can run ``layer`` at ``precision``; otherwise the reason it cannot."""

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        """Candidate configurations (JSON-able dicts) to autotune over; at least one."""

    def build(self, layer: Layer, precision: str, config: dict, weights: dict[str, Any], gpu: GpuInfo,
              binaries: dict[str, bytes] | None = None) -> BuiltKernel:
        """Compile / plan the kernel. ``weights``: layer input name -> device array for constant
        inputs. ``binaries``: cubins stored in the engine for this layer (skip compilation)."""
