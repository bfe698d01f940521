"""Recognising an activation function after a value, whatever ops the exporter spelled it with.

GELU arrives as Gelu, as Div/Erf/Add/Mul/Mul (either operand order, 0.5 applied first or last,
Mul by 1/sqrt(2) instead of Div), or as the tanh form with Pow or Mul-Mul-Mul; SiLU as Mul(x,
Sigmoid(x)); ReLU6 as Clip or Max/Min. Rather than one pattern per spelling, we take the subgraph
of scalar-only elementwise ops that reads nothing but the value (and scalar constants), evaluate it
with the reference kernels on a dense grid of inputs, and compare it with each activation the
fused ops support. A function of one variable that agrees on ~170 points spanning [-20, 20] with
a known activation to 1e-5 is that activation for every exporter spelling we have seen.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..ir.attrs import node_attrs
from ..kernels.reference import KernelContext, get_kernel
from ..kernels.reference.fused import activate
from ..patterns.values import const, is_graph_output, users

UNARY_OK = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Tanh",
                      "Sigmoid", "Relu", "Neg", "Abs", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish",
                      "Softplus", "Gelu", "Min", "Max", "Elu", "Selu", "Softsign", "Mish"})
MAX_NODES = 12
SAMPLES = np.concatenate([np.linspace(-8, 8, 161), [-20, -12, -1e-3, 1e-3, 0.3, 12, 20]]).astype(np.float32)
PLAIN = ("Relu", "Sigmoid", "Tanh", "Silu", "Gelu", "GeluTanh", "HardSwish", "Softplus")


def _qualifies(node: ir.Node, known: set[int]) -> bool:
    if node.op_type not in UNARY_OK or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return False
    for x in node.inputs:
        if x is None or id(x) in known:
            continue
        c = const(x)
        if c is None or c.size != 1:
            return False
    return True


def region(v: ir.Value) -> list[ir.Node]:
    """Elementwise nodes reachable from ``v`` that read only ``v``, each other and scalars."""
    known, nodes, frontier = {id(v)}, [], [v]
    while frontier and len(nodes) < MAX_NODES:
        value = frontier.pop(0)
        for u in users(value):
            if any(u is n for n in nodes) or not _qualifies(u, known):
                continue
            nodes.append(u)
            known.add(id(u.outputs[0]))
            frontier.append(u.outputs[0])
    return nodes


def _ancestors(sink: ir.Node, nodes: list[ir.Node]) -> list[ir.Node]:
    inside = {id(n.outputs[0]): n for n in nodes}
    out, stack = {}, [sink]
    while stack:
        n = stack.pop()
        if id(n) in out:
            continue
        out[id(n)] = n
        stack += [inside[id(x)] for x in n.inputs if x is not None and id(x) in inside]
    return [n for n in nodes if id(n) in out]


def _closed(v: ir.Value, sub: list[ir.Node], sink: ir.Node) -> bool:
    """Only ``sink``'s output leaves ``sub``, and every reader of ``v`` is inside it."""
    ids = {id(n) for n in sub}
    if any(id(u) not in ids for u in users(v)) or is_graph_output(v):
        return False
    for n in sub:
        if n is sink:
            continue
        if is_graph_output(n.outputs[0]) or any(id(u) not in ids for u in users(n.outputs[0])):
            return False
    return True


def evaluate(v: ir.Value, sub: list[ir.Node], x: np.ndarray) -> np.ndarray | None:
    env = {id(v): x}
    try:
        with np.errstate(all="ignore"):
            for n in sub:
                args = [env.get(id(i)) if id(i) in env else const(i) for i in n.inputs]
                args = [a.astype(x.dtype) if a is not None and a.dtype.kind == "f" and a.dtype != x.dtype else a for a in args]
                kernel = get_kernel("", n.op_type)
                env[id(n.outputs[0])] = np.asarray(kernel(KernelContext(opset=21), args, node_attrs(n))[0])
        return env[id(sub[-1].outputs[0])]
    except Exception:
        return None


def _candidates(y: np.ndarray, sub: list[ir.Node]):
    for name in PLAIN:
        yield {"activation": name}
    yield {"activation": "Clip", "act_min": float(y.min()), "act_max": float(y.max())}
    for n in sub:
        a = node_attrs(n)
        if n.op_type == "LeakyRelu":
            yield {"activation": "LeakyRelu", "act_alpha": float(a.get("alpha", 0.01))}
        if n.op_type == "HardSigmoid":
            yield {"activation": "HardSigmoid", "act_alpha": float(a.get("alpha", 0.2)), "act_beta": float(a.get("beta", 0.5))}


def identify(y: np.ndarray, sub: list[ir.Node]) -> dict | None:
    x = SAMPLES
    for cand in _candidates(y, sub):
        try:
            ref = activate(x.copy(), cand)
        except Exception:
            continue
        if ref.shape == y.shape and np.all(np.abs(ref - y) <= 1e-5 * np.maximum(1.0, np.abs(ref))):
            return cand
    return None


def find_activation(v: ir.Value) -> tuple[list[ir.Node], ir.Value, dict] | None:
    """(nodes, output, activation attrs) of the largest known activation applied to ``v``."""
    nodes = region(v)
    if not nodes:
        return None
    for sink in reversed(nodes):
        sub = _ancestors(sink, nodes)
        if not _closed(v, sub, sink):
            continue
        y = evaluate(v, sub, SAMPLES)
        if y is None:
            continue
        act = identify(y, sub)
        if act is not None:
            return sub, sink.outputs[0], act
    return None
