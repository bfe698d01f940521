"""Cleanup rules: ops that do nothing at inference, chains that collapse, Pad that a Conv can do.

Every rule keeps the graph's values bit-identical (only data movement is removed or merged).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..ir.provenance import provenance
from ..rewrite.engine import Match, Rule, replace_values
from ..ir.symdims import equal, known, mul, product, same_dims, sdims
from ..ir.values import attr, const, dtype, is_graph_output, producer, shape, users
from .fold_shapes import reshape_target
from .gathers import GATHER_RULES


def _bypass_reason(out: ir.Value, src: ir.Value) -> str:
    """A graph output cannot simply become another graph input/output/constant: names must stay."""
    if is_graph_output(out) and (src.producer() is None or is_graph_output(src)):
        return f"{out.name} is a graph output fed directly by {src.name}; it stays a copy"
    return ""


class RemoveNoOp(Rule):
    """Identity, inference Dropout, Cast to the same type, Reshape/Expand to the same shape,
    Transpose by the identity permutation: the output is the input."""

    name = "remove_noop"
    ops = ("Identity", "Dropout", "Cast", "Reshape", "Transpose", "Expand", "Squeeze", "Unsqueeze")

    def pattern(self, root):
        x = root.inputs[0] if root.inputs else None
        if x is None or not _is_noop(root, x):
            return None
        if root.op_type == "Dropout" and len(root.outputs) > 1 and users(root.outputs[1]):
            return None  # the mask is read: keep it
        return Match(root, [root], outputs=[root.outputs[0]], b={"x": x})

    def check(self, m):
        return _bypass_reason(m.root.outputs[0], m.b["x"])

    def rewrite(self, m, emit):
        return [m.b["x"]]


def _is_noop(node: ir.Node, x: ir.Value) -> bool:
    op, out = node.op_type, node.outputs[0]
    if op == "Identity":
        return True
    if op == "Dropout":
        ratio = const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        training = const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        return (training is None or not bool(training)) or (ratio is not None and float(ratio) == 0.0)
    if op == "Cast":
        return dtype(x) is not None and dtype(x) == dtype(out)
    if op == "Transpose":
        perm = attr(node, "perm")
        return perm is not None and list(perm) == list(range(len(perm)))
    # Reshape / Expand / Squeeze / Unsqueeze: the same dims in and out (equal for every input shape)
    # and the same type
    return same_dims(sdims(x), sdims(out)) and dtype(x) == dtype(out)


def remove_identities(model: ir.Model, ctx) -> bool:
    """Every Identity of the main graph bypassed in one linear walk, before the passes that infer
    shapes and fold constants walk the graph: what ``RemoveNoOp`` does to an Identity, logged under
    its name (and off with it), without the rule engine's per-match bookkeeping; it needs no shapes.
    An Identity that copies a graph input or output into a graph output stays (``RemoveNoOp``
    logs why when ``simplify`` reaches it)."""
    if not ctx.enabled(RemoveNoOp.name):
        return False
    graph = model.graph
    changed = False
    for node in [n for n in graph if n.op_type == "Identity" and n.domain in ("", "ai.onnx")]:
        x = node.inputs[0] if node.inputs else None
        out = node.outputs[0] if node.outputs else None
        if x is None or out is None or len(node.outputs) != 1 or _bypass_reason(out, x):
            continue
        names, _ = provenance([node])
        replace_values(graph, [out], [x])
        graph.remove(node, safe=True)
        ctx.fired(RemoveNoOp.name, names, root=node.name or "")
        changed = True
    return changed


class MergeTransposes(Rule):
    """Transpose(Transpose(x, p), q) -> Transpose(x, p[q]) (nothing when that is the identity)."""

    name = "merge_transposes"
    ops = ("Transpose",)

    def pattern(self, root):
        first = producer(root.inputs[0], "Transpose")
        p, q = (attr(first, "perm"), attr(root, "perm")) if first is not None else (None, None)
        if first is None or p is None or q is None:
            return None
        perm = [p[i] for i in q]
        return Match(root, [root], b={"x": first.inputs[0], "perm": perm})

    def check(self, m):
        if m.b["perm"] == sorted(m.b["perm"]):
            return _bypass_reason(m.root.outputs[0], m.b["x"])
        return ""

    def rewrite(self, m, emit):
        if m.b["perm"] == sorted(m.b["perm"]):
            return [m.b["x"]]
        return [emit.op("Transpose", [m.b["x"]], {"perm": m.b["perm"]}, domain="")]


class MergeReshapes(Rule):
    """Reshape(Reshape(x)) (or of Flatten/Squeeze/Unsqueeze) with a known result -> one Reshape
    (a constant target: static, or symbolic dims written as 0 / -1 as ``fold_shapes`` does)."""

    name = "merge_reshapes"
    ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

    def pattern(self, root):
        first = producer(root.inputs[0], ("Reshape", "Flatten", "Squeeze", "Unsqueeze"))
        out = sdims(root.outputs[0])
        if first is None or not known(out) or 0 in out:
            return None  # a 0 in a Reshape target copies the input dim instead
        # one constant target from x: symbolic dims as 0 (x's own dim there) or the one -1
        target = reshape_target(sdims(first.inputs[0]), np.array(list(out) + [None], dtype=object)[:-1], 0)
        if target is None:
            return None
        return Match(root, [root], b={"x": first.inputs[0], "shape": target})

    def rewrite(self, m, emit):
        return [emit.op("Reshape", [m.b["x"], m.b["shape"]], domain="")]


class PadIntoConv(Rule):
    """Pad(x, zeros on the spatial dims only) -> Conv: the Conv's own padding does it."""

    name = "fold_pad_into_conv"
    ops = ("Conv",)

    def pattern(self, root):
        pad = producer(root.inputs[0], "Pad")
        if pad is None:
            return None
        return Match(root, [pad, root], b={"pad": pad})

    def check(self, m):
        pad, conv = m.b["pad"], m.root
        if (attr(pad, "mode", "constant") or "constant") not in ("constant", b"constant"):
            return f"Pad mode {attr(pad, 'mode')!r} is not zero padding"
        pads = attr(pad, "pads") if len(pad.inputs) < 2 else const(pad.inputs[1])
        if pads is None:
            return "the pad amounts are not constant"
        if len(pad.inputs) > 3 and pad.inputs[3] is not None:
            return "Pad names its axes explicitly"
        if len(pad.inputs) < 2:  # opset < 11: amounts and value are attributes
            value = np.asarray(attr(pad, "value", 0.0))
        else:
            value = const(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2] is not None else np.zeros(())
        if value is None or float(np.asarray(value).reshape(-1)[0] if np.size(value) else 0) != 0.0:
            return "the pad value is not 0"
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        r = len(pads) // 2
        if any(pads[i] or pads[i + r] for i in (0, 1)) or any(p < 0 for p in pads):
            return "Pad touches the batch/channel dims or crops"
        if (attr(conv, "auto_pad", "NOTSET") or "NOTSET") != "NOTSET":
            return "the Conv uses auto_pad"
        m.b["spatial"] = pads[2:r] + pads[r + 2:]
        return ""

    def rewrite(self, m, emit):
        conv, add = m.root, m.b["spatial"]
        nd = len(add) // 2
        old = attr(conv, "pads") or [0] * (2 * nd)
        attrs = {k: attr(conv, k) for k in conv.attributes if k != "pads"}
        attrs["pads"] = [int(a) + int(b) for a, b in zip(old, add)]
        x = m.b["pad"].inputs[0]
        return [emit.op("Conv", [x, *conv.inputs[1:]], attrs, domain="", name=conv.name)]


class SumAsAdd(Rule):
    """Sum(a, b, ...) -> Add(Add(a, b), ...): the same float additions in the same order (the
    reference folds Sum left to right), so the residual sums of older models (ResNet's
    ``Sum(conv, shortcut)``) fuse into their Conv / Gemm epilogues and pointwise chains as Add does."""

    name = "sum_as_add"
    ops = ("Sum",)

    def pattern(self, root):
        if root.domain not in ("", "ai.onnx") or len(root.inputs) < 2 or any(v is None for v in root.inputs):
            return None
        return Match(root, [root])

    def check(self, m):
        return ""

    def rewrite(self, m, emit):
        y = m.root.inputs[0]
        for v in m.root.inputs[1:]:
            y = emit.op("Add", [y, v], domain="")
        return [y]


class GemmOverFlattened(Rule):
    """Reshape(x -> [M, K]) -> Gemm(W, C) -> Reshape(-> x.shape[:-1] + [N]): a MatMul on x plus an
    Add (GPT-2's Conv1D). Rewritten so the GEMM epilogue sees through to its activation."""

    name = "gemm_over_flattened"
    ops = ("Reshape",)

    def pattern(self, root):
        gemm = producer(root.inputs[0], "Gemm")
        flat = producer(gemm.inputs[0], "Reshape") if gemm is not None else None
        if flat is None:
            return None
        x, w = flat.inputs[0], const(gemm.inputs[1])
        xs, out = sdims(x), sdims(root.outputs[0])
        if w is None or not known(xs) or not known(out) or attr(gemm, "transA", 0) or len(xs) < 2:
            return None
        w = w.T if attr(gemm, "transB", 0) else w
        c = gemm.inputs[2] if len(gemm.inputs) > 2 else None
        if c is not None and attr(gemm, "beta", 1.0) != 1.0 and const(c) is None:
            return None
        cs = shape(c) if c is not None else ()
        if cs is None or int(np.prod(cs[:-1] or (1,))) != 1:
            return None  # a C with one row per flattened row would not broadcast over x's leading dims
        k = w.shape[0]
        nodes, b = [flat, gemm, root], {"x": x, "w": w, "gemm": gemm, "target": None, "reason": ""}
        if not equal(out[-1], w.shape[1]):
            return None
        if not equal(product(xs), mul(product(out[:-1]), k)):
            if all(isinstance(d, int) for d in xs + out):
                return None  # the rows do not line up: not this pattern
            b["reason"] = (f"{x.name} {_text(xs)} and the result {_text(out)} are not provably the same rows: "
                           f"{product(xs)} vs {mul(product(out[:-1]), k)} elements for some input shapes")
            return Match(root, nodes, b=b)
        xshape = out[:-1] + (k,)
        if not same_dims(xs, xshape):  # [b, s, h, d] flattened to [b*s, h*d]: keep the rows apart
            b["target"] = reshape_target(xs, np.array(list(xshape) + [None], dtype=object)[:-1], 0)
            if b["target"] is None:
                b["reason"] = (f"{x.name} {_text(xs)} cannot be regrouped as {_text(xshape)} by one constant Reshape "
                               "(more than one dim differs symbolically)")
        return Match(root, nodes, b=b)

    def check(self, m):
        return m.b["reason"]

    def rewrite(self, m, emit):
        gemm = m.b["gemm"]
        w = m.b["w"] * np.asarray(attr(gemm, "alpha", 1.0), m.b["w"].dtype)
        x = m.b["x"]
        if m.b["target"] is not None:
            x = emit.op("Reshape", [x, m.b["target"]], domain="")
        y = emit.op("MatMul", [x, np.ascontiguousarray(w)], domain="")
        if len(gemm.inputs) > 2 and gemm.inputs[2] is not None:
            c = gemm.inputs[2]
            beta = attr(gemm, "beta", 1.0)
            if beta != 1.0 and const(c) is not None:
                c = const(c) * np.asarray(beta, const(c).dtype)
            y = emit.op("Add", [y, c], domain="")
        return [y]


def _text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


class TransposeBetweenReshapes(Rule):
    """Reshape(x -> [P, *tail]) -> Transpose(0, perm of tail) -> Reshape(-> [*lead, *tail']) where
    P = prod(lead) = prod of x's leading dims: the same as Reshape(x -> [*lead, *tail]) then a
    Transpose of the trailing dims (how GQA's K reaches Q·Kᵀ in some exports)."""

    name = "transpose_between_reshapes"
    ops = ("Reshape",)

    def pattern(self, root):
        t = producer(root.inputs[0], "Transpose")
        r1 = producer(t.inputs[0], "Reshape") if t is not None else None
        if r1 is None or len(users(t.outputs[0])) != 1 or len(users(r1.outputs[0])) != 1:
            return None
        mid, out, perm = sdims(r1.outputs[0]), sdims(root.outputs[0]), attr(t, "perm")
        if not known(mid) or not known(out) or not mid or not out or perm is None or len(perm) != len(mid) \
                or perm[0] != 0 or 0 in out:
            return None
        tail = mid[1:]
        n_lead = len(out) - len(tail)
        lead = out[:n_lead]
        if n_lead < 1 or not equal(product(lead), mid[0]) or not same_dims(out[n_lead:], tuple(tail[p - 1] for p in perm[1:])):
            return None
        target = reshape_target(sdims(r1.inputs[0]), np.array(list(lead + tail) + [None], dtype=object)[:-1], 0)
        if target is None:
            return None
        return Match(root, [r1, t, root], b={"x": r1.inputs[0], "shape": target,
                                              "perm": list(range(n_lead)) + [n_lead + p - 1 for p in perm[1:]]})

    def rewrite(self, m, emit):
        y = emit.op("Reshape", [m.b["x"], m.b["shape"]], domain="")
        return [emit.op("Transpose", [y], {"perm": m.b["perm"]}, domain="")]


RULES = [RemoveNoOp(), MergeTransposes(), MergeReshapes(), PadIntoConv(), SumAsAdd(), GemmOverFlattened(),
         TransposeBetweenReshapes(), *GATHER_RULES]
