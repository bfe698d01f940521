"""Position tensors: values built from ``Range`` that are affine functions of their coordinates.

With dynamic sequence lengths the exporters' causal masks are not constants: HF builds
``kv_idx <= q_idx`` from ``Range(0, sequence)`` unsqueezed onto the key and query axes. This
module reads such a value back as ``sum(coeff[axis] * index[axis]) + offset`` over the axes it
varies along (counted from the end, so broadcasting does not move them), each axis running over
``0 .. length-1``; a comparison of two of them is the predicate ``form <= 0``. ``masks.py`` asks
whether a predicate is the causal triangle of [.., sq, sk] scores for every sq and sk.

Only structure is read (Range, Unsqueeze/Reshape/Expand/Cast/Identity that only move or copy it,
Add/Sub/Neg/Mul by a known scalar, the comparisons, Not), and constants only for what they are:
an integer constant is a position tensor when its values are exactly such a form (``fit_affine``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from ..ir.symdims import Dim, add, equal, known, mul, same_dims, sdims, sub
from ..ir.symshapes import value_of
from ..ir.values import attr, const, dtype, producer

_MOVES = ("Unsqueeze", "Reshape", "Expand", "Identity", "Squeeze")
_INTS = ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64")


@dataclass(frozen=True)
class Affine:
    """sum(coeffs[a] * i_a) + offset, where i_a runs over 0 .. lengths[a]-1 along axis a (a < 0)."""

    coeffs: tuple  # ((axis, coeff), ...) sorted, no zero coefficients; a coeff is an int or a dim expression
    lengths: tuple  # ((axis, length dim), ...) for the axes in coeffs
    offset: Dim

    def coeff(self) -> dict:
        return dict(self.coeffs)


def _scalar(v: ir.Value) -> Dim | None:
    got = value_of(v)
    if got is None or got.size != 1:
        return None
    x = got.reshape(-1)[0]
    return None if isinstance(x, bool) else x


def _combine(a: Affine, b: Affine, sign: int) -> Affine | None:
    coeffs, lengths = dict(a.coeffs), dict(a.lengths)
    for axis, c in b.coeffs:
        n = dict(b.lengths)[axis]
        if axis in lengths and not equal(lengths[axis], n):
            return None
        lengths[axis] = n
        coeffs[axis] = coeffs.get(axis, 0) + sign * c
    kept = {k: c for k, c in coeffs.items() if c}
    return Affine(tuple(sorted(kept.items())), tuple(sorted((k, lengths[k]) for k in kept)),
                  add(a.offset, mul(sign, b.offset)))


def _scaled(a: Affine, k) -> Affine:
    if isinstance(k, int) and k == 0:
        return Affine((), (), 0)
    return Affine(tuple((ax, mul(c, k)) for ax, c in a.coeffs), a.lengths, mul(k, a.offset))


def affine(v: ir.Value | None, depth: int = 12) -> Affine | None:
    """``v`` as an affine function of its coordinates, or None."""
    if v is None or depth <= 0:
        return None
    c = _scalar(v)
    if c is not None:
        return Affine((), (), c)
    if v.const_value is not None:  # a folded position tensor (some of its dims were static)
        return fit_affine(const(v))
    p = producer(v)
    if p is None:
        return None
    op = p.op_type
    if op == "Range":
        start, limit, delta = (_scalar(x) for x in p.inputs[:3])
        if delta != 1 or start is None or limit is None:
            return None
        return Affine(((-1, 1),), ((-1, sub(limit, start)),), start)
    if op == "Cast" and dtype(v) in _INTS:
        return affine(p.inputs[0], depth - 1)
    if op in _MOVES:
        return _moved(p, v, depth)
    if op in ("Add", "Sub"):
        a, b = affine(p.inputs[0], depth - 1), affine(p.inputs[1], depth - 1)
        return _combine(a, b, 1 if op == "Add" else -1) if a is not None and b is not None else None
    if op == "Neg":
        a = affine(p.inputs[0], depth - 1)
        return _scaled(a, -1) if a is not None else None
    if op == "Mul":  # by a scalar: a constant or a dim (the row stride of a flattened index)
        for x, y in ((p.inputs[0], p.inputs[1]), (p.inputs[1], p.inputs[0])):
            k = _scalar(y)
            if k is not None:
                a = affine(x, depth - 1)
                return _scaled(a, k) if a is not None else None
    return None


def fit_affine(c: np.ndarray | None) -> Affine | None:
    """A constant integer array that is ``offset + sum(coeff * index)`` (what position arithmetic
    folds to at static shapes), as that form; axes of length 1 do not vary."""
    if c is None or c.dtype.kind not in "iu" or c.size == 0:
        return None
    c = c.astype(np.int64)
    base = int(c.reshape(-1)[0])
    coeffs, lengths, want = [], [], np.full(c.shape, base, np.int64)
    for k, n in enumerate(c.shape):
        if n == 1:
            continue
        step = np.zeros(c.ndim, np.int64)
        step[k] = 1
        coeff = int(c[tuple(step)]) - base
        shape = [1] * c.ndim
        shape[k] = n
        want = want + coeff * np.arange(n, dtype=np.int64).reshape(shape)
        if coeff:
            coeffs.append((k - c.ndim, coeff))
            lengths.append((k - c.ndim, n))
    if not np.array_equal(want, c):
        return None
    return Affine(tuple(sorted(coeffs)), tuple(sorted(lengths)), base)


def _moved(p: ir.Node, v: ir.Value, depth: int) -> Affine | None:
    """Through ops that only place the values on other axes or copy them: each varying axis must
    keep its length, found at its new place in the output's dims."""
    a = affine(p.inputs[0], depth - 1)
    if a is None or not a.coeffs:
        return a
    xs, ys = sdims(p.inputs[0]), sdims(v)
    if not known(xs) or not known(ys):
        return None
    if p.op_type in ("Identity", "Expand"):  # same coordinates (Expand aligns the trailing axes)
        return a if all(equal(ys[ax], n) for ax, n in a.lengths) else None
    if p.op_type == "Unsqueeze":
        axes = [int(x) for x in (np.reshape(value_of(p.inputs[1]), -1) if len(p.inputs) > 1 and p.inputs[1] is not None
                                 else attr(p, "axes") or [])]
        r = len(ys)
        axes = sorted(x + r if x < 0 else x for x in axes)
        kept = [i for i in range(r) if i not in axes]  # output position of every input axis
        moved = {ax: kept[len(xs) + ax] - r for ax, _ in a.coeffs}
    else:  # Reshape / Squeeze: the varying axes must be the only dims other than 1, in the same order
        src = [i - len(xs) for i, d in enumerate(xs) if not equal(d, 1)]
        dst = [i - len(ys) for i, d in enumerate(ys) if not equal(d, 1)]
        if len(src) != len(dst) or not all(equal(xs[s], ys[t]) for s, t in zip(src, dst)):
            return None
        moved = dict(zip(src, dst))
        if any(ax not in moved for ax, _ in a.coeffs):
            return None
    lengths = dict(a.lengths)
    return Affine(tuple(sorted((moved[ax], c) for ax, c in a.coeffs)),
                  tuple(sorted((moved[ax], lengths[ax]) for ax, _ in a.coeffs)), a.offset)


def predicate(v: ir.Value | None, depth: int = 12) -> Affine | None:
    """A boolean ``v`` as ``form <= 0`` (integer coordinates), or None."""
    p = producer(v)
    if p is None or depth <= 0:
        return None
    op = p.op_type
    if op in ("Cast", "Identity") and dtype(p.inputs[0]) == "bool":
        return predicate(p.inputs[0], depth - 1)
    if op == "Not":
        f = predicate(p.inputs[0], depth - 1)
        return None if f is None else _combine(_scaled(f, -1), Affine((), (), 1), 1)  # form > 0 <=> -form + 1 <= 0
    if op in ("Identity", "Expand"):  # the same coordinates (Expand aligns the trailing axes)
        f = predicate(p.inputs[0], depth - 1)
        ys = sdims(v)
        if f is None or not known(ys) or not all(-len(ys) <= ax and equal(ys[ax], n) for ax, n in f.lengths):
            return None
        return f
    if op in ("And", "Or"):  # with a constant that is all True (And) / all False (Or) and adds no axis
        for x, y in ((p.inputs[0], p.inputs[1]), (p.inputs[1], p.inputs[0])):
            c = const(y)
            if c is not None and c.dtype == np.bool_ and c.size and bool(np.all(c) if op == "And" else not np.any(c)) \
                    and all(d == 1 for d in c.shape) and len(c.shape) <= len(sdims(v) or ()):
                return predicate(x, depth - 1) if same_dims(sdims(x), sdims(v)) else None
        return None
    if op not in ("LessOrEqual", "Less", "GreaterOrEqual", "Greater"):
        return None
    a, b = affine(p.inputs[0], depth - 1), affine(p.inputs[1], depth - 1)
    if a is None or b is None:
        return None
    if op in ("LessOrEqual", "Less"):
        f = _combine(a, b, -1)
    else:
        f = _combine(b, a, -1)
    if f is not None and op in ("Less", "Greater"):
        f = _combine(f, Affine((), (), 1), 1)
    return f


def is_causal_predicate(v: ir.Value, sq: Dim, sk: Dim, keep: bool = True) -> bool:
    """``v`` is True exactly where key j <= query i + (sk - sq) over [.., sq, sk] (``keep``), or
    exactly where it is not (``keep`` False), for every value of the dims."""
    f = predicate(v)
    if f is None or sq is None or sk is None:
        return False
    lengths = dict(f.lengths)
    if not (equal(lengths.get(-1), sk) and equal(lengths.get(-2), sq)):
        return False
    if keep:  # j - i - (sk - sq) <= 0
        want_coeffs, want_offset = {-1: 1, -2: -1}, sub(sq, sk)
    else:  # masked: j > i + (sk - sq)  <=>  i - j + (sk - sq) + 1 <= 0
        want_coeffs, want_offset = {-1: -1, -2: 1}, add(sub(sk, sq), 1)
    return f.coeff() == want_coeffs and equal(f.offset, want_offset)


__all__ = ["Affine", "affine", "fit_affine", "is_causal_predicate", "predicate"]
