"""Attention fusion: MatMul(Q, Kᵀ) [* scale] [+ additive mask | Where(mask, ., -inf)] -> Softmax
[-> Where(IsNaN, 0, .)] -> MatMul(., V), with the head split (Reshape + Transpose) of Q, K, V, the
head merge of the output, and GQA's repeat_kv (Unsqueeze -> Expand -> Reshape) absorbed.

Invariant: the Attention node computes softmax(scale * Q Kᵀ + mask) V per head exactly as the
replaced nodes did (a mask applied before a scale is scaled with it, or the attempt declines); only data movement (transposes, head repetition) moves into the kernel's
indexing. Absorbing stops at any value something else also reads.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..rewrite.engine import Match, Rule
from ..ir.symdims import describe, equal, known, mul, same_dims, sdims
from ..ir.symshapes import broadcast
from ..ir.values import attr, const, producer, rank, scalar, sole_user, users
from .masks import is_fill, plan_masks



def _peel_scale(v: ir.Value, nodes: list, scale: list[float]) -> ir.Value:
    """Strip Mul/Div by a scalar constant (read only by this chain), folding it into ``scale``."""
    while True:
        p = producer(v, ("Mul", "Div"))
        if p is None or sole_user(v) is None:
            return v
        a, b = p.inputs
        if p.op_type == "Mul" and scalar(b) is not None:
            scale[0] *= scalar(b)
            v = a
        elif p.op_type == "Mul" and scalar(a) is not None:
            scale[0] *= scalar(a)
            v = b
        elif p.op_type == "Div" and scalar(b) is not None:
            scale[0] /= scalar(b)
            v = a
        else:
            return v
        nodes.append(p)


def _sole(v: ir.Value, op: str) -> ir.Node | None:
    p = producer(v, op)
    return p if p is not None and sole_user(v) is not None else None


def _merge_heads_reshape(v: ir.Value, nodes: list) -> tuple[ir.Value, str, int | None]:
    """A bshd value that is Reshape([b, s, h*d] -> [b, s, h, d]): take the 3-D input instead."""
    r = _sole(v, "Reshape")
    xs, ys = (sdims(r.inputs[0]), sdims(v)) if r is not None else (None, None)
    if r is not None and known(xs) and known(ys) and len(xs) == 3 and len(ys) == 4 and same_dims(xs[:2], ys[:2]) \
            and equal(xs[2], mul(ys[2], ys[3])) and isinstance(ys[2], int):
        nodes.append(r)
        return r.inputs[0], "bsd", ys[2]
    return v, "bshd", None


def _resolve(v: ir.Value, nodes: list, transposed: bool, r: int):
    """Q/V (``transposed`` False, v is [b,h,s,d]) or Kᵀ (True, v is [b,h,d,s]) back to the least
    moved tensor: returns (value, layout, heads or None). Scores of rank 3 ([b, s, d] operands,
    no heads axis) are one head in "bsd" layout; layout None: no layout of the op fits."""
    t = _sole(v, "Transpose")
    p = attr(t, "perm") if t is not None else None
    if p is not None and len(p) != r:
        p = None
    if r == 3:
        if not transposed:
            return v, "bsd", 1
        if transposed and p == [0, 2, 1]:
            nodes.append(t)
            return t.inputs[0], "bsd", 1
        return v, None, None
    if r != 4 or p is None:
        return v, ("bhds" if transposed else "bhsd"), None
    q = [p[0], p[1], p[3], p[2]] if transposed else p
    if q == [0, 1, 2, 3]:
        nodes.append(t)
        return t.inputs[0], "bhsd", None
    if q == [0, 2, 1, 3]:
        nodes.append(t)
        return _merge_heads_reshape(t.inputs[0], nodes)
    return v, ("bhds" if transposed else "bhsd"), None


def _repeat_kv(v: ir.Value, nodes: list) -> tuple[ir.Value, int | None]:
    """GQA's repeat_kv: Reshape(Expand(Unsqueeze(x, 2)), [b, kvh*rep, s, d]) -> (x, kvh)."""
    r = _sole(v, "Reshape")
    e = _sole(r.inputs[0], "Expand") if r is not None else None
    u = _sole(e.inputs[0], "Unsqueeze") if e is not None else None
    if u is None:
        return v, None
    axes = const(u.inputs[1]) if len(u.inputs) > 1 else np.array(attr(u, "axes") or [])
    xs, es, ys = sdims(u.inputs[0]), sdims(e.outputs[0]), sdims(v)
    if axes is None or [int(a) for a in np.reshape(axes, -1)] != [2] or not (known(xs) and known(es) and known(ys)) \
            or len(xs) != 4 or len(es) != 5 or len(ys) != 4:
        return v, None
    if not same_dims(es[:2], xs[:2]) or not same_dims(es[3:], xs[2:]) \
            or not same_dims(ys, (xs[0], mul(xs[1], es[2]), xs[2], xs[3])) or not isinstance(xs[1], int):
        return v, None
    nodes += [r, e, u]
    return u.inputs[0], xs[1]


def _mask(s: ir.Value, nodes: list) -> tuple[ir.Value, dict]:
    """Strip an additive mask Add and/or a Where(mask, scores, -inf) from the Softmax input."""
    found = {}
    for _ in range(2):
        p = producer(s, ("Add", "Where"))
        if p is None or sole_user(s) is None:
            break
        if p.op_type == "Add" and "additive" not in found:
            a, b = p.inputs
            chain_a = _leads_to_matmul(a)
            s, found["additive"] = (a, b) if chain_a else (b, a)
        elif p.op_type == "Where" and "boolean" not in found:
            fill = scalar(p.inputs[2])
            if fill is None or not is_fill(fill, const(p.inputs[2]).dtype):
                break
            s, found["boolean"] = p.inputs[1], (p.inputs[0], fill, p.inputs[2])
        else:
            break
        nodes.append(p)
    return s, found


def _leads_to_matmul(v: ir.Value, depth: int = 4) -> bool:
    """Whether ``v`` is the scores chain (a MatMul under scalings/masks), not the mask."""
    for _ in range(depth):
        p = producer(v)
        if p is None:
            return False
        if p.op_type == "MatMul":
            return True
        if p.op_type in ("Mul", "Div"):
            v = p.inputs[0] if scalar(p.inputs[0]) is None else p.inputs[1]
        elif p.op_type == "Where":
            v = p.inputs[1]
        else:
            return False
    return False


class FuseAttention(Rule):
    """Scaled dot-product attention around a Softmax -> one Attention node."""

    name = "attention"
    ops = ("Softmax",)

    def pattern(self, root):
        nodes, scale, after_mask = [root], [1.0], [1.0]
        s, masks = _mask(_peel_scale(root.inputs[0], nodes, after_mask), nodes)
        s = _peel_scale(s, nodes, scale)
        scale[0] *= after_mask[0]  # a scale after the mask scales the mask too (plan_masks folds it)
        qk = _sole(s, "MatMul")
        if qk is None:
            return None
        nodes.append(qk)
        p, nan_guard = root.outputs[0], 0
        guard = self._nan_guard(p)
        if guard is not None:
            nodes += guard
            p, nan_guard = guard[1].outputs[0], 1
        pv = sole_user(p)
        if pv is None or pv.op_type != "MatMul" or pv.inputs[0] is not p:
            return None
        nodes.append(pv)
        r = rank(s) or 0
        q, q_layout, q_heads = _resolve(_peel_scale(qk.inputs[0], nodes, scale), nodes, False, r)
        k, k_layout, k_heads = _resolve(_peel_scale(qk.inputs[1], nodes, scale), nodes, True, r)
        v, v_layout, v_heads = _resolve(pv.inputs[1], nodes, False, r)
        kv_heads = None
        if r == 4 and k_layout == "bhsd" and v_layout == "bhsd":
            k2, kv_k = _repeat_kv(k, nodes)
            v2, kv_v = _repeat_kv(v, nodes)
            if kv_k is not None and kv_k == kv_v:
                kv_heads = kv_k
                # under repeat_kv K and V are [b, kv_heads, s, d]: absorb their head split as without GQA
                k, k_layout, _ = _resolve(k2, nodes, False, r)
                v, v_layout, _ = _resolve(v2, nodes, False, r)
            elif kv_k is not None or kv_v is not None:
                return None  # only one side repeated: leave it (the nodes list is now inconsistent)
        out, out_layout = self._output(pv.outputs[0], nodes, r)
        qs = sdims(qk.inputs[0])
        heads = qs[1] if qs and len(qs) == 4 else q_heads
        ss = sdims(s)
        sq, sk = (ss[-2], ss[-1]) if ss and len(ss) >= 2 else (None, None)
        b = {"q": q, "k": k, "v": v, "layouts": (q_layout, k_layout, v_layout, out_layout), "scale": scale[0],
             "masks": masks, "plan": plan_masks(masks, sq, sk, after_mask[0]), "scores": ss, "heads": heads,
             "kv_heads": kv_heads or k_heads or v_heads or heads, "nan": nan_guard, "rank": r}
        b["note"] = b["plan"].note
        return Match(root, nodes, outputs=[out], b=b)

    @staticmethod
    def _nan_guard(p: ir.Value):
        """Where(IsNaN(p), 0, p): softmax rows that were fully masked become zeros."""
        readers = users(p)
        isnan = next((u for u in readers if u.op_type == "IsNaN"), None)
        where = next((u for u in readers if u.op_type == "Where"), None)
        if len(readers) != 2 or isnan is None or where is None:
            return None
        if where.inputs[0] is not isnan.outputs[0] or where.inputs[2] is not p or scalar(where.inputs[1]) != 0.0:
            return None
        return [isnan, where]

    @staticmethod
    def _output(o: ir.Value, nodes: list, r: int) -> tuple[ir.Value, str]:
        if r == 3:
            return o, "bsd"
        t = sole_user(o)
        if t is None or t.op_type != "Transpose" or attr(t, "perm") != [0, 2, 1, 3]:
            return o, "bhsd"
        nodes.append(t)
        r = sole_user(t.outputs[0])
        ts, rs = sdims(t.outputs[0]), sdims(r.outputs[0]) if r is not None and r.op_type == "Reshape" else None
        if known(ts) and known(rs) and len(ts) == 4 and len(rs) == 3 and same_dims(rs[:2], ts[:2]) \
                and equal(rs[2], mul(ts[2], ts[3])):
            nodes.append(r)
            return r.outputs[0], "bsd"
        return t.outputs[0], "bshd"

    def check(self, m):
        b = m.b
        if b["plan"].reason:
            return b["plan"].reason
        axis = attr(m.root, "axis", -1)
        if axis not in (-1, b["rank"] - 1):
            return f"Softmax over axis {axis}, not the key axis"
        if b["rank"] not in (3, 4):
            return f"scores have rank {b['rank']}, not [batch, heads, query, key] or [batch, query, key]"
        if None in b["layouts"]:
            return "Kᵀ is not a transpose of a [batch, seq, dim] tensor (no layout of the Attention op fits)"
        for what, n in (("query head count", b["heads"]), ("key/value head count", b["kv_heads"])):
            if not isinstance(n, int) or n <= 0:
                return (f"the {what} is {describe(n)}" + (" (symbolic)" if n is not None else "")
                        + "; the Attention op needs a fixed number of heads")
        if b["heads"] % b["kv_heads"]:
            return f"query heads ({b['heads']}) are not a multiple of key/value heads ({b['kv_heads']})"
        ss = b["scores"]
        for kind, v in list(b["masks"].items()):
            v = v[0] if isinstance(v, tuple) else v
            ms = sdims(v)
            if not known(ms) or not known(ss):
                if rank(v) is None or rank(v) > b["rank"] or b["rank"] == 3:
                    return f"the {kind} mask {v.name} or the scores have an unknown shape"
                continue
            if len(ms) > len(ss) or any(d != 1 and not equal(d, e) for d, e in zip(ms[::-1], ss[::-1])):
                return (f"the {kind} mask {v.name} {_text(ms)} does not broadcast into the scores {_text(ss)}"
                        " for every shape")
        if b["rank"] == 3:
            terms = [t for t in b["plan"].additive + [b["plan"].boolean] if t is not None]
            shapes = [_term_shape(t) for t in terms]
            if any(x is None for x in shapes) or not known(broadcast(*shapes)) or len(broadcast(*shapes)) > 3:
                return "a mask term of the [batch, query, key] scores has an unknown shape (needs a heads axis inserted)"
        return ""

    def rewrite(self, m, emit):
        b, plan = m.b, m.b["plan"]
        ql, kl, vl, ol = b["layouts"]
        attrs = {"scale": float(b["scale"]), "num_heads": int(b["heads"]), "kv_heads": int(b["kv_heads"]),
                 "q_layout": ql, "k_layout": kl, "v_layout": vl, "out_layout": ol, "causal": int(plan.causal),
                 "nan_to_zero": b["nan"], "mask_kind": ""}
        if plan.causal and np.isfinite(plan.fill):
            attrs["causal_fill"] = float(plan.fill)
        ins = [b["q"], b["k"], b["v"]]
        terms = [_emit_where(emit, t) if isinstance(t, tuple) else t for t in plan.additive]
        shapes = [_term_shape(t) for t in plan.additive + ([plan.boolean] if plan.boolean is not None else [])]
        mask, kind = None, ""
        for t in terms:
            mask = t if mask is None else emit.op("Add", [mask, t], domain="")
            kind = "additive"
        if plan.boolean is not None and mask is not None:  # both kinds: the boolean one as -inf
            inf = emit.op("Where", [plan.boolean, np.zeros((), np.float32), np.array(-np.inf, np.float32)], domain="")
            mask = emit.op("Add", [mask, inf], domain="")
        elif plan.boolean is not None:
            mask, kind = plan.boolean, "boolean"
        if mask is not None:
            if b["rank"] == 3:  # the op's scores are [b, heads=1, sq, sk]: give the mask that heads axis
                mask = _heads_axis(emit, mask, shapes)
            attrs["mask_kind"] = kind
            ins.append(mask)
        return [emit.op("Attention", ins, attrs)]


def _emit_where(emit, spec) -> ir.Value:
    """Where(cond, a, b) over the padding part; one such node serves every layer that reads it."""
    _, cond, a, b = spec
    ca, cb = (const(x) if isinstance(x, ir.Value) else x for x in (a, b))
    for u in users(cond):
        if (u.op_type == "Where" and u.domain in ("", "ai.onnx") and u.inputs[0] is cond and _same(u.inputs[1], ca)
                and _same(u.inputs[2], cb) and u.graph is not None and _before(u, emit.anchor)):
            return u.outputs[0]
    return emit.op("Where", [cond, a, b], domain="")


def _term_shape(t) -> tuple | None:
    """The dims of a mask term (ints and symbolic expressions), None where one is unknown."""
    if isinstance(t, np.ndarray):  # a constant mask scaled at build time
        return t.shape
    if isinstance(t, tuple):
        parts = [sdims(t[1])] + [np.shape(const(x) if isinstance(x, ir.Value) else x) for x in t[2:]]
        got = broadcast(*parts) if parts[0] is not None else None
    else:
        got = sdims(t)
    return got if known(got) else None


def _heads_axis(emit, mask: ir.Value, shapes) -> ir.Value:
    """For [batch, query, key] scores: the summed mask terms (dims ``broadcast(*shapes)``, rank <= 3)
    with a heads axis, [b, 1, sq, sk] (leading dims of 1 where it broadcasts): a Reshape to the
    constant shape when every dim is an int, else an Unsqueeze (exact for any dims)."""
    ms = tuple(broadcast(*shapes))
    full = (1,) * (3 - len(ms)) + ms
    if all(isinstance(d, int) for d in full):
        return emit.op("Reshape", [mask, np.array(full[:1] + (1,) + full[1:], np.int64)], domain="")
    kept = [0, 2, 3][3 - len(ms):]
    axes = np.array([a for a in range(4) if a not in kept], np.int64)
    if emit.opset >= 13:
        return emit.op("Unsqueeze", [mask, axes], domain="")
    return emit.op("Unsqueeze", [mask], {"axes": [int(a) for a in axes]}, domain="")


def _text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _same(v: ir.Value, arr: np.ndarray) -> bool:
    c = const(v)
    return c is not None and c.dtype == arr.dtype and c.shape == arr.shape and bool(np.array_equal(c, arr))


def _before(node: ir.Node, anchor: ir.Node) -> bool:
    for n in node.graph:
        if n is node:
            return True
        if n is anchor:
            return False
    return False


ATTENTION_RULES = [FuseAttention()]
