"""Contents of the small integer tensors that shape arithmetic computes, as symbolic dims.

``Shape(x)`` holds x's dims; ``Gather`` / ``Slice`` / ``Concat`` / ``Unsqueeze`` / ``Cast`` of it
move them, ``Add`` / ``Sub`` / ``Mul`` / exact ``Div`` compute expressions, comparisons are decided
where the bounds of the difference decide them (dims are never negative: ``batch == -1`` is
False), ``Where`` / ``And`` / ``Or`` / ``Not`` follow. A value's contents are an object array of
ints, bools, expressions (``ir.symdims``) and None for what is not known; they live in
``value.meta[VALUE_KEY]`` (constants: their data). ``ir.symshapes`` computes them beside the dims.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .symdims import Sym, add, compare, div_exact, min_dim, mul, product, sub
from .values import attr, const, dtype

VALUE_KEY = "wb.sym_value"
MAX_VALUE = 64  # elements: larger integer tensors are data, not shapes
_INT = {"int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64"}


# ---- contents of shape tensors --------------------------------------------------------------
def value_of(v: ir.Value | None) -> np.ndarray | None:
    """The contents of a small integer (or bool) tensor as an object array of ints / bools / Sym /
    None, when known; None otherwise."""
    if v is None:
        return None
    if v.const_value is not None:
        if v.const_value.size > MAX_VALUE:  # (never decoded: weights are read by every node here)
            return None
        c = const(v)
        if c.size > MAX_VALUE or c.dtype.kind not in "iub":
            return None
        return np.array([bool(x) if c.dtype.kind == "b" else int(x) for x in c.reshape(-1)], dtype=object).reshape(c.shape)
    got = v.meta.get(VALUE_KEY)
    return got if isinstance(got, np.ndarray) else None


def _elementwise(fn, *arrays) -> np.ndarray | None:
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        return None
    bs = [np.broadcast_to(a, shape).reshape(-1) for a in arrays]
    out = [fn(*xs) for xs in zip(*bs)]
    return np.array(out + [None], dtype=object)[:-1].reshape(shape)


def lower_bound(d) -> int | None:
    """A lower bound of ``d`` for every value of the names (dims are never negative): its constant
    term when every other coefficient is positive."""
    if isinstance(d, (int, bool)):
        return int(d)
    if isinstance(d, Sym) and all(c > 0 for m, c in d.terms.items() if m):
        return d.terms.get((), 0)
    return None


def nonnegative(d) -> bool:
    lb = lower_bound(d)
    return lb is not None and lb >= 0


def _bounds(d) -> tuple[int | None, int | None]:
    """(lowest, highest) value of ``d`` for every value of the names; None where unbounded."""
    lo, neg_lo = lower_bound(d), lower_bound(mul(-1, d))
    return lo, (None if neg_lo is None else -neg_lo)


def _cmp(op: str):
    def fn(a, b):
        if a is None or b is None or isinstance(a, bool) != isinstance(b, bool):
            return None
        lo, hi = _bounds(sub(int(a) if isinstance(a, bool) else a, int(b) if isinstance(b, bool) else b))
        tests = {  # (true when, false when) on the bounds of a - b
            "Equal": (lo == 0 and hi == 0, (lo is not None and lo > 0) or (hi is not None and hi < 0)),
            "Less": (hi is not None and hi < 0, lo is not None and lo >= 0),
            "Greater": (lo is not None and lo > 0, hi is not None and hi <= 0),
            "LessOrEqual": (hi is not None and hi <= 0, lo is not None and lo > 0),
            "GreaterOrEqual": (lo is not None and lo >= 0, hi is not None and hi < 0),
        }
        yes, no = tests[op]
        return True if yes else (False if no else None)
    return fn


def _div(a, b):
    if isinstance(a, int) and isinstance(b, int) and b:
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q  # integer Div truncates
    return div_exact(a, b)


def _minmax(pick):
    def fn(*xs):
        if any(x is None for x in xs):
            return None
        best = xs[0]
        for x in xs[1:]:
            c = compare(x, best)
            if c is None:
                return None
            best = pick(best, x, c)
        return best
    return fn


def _fold(fn, xs):
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


def _where(c, a, b):
    return None if c is None else (a if c else b)


def _logic(fn):
    def g(*xs):
        return fn(*xs) if all(isinstance(x, (bool, int)) for x in xs) else None
    return g


_VALUE_OPS = {
    "Add": add, "Sub": sub, "Mul": mul, "Div": _div,
    "Equal": _cmp("Equal"), "Less": _cmp("Less"), "Greater": _cmp("Greater"),
    "LessOrEqual": _cmp("LessOrEqual"), "GreaterOrEqual": _cmp("GreaterOrEqual"),
    "Max": _minmax(lambda best, x, c: x if c > 0 else best),
    "Min": lambda *xs: None if any(x is None for x in xs) else _fold(min_dim, xs),
    "Where": _where, "And": _logic(lambda a, b: bool(a) and bool(b)), "Or": _logic(lambda a, b: bool(a) or bool(b)),
    "Not": _logic(lambda a: not a), "Neg": lambda a: None if a is None else mul(-1, a),
    "Abs": lambda a: abs(a) if isinstance(a, int) else (a if nonnegative(a) else None),
}


def known_ints(v: ir.Value | None) -> list[int] | None:
    """A constant (or fully known) integer input as a list of ints."""
    got = value_of(v)
    if got is None or not all(isinstance(x, (int, bool)) and x is not None for x in got.reshape(-1)):
        return None
    return [int(x) for x in got.reshape(-1)]


_CONTENT_OPS = frozenset({"Shape", "Size", "Constant", "Identity", "Cast", "CastLike", "Unsqueeze", "Squeeze", "Reshape",
                          "Flatten", "Gather", "Concat", "Slice", "ConstantOfShape", "Expand", "Range"}) | frozenset(_VALUE_OPS)


def contents(node: ir.Node, ins: list, dims) -> list:
    """Contents of the node's outputs (object arrays) where they follow from known contents; ``ins``
    are the inputs' dims, ``dims`` the first output's (as ``ir.symshapes`` inferred them)."""
    op = node.op_type
    if op not in _CONTENT_OPS:
        return [None] * len(node.outputs)
    vals = [value_of(v) for v in node.inputs]
    if op == "Shape":
        d = ins[0]
        if d is None:
            return [None]
        r = len(d)
        s, e = attr(node, "start", 0), attr(node, "end", r)
        s, e = (min(max(x + r if x < 0 else x, 0), r) for x in (s, e))
        return [np.array(list(d[s:e]) + [None], dtype=object)[:-1]]
    if op == "Size":
        return [np.array(product(ins[0]) if ins[0] is not None else None, dtype=object)]
    if op == "Constant":
        return [_constant_attr(node)]
    if op in _VALUE_OPS:
        if any(a is None for a in vals):
            return [None]
        return [_elementwise(_VALUE_OPS[op], *vals)]
    if op in ("Identity", "Cast", "CastLike"):
        x, to = vals[0], dtype(node.outputs[0])
        if x is None or (to not in _INT and to != "bool"):
            return [None]
        if to == "bool":
            return [_elementwise(lambda e: bool(e) if isinstance(e, int) else _cmp("Greater")(e, 0), x)]
        return [_elementwise(lambda e: int(e) if isinstance(e, bool) else e, x)]
    if op in ("Unsqueeze", "Squeeze", "Reshape", "Flatten"):
        x = vals[0]
        shape = _static(dims)
        if x is None or shape is None or int(np.prod(shape)) != x.size:
            return [None]
        return [x.reshape(shape)]
    if op == "Gather":
        x, idx = vals[0], known_ints(node.inputs[1])
        if x is None or idx is None:
            return [None]
        axis = attr(node, "axis", 0)
        ishape = const(node.inputs[1]).shape if const(node.inputs[1]) is not None else vals[1].shape
        try:
            got = np.take(x, np.array(idx, dtype=np.int64).reshape(ishape), axis=axis)
        except (IndexError, ValueError):
            return [None]
        if not isinstance(got, np.ndarray):  # one element: NumPy hands back the object itself
            got = np.array([got, None], dtype=object)[:1].reshape(())
        return [got]
    if op == "Concat":
        if any(a is None for a in vals):
            return [None]
        try:
            return [np.concatenate(vals, axis=attr(node, "axis", 0))]
        except ValueError:
            return [None]
    if op == "Slice":
        x = vals[0]
        parts = [known_ints(v) if v is not None else None for v in node.inputs[1:5]] + [None] * 4
        starts, ends, axes, steps = parts[:4]
        if x is None or starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None) \
                or (len(node.inputs) > 4 and node.inputs[4] is not None and steps is None):
            return [None]
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[a % x.ndim] = slice(s, e, st)
        return [x[tuple(index)]]
    if op == "ConstantOfShape":
        shape = known_ints(node.inputs[0])
        fill = node.attributes.get("value")
        if shape is None or int(np.prod(shape)) > MAX_VALUE:
            return [None]
        c = fill.value.numpy().reshape(-1) if fill is not None else np.zeros(1, np.float32)
        if c.dtype.kind not in "iub":
            return [None]
        e = bool(c[0]) if c.dtype.kind == "b" else int(c[0])
        return [np.full(tuple(shape), e, dtype=object)]
    if op == "Expand":
        x, shape = vals[0], _static(dims)
        if x is None or shape is None:
            return [None]
        try:
            return [np.broadcast_to(x, shape).copy()]
        except ValueError:
            return [None]
    if op == "Range":
        a, b, c = (value_of(v) for v in node.inputs[:3])
        if a is None or b is None or c is None:
            return [None]
        start, limit, delta = (x.reshape(-1)[0] for x in (a, b, c))
        if not all(isinstance(x, int) for x in (start, limit, delta)) or delta == 0:
            return [None]
        r = list(range(start, limit, delta))
        return [np.array(r, dtype=object) if len(r) <= MAX_VALUE else None]
    return [None] * len(node.outputs)


def _constant_attr(node: ir.Node) -> np.ndarray | None:
    for key in ("value", "value_int", "value_ints"):
        a = node.attributes.get(key)
        if a is None:
            continue
        arr = np.asarray(a.value.numpy() if key == "value" else a.value)
        if arr.size > MAX_VALUE or arr.dtype.kind not in "iub":
            return None
        flat = [bool(x) if arr.dtype.kind == "b" else int(x) for x in arr.reshape(-1)]
        return np.array(flat + [None], dtype=object)[:-1].reshape(arr.shape)
    return None


def _static(d) -> tuple[int, ...] | None:
    return tuple(d) if d is not None and all(isinstance(x, int) for x in d) else None


__all__ = ["MAX_VALUE", "VALUE_KEY", "contents", "known_ints", "lower_bound", "nonnegative", "value_of"]
