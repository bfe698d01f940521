"""Symbolic shape inference: every value's dims as expressions over the model's dim names, and the
contents of the small integer tensors that shape arithmetic computes.

ONNX's inference names a product or a ``-1`` it cannot resolve ``unk__N``, a new name each time,
and forgets which dims a shape tensor holds once it goes through arithmetic. Here a ``Shape``
holds its input's dims, ``Gather`` / ``Slice`` / ``Concat`` / ``Unsqueeze`` / ``Add`` / ``Mul`` / ...
of such tensors compute expressions (``batch*sequence``), and ``Reshape`` / ``Expand`` / ``Range``
/ ``ConstantOfShape`` / ``Tile`` turn them back into dims; ``-1`` in a Reshape target is the exact
quotient of the input's element count. The contents of shape tensors are ``ir.symvalues``'s job
(kept in ``value.meta[VALUE_KEY]``); dims are written into the onnx-ir shape as expression text
where they say more than what was there (an int stays).

Every conclusion holds for every value of the names: a dim is only ever known as an expression
that equals it for all inputs the model accepts, or left unknown.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..ops.fused import FUSED_OPS, program
from ..ops.fused import broadcast as fused_broadcast
from ..ops.geometry import conv_geometry, window_attrs
from .attrs import node_attrs
from .symdims import (Dim, Sym, add, compare, div_exact, equal, from_ir, is_unknown_name, min_args, min_dim, mul, product,
                      sdims, sub, to_ir)
from .symvalues import MAX_VALUE, VALUE_KEY, contents, known_ints, lower_bound, nonnegative, value_of
from .values import attr, dtype


# ---- dims of data tensors ---------------------------------------------------------------------
def _meet(a, b) -> Dim:
    """The broadcast of two symbolic dims, where one expression covers every run that succeeds:
    equal ones, and ``x`` with ``Min(x, k)`` for an int k >= 1 (equal when x <= k, x = 1 -> 1,
    else neither is 1 and the run fails)."""
    if equal(a, b):
        return a
    for x, y in ((a, b), (b, a)):
        args = min_args(y)
        if args is not None and any(equal(p, x) for p in args) and any(isinstance(p, int) and p >= 1 for p in args):
            return x
    return None


def broadcast(*shapes) -> tuple[Dim, ...] | None:
    """Multidirectional broadcasting of dims: 1 yields to the other; equal expressions meet; a
    known int wins over a symbol (the model only runs where they agree); else unknown."""
    return fused_broadcast(*shapes, meet=_meet)


UNARY = frozenset({
    "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Cast", "CastLike",
    "Identity", "Softmax", "LogSoftmax", "Not", "IsNaN", "IsInf", "Sign", "Floor", "Ceil", "Round", "Sin", "Cos",
    "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Softplus", "Gelu", "Elu", "Selu", "Softsign", "Mish",
    "ThresholdedRelu", "Celu", "BitwiseNot", "InstanceNormalization", "LpNormalization", "Trilu", "CumSum",
    "Dropout", "LayerNormalization", "BatchNormalization", "Hardmax",
})
BROADCAST = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And",
    "Or", "Xor", "Where", "Max", "Min", "Sum", "Mean", "PRelu", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitShift",
})


def _axes(node: ir.Node, k: int = 1) -> list[int] | None:
    a = attr(node, "axes")
    if a is not None:
        return list(a)
    if len(node.inputs) > k and node.inputs[k] is not None:
        return known_ints(node.inputs[k])
    return None


def _reshape_target(x, target: np.ndarray | None, allowzero: int) -> tuple[Dim, ...] | None:
    if target is None or target.ndim != 1:
        return None
    out, infer = [], None
    for i, t in enumerate(target):
        if isinstance(t, bool):
            return None
        if t == 0 and not allowzero:
            t = x[i] if x is not None and i < len(x) else None
        elif t == -1:
            infer = i
        out.append(t)
    if infer is not None:
        rest = [d for i, d in enumerate(out) if i != infer]
        out[infer] = div_exact(product(x), product(rest)) if x is not None else None
    return tuple(out)


def _data_dims(node: ir.Node, ins: list) -> tuple[Dim, ...] | None:
    """The dims of the node's first output (None where unknown)."""
    op = node.op_type
    x = ins[0] if ins else None
    if op in UNARY:
        return x
    if op in BROADCAST:
        return broadcast(*[d for d, v in zip(ins, node.inputs) if v is not None])
    if op == "MatMul":
        a, b = ins[0], ins[1]
        if a is None or b is None or not a or not b:
            return None
        a2, b2 = (a if len(a) > 1 else (1,) + a), (b if len(b) > 1 else b + (1,))
        batch = broadcast(a2[:-2], b2[:-2])
        out = batch + (a2[-2], b2[-1]) if batch is not None else None
        if out is not None and len(a) == 1:
            out = out[:-2] + out[-1:]
        if out is not None and len(b) == 1:
            out = out[:-1]
        return out
    if op == "Gemm":
        a, b = ins[0], ins[1]
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None
        m = a[1] if attr(node, "transA", 0) else a[0]
        n = b[0] if attr(node, "transB", 0) else b[1]
        return (m, n)
    if op == "Transpose":
        if x is None:
            return None
        perm = attr(node, "perm") or list(range(len(x)))[::-1]
        return tuple(x[p] for p in perm) if len(perm) == len(x) else None
    if op == "Reshape":
        return _reshape_target(x, value_of(node.inputs[1]), attr(node, "allowzero", 0))
    if op == "Flatten":
        if x is None:
            return None
        a = attr(node, "axis", 1)
        a = a + len(x) if a < 0 else a
        return (product(x[:a]), product(x[a:]))
    if op in ("Unsqueeze", "Squeeze"):
        axes = _axes(node)
        if x is None:
            return None
        if op == "Unsqueeze":
            if axes is None:
                return None
            r = len(x) + len(axes)
            axes = sorted(a + r if a < 0 else a for a in axes)
            out, it = [], iter(x)
            for i in range(r):
                out.append(1 if i in axes else next(it))
            return tuple(out)
        if axes is None:
            return tuple(d for d in x if d != 1) if all(d is not None for d in x) else None
        axes = {a + len(x) if a < 0 else a for a in axes}
        return tuple(d for i, d in enumerate(x) if i not in axes)
    if op == "Expand":
        target = value_of(node.inputs[1])
        return broadcast(x, tuple(target.reshape(-1))) if target is not None and x is not None else None
    if op == "Concat":
        if any(d is None for d in ins):
            return None
        r = len(ins[0])
        a = attr(node, "axis", 0)
        a = a + r if a < 0 else a
        total: Dim = 0
        for d in ins:
            total = add(total, d[a])
        first = ins[0]
        return tuple(total if i == a else first[i] for i in range(r))
    if op == "Gather":
        idx = ins[1]
        if x is None or idx is None:
            return None
        a = attr(node, "axis", 0)
        a = a + len(x) if a < 0 else a
        return tuple(x[:a]) + tuple(idx) + tuple(x[a + 1:])
    if op == "GatherElements":
        return ins[1]
    if op == "Slice":
        return _slice_dims(node, x)
    if op == "Shape":
        if x is None:
            return None
        r = len(x)
        s, e = attr(node, "start", 0), attr(node, "end", r)
        s, e = (min(max(v + r if v < 0 else v, 0), r) for v in (s, e))
        return (max(e - s, 0),)
    if op == "Size":
        return ()
    if op == "ConstantOfShape":
        target = value_of(node.inputs[0])
        return tuple(target.reshape(-1)) if target is not None else None
    if op == "Range":
        vals = [value_of(v) for v in node.inputs[:3]]
        if any(v is None or v.size != 1 for v in vals):
            return None
        start, limit, delta = (v.reshape(-1)[0] for v in vals)
        if delta == 1:
            n = sub(limit, start)
            if isinstance(n, int):
                return (max(n, 0),)
            return (n,) if nonnegative(n) else None
        if isinstance(start, int) and isinstance(limit, int) and isinstance(delta, int) and delta:
            return (max(-(-(limit - start) // delta), 0),)
        return None
    if op == "Tile":
        reps = value_of(node.inputs[1])
        if x is None or reps is None or reps.size != len(x):
            return None
        return tuple(mul(d, r) for d, r in zip(x, reps.reshape(-1)))
    if op.startswith("Reduce") or op in ("ArgMax", "ArgMin"):
        return _reduce_dims(node, x)
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool") and op != "ConvTranspose":
        return _window_dims(node, x, ins[1] if op == "Conv" and len(ins) > 1 else None)
    if op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        return None if x is None else tuple(x[:2]) + (1,) * (len(x) - 2)
    if op == "Pad":
        return _pad_dims(node, x)
    if op == "Split":
        return None  # every output differs: see _split_dims
    return None


def _window_dims(node: ir.Node, x, w) -> tuple[Dim, ...] | None:
    """Batch and channels pass through (a Conv's channels are its weight's), spatial dims by the
    window geometry where they are ints."""
    if x is None or len(x) < 3:
        return None
    nd = len(x) - 2
    kernel = attr(node, "kernel_shape") or (list(w[2:]) if w is not None and len(w) == nd + 2 else None)
    channels = (w[0] if w is not None else None) if node.op_type == "Conv" else x[1]
    if kernel is None or not all(isinstance(k, int) for k in kernel) or not all(isinstance(d, int) for d in x[2:]):
        return (x[0], channels) + (None,) * nd
    strides, dilations, pads = window_attrs({k: attr(node, k) for k in ("strides", "dilations", "pads")}, nd)
    _, _, spatial = conv_geometry(list(x[2:]), kernel, strides, dilations, pads,
                                  attr(node, "auto_pad", "NOTSET") or "NOTSET", bool(attr(node, "ceil_mode", 0)))
    return (x[0], channels) + tuple(spatial)


def _pad_dims(node: ir.Node, x) -> tuple[Dim, ...] | None:
    pads = attr(node, "pads") if len(node.inputs) < 2 else known_ints(node.inputs[1])
    if x is None or pads is None:
        return None
    axes = known_ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else list(range(len(x)))
    if axes is None or len(pads) != 2 * len(axes):
        return None
    out = list(x)
    for k, a in enumerate(axes):
        out[a] = add(out[a], pads[k] + pads[k + len(axes)])
    return tuple(out)


def _slice_dims(node: ir.Node, x) -> tuple[Dim, ...] | None:
    if x is None:
        return None
    starts, ends = value_of(node.inputs[1]), value_of(node.inputs[2])
    axes = known_ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    steps = known_ints(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None) \
            or (len(node.inputs) > 4 and node.inputs[4] is not None and steps is None):
        return None
    starts, ends = list(starts.reshape(-1)), list(ends.reshape(-1))
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    out = list(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a + len(x) if a < 0 else a
        out[a] = _slice_len(x[a], s, e, st)
    return tuple(out)


BIG = 1 << 62  # "to the end" in exporters' Slice ends (INT64_MAX and friends)


def _slice_len(d: Dim, s, e, step) -> Dim:
    """Length of d[s:e:step] where that is an expression for every value of d (else None). An end
    beyond what is certain to fit is ``Min(end, d)``."""
    if isinstance(d, int) and isinstance(s, int) and isinstance(e, int):
        return len(range(*slice(s, e, step).indices(d)))
    if step != 1 or d is None or s is None or e is None or (isinstance(s, int) and s < 0):
        return None
    if isinstance(e, int) and e >= BIG:
        e = d
    elif isinstance(e, int) and e < 0:
        return None  # d + e may be below s for small d: not one expression
    order = compare(e, d)
    hi = e if equal(e, d) or (order is not None and order <= 0) else (d if order is not None else min_dim(e, d))
    n = sub(hi, s)
    if isinstance(n, int):
        return max(n, 0)
    return n if nonnegative(n) else None


def _reduce_dims(node: ir.Node, x) -> tuple[Dim, ...] | None:
    if x is None:
        return None
    axes = _axes(node)
    keep = attr(node, "keepdims", 1)
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [attr(node, "axis", 0)]
    if axes is None or not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return x
        axes = list(range(len(x)))
    axes = {a + len(x) if a < 0 else a for a in axes}
    return tuple(1 if i in axes else d for i, d in enumerate(x) if keep or i not in axes)


def _split_dims(node: ir.Node, x) -> list:
    n = len(node.outputs)
    if x is None:
        return [None] * n
    a = attr(node, "axis", 0)
    a = a + len(x) if a < 0 else a
    sizes = attr(node, "split")
    if sizes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        sizes = known_ints(node.inputs[1])
    if sizes is None:
        part = div_exact(x[a], n)
        sizes = [part] * n
    if len(sizes) != n:
        return [None] * n
    return [tuple(s if i == a else d for i, d in enumerate(x)) for s in sizes]


def _pointwise_dims(node: ir.Node, ins: list) -> list:
    """A Pointwise program's outputs, broadcast step by step as the program runs."""
    env = {f"in{k}": d for k, d in enumerate(ins)}
    for step in program(node_attrs(node)):
        env[step["out"]] = broadcast(*[() if a.startswith("c:") else env.get(a) for a in step["args"] if a != ""])
    return [env.get(o) for o in attr(node, "outputs") or []]


def _fused_dims(node: ir.Node, ins: list) -> list:
    if node.op_type == "Pointwise":
        try:
            return (_pointwise_dims(node, ins) + [None] * len(node.outputs))[: len(node.outputs)]
        except (KeyError, ValueError, TypeError):
            return [None] * len(node.outputs)
    schema = FUSED_OPS.get(node.op_type)
    if schema is None:
        return [None] * len(node.outputs)
    typed = [None if v is None else (dtype(v), None if d is None else tuple(to_ir(x) for x in d))
             for v, d in zip(node.inputs, ins)]
    try:
        got = schema.shape(typed, schema.with_defaults(node_attrs(node)))
    except Exception:  # a malformed node stays as typed
        return [None] * len(node.outputs)
    out = [None if s is None else tuple(from_ir(d) if d is not None else None for d in _as_dims(s)) for _, s in got]
    return (out + [None] * len(node.outputs))[: len(node.outputs)]


def _as_dims(s):
    return [ir.SymbolicDim(d) if isinstance(d, str) else d for d in s]


def infer(node: ir.Node) -> list[tuple]:
    """(dims, contents) of each output of ``node`` from its inputs' dims and contents."""
    ins = [sdims(v) for v in node.inputs]
    n = len(node.outputs)
    if node.domain not in ("", "ai.onnx"):
        return [(d, None) for d in _fused_dims(node, ins)]
    if node.op_type == "Split":
        return [(d, None) for d in _split_dims(node, ins[0])]
    dims = _data_dims(node, ins)
    out = [(dims, None)] + [(None, None)] * (n - 1)
    if node.op_type in ("LayerNormalization",) and n > 1:
        out = [(dims, None)] + [(None, None)] * (n - 1)
    try:
        values = contents(node, ins, dims)
    except (ValueError, TypeError, IndexError):
        values = [None] * n
    out = [(d, val if _fits(val, d) else None) for (d, _), val in zip(out, values + [None] * n)]
    return out


def _fits(val, dims) -> bool:
    if val is None or not isinstance(val, np.ndarray) or val.size > MAX_VALUE:
        return False
    return dims is None or (len(dims) == val.ndim and all(not isinstance(d, int) or d == s for d, s in zip(dims, val.shape)))


def _merge(old: tuple | None, new: tuple | None) -> tuple | None:
    if new is None:
        return old
    if old is None or len(old) != len(new):
        return new if old is None else old
    out = []
    for o, n in zip(old, new):
        if isinstance(n, int) or (isinstance(o, int)):
            out.append(n if isinstance(n, int) else o)
        elif n is not None and (o is None or is_unknown_name(o) or isinstance(o, Sym)):
            out.append(n)
        else:
            out.append(o)
    return tuple(out)


def refine(node: ir.Node) -> bool:
    """Write what ``infer`` knows into the node's outputs; returns whether any shape changed."""
    changed = False
    for v, (dims, val) in zip(node.outputs, infer(node)):
        old = sdims(v)
        merged = _merge(old, dims)
        if merged is not None and merged != old:
            v.shape = ir.Shape([to_ir(d) for d in merged])
            changed = True
        if val is not None and v.const_value is None:
            v.meta[VALUE_KEY] = val
        elif VALUE_KEY in v.meta and val is None:
            del v.meta[VALUE_KEY]
    return changed


def propagate(graph: ir.Graph) -> None:
    """``refine`` every node in order (the graph is topologically sorted)."""
    for node in graph:
        refine(node)


def is_shape_value(v: ir.Value) -> bool:
    """Whether ``v`` holds known contents (a shape or index computed from shapes)."""
    return value_of(v) is not None


__all__ = ["VALUE_KEY", "broadcast", "infer", "is_shape_value", "lower_bound", "propagate", "refine", "value_of"]
