"""onnx-ir values as workbench's plain TensorSpec (what lowering, the network summary and the
notebook's graph show)."""

from __future__ import annotations

import onnx_ir as ir

from ..core.plan import TensorSpec
from .values import dims, dtype


def spec_of(value: ir.Value) -> TensorSpec:
    shape = dims(value)
    return TensorSpec(value.name or "", dtype(value), None if shape is None else list(shape))
