"""Provenance: which original ONNX nodes a node of the optimized graph covers.

A node a rewrite creates records, in ``node.meta``, the names (``ONNX_NODES``) and op types
(``ONNX_OPS``) of the ONNX nodes it replaces, expanded through earlier fusions; lowering copies them
onto each layer so that the reports can answer "where did my node go". An untouched node covers
itself.
"""

from __future__ import annotations

import onnx_ir as ir

ONNX_NODES = "wb.onnx_nodes"
ONNX_OPS = "wb.onnx_ops"


def provenance(nodes: list[ir.Node]) -> tuple[list[str], list[str]]:
    """The original ONNX node names and op types behind ``nodes`` (fused nodes expand)."""
    names, ops = [], []
    for n in nodes:
        if ONNX_NODES in n.meta:
            names += list(n.meta[ONNX_NODES])
            ops += list(n.meta[ONNX_OPS])
        else:
            names.append(n.name or "")
            ops.append(n.op_type)
    return names, ops


def record(node: ir.Node, names: list[str], ops: list[str]) -> None:
    """Mark ``node`` as covering the ONNX nodes ``names`` (of types ``ops``)."""
    node.meta[ONNX_NODES] = list(names)
    node.meta[ONNX_OPS] = list(ops)
