"""Per-layer cost estimates: FLOPs and bytes moved, from static shapes.

Used for the profile table (achieved FLOP/s, roofline) — estimates, not measurements.
"""

from __future__ import annotations

import math

from ..dtypes import itemsize
from ..engine.plan import Layer

_POINTWISE_FLOPS = {"Erf": 8, "Tanh": 8, "Sigmoid": 4, "Exp": 4, "Gelu": 10, "Softmax": 5, "LogSoftmax": 6,
                    "LayerNormalization": 8, "RMSNormalization": 5, "BatchNormalization": 2,
                    "InstanceNormalization": 8, "GroupNormalization": 8}


def _numel(spec) -> int | None:
    if spec is None or spec.shape is None or not all(isinstance(d, int) for d in spec.shape):
        return None
    return math.prod(spec.shape)


def _nbytes(spec) -> int:
    n = _numel(spec)
    if n is None or spec.dtype in (None, "string"):
        return 0
    return int(n * itemsize(spec.dtype))


def layer_flops(layer: Layer) -> int:
    ins, outs = layer.input_specs, layer.output_specs
    out = _numel(outs[0]) if outs else None
    if out is None:
        return 0
    op = layer.op
    if op in ("Conv", "ConvInteger", "QLinearConv") or layer.attrs.get("wb_conv"):
        w = ins[1] if len(ins) > 1 else None
        if w is None or _numel(w) is None or not w.shape:
            return 0
        per_out = math.prod(w.shape[1:])  # Cin/group * kernel
        return 2 * out * per_out
    if op == "ConvTranspose" and len(ins) > 1 and _numel(ins[0]) and ins[1].shape:
        return 2 * _numel(ins[0]) * math.prod(ins[1].shape[1:])
    if op in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul") or layer.attrs.get("wb_gemm"):
        a = ins[0] if ins else None
        if a is None or not a.shape or not isinstance(a.shape[-1], int):
            return 0
        k = a.shape[-1] if not (op == "Gemm" and layer.attrs.get("transA")) else a.shape[0]
        return 2 * out * int(k)
    return out * _POINTWISE_FLOPS.get(op, 1)


def layer_bytes(layer: Layer) -> int:
    return sum(_nbytes(s) for s in layer.input_specs) + sum(_nbytes(s) for s in layer.output_specs)


def annotate_costs(layers: list[Layer]) -> None:
    for layer in layers:
        layer.flops = int(layer_flops(layer))
        layer.bytes_moved = int(layer_bytes(layer))
