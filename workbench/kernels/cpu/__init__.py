"""The CPU tactic source: fast NumPy/BLAS tactics for the layers that dominate inference time, and
the reference kernels (``kernels/reference/tactics.py``) for every layer.

The CPU target times every candidate that supports a layer on random inputs at build and records
the fastest in ``layer.tactic`` / ``layer.tactic_config`` (every candidate's time or reason goes in
the tactic table); the CPU runtime binds each layer by that name through ``BY_NAME``.

A tactic has ``name``, ``source``, ``supports(layer, precision, constants) -> None | reason``,
``configs(layer, precision) -> list[dict]`` and ``build(layer, precision, config, constants,
reuse=True)`` returning a reference-shaped kernel ``(ctx, inputs, attrs) -> outputs``. ``build``
does every per-run preparation once: weight layouts, rounding of weights for emulated fp16 / bf16.

Fast tactics (float32 math; fp16 / bf16 emulated by rounding inputs and outputs as the reference
tactics do, weights rounded at build):

* ``cpu.blas.conv``: Conv / FusedConv, configs ``gemm`` (im2col or plain GEMM) and ``depthwise``.
* ``cpu.blas.gemm``: FusedGemm / Gemm / MatMul with the epilogue in place.
* ``cpu.fast.pointwise``: fused pointwise chains with buffers kept between runs.
* ``cpu.fast.rowwise``: LayerNorm / SkipLayerNorm / Softmax / Attention without extra copies.
* ``cpu.fast.pool``: MaxPool / AveragePool / global pooling over a kept padded buffer.
* ``cpu.fast.tensor``: Reshape / Flatten / Squeeze / Unsqueeze / Split / Transpose / Slice as
  views in the static shapes, Gather as ``np.take``, Cast between NumPy's numeric types as one
  ``astype``.

Native tactics (``native.py``, one C call per layer, built at install): ``cpu.native.conv``
(direct 2-D convolution) and ``cpu.native.rowwise`` (LayerNorm / SkipLayerNorm / Softmax /
Attention).

Quantized tactics (layers at int8 / fp8, numerics of ``core/quant.py``): ``cpu.quant.conv`` and
``cpu.quant.gemm`` (``quantized.py``), then the reference ``cpu.numpy.int8`` / ``cpu.numpy.fp8``
(``kernels/reference/quantized.py``).
"""

from __future__ import annotations

from ...core.plan import Layer
from ...core.precisions import STORAGE
from ...dtypes import to_numpy
from ..reference import quantized as reference_quantized
from ..reference import tactics as reference
from . import conv, gemm, native, pointwise, pool, quantized, rowwise, tensor
from ._common import rounder

_PRECISIONS = ("fp32", "fp16", "bf16")


def _storage(precision: str):
    return None if precision == "fp32" else to_numpy(STORAGE[precision])


class FastTactic:
    source = "cpu"

    def __init__(self, name: str, ops: dict):
        self.name = name
        self.ops = ops  # (domain, op) -> module with supports(layer, constants)

    def supports(self, layer: Layer, precision: str, constants=None) -> str | None:
        mod = self.ops.get((layer.domain if layer.domain != "ai.onnx" else "", layer.op))
        if mod is None:
            return f"does not run {layer.op}"
        if precision not in _PRECISIONS:
            return f"runs {', '.join(_PRECISIONS)} layers only"
        return mod.supports(layer, constants or {})

    def configs(self, layer: Layer, precision: str) -> list[dict]:
        if self.name == "cpu.blas.conv":
            w = layer.aligned_input_specs()[1]
            one = w is not None and w.shape is not None and all(d == 1 for d in w.shape[2:])
            x = layer.aligned_input_specs()[0]
            ways = ("copy",) if one else ("copy", "offsets")
            if not one and native.MISSING is None and x is not None and x.shape is not None and len(x.shape) == 4:
                ways += ("native",)
            out = [{"variant": "gemm", "im2col": way} for way in ways]
            group = int(layer.attrs.get("group", 1))
            if w is not None and w.shape and group > 1 and w.shape[0] == group and w.shape[1] == 1:
                out += [{"variant": "depthwise"}, {"variant": "depthwise_nhwc"}]
            return out
        return [{}]

    def build(self, layer: Layer, precision: str, config: dict, constants=None, reuse: bool = True):
        constants = constants or {}
        rnd = rounder(_storage(precision))
        if self.name == "cpu.blas.conv":
            return conv.ConvKernel(layer, constants, config, rnd, reuse)
        if self.name == "cpu.blas.gemm":
            return gemm.GemmKernel(layer, constants, config, rnd, reuse)
        if self.name == "cpu.fast.pointwise":
            return pointwise.PointwiseKernel(layer, rnd, reuse)
        if self.name == "cpu.fast.pool":
            return pool.PoolKernel(layer, rnd, reuse)
        if self.name == "cpu.fast.tensor":
            return _rounded(tensor.build(layer, constants), rnd)
        return rowwise.build(layer, rnd, reuse)

    def __repr__(self) -> str:
        return f"<CPU tactic {self.name}>"


def _rounded(kernel, rnd):
    """``kernel`` with float32 inputs and outputs rounded by ``rnd`` (emulated fp16 / bf16)."""
    if rnd is None:
        return kernel

    def run(ctx, inputs, attrs):
        return [rnd(o) for o in kernel(ctx, [rnd(x) for x in inputs], attrs)]

    return run


# a chain's non-float32 steps (casts, comparisons, integer math) run their reference kernels
_POINTWISE = type("_PointwiseSupport", (), {"supports": staticmethod(
    lambda layer, constants: None if all(s is not None and s.dtype not in (None, "string") for s in layer.input_specs)
    else "typed, non-string inputs only")})

FAST: list[FastTactic] = [
    FastTactic("cpu.blas.conv", {("", "Conv"): conv, ("workbench", "FusedConv"): conv}),
    FastTactic("cpu.blas.gemm", {("", "Gemm"): gemm, ("workbench", "FusedGemm"): gemm, ("", "MatMul"): gemm}),
    FastTactic("cpu.fast.pointwise", {("workbench", "Pointwise"): _POINTWISE}),
    FastTactic("cpu.fast.rowwise", {key: rowwise for key in rowwise.OPS}),
    FastTactic("cpu.fast.pool", {key: pool for key in pool.OPS}),
    FastTactic("cpu.fast.tensor", {key: tensor for key in tensor.OPS}),
]
TACTICS: list = FAST + list(native.TACTICS) + list(quantized.TACTICS) + list(reference.TACTICS) + list(reference_quantized.TACTICS)
BY_NAME: dict = {t.name: t for t in TACTICS}


def candidates(layer: Layer, precision: str, constants=None) -> list[tuple[object, str | None]]:
    """Every CPU tactic with None if it can run ``layer`` at ``precision``, else the reason it cannot."""
    return [(t, t.supports(layer, precision, constants)) for t in TACTICS]
