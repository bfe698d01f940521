"""Conversions between onnx-ir value types and workbench's plain TensorSpec."""

from __future__ import annotations

import onnx_ir as ir

from ..dtypes import NAMES_BY_CODE
from ..core.plan import Dim, TensorSpec


def dtype_name(value: ir.Value) -> str | None:
    """Canonical dtype name of a tensor value, or None for unknown / non-tensor types."""
    t = value.type
    if t is None or not isinstance(t, ir.TensorType):
        return None
    return NAMES_BY_CODE.get(int(t.dtype))


def shape_of(value: ir.Value) -> list[Dim] | None:
    if value.shape is None:
        return None
    dims: list[Dim] = []
    for d in value.shape:
        if isinstance(d, int):
            dims.append(d)
        else:
            dims.append(d.value if isinstance(d, ir.SymbolicDim) else None)
    return dims


def spec_of(value: ir.Value) -> TensorSpec:
    return TensorSpec(value.name or "", dtype_name(value), shape_of(value))
