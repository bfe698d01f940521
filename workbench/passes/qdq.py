"""Q/DQ models (onnxruntime's ``quantize_static`` QDQ format, TensorRT Model Optimizer's exports):
QuantizeLinear / DequantizeLinear folded into their neighbours, their parameters kept for the
precision step (``precision/quantize.py``), which builds the int8 / fp8 layers from them.

Two passes (``pipeline.py``):

``fold_qdq_weights`` (first, before constant folding): ``fold_weight_dequantize``: a
DequantizeLinear of a constant (a stored int8 / fp8 weight, an int32 bias, or QuantizeLinear of a
float constant) becomes the float32 constant it computes, bit for bit (the reference kernels
evaluate it), so no weight is dequantized at run time and every weight fusion sees a constant.
A symmetric int8 / float8e4m3fn weight's scale and axis are recorded: the precision step quantizes
the weight back with them, which gives the model's own int8 values exactly
(``round(float32(q * s) / s) == q`` for |q| <= 128).

``fold_qdq`` (after the epilogue and projection fusions, before pointwise fusion):
``fold_qdq_pair``: an activation ``x -> QuantizeLinear -> DequantizeLinear -> y`` with one
per-tensor scale and zero point (int8, uint8 or float8e4m3fn) disappears:

* readers of ``y`` that quantize that operand themselves (Conv / ConvTranspose X, Gemm / MatMul A
  and an activation B, FusedConv X and its residual Z) read ``x`` instead, and ``x`` is recorded
  with the pair's scale, zero point and format (a uint8 zero point in the int8 domain, ``zp - 128``:
  the same ``q - zp``): the layer then quantizes ``x`` exactly as the pair did;
* any other reader (Add, MaxPool, Concat, a graph output, ...) reads the pair's value computed in
  float32 by the ONNX ops that define it, ``(Clip(Round(x / s) + zp, lo, hi) - zp) * s`` (fp8:
  ``Cast(Cast(x / s, e4m3, saturate), float) * s``), bit for bit what Q then DQ compute; pointwise
  fusion then merges it with its neighbours. The clamp matters: onnxruntime removes a Relu in
  front of an asymmetric pair and lets the pair's range do its work.

Running after the epilogue fusions keeps the model's meaning: a pair between a Conv and an Add
means the Conv's output is rounded, so they must not fuse across it; and the readers the pair is
folded into no longer change before lowering, so the recorded tensor names stay valid.

Left as QuantizeLinear / DequantizeLinear layers (reference kernels, declined with a reason):
per-axis or blocked activation scales, other types (int16, int4, e5m2, ...), a Q whose result has
readers other than its DequantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..dtypes import ONNX_CODES, from_numpy
from ..ir.attrs import tensor_to_numpy
from ..ir.provenance import provenance, record
from ..ir.values import attr, const, dtype, is_graph_output, producer, users
from ..kernels.reference import KernelContext
from ..kernels.reference.quant import dequantize_linear, quantize_linear
from ..rewrite.engine import Match, Rule

META = "workbench.qdq"  # graph.meta key of the recorded parameters
_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}
# (consumer op, domain) -> input positions where the consumer quantizes the operand itself
_ABSORBS = {("", "Conv"): (0,), ("", "ConvTranspose"): (0,), ("", "Gemm"): (0, 1), ("", "MatMul"): (0, 1),
            ("workbench", "FusedConv"): (0, 3), ("workbench", "FusedGemm"): (0, 1)}


def _records(graph: ir.Graph) -> dict:
    rec = graph.meta.get(META)
    if rec is None:
        rec = {"activations": {}, "weights": {}}
        graph.meta[META] = rec
    return rec


def explicit_quantization(model: ir.Model) -> dict:
    """What the Q/DQ folding recorded: {"activations": {tensor: {"scale", "zero_point", "format"}},
    "weights": {constant: {"scale", "axis", "format"}}} (empty for a model without Q/DQ)."""
    rec = model.graph.meta.get(META) or {}
    return {"activations": dict(rec.get("activations", {})), "weights": dict(rec.get("weights", {}))}


def _value(v: ir.Value | None) -> np.ndarray | None:
    """A constant input: an initializer or a Constant node's tensor (this pass runs before folding)."""
    c = const(v)
    if c is not None or v is None:
        return c
    p = producer(v, "Constant")
    if p is not None and "value" in p.attributes:
        return tensor_to_numpy(p.attributes["value"].value)
    return None


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


def _attrs(node: ir.Node) -> dict:
    return {k: attr(node, k) for k in node.attributes}


class FoldWeightDequantize(Rule):
    """DequantizeLinear(constant [or QuantizeLinear(constant)]) -> the float constant it computes."""

    name = "fold_weight_dequantize"
    ops = ("DequantizeLinear",)

    def pattern(self, root):
        if any(_input(root, i) is not None and _value(_input(root, i)) is None for i in (1, 2)):
            return None
        x = _input(root, 0)
        if _value(x) is not None:
            return Match(root, [root])
        q = producer(x, "QuantizeLinear")
        if q is None or any(v is not None and _value(v) is None for v in q.inputs):
            return None
        return Match(root, [q, root], b={"q": q})

    def rewrite(self, m, emit):
        dq, q = m.root, m.b.get("q")
        if q is not None:
            qin = [_value(v) if v is not None else None for v in q.inputs]
            stored = quantize_linear(KernelContext(opset=emit.opset), qin, _attrs(q))[0]
        else:
            stored = _value(dq.inputs[0])
        scale, zp = _value(_input(dq, 1)), _value(_input(dq, 2)) if _input(dq, 2) is not None else None
        ins = [stored, scale] + ([zp] if zp is not None else [])
        y = np.ascontiguousarray(dequantize_linear(KernelContext(opset=emit.opset), ins, _attrs(dq))[0])
        out = dq.outputs[0]
        name = out.name or f"{dq.name}/dequantized"
        out.name = f"{name}/dequantize"  # the folded constant takes the name
        init = ir.Value(name=name, const_value=ir.tensor(y), shape=ir.Shape(y.shape),
                        type=ir.TensorType(ir.DataType.from_numpy(y.dtype)))
        emit.graph.register_initializer(init)
        fmt = _weight_format(stored, zp)
        if fmt is not None and y.dtype == np.float32 and scale is not None and scale.dtype == np.float32 \
                and not int(attr(dq, "block_size", 0) or 0):
            s = np.asarray(scale, np.float32).reshape(-1)
            axis = None
            if s.size > 1:
                axis = int(attr(dq, "axis", 1)) % max(stored.ndim, 1)
            _records(emit.graph)["weights"][name] = {"scale": s.copy(), "axis": axis, "format": fmt}
        return [init]


def _weight_format(stored: np.ndarray, zp: np.ndarray | None) -> str | None:
    """"int8" / "fp8" for a symmetric int8 / float8e4m3fn stored weight, else None."""
    name = from_numpy(stored.dtype)
    if name not in ("int8", "float8e4m3fn"):
        return None
    if zp is not None and np.any(np.asarray(zp).astype(np.float32) != 0):
        return None
    return "int8" if name == "int8" else "fp8"


def _pair(q: ir.Node, dq: ir.Node) -> tuple[dict | None, str]:
    """The pair's (scale, zero point, format, element type), or None and why it is not foldable."""
    s_q, s_dq = _value(_input(q, 1)), _value(_input(dq, 1))
    if s_q is None or s_dq is None:
        return None, "the scale is not a constant"
    if s_q.size != 1 or s_dq.size != 1:
        return None, "per-axis activation scales stay as QuantizeLinear / DequantizeLinear layers"
    if int(attr(q, "block_size", 0) or 0) or int(attr(dq, "block_size", 0) or 0):
        return None, "blocked scales stay as QuantizeLinear / DequantizeLinear layers"
    if s_q.dtype != np.float32 or not np.array_equal(s_q.reshape(()), s_dq.reshape(())):
        return None, "QuantizeLinear and DequantizeLinear scales differ (or are not float32)"
    zq = _value(_input(q, 2)) if _input(q, 2) is not None else None
    zd = _value(_input(dq, 2)) if _input(dq, 2) is not None else None
    if (_input(q, 2) is not None and zq is None) or (_input(dq, 2) is not None and zd is None):
        return None, "the zero point is not a constant"
    elem = dtype(q.outputs[0]) or (from_numpy(zq.dtype) if zq is not None else None)
    if elem is None:
        elem = "uint8" if not attr(q, "output_dtype") else None
    z_q = 0 if zq is None else zq.reshape(()).astype(np.float64)
    z_d = 0 if zd is None else zd.reshape(()).astype(np.float64)
    if z_q != z_d:
        return None, "QuantizeLinear and DequantizeLinear zero points differ"
    x = q.inputs[0]
    if dtype(x) != "float32":
        return None, f"the quantized tensor is {dtype(x)}, not float32"
    s = float(np.float32(s_q.reshape(())))
    if not (np.isfinite(s) and s > 0):
        return None, f"scale {s} is not a positive number"
    if elem in _INT_RANGE:
        zp = int(z_q)
        shift = -128 if elem == "uint8" else 0
        return {"scale": s, "zero_point": zp + shift, "format": "int8", "elem": elem, "zp": zp}, ""
    if elem == "float8e4m3fn":
        if z_q != 0:
            return None, "an fp8 zero point other than 0"
        if not int(attr(q, "saturate", 1)):
            return None, "a non-saturating fp8 QuantizeLinear"
        return {"scale": s, "zero_point": 0, "format": "fp8", "elem": elem, "zp": 0}, ""
    return None, f"QuantizeLinear to {elem} (workbench runs int8, uint8 and float8e4m3fn Q/DQ)"


def _absorbs(node: ir.Node, index: int) -> bool:
    dom = "" if node.domain in ("", "ai.onnx") else node.domain
    return index in _ABSORBS.get((dom, node.op_type), ())


class FoldQDQPair(Rule):
    """x -> QuantizeLinear -> DequantizeLinear: into the readers that quantize x themselves, and a
    float32 rounding of x (the pair's own math) for every other reader."""

    name = "fold_qdq_pair"
    ops = ("DequantizeLinear",)

    def pattern(self, root):
        q = producer(_input(root, 0), "QuantizeLinear")
        if q is None or const(q.inputs[0]) is not None:
            return None
        return Match(root, [q, root], b={"q": q})

    def check(self, m):
        params, why = _pair(m.b["q"], m.root)
        m.b["params"] = params
        return why

    def rewrite(self, m, emit):
        q, dq, p = m.b["q"], m.root, m.b["params"]
        x, y = q.inputs[0], dq.outputs[0]
        names, ops = provenance([q, dq])
        readers = users(x)
        if x.name and len(readers) == 1 and readers[0] is q:
            absorbed = False
            for node, idx in list(y.uses()):
                # readers inside a subgraph body run in float (the precision step quantizes top-level layers)
                if node.graph is dq.graph and _absorbs(node, idx):
                    node.replace_input_with(idx, x)
                    mine, my_ops = provenance([node])
                    record(node, mine + names, my_ops + ops)
                    absorbed = True
            if absorbed:
                _records(emit.graph)["activations"][x.name] = {k: p[k] for k in ("scale", "zero_point", "format")}
        if not list(y.uses()) and not is_graph_output(y):
            return [x]
        return [_rounding(emit, x, p)]


def _rounding(emit, x: ir.Value, p: dict) -> ir.Value:
    """``DequantizeLinear(QuantizeLinear(x))`` as float32 ONNX ops."""
    s = np.array(p["scale"], np.float32)
    v = emit.op("Div", [x, s], domain="")
    if p["format"] == "fp8":
        v = emit.op("Cast", [v], {"to": ONNX_CODES["float8e4m3fn"], "saturate": 1}, domain="")
        v = emit.op("Cast", [v], {"to": ONNX_CODES["float32"]}, domain="")
        return emit.op("Mul", [v, s], domain="")
    lo, hi = _INT_RANGE[p["elem"]]
    zp = np.array(p["zp"], np.float32)
    v = emit.op("Round", [v], domain="")
    if p["zp"]:
        v = emit.op("Add", [v, zp], domain="")
    if emit.opset >= 11:
        v = emit.op("Clip", [v, np.array(lo, np.float32), np.array(hi, np.float32)], domain="")
    else:  # Clip took its bounds as attributes before opset 11
        v = emit.op("Max", [emit.op("Min", [v, np.array(hi, np.float32)], domain=""), np.array(lo, np.float32)], domain="")
    if p["zp"]:
        v = emit.op("Sub", [v, zp], domain="")
    return emit.op("Mul", [v, s], domain="")


WEIGHT_RULES = [FoldWeightDequantize()]
PAIR_RULES = [FoldQDQPair()]
