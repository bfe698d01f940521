"""How the attention tactics see their operands: the logical [B, H, S, D] view of a packed Q / K /
V / output tensor, the operands of a ``workbench.Attention`` layer in that form, and the broadcast
view of a mask over the [B, H, Sq, Sk] scores."""

from __future__ import annotations

from ...core.plan import Layer
from ...ops.fused import qkv_columns, qkv_dims
from .common import ATTENTION_OPS, require_op, static_shape

LAYOUT_RANK = {"bhsd": 4, "bshd": 4, "bsd": 3, "bhds": 4}


def attention_view(shape, lay: str, heads: int, row: int | None = None):
    """(logical [B, H, S, D] dims, element strides of those dims) of a packed tensor stored in
    ``lay`` (FUSED_OPS.md: "bsd" is [B, S, H*D] split by the head count, "bhds" a stored K^T).
    ``row``: for "bsd", the elements between consecutive rows when the operand is a column range
    of a wider tensor (the packed Q/K/V projection), else H*D."""
    if lay == "bsd":
        b, s, hd = shape
        d = hd // heads
        row = hd if row is None else row
        return [b, heads, s, d], [s * row, d, row, 1]
    if lay == "bhsd":
        b, h, s, d = shape
        return [b, h, s, d], [h * s * d, s * d, d, 1]
    if lay == "bshd":
        b, s, h, d = shape
        return [b, h, s, d], [s * h * d, d, h * d, 1]
    b, h, d, s = shape  # bhds
    return [b, h, s, d], [h * d * s, d * s, 1, s]


def attention_operands(layer: Layer):
    """dict(lay: the q/k/v/o layouts, shapes: static Q, K, V, O shapes, heads, kv: the query and
    key/value head counts, views: q/k/v/o -> ``attention_view``, offsets: q/k/v/o -> the element
    offset of the operand in its tensor) of a ``workbench.Attention`` layer whose operands are
    consistent [B, H, S, D] tensors (FUSED_OPS.md), or the reason not. With ``qkv_columns`` Q, K
    and V are column ranges of one packed [B, S, N] tensor: offset the range's start, row N."""
    why = require_op(layer, ATTENTION_OPS, "the fused Attention op")
    if why:
        return why
    at = layer.attrs
    lay = {n: str(at.get(f"{n}_layout", "bhsd") or "bhsd") for n in "qkv"}
    lay["o"] = str(at.get("out_layout", "bhsd") or "bhsd")
    for n, v in lay.items():
        if v not in LAYOUT_RANK or (v == "bhds" and n != "k"):
            return f"{n}_layout {v!r} is not a layout of the Attention op"
    try:
        cols = qkv_columns(at)
    except ValueError as e:
        return str(e)
    stored = [static_shape(layer, i) for i in range(3)]
    rows = [None] * 4
    offsets = dict.fromkeys("qkvo", 0)
    if cols is not None:
        if any(lay[n] != "bsd" for n in "qkv"):
            return "packed Q/K/V (qkv_columns) needs the bsd layout"
        if any(s is None or len(s) != 3 or b > s[-1] for s, (_, b) in zip(stored, cols)):
            return f"qkv_columns {[c for ab in cols for c in ab]} do not fit the tensors {stored}"
        rows[:3] = [s[-1] for s in stored]
        offsets.update({n: a for n, (a, _) in zip("qkv", cols)})
    shapes = qkv_dims(stored, at) + [static_shape(layer, 0, out=True)]
    shapes = [tuple(s) if s is not None else None for s in shapes]
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
    views = {n: attention_view(s, lay[n], h, r) for s, n, h, r in zip(shapes, "qkvo", counts, rows)}
    q, k, v, o = (views[n][0] for n in "qkvo")
    if q[0] != k[0] or k[:3] != v[:3] or q[3] != k[3]:
        return f"inconsistent Q {q}, K {k}, V {v}"
    if o != [q[0], q[1], q[2], v[3]]:
        return f"output {shapes[3]} ({lay['o']}) is not [B, H, Sq, Dv] = {[q[0], q[1], q[2], v[3]]}"
    return dict(lay=lay, shapes=shapes, heads=heads, kv=kv, views=views, offsets=offsets)


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
