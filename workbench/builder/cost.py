"""Per-layer cost estimates: FLOPs and bytes moved, from static shapes.

Used for the profile table (achieved FLOP/s, roofline) — estimates, not measurements.
"""

from __future__ import annotations

import json
import math

from ..dtypes import itemsize
from ..core.plan import Layer

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
    if layer.domain == "workbench":
        fused = _fused_flops(layer, out)
        if fused is not None:
            return fused
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


def _fused_flops(layer: Layer, out: int) -> int | None:
    """Fused ops of the workbench domain: the main op plus a few FLOPs per output element."""
    ins, op = layer.input_specs, layer.op
    if op == "FusedConv" and len(ins) > 1 and _numel(ins[1]) and ins[1].shape:
        return 2 * out * math.prod(ins[1].shape[1:]) + 3 * out
    if op == "FusedGemm" and ins and ins[0].shape and isinstance(ins[0].shape[-1], int):
        k = ins[0].shape[-1] if not layer.attrs.get("transA") else ins[0].shape[-2]
        return 2 * out * int(k) + 3 * out
    if op == "Attention" and len(ins) > 2 and ins[1].shape:
        # Q·Kᵀ and P·V each cost 2 FLOPs per (output element x key position); softmax ~5 per score
        axis = {"bhsd": 2, "bshd": 1, "bsd": 1, "bhds": 3}.get(layer.attrs.get("k_layout", "bhsd"), 2)
        seq_k = ins[1].shape[axis] if axis < len(ins[1].shape) else None
        return 4 * out * int(seq_k) + 5 * out if isinstance(seq_k, int) else None
    if op in ("LayerNorm", "SkipLayerNorm"):
        return 8 * out
    if op == "RMSNorm":
        return 5 * out
    if op == "Pointwise":
        return out * max(len(json.loads(layer.attrs.get("program", "[]"))), 1)
    return None


def layer_bytes(layer: Layer) -> int:
    # a tensor read as several operands (the packed Q/K/V of an Attention) is counted once
    ins = {s.name or str(i): s for i, s in enumerate(layer.input_specs)}
    return sum(_nbytes(s) for s in ins.values()) + sum(_nbytes(s) for s in layer.output_specs)


def annotate_costs(layers: list[Layer]) -> None:
    for layer in layers:
        layer.flops = int(layer_flops(layer))
        layer.bytes_moved = int(layer_bytes(layer))
