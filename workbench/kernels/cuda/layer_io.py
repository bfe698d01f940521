"""How the attention tactics see their operands: the logical [B, H, S, D] view of a packed Q / K /
V / output tensor, the operands of a ``workbench.Attention`` layer in that form, and the broadcast
view of a mask over the [B, H, Sq, Sk] scores."""

from __future__ import annotations

from ...core.plan import Layer
from .common import ATTENTION_OPS, require_op, static_shape

LAYOUT_RANK = {"bhsd": 4, "bshd": 4, "bsd": 3, "bhds": 4}


def attention_view(shape, lay: str, heads: int):
    """(logical [B, H, S, D] dims, element strides of those dims) of a packed tensor stored in
    ``lay`` (FUSED_OPS.md: "bsd" is [B, S, H*D] split by the head count, "bhds" a stored K^T)."""
    if lay == "bhsd":
        b, h, s, d = shape
        return [b, h, s, d], [h * s * d, s * d, d, 1]
    if lay == "bshd":
        b, s, h, d = shape
        return [b, h, s, d], [s * h * d, d, h * d, 1]
    if lay == "bsd":
        b, s, hd = shape
        d = hd // heads
        return [b, heads, s, d], [s * hd, d, hd, 1]
    b, h, d, s = shape  # bhds
    return [b, h, s, d], [h * d * s, d * s, 1, s]


def attention_operands(layer: Layer):
    """dict(lay: the q/k/v/o layouts, shapes: static Q, K, V, O shapes, heads, kv: the query and
    key/value head counts, views: q/k/v/o -> ``attention_view``) of a ``workbench.Attention``
    layer whose operands are consistent [B, H, S, D] tensors (FUSED_OPS.md), or the reason not."""
    why = require_op(layer, ATTENTION_OPS, "the fused Attention op")
    if why:
        return why
    at = layer.attrs
    lay = {n: str(at.get(f"{n}_layout", "bhsd") or "bhsd") for n in "qkv"}
    lay["o"] = str(at.get("out_layout", "bhsd") or "bhsd")
    for n, v in lay.items():
        if v not in LAYOUT_RANK or (v == "bhds" and n != "k"):
            return f"{n}_layout {v!r} is not a layout of the Attention op"
    shapes = [static_shape(layer, i) for i in range(3)] + [static_shape(layer, 0, out=True)]
    for s, n in zip(shapes, "qkvo"):
        if s is None or len(s) != LAYOUT_RANK[lay[n]]:
            return f"{n.upper()} of shape {s} does not match layout {lay[n]!r} (static shapes needed)"
    q_lay, q_shape = lay["q"], shapes[0]
    heads = int(at.get("num_heads") or 0) or (q_shape[1] if q_lay == "bhsd" else q_shape[2] if q_lay == "bshd" else 0)
    if not heads:
        return "num_heads is needed for the bsd layout"
    kv = int(at.get("kv_heads") or 0) or heads
    counts = (heads, kv, kv, heads)
    if any(s[-1] % h for s, n, h in zip(shapes, "qkvo", counts) if lay[n] == "bsd"):
        return "hidden size is not a multiple of the head count"
    views = {n: attention_view(s, lay[n], h) for s, n, h in zip(shapes, "qkvo", counts)}
    q, k, v, o = (views[n][0] for n in "qkvo")
    if q[0] != k[0] or k[:3] != v[:3] or q[3] != k[3]:
        return f"inconsistent Q {q}, K {k}, V {v}"
    if o != [q[0], q[1], q[2], v[3]]:
        return f"output {shapes[3]} ({lay['o']}) is not [B, H, Sq, Dv] = {[q[0], q[1], q[2], v[3]]}"
    return dict(lay=lay, shapes=shapes, heads=heads, kv=kv, views=views)


def mask_view(shape, scores):
    """(mask dims padded to rank 4, element strides with 0 on the dims it broadcasts over) of a
    packed attention mask of static ``shape`` (None: not static) against the scores' dims
    ``scores`` = [B, H, Sq, Sk], or the reason it cannot be read that way."""
    if shape is None or len(shape) > 4:
        return "mask must be static and of rank <= 4"
    ms = (1,) * (4 - len(shape)) + tuple(shape)
    full = tuple(scores)
    if any(a not in (1, b) for a, b in zip(ms, full)):
        return f"mask {ms} does not broadcast to {full}"
    strides, acc = [0] * 4, 1
    for i in range(3, -1, -1):
        strides[i] = 0 if ms[i] == 1 and full[i] != 1 else acc
        acc *= ms[i]
    return ms, strides
