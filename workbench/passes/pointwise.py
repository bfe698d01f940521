"""Pointwise-chain fusion: a connected group of elementwise / broadcasting ops that no other fusion
took becomes one ``Pointwise`` node carrying its expression (a small JSON program), so a backend
can compile the group into one kernel and the intermediate tensors never reach memory.

Invariant: the program runs the same ONNX ops in the same order on the same dtypes; a group never
takes a node whose other inputs depend on the group (that would make a cycle).
"""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir

from ..dtypes import to_numpy
from ..ir.attrs import node_attrs
from ..rewrite.engine import Match, Rule
from ..ir.values import const, dtype, is_graph_output, users

POINTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Tanh", "Sigmoid", "Relu",
    "Neg", "Abs", "Where", "Cast", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And",
    "Or", "Xor", "Min", "Max", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Softplus", "Gelu", "IsNaN",
    "IsInf", "Sign", "Floor", "Ceil", "Round", "Elu", "Selu", "Softsign", "Mish", "Sin", "Cos", "PRelu",
    "Identity", "ThresholdedRelu", "Celu", "Mod", "BitwiseAnd", "BitwiseOr", "BitwiseNot",
})
# ops a backend cannot leave as a lone layer: even a group of one of these becomes Pointwise
ALWAYS_FUSE = frozenset({"Erf", "Tanh", "Pow", "Sqrt", "Relu", "Clip", "Sigmoid", "Gelu", "HardSwish",
                         "HardSigmoid", "LeakyRelu", "Softplus", "Exp", "Log", "Reciprocal", "Elu", "Selu", "Mish"})
MAX_GROUP = 64


def _is_pointwise(node: ir.Node) -> bool:
    return (node.op_type in POINTWISE and node.domain in ("", "ai.onnx") and len(node.outputs) == 1
            and not any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()))


def _depends_on(v: ir.Value, group: set[int], floor: int, pos: dict[int, int]) -> bool:
    """Whether ``v`` is computed (transitively) from a node of ``group``; nodes placed before
    ``floor`` cannot be, so the search stops there."""
    stack, seen = [v.producer()], set()
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen or pos.get(id(n), -1) < floor:
            continue
        if id(n) in group:
            return True
        seen.add(id(n))
        stack += [x.producer() for x in n.inputs if x is not None]
    return False


class FusePointwise(Rule):
    """Grow a group forward from the first elementwise node of a chain; emit one Pointwise."""

    name = "pointwise"
    ops = tuple(sorted(POINTWISE))

    def pattern(self, root):
        if not _is_pointwise(root):
            return None
        graph = root.graph
        pos = {id(n): i for i, n in enumerate(graph)}
        group, members, frontier = {id(root)}, [root], [root]
        while frontier and len(members) < MAX_GROUP:
            node = frontier.pop(0)
            for u in users(node.outputs[0]):
                # a reader inside a subgraph (Loop/If body) is not part of this graph's chain
                if id(u) in group or u.graph is not graph or not _is_pointwise(u):
                    continue
                others = [x for x in u.inputs if x is not None and const(x) is None
                          and not (x.producer() is not None and id(x.producer()) in group)]
                if any(_depends_on(x, group, pos[id(root)], pos) for x in others):
                    continue
                group.add(id(u))
                members.append(u)
                frontier.append(u)
        members.sort(key=lambda n: pos[id(n)])
        if len(members) == 1 and root.op_type not in ALWAYS_FUSE:
            return None
        outs = [n.outputs[0] for n in members
                if is_graph_output(n.outputs[0]) or any(id(u) not in group for u in users(n.outputs[0]))]
        return Match(root, members, outputs=outs)

    def check(self, m):
        unknown = [n.outputs[0].name for n in m.nodes if dtype(n.outputs[0]) is None]
        return f"element type of {unknown[0]} is unknown (the program states every dtype)" if unknown else ""

    def rewrite(self, m, emit):
        program, inputs, names = [], [], {}
        for k, n in enumerate(m.nodes):
            attrs = {a: _jsonable(v) for a, v in node_attrs(n).items()}
            operands = list(n.inputs)
            if n.op_type == "Clip" and len(operands) == 1 and ({"min", "max"} & set(attrs)):
                # opset < 11 keeps the bounds in attributes; the program is opset 21: make them inputs
                dt = to_numpy(dtype(n.outputs[0]))
                operands += [np.asarray(attrs.pop(b), dt) if b in attrs else None for b in ("min", "max")]
            args = [self._arg(x, names, inputs) for x in operands]
            if n.op_type == "Cast":
                attrs["to"] = dtype(n.outputs[0])
            ins = {"op": n.op_type, "args": args, "attrs": attrs, "out": f"t{k}", "dtype": dtype(n.outputs[0])}
            program.append(ins)
            names[id(n.outputs[0])] = f"t{k}"
        outputs = [names[id(v)] for v in m.outputs]
        node = emit.node("Pointwise", inputs, {"program": json.dumps(program), "outputs": outputs},
                         n_outputs=len(outputs))
        return list(node.outputs)

    @staticmethod
    def _arg(x, names, inputs) -> str:
        if x is None:
            return ""
        if isinstance(x, np.ndarray):  # a bound made from an attribute
            if x.dtype == np.float32:
                return f"c:{float(x)!r}"
            inputs.append(x)
            return f"in{len(inputs) - 1}"
        if id(x) in names:
            return names[id(x)]
        c = const(x)
        if c is not None and c.size == 1 and c.ndim == 0 and c.dtype.kind == "f" and c.dtype == np.float32:
            return f"c:{float(c)!r}"
        inputs.append(x)
        names[id(x)] = f"in{len(inputs) - 1}"
        return names[id(x)]


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


POINTWISE_RULES = [FusePointwise()]
