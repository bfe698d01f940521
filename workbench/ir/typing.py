"""Output types of the nodes a rewrite creates: every value a pass makes carries its dtype and,
where its inputs' shapes are static, a static shape (backends refuse tensors of unknown type).

Standard-domain nodes are typed by ONNX's own per-node shape inference (``infer_node_outputs``,
with the model's opset and the values of small constant inputs, e.g. a Reshape target); the fused
ops of the ``workbench`` domain (``passes/FUSED_OPS.md``) by the shape functions below. The final
``infer_shapes`` of the pipeline cannot do this: ONNX inference stops at ops it does not know.
"""

from __future__ import annotations

import json

import onnx
import onnx.shape_inference
import onnx_ir as ir

from ..dtypes import ONNX_CODES

Dims = tuple  # of int | str (symbolic) | None (unknown)
Spec = tuple  # (ir.DataType | None, Dims | None)
_CONST_DATA_MAX = 1024  # constant inputs up to this many elements are given to ONNX inference


def dims(v: ir.Value | None) -> Dims | None:
    if v is None or v.shape is None:
        return None
    return tuple(d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None) for d in v.shape)


def dtype_of(v: ir.Value | None) -> ir.DataType | None:
    if v is None or not isinstance(v.type, ir.TensorType):
        return None
    return v.type.dtype


def broadcast(*shapes: Dims | None) -> Dims | None:
    """Numpy broadcasting over dims that may be symbolic (equal names match) or unknown."""
    if any(s is None for s in shapes):
        return None
    r = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(r):
        ds = [s[len(s) - r + i] for s in shapes if len(s) - r + i >= 0]
        ds = [d for d in ds if d != 1]
        ints = {d for d in ds if isinstance(d, int)}
        if not ds:
            out.append(1)
        elif ints:  # a valid broadcast: every other dim is 1 or this one
            out.append(ints.pop() if len(ints) == 1 else None)
        else:
            out.append(ds[0] if ds[0] is not None and all(d == ds[0] for d in ds) else None)
    return tuple(out)


def set_spec(v: ir.Value, dt: ir.DataType | None, shape: Dims | None) -> None:
    """Give ``v`` the type and shape (only what is known; never overwrites with less)."""
    if dt is not None and v.type is None:
        v.type = ir.TensorType(dt)
    if shape is not None and (v.shape is None or not _static(dims(v))):
        v.shape = ir.Shape([d if d is not None else None for d in shape])


def _static(s: Dims | None) -> bool:
    return s is not None and all(isinstance(d, int) for d in s)


def infer_outputs(node: ir.Node, opset: int) -> list[Spec]:
    """(dtype, dims) of each output of ``node``; (None, None) where unknown."""
    if node.domain in ("", "ai.onnx"):
        return _onnx_outputs(node, opset)
    fn = FUSED.get(node.op_type)
    try:
        got = fn(node) if fn is not None else None
    except Exception:  # a malformed node is left untyped; the build reports it
        got = None
    return got if got is not None else [(None, None)] * len(node.outputs)


def annotate(node: ir.Node, opset: int) -> None:
    for v, (dt, shape) in zip(node.outputs, infer_outputs(node, opset)):
        set_spec(v, dt, shape)


# ---- standard ops: ONNX's per-node inference ---------------------------------------------
def _type_proto(v: ir.Value) -> onnx.TypeProto | None:
    dt = dtype_of(v)
    if dt is None:
        return None
    s = dims(v)
    return onnx.helper.make_tensor_type_proto(int(dt), None if s is None else [d for d in s])


def _onnx_outputs(node: ir.Node, opset: int) -> list[Spec]:
    unknown = [(None, None)] * len(node.outputs)
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except Exception:
        try:
            schema = onnx.defs.get_schema(node.op_type, "")
        except Exception:
            return unknown
    proto = ir.serde.serialize_node(node)
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(node.inputs)]
    del proto.input[:]
    proto.input.extend(names)
    del proto.output[:]
    proto.output.extend(f"o{k}" for k in range(len(node.outputs)))
    types, data = {}, {}
    for name, v in zip(names, node.inputs):
        if v is None:
            continue
        t = _type_proto(v)
        if t is None:
            return unknown
        types[name] = t
        if v.const_value is not None and v.const_value.size <= _CONST_DATA_MAX:
            data[name] = ir.serde.serialize_tensor(v.const_value)
            data[name].name = name
    try:
        out = onnx.shape_inference.infer_node_outputs(
            schema, proto, types, data, opset_imports=[onnx.helper.make_opsetid("", opset)])
    except Exception:
        return unknown
    specs = []
    for k in range(len(node.outputs)):
        t = out.get(f"o{k}")
        if t is None or not t.HasField("tensor_type"):
            specs.append((None, None))
            continue
        tt = t.tensor_type
        dt = ir.DataType(tt.elem_type) if tt.elem_type else None
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        specs.append((dt, shape))
    return specs


# ---- the workbench domain ------------------------------------------------------------------
def _attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    if a is None:
        return default
    return list(a.value) if isinstance(a.value, tuple) else a.value


def _fused_conv(node):
    x, w = dims(node.inputs[0]), dims(node.inputs[1])
    dt = dtype_of(node.inputs[0])
    if x is None or w is None:
        return [(dt, None)]
    out = [x[0], w[0]]
    kernel, strides = _attr(node, "kernel_shape", list(w[2:])), _attr(node, "strides")
    dil, pads = _attr(node, "dilations"), _attr(node, "pads")
    nd = len(x) - 2
    for i in range(nd):
        if not isinstance(x[2 + i], int):
            out.append(None)
            continue
        s, d = (strides or [1] * nd)[i], (dil or [1] * nd)[i]
        p = (pads or [0] * 2 * nd)
        out.append((x[2 + i] + p[i] + p[i + nd] - (d * (kernel[i] - 1) + 1)) // s + 1)
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        out = list(broadcast(tuple(out), dims(node.inputs[3])) or out)
    return [(dt, tuple(out))]


def _fused_gemm(node):
    a, b = dims(node.inputs[0]), dims(node.inputs[1])
    dt = dtype_of(node.inputs[0])
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return [(dt, None)]
    if _attr(node, "transA", 0):
        a = a[:-2] + (a[-1], a[-2])
    if _attr(node, "transB", 0):
        b = b[:-2] + (b[-1], b[-2])
    lead = broadcast(a[:-2], b[:-2])
    out = lead + (a[-2], b[-1])
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        out = broadcast(out, dims(node.inputs[2])) or out
    return [(dt, out)]


def _like_first(node):
    x = node.inputs[0]
    return [(dtype_of(x), dims(x))] * len(node.outputs)


def _skip_layer_norm(node):
    s = broadcast(dims(node.inputs[0]), dims(node.inputs[1]))
    return [(dtype_of(node.inputs[0]), s)] * len(node.outputs)


def _heads_view(s: Dims | None, layout: str, heads: int):
    """(batch, heads, seq, head_dim) of a Q/K/V operand in ``layout``."""
    if s is None:
        return None
    if layout == "bhsd" and len(s) == 4:
        return s
    if layout == "bshd" and len(s) == 4:
        return (s[0], s[2], s[1], s[3])
    if layout == "bhds" and len(s) == 4:
        return (s[0], s[1], s[3], s[2])
    if layout == "bsd" and len(s) == 3:
        return (s[0], heads, s[1], s[2] // heads if isinstance(s[2], int) and heads else None)
    return None


def _attention(node):
    heads = int(_attr(node, "num_heads", 0) or 0)
    kvh = int(_attr(node, "kv_heads", 0) or heads)
    dt = dtype_of(node.inputs[0])
    q = _heads_view(dims(node.inputs[0]), _attr(node, "q_layout", "bhsd"), heads)
    v = _heads_view(dims(node.inputs[2]), _attr(node, "v_layout", "bhsd"), kvh)
    if q is None or v is None:
        return [(dt, None)]
    b, h, sq, dv = q[0], q[1] if q[1] is not None else heads, q[2], v[3]
    layout = _attr(node, "out_layout", "bhsd")
    if layout == "bshd":
        return [(dt, (b, sq, h, dv))]
    if layout == "bsd":
        return [(dt, (b, sq, h * dv if isinstance(h, int) and isinstance(dv, int) else None))]
    return [(dt, (b, h, sq, dv))]


def _pointwise(node):
    env = {f"in{k}": (dtype_of(v), dims(v)) for k, v in enumerate(node.inputs)}
    for ins in json.loads(_attr(node, "program")):
        shapes = [() if a.startswith("c:") else env[a][1] for a in ins["args"] if a != ""]
        name = ins.get("dtype")
        dt = ir.DataType(ONNX_CODES[name]) if name in ONNX_CODES else None
        env[ins["out"]] = (dt, broadcast(*shapes))
    return [env[o] for o in _attr(node, "outputs")]


FUSED = {
    "FusedConv": _fused_conv,
    "FusedGemm": _fused_gemm,
    "LayerNorm": _like_first,
    "RMSNorm": _like_first,
    "SkipLayerNorm": _skip_layer_norm,
    "Attention": _attention,
    "Pointwise": _pointwise,
}


def untyped(values) -> list[str]:
    """Names of ``values`` lacking a dtype or a static shape (for checks and tests)."""
    return [v.name or "?" for v in values if dtype_of(v) is None or not _static(dims(v))]


__all__ = ["annotate", "broadcast", "dims", "dtype_of", "infer_outputs", "set_spec", "untyped"]
