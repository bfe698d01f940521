"""Small questions asked about onnx-ir values: constant?, scalar?, who computes and reads it, what
shape, rank and dtype. The one copy: rules, the constant folder, typing and lowering all use these."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..core.plan import Dim
from ..dtypes import NAMES_BY_CODE
from .attrs import tensor_to_numpy


def const(v: ir.Value | None) -> np.ndarray | None:
    """The value of a constant (an initializer or folded value) as a NumPy array, else None."""
    if v is None or v.const_value is None:
        return None
    return tensor_to_numpy(v.const_value)


def scalar(v: ir.Value | None) -> float | None:
    """The value of a constant holding one element (any shape of size 1), else None."""
    arr = const(v)
    if arr is None or arr.size != 1 or arr.dtype.kind not in "fiub":
        return None
    return float(arr.reshape(()))


def producer(v: ir.Value | None, op: str | tuple[str, ...] | None = None) -> ir.Node | None:
    """The node computing ``v`` if it is a standard-domain node of type ``op`` (any op if None)."""
    if v is None:
        return None
    p = v.producer()
    if p is None or p.domain not in ("", "ai.onnx"):
        return None
    if op is not None and p.op_type not in ((op,) if isinstance(op, str) else op):
        return None
    return p


def users(v: ir.Value) -> list[ir.Node]:
    out, seen = [], set()
    for node, _ in v.uses():
        if id(node) not in seen:
            seen.add(id(node))
            out.append(node)
    return out


def sole_user(v: ir.Value) -> ir.Node | None:
    """The one node reading ``v`` (once), if ``v`` is not also a graph output."""
    uses = list(v.uses())
    if len(uses) != 1 or is_graph_output(v):
        return None
    return uses[0][0]


def is_graph_output(v: ir.Value) -> bool:
    g = v.graph
    if g is None:
        p = v.producer()
        g = p.graph if p is not None else None
    return g is not None and any(o is v for o in g.outputs)


def dims(v: ir.Value | None) -> tuple[Dim, ...] | None:
    """Every dim of ``v``: an int, a symbolic name, or None (unknown); None for an unknown rank."""
    if v is None or v.shape is None:
        return None
    return tuple(d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None) for d in v.shape)


def shape(v: ir.Value | None) -> tuple[int, ...] | None:
    """The static shape of ``v``, or None if any dim is not a known int."""
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return None
    return tuple(int(d) for d in v.shape)


def rank(v: ir.Value | None) -> int | None:
    if v is None or v.shape is None:
        return None
    return len(v.shape)


def dtype(v: ir.Value | None) -> str | None:
    """The canonical dtype name of a tensor value; None for unknown and non-tensor types."""
    if v is None or not isinstance(v.type, ir.TensorType):
        return None
    return NAMES_BY_CODE.get(int(v.type.dtype))


def attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    if a is None:
        return default
    v = a.value
    return list(v) if isinstance(v, tuple) else v


def other_input(node: ir.Node, v: ir.Value) -> ir.Value | None:
    """For a binary node reading ``v``, its other operand."""
    a, b = node.inputs[0], node.inputs[1]
    return b if a is v else a if b is v else None


def axes_of(node: ir.Node) -> list[int] | None:
    """Reduce axes from the attribute (older opsets) or the constant second input (opset 18+)."""
    ax = attr(node, "axes")
    if ax is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        c = const(node.inputs[1])
        if c is None:
            return None
        ax = [int(x) for x in c.reshape(-1)]
    return ax
