"""BatchNormalization folding, and Conv / Gemm / MatMul epilogues (bias, residual, activation).

Invariant: a fused Conv or GEMM computes act(op(x, W) + bias [+ residual]) in that order, exactly
the order of the ONNX nodes it replaces.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..ir.provenance import provenance
from ..ir.symdims import describe, same_dims, sdims, symbolic_mismatch
from ..ir.values import attr, const, is_graph_output, producer, sole_user, users
from ..ops.geometry import conv_geometry
from ..rewrite.engine import Match, Rule
from .activations import UNARY_OK, find_activation


def _bn_params(bn: ir.Node):
    p = [const(v) if v is not None else None for v in bn.inputs[1:5]]
    if any(a is None for a in p):
        return None
    gamma, beta, mean, var = (a.astype(np.float64).reshape(-1) for a in p)
    s = gamma / np.sqrt(var + float(attr(bn, "epsilon", 1e-5)))
    return s, beta - mean * s


class FoldBatchNorm(Rule):
    """Conv / Gemm / MatMul (constant weights) -> BatchNormalization: scale the weights per output
    channel and shift the bias; the BatchNormalization disappears."""

    name = "fold_batchnorm"
    ops = ("BatchNormalization",)

    def pattern(self, root):
        prev = producer(root.inputs[0], ("Conv", "Gemm", "MatMul"))
        if prev is None:
            return None
        return Match(root, [prev, root], outputs=[root.outputs[0]], b={"prev": prev})

    def check(self, m):
        bn, prev = m.root, m.b["prev"]
        if attr(bn, "training_mode", 0) or any(users(o) for o in bn.outputs[1:]):
            return "BatchNormalization is in training mode"
        if _bn_params(bn) is None:
            return "BatchNormalization parameters are not constant"
        if const(prev.inputs[1]) is None or (len(prev.inputs) > 2 and prev.inputs[2] is not None and const(prev.inputs[2]) is None):
            return f"{prev.op_type} weights are not constant"
        if prev.op_type != "Conv" and (len(sdims(prev.outputs[0]) or ()) != 2 or attr(prev, "transA", 0)):
            return f"{prev.op_type} output is not [batch, channels]"
        return ""

    def rewrite(self, m, emit):
        prev = m.b["prev"]
        s, shift = _bn_params(m.root)
        w = const(prev.inputs[1])
        b = const(prev.inputs[2]) if len(prev.inputs) > 2 and prev.inputs[2] is not None else None
        dt = w.dtype
        if prev.op_type == "Conv":
            w2 = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        elif prev.op_type == "Gemm" and attr(prev, "transB", 0):
            w2 = w * s.reshape(-1, 1)
        else:
            w2 = w * s.reshape(1, -1)
        if prev.op_type == "Gemm":
            b = None if b is None else np.broadcast_to(b * attr(prev, "beta", 1.0), s.shape)
            w2 = w2 * attr(prev, "alpha", 1.0)
        b2 = (np.zeros_like(s) if b is None else b.astype(np.float64).reshape(-1)) * s + shift
        attrs = {k: attr(prev, k) for k in prev.attributes if k not in ("alpha", "beta")}
        op = "Gemm" if prev.op_type != "Conv" else "Conv"
        return [emit.op(op, [prev.inputs[0], w2.astype(dt), b2.astype(dt)], attrs, domain="", name=prev.name)]


def _channel_vector(c: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """``c`` as one value per channel (axis 1 of a rank-``out_rank`` output with ``channels``
    channels), if it broadcasts along the channels only (a scalar counts); else None."""
    if c.ndim > out_rank or c.dtype.kind != "f":
        return None
    shape = (1,) * (out_rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1), (channels,))


class FoldChannelScale(Rule):
    """Conv (constant weights) -> Mul by a constant per output channel: scale the weights and the
    bias instead (the per-channel scales that some exporters write after a BatchNormalization);
    the Mul disappears and a following per-channel Add becomes the convolution's bias."""

    name = "fold_channel_scale"
    ops = ("Mul",)

    def pattern(self, root):
        for i in (0, 1):
            prev = producer(root.inputs[i], ("Conv",))
            scale = const(root.inputs[1 - i])
            if prev is not None and scale is not None:
                return Match(root, [prev, root], outputs=[root.outputs[0]], b={"prev": prev, "scale": scale})
        return None

    def check(self, m):
        prev = m.b["prev"]
        if sole_user(prev.outputs[0]) is not m.root or is_graph_output(prev.outputs[0]):
            return "the convolution's output has other readers"
        w = const(prev.inputs[1])
        if w is None or (len(prev.inputs) > 2 and prev.inputs[2] is not None and const(prev.inputs[2]) is None):
            return "Conv weights are not constant"
        if w.dtype.kind != "f" or m.b["scale"].dtype != w.dtype:
            return "the scale and the weights differ in type"
        if _channel_vector(m.b["scale"], w.ndim, w.shape[0]) is None:
            return "the constant is not one value per output channel"
        return ""

    def rewrite(self, m, emit):
        prev = m.b["prev"]
        w = const(prev.inputs[1])
        s = _channel_vector(m.b["scale"], w.ndim, w.shape[0])
        w2 = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        inputs = [prev.inputs[0], w2]
        if len(prev.inputs) > 2 and prev.inputs[2] is not None:
            inputs.append((const(prev.inputs[2]).reshape(-1) * s).astype(w.dtype))
        attrs = {k: attr(prev, k) for k in prev.attributes}
        return [emit.op("Conv", inputs, attrs, domain="", name=prev.name)]


class BatchNormToScaleShift(Rule):
    """A BatchNormalization with nothing to fold into becomes x * s + t per channel (two
    elementwise ops the pointwise fusion then takes along with its neighbours)."""

    name = "batchnorm_to_scale_shift"
    ops = ("BatchNormalization",)

    def pattern(self, root):
        if attr(root, "training_mode", 0) or any(users(o) for o in root.outputs[1:]) or _bn_params(root) is None:
            return None
        if root.inputs[0].shape is None or len(root.inputs[0].shape) < 2:
            return None  # the per-channel constants' shape depends on the rank
        return Match(root, [root], outputs=[root.outputs[0]])

    def rewrite(self, m, emit):
        s, t = _bn_params(m.root)
        x = m.root.inputs[0]
        r = len(x.shape)
        dt = const(m.root.inputs[1]).dtype
        bshape = (-1,) + (1,) * (r - 2)
        y = emit.op("Mul", [x, s.astype(dt).reshape(bshape)], domain="")
        return [emit.op("Add", [y, t.astype(dt).reshape(bshape)], domain="")]


def _absorbable(v: ir.Value) -> list[ir.Node]:
    return [u for u in users(v) if u.op_type in UNARY_OK]


def _multi_consumer_note(v: ir.Value, what: str):
    readers = users(v)
    if (len(readers) > 1 or is_graph_output(v)) and _absorbable(v):
        names = ", ".join(f"{u.name} ({u.op_type})" for u in readers) + (", a graph output" if is_graph_output(v) else "")
        n = len(readers) + int(is_graph_output(v))
        return (f"the {what} result {v.name} has {n} consumers ({names}): the activation/add after it "
                f"cannot be fused without computing the {what} twice", provenance(readers)[0])
    return None


def _bias_add(y: ir.Value, channel_axis: int, ch: int, r: int) -> tuple[ir.Node, np.ndarray] | None:
    """Add of a constant holding one value per output channel (``ch`` of them, rank ``r``)."""
    add = sole_user(y)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    c = const(add.inputs[1] if add.inputs[0] is y else add.inputs[0])
    if c is None or c.ndim > r:
        return None
    ys = [0] * r
    want = [1] * r
    want[channel_axis] = ch
    padded = (1,) * (len(ys) - c.ndim) + c.shape
    if c.size != ch or any(p not in (1, w) for p, w in zip(padded, want)) or np.prod(padded) != ch:
        return None
    return add, c.reshape(-1)


def _residual_add(y: ir.Value, declined: list | None = None) -> tuple[ir.Node, ir.Value] | None:
    """The Add of a same-shaped tensor after ``y``; where only symbolic dims keep the shapes from
    being provably equal, ``declined`` gets the reason (logged, the op fuses without it)."""
    add = sole_user(y)
    if add is None or add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    z = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
    if z is y or const(z) is not None:
        return None
    if not same_dims(sdims(z), sdims(y)):
        why = symbolic_mismatch(sdims(z), sdims(y))
        if why and declined is not None:
            declined.append((f"the residual {add.name} is not fused: {z.name} and {y.name} differ, {why}",
                             provenance([add])[0]))
        return None
    return add, z


def _epilogue(y: ir.Value, channel_axis: int, allow_residual: bool, what: str, ch: int | None, r: int | None):
    """Walk forward from ``y``: bias Add, residual Add, activation. Returns nodes, out, parts."""
    nodes, parts, declined = [], {}, []
    bias = _bias_add(y, channel_axis, ch, r) if ch and r else None
    if bias is not None:
        nodes.append(bias[0])
        parts["bias"] = bias[1]
        y = bias[0].outputs[0]
    res = _residual_add(y, declined) if allow_residual else None
    if res is not None:
        nodes.append(res[0])
        parts["residual"] = res[1]
        y = res[0].outputs[0]
    act = find_activation(y)
    if act is not None:
        nodes += act[0]
        parts["act"] = act[2]
        y = act[1]
    else:
        note = _multi_consumer_note(y, what)
        if note:
            declined.append(note)
    return nodes, y, parts, declined


class _Epilogue(Rule):
    """What the Conv and GEMM epilogue rules share: the match of an op and what follows it, and the
    check that declines a bare op whose activation could not come along."""

    @staticmethod
    def _match(root, nodes, y, parts, declined) -> Match | None:
        # nothing follows the op: not this pattern, unless an activation was left behind (logged)
        if not nodes and not declined:
            return None
        return Match(root, [root, *nodes], outputs=[y], b={"parts": parts, "declined": declined})

    def check(self, m):
        return m.b["declined"][0][0] if len(m.nodes) == 1 else ""


class ConvEpilogue(_Epilogue):
    """Conv -> [+bias] -> [+residual] -> [activation] as one FusedConv."""

    name = "conv_epilogue"
    ops = ("Conv",)

    def pattern(self, root):
        w = const(root.inputs[1]) if len(root.inputs) > 1 else None
        if w is None:
            return None
        nodes, out, parts, declined = _epilogue(root.outputs[0], 1, True, "Conv", w.shape[0], w.ndim)
        return self._match(root, nodes, out, parts, declined)

    def check(self, m):
        auto = attr(m.root, "auto_pad", "NOTSET") or "NOTSET"
        xs = sdims(m.root.inputs[0])
        if auto not in ("NOTSET", "VALID"):
            bad = None if xs is None else next((d for d in xs[2:] if not isinstance(d, int)), 0)
            if bad != 0:
                return (f"auto_pad {auto} needs fixed spatial dims to become explicit pads; the spatial dim "
                        f"{describe(bad)} of {m.root.inputs[0].name} is not fixed")
        return super().check(m)

    def rewrite(self, m, emit):
        conv, parts = m.root, m.b["parts"]
        w = const(conv.inputs[1])
        b = const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
        if "bias" in parts:
            b = parts["bias"].astype(w.dtype) if b is None else (b + parts["bias"]).astype(w.dtype)
        xs = sdims(conv.inputs[0])
        attrs = _conv_attrs(conv, None if xs is None else (0, 0) + tuple(xs[2:]), w.shape)  # only the spatial dims
        attrs.update(parts.get("act", {"activation": ""}))
        attrs["residual"] = int("residual" in parts)
        ins = [conv.inputs[0], conv.inputs[1], b if b is not None else np.zeros(w.shape[0], w.dtype)]
        if "residual" in parts:
            ins.append(parts["residual"])
        return [emit.op("FusedConv", ins, attrs)]


def _conv_attrs(conv: ir.Node, xs, ws) -> dict:
    nd = len(ws) - 2
    kernel = list(attr(conv, "kernel_shape") or ws[2:])
    strides = list(attr(conv, "strides") or [1] * nd)
    dil = list(attr(conv, "dilations") or [1] * nd)
    pads = list(attr(conv, "pads") or [0] * (2 * nd))
    auto = attr(conv, "auto_pad", "NOTSET") or "NOTSET"
    if auto not in ("NOTSET", "VALID") and xs is not None:
        begin, end, _ = conv_geometry(xs[2:], kernel, strides, dil, pads, auto)
        pads = list(begin) + list(end)
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    return {"kernel_shape": kernel, "strides": strides, "dilations": dil, "pads": pads,
            "group": int(attr(conv, "group", 1))}


class GemmEpilogue(_Epilogue):
    """Gemm, or MatMul [+ bias over the last axis], -> [activation] as one FusedGemm."""

    name = "gemm_epilogue"
    ops = ("Gemm", "MatMul")

    def pattern(self, root):
        out = root.outputs[0]
        b = root.inputs[1]
        n = None
        if b is not None and b.shape is not None and len(b.shape) == 2:
            n = b.shape[0] if root.op_type == "Gemm" and attr(root, "transB", 0) else b.shape[-1]
        r = 2 if root.op_type == "Gemm" else (len(out.shape) if out.shape is not None else None)
        if r is not None and r < 2:
            return None
        if root.op_type == "MatMul" and any(x.shape is None or len(x.shape) < 2 for x in root.inputs[:2]):
            return None  # a vector operand (or unknown rank) is not FusedGemm's op(A) @ op(B)
        nodes, y, parts, declined = _epilogue(out, -1, False, root.op_type, n if isinstance(n, int) else None, r)
        if root.op_type == "Gemm" and "bias" in parts and len(root.inputs) > 2 and root.inputs[2] is not None:
            nodes, y, parts, declined = [], out, {}, []  # a second bias: leave it to pointwise fusion
        return self._match(root, nodes, y, parts, declined)

    def rewrite(self, m, emit):
        g, parts = m.root, m.b["parts"]
        attrs = {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0}
        c = None
        if g.op_type == "Gemm":
            attrs.update({k: attr(g, k) for k in ("transA", "transB", "alpha", "beta") if attr(g, k) is not None})
            c = g.inputs[2] if len(g.inputs) > 2 else None
        if "bias" in parts:
            c = parts["bias"]
        attrs.update(parts.get("act", {"activation": ""}))
        return [emit.op("FusedGemm", [g.inputs[0], g.inputs[1]] + ([c] if c is not None else []), attrs)]


BATCHNORM_RULES = [FoldBatchNorm(), BatchNormToScaleShift(), FoldChannelScale()]
EPILOGUE_RULES = [ConvEpilogue(), GemmEpilogue()]
