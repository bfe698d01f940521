"""Graph cleanup: dead nodes and initializers, shape inference to a fixed point with folding."""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from .fold_constants import fold_constants


def remove_dead_code(model: ir.Model, ctx) -> bool:
    """Nodes whose outputs nobody reads, and unused initializers (graph signature kept)."""
    return RemoveUnusedNodesPass()(model).modified


def infer_shapes(model: ir.Model) -> None:
    """ONNX shape inference with data propagation; failures leave the graph as it was."""
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    ShapeInferencePass(strict_mode=False, data_prop=True)(model)


def toposort(model: ir.Model) -> None:
    TopologicalSortPass()(model)


def fold_to_fixed_point(model: ir.Model, ctx, max_rounds: int = 10) -> bool:
    """Alternate shape inference and constant folding until nothing changes: once input shapes are
    static, Shape -> Gather -> Concat -> Reshape chains collapse to constants round by round."""
    changed_any = False
    for _ in range(max_rounds):
        infer_shapes(model)
        if not fold_constants(model, ctx):
            break
        changed_any = True
    return changed_any
