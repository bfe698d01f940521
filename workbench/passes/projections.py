"""Parallel projections: GEMMs that read the same input with constant weights become one GEMM on
the concatenated weight [K, N1+N2+...] (and concatenated bias), followed by a Split on the last
axis. BERT's Q, K and V projections are three launches that each read the same activations; merged
they are one launch of a wider GEMM.

Invariant (exactness): a column of A @ [W1 | W2] is the column of A @ W1 or A @ W2 it was, so only
GEMMs with the same op(A), alpha and activation merge (a bias scaled by beta is folded at build
time, exactly as the kernel would scale it); the Split hands each reader the values it read before.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..rewrite.engine import DOMAIN, Match, Rule
from ..ir.attrs import node_attrs
from ..ir.values import attr, const, dims, rank, users
from ..ops.fused import ACTIVATION_ATTRS

GEMMS = ("FusedGemm", "MatMul", "Gemm")


def _is_gemm(node: ir.Node | None) -> bool:
    if node is None or node.op_type not in GEMMS:
        return False
    return node.domain == DOMAIN if node.op_type == "FusedGemm" else node.domain in ("", "ai.onnx")


def projection(node: ir.Node) -> tuple[dict | None, str]:
    """What a GEMM contributes to a merge — its weight as [K, N], its bias (beta folded, or None),
    and the attributes that must agree — or (None, why it cannot merge)."""
    if len(node.outputs) != 1:
        return None, f"{node.name} has {len(node.outputs)} outputs"
    w = const(node.inputs[1])
    if w is None:
        return None, f"the weight of {node.name} ({node.inputs[1].name}) is not a constant"
    if w.ndim != 2:
        return None, f"the weight of {node.name} has rank {w.ndim}, not 2"
    if (rank(node.inputs[0]) or 0) < 2 or (node.op_type == "Gemm" and rank(node.inputs[0]) != 2):
        return None, f"the input of {node.name} has rank {rank(node.inputs[0])}, not >= 2"
    if node.op_type == "MatMul":
        return {"w": w, "c": None, "key": (w.dtype, 1.0, ("",) * len(ACTIVATION_ATTRS))}, ""
    if attr(node, "transA", 0):
        return None, f"{node.name} transposes its input (transA)"
    if attr(node, "transB", 0):
        w = w.T
    c = node.inputs[2] if len(node.inputs) > 2 else None
    cv = const(c) if c is not None else None
    if c is not None and cv is None:
        return None, f"the bias of {node.name} ({c.name}) is not a constant"
    if cv is not None:
        if cv.ndim > 1 and int(np.prod(cv.shape[:-1])) != 1 or cv.shape[-1:] not in ((), (1,), (w.shape[1],)):
            return None, f"the bias of {node.name} {list(cv.shape)} is not one value per output column"
        beta = attr(node, "beta", 1.0)
        cv = np.broadcast_to(cv.reshape(-1), (w.shape[1],)).astype(cv.dtype)
        if beta != 1.0:
            cv = cv * np.asarray(beta, cv.dtype)
    acts = tuple(attr(node, a, "") for a in ACTIVATION_ATTRS)
    return {"w": w, "c": cv, "key": (w.dtype, float(attr(node, "alpha", 1.0)), acts)}, ""


def _describe(key) -> str:
    dt, alpha, acts = key
    act = acts[0] or "no activation"
    return f"{np.dtype(dt).name}, alpha {alpha:g}, {act}"


def compatible(gemms: list[ir.Node]) -> tuple[list[dict] | None, str]:
    """The projections of ``gemms`` if they can be one GEMM, else (None, why not)."""
    parts = []
    for g in gemms:
        p, why = projection(g)
        if p is None:
            return None, why
        parts.append(p)
    k = {p["w"].shape[0] for p in parts}
    if len(k) != 1:
        return None, f"the weights have different K dims {sorted(k)}"
    keys = {p["key"] for p in parts}
    if len(keys) != 1:
        return None, "the GEMMs differ in " + " / ".join(sorted(_describe(x) for x in keys))
    return parts, ""


def merged_gemm(emit, x: ir.Value, gemms: list[ir.Node], parts: list[dict]) -> list[ir.Value]:
    """FusedGemm(x, [W1 | W2 | ...], [c1 | c2 | ...]) -> Split(last axis): one value per GEMM."""
    w = np.ascontiguousarray(np.concatenate([p["w"] for p in parts], axis=1))
    sizes = [p["w"].shape[1] for p in parts]
    c = None
    if any(p["c"] is not None for p in parts):
        c = np.concatenate([p["c"] if p["c"] is not None else np.zeros(n, w.dtype) for p, n in zip(parts, sizes)])
        c = c.astype(w.dtype)
    _, alpha, acts = parts[0]["key"]
    attrs = {"transA": 0, "transB": 0, "alpha": alpha, "beta": 1.0}
    attrs.update({a: v for a, v in zip(ACTIVATION_ATTRS, acts) if v != ""})
    attrs.setdefault("activation", "")
    name = f"FusedGemm:{emit.names[0]}+{len(gemms) - 1}"
    y = emit.op("FusedGemm", [x, w] + ([c] if c is not None else []), attrs, name=name)
    xs = dims(x)
    r = len(xs) if xs is not None else rank(x)
    opset = emit.opset
    axis = -1 if opset >= 11 else r - 1
    specs = [(g.outputs[0].type.dtype if g.outputs[0].type is not None else None,
              (xs[:-1] + (n,)) if xs is not None else None) for g, n in zip(gemms, sizes)]
    split = np.array(sizes, np.int64)
    if opset >= 13:
        node = emit.node("Split", [y, split], {"axis": axis}, domain="", n_outputs=len(sizes), specs=specs,
                         name=f"Split:{name[len('FusedGemm:'):]}")
    else:
        node = emit.node("Split", [y], {"axis": axis, "split": sizes}, domain="", n_outputs=len(sizes), specs=specs,
                         name=f"Split:{name[len('FusedGemm:'):]}")
    return list(node.outputs)


def _through_layout(v: ir.Value) -> tuple[ir.Node | None, list[str]]:
    """The node computing ``v`` before Reshape / Transpose data movement, and the ops walked."""
    walked = []
    for _ in range(4):
        p = v.producer()
        if p is None or p.domain not in ("", "ai.onnx") or p.op_type not in ("Reshape", "Transpose"):
            return p, walked
        walked.append(p.op_type)
        v = p.inputs[0]
    return v.producer(), walked


class _MergeGemms(Rule):
    """What both merge rules share: the weights must be compatible, the rewrite is one GEMM on
    the concatenated weight followed by a Split."""

    def check(self, m):
        if m.b["reason"]:
            return m.b["reason"]
        parts, why = compatible(m.b["gemms"])
        m.b["parts"] = parts
        return why

    def rewrite(self, m, emit):
        gemms = m.b["gemms"]
        return merged_gemm(emit, gemms[0].inputs[0], gemms, m.b["parts"])


class MergeQKVProjections(_MergeGemms):
    """Attention whose Q, K and V come (through Reshape / Transpose only) from three GEMMs over the
    same input with constant weights -> one GEMM on the concatenated weight + Split."""

    name = "merge_qkv_projections"
    ops = ("Attention",)
    domain = DOMAIN

    def pattern(self, root):
        found = [_through_layout(v) for v in root.inputs[:3]]
        gemms = [p for p, _ in found]
        if any(p is None for p in gemms) or len({id(p) for p in gemms}) == 1:
            return None  # a graph input, or already one producer (one GEMM + Split)
        if not any(_is_gemm(p) for p in gemms):
            return None
        reason = ""
        for what, (p, walked) in zip("QKV", found):
            if not _is_gemm(p):
                via = " -> ".join(walked[::-1]) if walked else "directly"
                reason = f"{what} comes from {p.name} ({p.op_type}) {via}, not from a GEMM"
                break
        if not reason and len({id(p) for p in gemms}) != 3:
            reason = "two of Q, K, V come from the same GEMM"
        if not reason and len({id(p.inputs[0]) for p in gemms}) != 1:
            reason = "the Q, K, V GEMMs read different inputs: " + ", ".join(p.inputs[0].name for p in gemms)
        nodes = gemms if not reason else [root]
        return Match(root, nodes, outputs=[p.outputs[0] for p in gemms] if not reason else None,
                     b={"gemms": gemms, "reason": reason, "anchor": _first(gemms) if not reason else None})


class MergeParallelGemms(_MergeGemms):
    """Two or more GEMMs over the same input with constant weights (Llama's Q/K/V through RoPE, an
    MLP's gate and up projections) -> one GEMM on the concatenated weight + Split. Rooted at the
    first of them; those that cannot join are logged with the reason."""

    name = "merge_parallel_gemms"
    ops = GEMMS
    domain = "*"

    def pattern(self, root):
        if not _is_gemm(root) or projection(root)[0] is None:
            return None
        x = root.inputs[0]
        candidates = [u for u in users(x) if _is_gemm(u) and u.inputs[0] is x and projection(u)[0] is not None]
        if len(candidates) < 2:
            return None
        groups: dict = {}
        for g in candidates:
            p, _ = projection(g)
            groups.setdefault((p["key"], p["w"].shape[0]), []).append(g)
        mine = next(gs for gs in groups.values() if any(g is root for g in gs))
        if _first(mine) is not root:
            return None
        others = [g for g in candidates if not any(g is h for h in mine)]
        declined = [(f"{g.name} reads {x.name} too but cannot join {root.name}: {compatible([root, g])[1]}", [g.name])
                    for g in others]
        if len(mine) < 2:
            if root is not _first(candidates) or any(len(gs) > 1 for gs in groups.values()):
                return None
            return Match(root, [root], b={"reason": "; ".join(d[0] for d in declined)})
        return Match(root, mine, outputs=[g.outputs[0] for g in mine],
                     b={"gemms": mine, "reason": "", "declined": declined, "anchor": root})



def _first(nodes: list[ir.Node]) -> ir.Node:
    g = nodes[0].graph
    want = {id(n) for n in nodes}
    return next(n for n in g if id(n) in want)


def _split_sizes(split: ir.Node) -> list[int] | None:
    """The sizes of a Split's outputs along its last axis, as shape inference typed them."""
    out = [dims(o) for o in split.outputs]
    if any(d is None or not d or not isinstance(d[-1], int) for d in out):
        return None
    return [d[-1] for d in out]


class AttentionReadsPackedQKV(Rule):
    """Attention whose Q, K and V are outputs of one Split of the last axis (the merged Q/K/V
    projection's) -> the Attention reads the packed tensor at their columns (``qkv_columns``) and
    the Split, a copy of the whole projection output, goes. Q/K/V in the bsd layout only: a
    column range of a [B, S, N] tensor is a strided view the attention kernels read in place."""

    name = "attention_reads_packed_qkv"
    ops = ("Attention",)
    domain = DOMAIN

    def pattern(self, root):
        if len(root.inputs) < 3 or attr(root, "qkv_columns"):
            return None
        qkv = list(root.inputs[:3])
        split = qkv[0].producer() if qkv[0] is not None else None
        if split is None or split.op_type != "Split" or split.domain not in ("", "ai.onnx"):
            return None
        if any(v is None or v.producer() is not split for v in qkv):
            return None
        m = Match(root, [split, root], b={"reason": ""})
        x = split.inputs[0]
        r = rank(x)
        axis = int(attr(split, "axis", 0))
        sizes = _split_sizes(split)
        layouts = [attr(root, f"{n}_layout", "bhsd") for n in "qkv"]
        if len({id(v) for v in qkv}) != 3:
            m.b["reason"] = "two of Q, K, V are the same Split output"
        elif any(lay != "bsd" for lay in layouts):
            m.b["reason"] = f"Q/K/V layouts {layouts}: only bsd operands are column ranges of the packed tensor"
        elif r is None or axis not in (-1, r - 1):
            m.b["reason"] = f"the Split of {x.name} is not along its last axis (axis {axis}, rank {r})"
        elif sizes is None or len(sizes) != len(split.outputs):
            m.b["reason"] = f"the sizes of the Split of {x.name} are not known"
        else:
            starts = np.cumsum([0] + sizes).tolist()
            where = {id(o): (starts[i], starts[i + 1]) for i, o in enumerate(split.outputs)}
            m.b["cols"] = [c for v in qkv for c in where[id(v)]]
            m.b["packed"] = x
        return m

    def check(self, m):
        return m.b["reason"]

    def rewrite(self, m, emit):
        root, x = m.root, m.b["packed"]
        attrs = dict(node_attrs(root), qkv_columns=m.b["cols"])
        return [emit.op("Attention", [x, x, x, *root.inputs[3:]], attrs, name=root.name)]


QKV_RULES = [MergeQKVProjections()]
PARALLEL_GEMM_RULES = [MergeParallelGemms()]
PACKED_QKV_RULES = [AttentionReadsPackedQKV()]
