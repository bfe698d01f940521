"""Attention masks: the exporters' combined mask split into a causal triangle and the rest.

HF GPT-2 / Llama (legacy and dynamo exports) build one mask for every layer:
``Where(And(tril, padding), 0, finfo.min)`` added to the scores, or, exported without an
attention_mask input, a constant additive triangle; SDPA exports spell it per layer with -inf;
others use ``Where(tril, scores, -inf)``, ``Min``/``Add`` of a constant triangle and a padding
term. The fused Attention op states the triangle as ``causal=1`` (a backend never reads it from
memory) and keeps only the padding-dependent part as its mask.

Invariant (exactness): outside the triangle the original graph computed ``score + fill`` (or just
``fill``, the same in float unless |score| > 1e31) whatever the padding said. ``causal_fill``
records a finite fill, so a row whose every key is masked still gets the same (uniform over all
keys) softmax as the original; with -inf the attribute is left out (the op's default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from ..ir.values import const, producer, scalar
from .positions import is_causal_predicate

NEG_BIG = -1e30  # fill values at or below this count as "masked out" (or half the dtype's lowest)


def is_fill(value: float | None, dt) -> bool:
    """Whether a constant of dtype ``dt`` is a "masked out" fill (float16's finfo.min is -65504)."""
    if value is None:
        return False
    low = NEG_BIG if np.dtype(dt).kind != "f" else max(NEG_BIG, float(np.finfo(dt).min) / 2)
    return value <= low


@dataclass
class MaskPlan:
    """What the Attention node gets: ``additive`` terms (values, or ``("where", cond, a, b)`` to
    emit as Where(cond, a, b) with the original constants), a ``boolean`` keep mask, and
    ``causal`` with its ``fill``."""

    causal: bool = False
    fill: float = float("-inf")
    additive: list = field(default_factory=list)
    boolean: ir.Value | None = None
    note: str = ""
    reason: str = ""  # why the masks cannot be given to the Attention op ("" = they can)


def _triangle(c: np.ndarray | None, sq: int, sk: int) -> np.ndarray | None:
    """The keep pattern of ``c`` over its last two axes if every slice is the same [sq, sk]
    matrix (``c`` may broadcast over the leading axes only)."""
    if c is None or c.ndim < 2 or tuple(c.shape[-2:]) != (sq, sk):
        return None
    flat = c.reshape(-1, sq, sk)
    return flat[0] if np.all(flat == flat[:1]) else None


def tril(sq: int, sk: int) -> np.ndarray:
    """Causal keep pattern, aligned to the end (query i sees keys j <= i + sk - sq)."""
    return np.tril(np.ones((sq, sk), dtype=bool), sk - sq)


def is_causal_keep(v: ir.Value, sq, sk, keep: bool = True) -> bool:
    """``v`` is the bool triangle, True where attending (``keep``) or where masked: a constant, or
    (dims symbolic) position arithmetic that is the triangle for every sq, sk (``positions.py``)."""
    c = const(v)
    if c is None:
        return is_causal_predicate(v, sq, sk, keep)
    if c.dtype != np.bool_:
        return False
    t = _triangle(c, sq, sk)
    return t is not None and bool(np.array_equal(t, tril(sq, sk) if keep else ~tril(sq, sk)))


def causal_additive_fill(c: np.ndarray | None, sq: int, sk: int) -> float | None:
    """For a constant additive mask that is 0 inside the triangle and one value <= NEG_BIG
    outside it, that value (-inf when nothing is outside); else None."""
    if c is None or c.dtype.kind != "f":
        return None
    t = _triangle(c, sq, sk)
    if t is None:
        return None
    keep = tril(sq, sk)
    if not np.all(t[keep] == 0):
        return None
    out = np.unique(t[~keep])
    if out.size == 0:
        return float("-inf")
    return float(out[0]) if out.size == 1 and is_fill(float(out[0]), c.dtype) else None


def _other(node: ir.Node, test) -> ir.Value | None:
    """For a binary node with one operand passing ``test``, the other operand."""
    a, b = node.inputs[0], node.inputs[1]
    if test(a) and not test(b):
        return b
    if test(b) and not test(a):
        return a
    return None


def _split_where(w: ir.Node, sq: int, sk: int):
    """Where(keep, 0, fill) / Where(masked, fill, 0) with a causal constant inside its condition:
    (fill, rest) where rest is None or a Where to emit over the padding part."""
    a, b = scalar(w.inputs[1]), scalar(w.inputs[2])
    if a is None or b is None:
        return None
    dt = const(w.inputs[1]).dtype
    if a == 0.0 and is_fill(b, dt):
        keep, fill, combine = True, b, "And"
    elif b == 0.0 and is_fill(a, dt):
        keep, fill, combine = False, a, "Or"
    else:
        return None
    cond = w.inputs[0]
    if is_causal_keep(cond, sq, sk, keep):
        return fill, None
    c = producer(cond, combine)
    pad = _other(c, lambda v: is_causal_keep(v, sq, sk, keep)) if c is not None else None
    if pad is None or const(pad) is not None:
        return None
    return fill, ("where", pad, w.inputs[1], w.inputs[2])


def _pad_values(p: ir.Value) -> list[float] | None:
    """The values a padding term can take, when it is Where(cond, scalar, scalar)."""
    w = producer(p, "Where")
    vals = [scalar(w.inputs[1]), scalar(w.inputs[2])] if w is not None else [None]
    return None if any(v is None for v in vals) else vals


def _split_sum_or_min(n: ir.Node, sq: int, sk: int, dt):
    """Add/Min(constant causal triangle, padding term): exact as causal + padding only when the
    triangle's fill absorbs every padding value (fill + p == fill, min(fill, p) == fill)."""
    fill = None
    for c, pad in ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0])):
        fill = causal_additive_fill(const(c), sq, sk)
        if fill is not None and const(pad) is None:
            break
    else:
        return None
    vals = _pad_values(pad)
    f = np.asarray(fill, dt)
    with np.errstate(over="ignore", invalid="ignore"):
        absorbs = np.isneginf(fill) or (vals is not None and all(
            (f + np.asarray(v, dt) if n.op_type == "Add" else np.minimum(f, np.asarray(v, dt))) == f for v in vals))
    if not absorbs:
        return "reason", (f"{n.name}: the causal fill {fill:g} does not absorb the padding term {pad.name}, "
                          "so the triangle stays in the mask")
    return fill, pad


def split_additive(m: ir.Value, sq: int, sk: int):
    """(fill, rest) when the additive mask ``m`` is a causal triangle plus a padding part (rest:
    None, an existing value, or a Where to emit); ("reason", why) for a near miss; else None."""
    fill = causal_additive_fill(const(m), sq, sk)
    if fill is not None:
        return fill, None
    p = producer(m, ("Where", "Add", "Min"))
    if p is None:
        return None
    if p.op_type == "Where":
        return _split_where(p, sq, sk)
    if len(p.inputs) != 2:
        return None
    c = next((const(x) for x in p.inputs if const(x) is not None), None)
    return _split_sum_or_min(p, sq, sk, c.dtype) if c is not None else None


def scale_masks(found: dict, scale: float) -> tuple[dict, str]:
    """Masks applied before a scale s: softmax(s·(x + m)) = softmax(s·x + s·m), and s·Where(c, x,
    f) = Where(c, s·x, s·f). A constant additive mask is folded into a new constant (exact for
    finite values; -inf stays -inf); a boolean mask's fill is scaled and must still be a fill.
    Returns (scaled masks, "") or ({}, why not)."""
    out = dict(found)
    add, boolean = found.get("additive"), found.get("boolean")
    if add is not None:
        c = const(add)
        if c is None or c.dtype.kind != "f":
            return {}, (f"the mask {add.name} is added before the scale {scale:g} and is not a constant, "
                        "so it cannot be scaled at build time")
        with np.errstate(over="ignore", invalid="ignore"):
            out["additive"] = (c.astype(np.float64) * scale).astype(c.dtype)
    if boolean is not None:
        cond, fill, fill_value = boolean
        dt = const(fill_value).dtype
        with np.errstate(over="ignore"):
            scaled = float(np.asarray(fill * scale, dt))
        if not (scale > 0 and is_fill(scaled, dt)):
            return {}, (f"the Where mask on {cond.name} is applied before the scale {scale:g}: its fill "
                        f"{fill:g} becomes {scaled:g}, which no longer masks out")
        out["boolean"] = (cond, scaled, np.asarray(scaled, dt))
    return out, ""


def plan_masks(found: dict, sq: int | None, sk: int | None, scale: float = 1.0) -> MaskPlan:
    """Split the masks found around the scores (``additive``: value; ``boolean``: (cond, fill,
    fill value)) against scores [..., sq, sk]; ``scale``: a factor applied to the scores after
    the masks (folded into them, see ``scale_masks``). A scaled constant additive mask is a NumPy
    array in ``additive``. Masks that mask nothing are left out: an additive term known to be all
    zeros (a vision transformer exported with an all-zero [B, 1, S, S] mask, a constant in a static
    build, a Where over an Expand of True in a symbolic one) or a condition known to be all True;
    adding 0 to a score changes nothing, and the kernel then reads no mask at all."""
    plan = _plan_masks(found, sq, sk, scale)
    plan.additive = [t for t in plan.additive if not _known_all(t, _zeros)]
    if plan.boolean is not None and _known_all(plan.boolean, _trues):
        plan.boolean = None
    return plan


def _zeros(a: np.ndarray) -> bool:
    return bool(np.all(a == 0))


def _trues(a: np.ndarray) -> bool:
    return bool(np.all(a.astype(bool)))


def _known_all(term, test, depth: int = 0) -> bool:
    """Whether every element of a mask term passes ``test``, known at build time: a constant (an
    array, or a value with one), or one broadcast or reshaped at run time (Expand / Reshape /
    Unsqueeze / Squeeze), or a Where whose condition is known all True or all False and whose
    chosen branch passes (a symbolic build's ``Where(Expand(True, [batch, 1, S, S]), 0, -inf)``)."""
    if isinstance(term, np.ndarray):
        return term.size > 0 and test(term)
    if not isinstance(term, ir.Value):
        return False
    c = const(term)
    if c is not None:
        return c.size > 0 and test(np.asarray(c))
    p = term.producer()
    if p is None or p.domain not in ("", "ai.onnx") or depth > 6 or not p.inputs:
        return False
    if p.op_type in ("Expand", "Reshape", "Unsqueeze", "Squeeze", "Identity"):
        return _known_all(p.inputs[0], test, depth + 1)
    if p.op_type == "Where" and len(p.inputs) == 3:
        if _known_all(p.inputs[0], _trues, depth + 1):
            return _known_all(p.inputs[1], test, depth + 1)
        if _known_all(p.inputs[0], lambda a: not np.any(a), depth + 1):
            return _known_all(p.inputs[2], test, depth + 1)
    return False


def _plan_masks(found: dict, sq: int | None, sk: int | None, scale: float = 1.0) -> MaskPlan:
    if scale != 1.0 and found:
        found, why = scale_masks(found, scale)
        if why:
            return MaskPlan(reason=why)
    plan = MaskPlan()
    add, boolean = found.get("additive"), found.get("boolean")
    if isinstance(add, np.ndarray):
        fill = causal_additive_fill(add, sq, sk) if sq and sk else None
        plan.causal, plan.fill = fill is not None, fill if fill is not None else float("-inf")
        if fill is None:
            plan.additive.append(add)
    elif add is not None:
        got = split_additive(add, sq, sk) if sq and sk else None
        if got is not None and got[0] == "reason":
            plan.note, got = got[1], None
        if got is None:
            plan.additive.append(add)
        else:
            plan.causal, plan.fill = True, got[0]
            if got[1] is not None:
                plan.additive.append(got[1])
    if boolean is not None:
        cond, fill, fill_value = boolean
        c = producer(cond, "And")
        pad = _other(c, lambda v: is_causal_keep(v, sq, sk)) if c is not None and sq and sk else None
        if plan.causal or not (sq and sk) or (pad is None and not is_causal_keep(cond, sq, sk)):
            plan.boolean = cond
            return plan
        plan.causal, plan.fill = True, fill if np.isfinite(fill) else float("-inf")
        if pad is not None and np.isfinite(fill):  # finite fill: masked keys score ~fill, not -inf
            f = np.asarray(const(fill_value) if isinstance(fill_value, ir.Value) else fill_value).reshape(())
            plan.additive.append(("where", pad, np.zeros((), f.dtype), f))
        elif pad is not None:
            plan.boolean = pad
    return plan
