"""Specs of a layer's inputs aligned with ``layer.inputs`` (``input_specs`` skips absent inputs)."""

from __future__ import annotations

from ...core.plan import Layer, TensorSpec


def aligned_inputs(layer: Layer) -> list[TensorSpec | None]:
    specs = iter(layer.input_specs)
    return [next(specs, None) if name else None for name in layer.inputs]


def attention_view(shape, lay: str, heads: int):
    """(logical [B, H, S, D] dims, element strides of those dims) of a packed tensor stored in
    ``lay`` (FUSED_OPS.md: "bsd" is [B, S, H*D] split by the head count, "bhds" a stored K^T)."""
    if lay == "bhsd":
        b, h, s, d = shape
        return [b, h, s, d], [h * s * d, s * d, d, 1]
    if lay == "bshd":
        b, s, h, d = shape
        return [b, h, s, d], [s * h * d, d, h * d, 1]
    if lay == "bsd":
        b, s, hd = shape
        d = hd // heads
        return [b, heads, s, d], [s * hd, d, hd, 1]
    b, h, d, s = shape  # bhds
    return [b, h, s, d], [h * d * s, d * s, 1, s]
