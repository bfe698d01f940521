"""Normalization fusions: LayerNorm (the ONNX op, the decomposed exporter forms), channels-first LayerNorm,
RMSNorm (Llama's Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul), SkipLayerNorm (residual Add + LayerNorm).

Invariant: the fused node normalizes over the same axes with the same epsilon, and applies the same
constant scale and bias, as the nodes it replaces.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..rewrite.engine import DOMAIN, Match, Rule
from ..ir.symdims import describe, same_dims, sdims, symbolic_mismatch
from ..ir.values import (
    attr,
    axes_of,
    const,
    is_graph_output,
    other_input,
    producer,
    rank,
    scalar,
    sole_user,
    users,
)

CHANNELS_LAST = [0, 2, 3, 1]
CHANNELS_FIRST = [0, 3, 1, 2]


class LayerNormOp(Rule):
    """ONNX LayerNormalization (only Y read) -> LayerNorm over the same axes (the Transposes of a
    channels-first spelling are ``ChannelsFirstLayerNorm``'s business, whatever made the LayerNorm)."""

    name = "layer_norm"
    ops = ("LayerNormalization",)

    def pattern(self, root):
        if any(users(o) for o in root.outputs[1:]):
            return None
        return Match(root, [root], outputs=[root.outputs[0]])

    def rewrite(self, m, emit):
        ln = m.root
        ins = [ln.inputs[0], ln.inputs[1]] + ([ln.inputs[2]] if len(ln.inputs) > 2 and ln.inputs[2] is not None else [])
        attrs = {"axis": int(attr(ln, "axis", -1)), "epsilon": float(attr(ln, "epsilon", 1e-5)), "channels_first": 0}
        return [emit.op("LayerNorm", ins, attrs)]


class ChannelsFirstLayerNorm(Rule):
    """Transpose(0,2,3,1) -> LayerNorm(last axis) -> Transpose(0,3,1,2) -> LayerNorm(channels_first=1)
    on the input of the first Transpose (ConvNeXt's channels-first LayerNorm; whether the exporter
    wrote LayerNormalization or, at opset < 17, the decomposed form). Exact: the same values are
    normalized over the same channel axis; only the data movement goes."""

    name = "channels_first_layer_norm"
    ops = ("LayerNorm",)
    domain = DOMAIN

    def pattern(self, root):
        x, out = root.inputs[0], root.outputs[0]
        if attr(root, "channels_first", 0) or rank(x) != 4 or attr(root, "axis", -1) not in (-1, 3):
            return None
        before, after = producer(x, "Transpose"), sole_user(out)
        if after is not None and after.op_type != "Transpose":
            after = None
        if before is None and after is None and not any(u.op_type == "Transpose" for u in users(out)):
            return None  # no Transpose around it: not this pattern
        nodes = [n for n in (before, root, after) if n is not None]
        reason = ""
        if before is None or attr(before, "perm") != CHANNELS_LAST:
            reason = (f"the input {x.name} does not come from Transpose(perm={CHANNELS_LAST})"
                      + (f" (perm {attr(before, 'perm')})" if before is not None else ""))
        elif after is None:
            readers = ", ".join(f"{u.name} ({u.op_type})" for u in users(out)) or "nothing"
            reason = (f"the output {out.name} is read by {readers}" + (" and is a graph output" if is_graph_output(out)
                      else "") + f", not only by Transpose(perm={CHANNELS_FIRST})")
        elif attr(after, "perm") != CHANNELS_FIRST:
            reason = f"the output Transpose {after.name} has perm {attr(after, 'perm')}, not {CHANNELS_FIRST}"
        outputs = [after.outputs[0]] if after is not None else [out]
        return Match(root, nodes, outputs=outputs, b={"x": before.inputs[0] if before is not None else x,
                                                      "reason": reason})

    def check(self, m):
        return m.b["reason"]

    def rewrite(self, m, emit):
        ln = m.root
        attrs = {"axis": 1, "epsilon": float(attr(ln, "epsilon", 1e-5)), "channels_first": 1}
        return [emit.op("LayerNorm", [m.b["x"], *ln.inputs[1:]], attrs)]


def _square_of(v: ir.Value) -> ir.Value | None:
    """d for Pow(d, 2) or Mul(d, d)."""
    p = producer(v, ("Pow", "Mul"))
    if p is None:
        return None
    if p.op_type == "Pow" and scalar(p.inputs[1]) == 2.0:
        return p.inputs[0]
    if p.op_type == "Mul" and p.inputs[0] is p.inputs[1]:
        return p.inputs[0]
    return None


def _normalized_by(sqrt: ir.Node, d: ir.Value) -> tuple[list[ir.Node], ir.Value] | None:
    """The nodes computing d / sqrt: Div(d, s), or Mul(d, Reciprocal(s) | Div(1, s))."""
    s = sqrt.outputs[0]
    u = sole_user(s)
    if u is None:
        return None
    if u.op_type == "Div" and u.inputs[1] is s and u.inputs[0] is d:
        return [u], u.outputs[0]
    if u.op_type == "Reciprocal" or (u.op_type == "Div" and u.inputs[1] is s and scalar(u.inputs[0]) == 1.0):
        mul = sole_user(u.outputs[0])
        if mul is not None and mul.op_type == "Mul" and other_input(mul, u.outputs[0]) is d:
            return [u, mul], mul.outputs[0]
    return None


def _axes_kind(axes: list[int], r: int) -> str | None:
    axes = sorted(a + r if a < 0 else a for a in axes)
    if axes == list(range(r - len(axes), r)):
        return "last"
    if axes == [1] and r >= 3:
        return "channels_first"
    return None


def _affine(v: ir.Value, op: str, r: int, kind: str, n_axes: int):
    """A constant Mul (scale) / Add (bias) over the normalized axes after ``v``."""
    u = sole_user(v)
    if u is None or u.op_type != op:
        return None
    c = const(other_input(u, v))
    if c is None:
        return None
    if kind == "last" and c.ndim <= n_axes or kind == "last" and all(d == 1 for d in c.shape[: c.ndim - n_axes]):
        return u, c.reshape(c.shape[c.ndim - n_axes:] if c.ndim >= n_axes else c.shape)
    if kind == "channels_first" and c.ndim >= r - 1 and c.size == c.shape[c.ndim - (r - 1)]:
        return u, c.reshape(-1)
    return None


class DecomposedNorm(Rule):
    """ReduceMean/Sub/Pow/ReduceMean/Add(eps)/Sqrt/Div [*scale] [+bias] -> LayerNorm, and
    Pow/ReduceMean/Add(eps)/Sqrt/Reciprocal/Mul [*scale] -> RMSNorm (rooted at the Sqrt)."""

    name = "decomposed_norm"
    ops = ("Sqrt",)

    def pattern(self, root):
        add = producer(root.inputs[0], "Add")
        if add is None:
            return None
        var = add.inputs[0] if scalar(add.inputs[1]) is not None else add.inputs[1]
        eps = scalar(other_input(add, var))
        red = producer(var, "ReduceMean")
        d = _square_of(red.inputs[0]) if red is not None else None
        if eps is None or d is None or attr(red, "keepdims", 1) != 1 or axes_of(red) is None:
            return None
        sub = producer(d, "Sub")
        mean = producer(sub.inputs[1], "ReduceMean") if sub is not None else None
        is_ln = mean is not None and mean.inputs[0] is sub.inputs[0] and axes_of(mean) == axes_of(red)
        x = sub.inputs[0] if is_ln else d
        r = rank(x)
        kind = _axes_kind(axes_of(red), r) if r else None
        norm = _normalized_by(root, d)
        if kind is None or norm is None or (kind == "channels_first" and not is_ln):
            return None
        nodes = ([mean, sub] if is_ln else []) + [red.inputs[0].producer(), red, add, root, *norm[0]]
        out, parts = norm[1], {}
        for op in ("Mul", "Add"):
            got = _affine(out, op, r, kind, len(axes_of(red)))
            if got is None or (op == "Add" and not is_ln):
                continue
            nodes.append(got[0])
            parts[op] = got[1]
            out = got[0].outputs[0]
        n_axes = len(axes_of(red))
        return Match(root, nodes, outputs=[out],
                     b={"x": x, "eps": eps, "ln": is_ln, "kind": kind, "parts": parts, "axis": r - n_axes, "rank": r})

    def check(self, m):
        if "Mul" in m.b["parts"]:
            return ""
        xs = sdims(m.b["x"])
        axes = _normalized(m.b, xs)
        if xs is None:
            return f"no scale and {m.b['x'].name} has an unknown rank to size a unit scale"
        bad = next((d for d in axes if not isinstance(d, int)), 0)
        if bad != 0:
            return (f"no scale and the normalized dim {describe(bad)} of {m.b['x'].name} is not fixed, "
                    "so a unit scale cannot be sized")
        return ""

    def rewrite(self, m, emit):
        x, parts = m.b["x"], m.b["parts"]
        xs = sdims(x)
        xs = None if xs is None else tuple(d if isinstance(d, int) else 1 for d in xs)  # only the normalized dims are read
        dt = np.float32
        if "Mul" in parts:
            scale = parts["Mul"]
        else:
            n = xs[1] if m.b["kind"] == "channels_first" else int(np.prod(xs[m.b["axis"]:])) if xs else None
            if n is None:
                scale = np.ones((), dt)
            else:
                scale = np.ones(n if m.b["kind"] == "channels_first" else xs[m.b["axis"]:], dt)
        if not m.b["ln"]:
            return [emit.op("RMSNorm", [x, scale], {"epsilon": m.b["eps"], "axis": m.b["axis"] - m.b["rank"]})]
        ins = [x, scale] + ([parts["Add"]] if "Add" in parts else [])
        cf = int(m.b["kind"] == "channels_first")
        return [emit.op("LayerNorm", ins, {"axis": 1 if cf else m.b["axis"], "epsilon": m.b["eps"], "channels_first": cf})]


def _normalized(b: dict, xs) -> tuple:
    """The dims a decomposed norm normalizes over (the channel dim for channels-first)."""
    if xs is None:
        return ()
    return (xs[1],) if b["kind"] == "channels_first" else tuple(xs[b["axis"]:])


class SkipLayerNorm(Rule):
    """Add(x, skip) -> LayerNorm (last axis) -> SkipLayerNorm; the sum stays available as its
    second output when later layers read it (the residual stream)."""

    name = "skip_layer_norm"
    ops = ("LayerNorm",)
    domain = DOMAIN

    def pattern(self, root):
        add = producer(root.inputs[0], "Add")
        if add is None or attr(root, "channels_first", 0):
            return None
        a, b = add.inputs
        if const(a) is not None or const(b) is not None:
            return None
        why = symbolic_mismatch(sdims(a), sdims(b))
        if not why and not same_dims(sdims(a), sdims(b)):
            return None  # a broadcasting Add (or unknown shapes): not a residual
        r = len(sdims(a))
        if attr(root, "axis", -1) not in (-1, r - 1):
            return None
        reason = f"the residual Add's operands {a.name} and {b.name} differ: {why}" if why else ""
        return Match(root, [add, root], outputs=[root.outputs[0], add.outputs[0]], b={"add": add, "reason": reason})

    def check(self, m):
        return m.b["reason"]

    def rewrite(self, m, emit):
        ln, add = m.root, m.b["add"]
        ins = [add.inputs[0], add.inputs[1], *ln.inputs[1:]]
        node = emit.node("SkipLayerNorm", ins, {"epsilon": float(attr(ln, "epsilon", 1e-5))}, n_outputs=2)
        return list(node.outputs)


NORM_RULES = [LayerNormOp(), DecomposedNorm(), ChannelsFirstLayerNorm()]
SKIP_RULES = [SkipLayerNorm()]
