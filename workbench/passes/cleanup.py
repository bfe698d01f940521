"""Graph cleanup: dead nodes and initializers, shape inference to a fixed point with folding."""

from __future__ import annotations

import hashlib

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass, TopologicalSortPass

from ..ir.attrs import has_subgraph
from ..rewrite.engine import apply
from .fold_constants import NON_DETERMINISTIC, fold_constants
from .simplify import RULES as SIMPLIFY_RULES


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


def simplify(model: ir.Model, ctx) -> bool:
    """The cleanup rules of ``simplify.RULES`` and constant folding, to a fixed point: removing a
    no-op Cast can expose a Reshape chain, a merged chain can expose a foldable constant."""
    changed = False
    for _ in range(10):
        remove_dead_code(model, ctx)  # dead readers would make live values look shared
        step = apply(model, ctx, SIMPLIFY_RULES)
        if step:
            toposort(model)
            if ctx.enabled("fold_constants"):
                fold_to_fixed_point(model, ctx)
        changed |= step
        if not step:
            break
    return changed


_SMALL = 64  # constants up to this many elements are compared by value


def _input_key(v: ir.Value | None):
    if v is None:
        return None
    if v.const_value is not None and v.const_value.size <= _SMALL:
        arr = v.const_value.numpy()
        return ("c", str(arr.dtype), arr.shape, arr.tobytes())
    return id(v)


def _attr_key(attr: ir.Attr):
    """An attribute's identity by content: repr() of a large tensor elides its data, so tensors are
    keyed by dtype, shape and a digest of their bytes."""
    t = attr.type
    if t in (ir.AttributeType.TENSOR, ir.AttributeType.SPARSE_TENSOR):
        arr = attr.value.numpy() if t == ir.AttributeType.TENSOR else None
        if arr is None:
            return ("sparse", id(attr.value))
        return ("tensor", str(arr.dtype), arr.shape, hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest())
    if t in (ir.AttributeType.TENSORS, ir.AttributeType.SPARSE_TENSORS):
        return ("tensors", id(attr.value))  # rare: never merged
    return repr(attr.value)


def eliminate_common_subexpressions(model: ir.Model, ctx) -> bool:
    """Two nodes with the same op, attributes and inputs compute the same thing: keep the first.
    Random ops and nodes with subgraphs are never merged; graph outputs keep their producers."""
    graph = model.graph
    seen: dict = {}
    outputs = {id(v) for v in graph.outputs}
    changed = False
    for node in list(graph):
        if node.op_type in NON_DETERMINISTIC or has_subgraph(node) or any(id(o) in outputs for o in node.outputs):
            continue
        attrs = tuple(sorted((k, _attr_key(a)) for k, a in node.attributes.items()))
        key = (node.domain, node.op_type, node.version, tuple(_input_key(v) for v in node.inputs), attrs, len(node.outputs))
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        for old, new in zip(node.outputs, first.outputs):
            old.replace_all_uses_with(new)
        graph.remove(node, safe=True)
        ctx.count("eliminate_common_subexpressions")
        changed = True
    return changed
