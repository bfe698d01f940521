"""fold_shapes: shape arithmetic over symbolic dims, folded as far as it holds for every shape.

With dynamic dims the exporters' ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains do
not fold to constants, but symbolic inference (``ir.symshapes``) knows what they compute:
``[batch, sequence, 2, 16]``. This pass removes what that knowledge makes redundant:

* a node whose every output is known to hold plain integers (``Gather(Shape(x), 2)`` of an
  ``x`` of dims ``[batch, sequence, 32]`` is 32) becomes a constant;
* a Reshape target computed from shapes becomes a constant one, written with ``0`` ("the input's
  dim here") where the input has that very dim and one ``-1`` (the exact quotient) for what is left;
* an Expand target computed from shapes becomes a constant one, with ``1`` where the input has
  the dim already (an Expand to the input's own shape is then a no-op ``remove_noop`` drops).

Invariant: each rewritten Reshape / Expand produces the very same result for every input shape
the original accepted (a ``0`` only where the dims are equal as expressions, a ``-1`` only for a
target dim fixed by the element count). Shape arithmetic that the data needs at run time
(``Range(0, sequence)``, ``ConstantOfShape([batch, sequence])``) stays.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..dtypes import to_numpy
from ..ir.symdims import Sym, equal, known, sdims
from ..ir.symshapes import value_of
from ..ir.values import attr, dtype
from .fold_constants import replace_with_constants


def _known_ints(v: ir.Value) -> np.ndarray | None:
    """The contents of ``v`` as a NumPy array when every element is a plain int or bool."""
    got = value_of(v)
    if got is None or v.const_value is not None:
        return None
    flat = got.reshape(-1)
    if not all(isinstance(x, (int, bool)) and not isinstance(x, Sym) for x in flat):
        return None
    name = dtype(v)
    if name is None or name == "string":
        return None
    return np.array([int(x) for x in flat], dtype=to_numpy(name)).reshape(got.shape)


def reshape_target(x_dims, target: np.ndarray, allowzero: int) -> np.ndarray | None:
    """A constant Reshape target meaning the same as the symbolic ``target`` for an input of dims
    ``x_dims``, or None when none does (two target dims that are neither constant nor the input's)."""
    out, free = [], False
    for i, t in enumerate(target.reshape(-1)):
        if isinstance(t, bool):
            return None
        if isinstance(t, int):
            if t == -1:
                if free:
                    return None
                free = True
            out.append(t)
            continue
        same = x_dims is not None and i < len(x_dims) and equal(x_dims[i], t)
        if same and not allowzero:
            out.append(0)
        elif not free:
            free = True
            out.append(-1)
        else:
            return None
    return np.array(out, dtype=np.int64)


def expand_target(x_dims, target: np.ndarray) -> np.ndarray | None:
    """A constant Expand shape giving the same result for an input of dims ``x_dims``: a symbolic
    target dim the input already has (aligned from the right) becomes 1."""
    if x_dims is None:
        return None
    flat = list(target.reshape(-1))
    out = []
    for j, t in enumerate(flat):
        if isinstance(t, bool):
            return None
        if isinstance(t, int):
            out.append(t)
            continue
        k = j - (len(flat) - len(x_dims))
        if t is None or k < 0 or not equal(x_dims[k], t):
            return None
        out.append(1)
    return np.array(out, dtype=np.int64)


def _computed(v: ir.Value | None) -> bool:
    return v is not None and v.const_value is None and value_of(v) is not None


def _replace_input(graph: ir.Graph, node: ir.Node, index: int, arr: np.ndarray, taken: set[str]) -> None:
    base = name = f"{node.name or node.op_type}/shape"
    k = 1
    while name in taken:  # value names are unique in a graph
        k += 1
        name = f"{base}#{k}"
    taken.add(name)
    init = ir.Value(name=name, const_value=ir.tensor(arr), shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.INT64))
    graph.register_initializer(init)
    node.replace_input_with(index, init)


def _names(graph: ir.Graph) -> set[str]:
    names = set(graph.initializers) | {v.name for v in graph.inputs if v.name}
    return names | {v.name for n in graph for v in n.outputs if v.name}


def fold_shapes(model: ir.Model, ctx) -> bool:
    """One sweep; returns whether anything changed. Needs the symbolic inference of the graph as it
    is (``cleanup.infer_shapes``)."""
    graph = model.graph
    changed = False
    taken: set[str] | None = None
    for node in list(graph):
        if node.graph is None:
            continue
        if node.domain in ("", "ai.onnx") and node.op_type not in ("Constant",) and node.outputs:
            arrays = [_known_ints(v) for v in node.outputs]
            if all(a is not None for a in arrays):
                replace_with_constants(graph, node, arrays)
                ctx.count("fold_constants", node)
                changed = True
                continue
        if node.op_type == "Reshape" and node.domain in ("", "ai.onnx") and _computed(node.inputs[1]):
            # the output's dims: the target with its 0s and -1 resolved (a -1 the model wrote stays
            # a -1 only if nothing else needs it)
            out = sdims(node.outputs[0])
            want = np.array(list(out) + [None], dtype=object)[:-1] if known(out) and 0 not in out else value_of(node.inputs[1])
            target = reshape_target(sdims(node.inputs[0]), want, attr(node, "allowzero", 0))
            if target is not None:
                taken = _names(graph) if taken is None else taken
                _replace_input(graph, node, 1, target, taken)
                ctx.count("fold_constants", node)
                changed = True
        elif node.op_type == "Expand" and node.domain in ("", "ai.onnx") and _computed(node.inputs[1]):
            target = expand_target(sdims(node.inputs[0]), value_of(node.inputs[1]))
            if target is not None:
                taken = _names(graph) if taken is None else taken
                _replace_input(graph, node, 1, target, taken)
                ctx.count("fold_constants", node)
                changed = True
    return changed


__all__ = ["expand_target", "fold_shapes", "reshape_target"]
