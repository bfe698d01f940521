"""Output types of the nodes a rewrite creates: every value a pass makes carries its dtype and,
where its inputs' shapes are static, a static shape (backends refuse tensors of unknown type).

Standard-domain nodes are typed by ONNX's own per-node shape inference (``infer_node_outputs``,
with the model's opset and the values of small constant inputs, e.g. a Reshape target); the fused
ops of the ``workbench`` domain by the shape functions of their schemas (``ops/fused.py``). The final
``infer_shapes`` of the pipeline cannot do this: ONNX inference stops at ops it does not know.
"""

from __future__ import annotations

import onnx
import onnx.shape_inference
import onnx_ir as ir

from ..dtypes import ONNX_CODES
from ..ops.fused import FUSED_OPS
from .attrs import node_attrs
from .values import dims, dtype

Dims = tuple  # of int | str (symbolic) | None (unknown)
Spec = tuple  # (ir.DataType | None, Dims | None)
_CONST_DATA_MAX = 1024  # constant inputs up to this many elements are given to ONNX inference


def dtype_of(v: ir.Value | None) -> ir.DataType | None:
    if v is None or not isinstance(v.type, ir.TensorType):
        return None
    return v.type.dtype


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


# ---- the workbench domain: the shape functions of ops.fused over plain dims and dtype names ----
def _fused_outputs(node: ir.Node) -> list[Spec]:
    schema = FUSED_OPS[node.op_type]
    ins = [None if v is None else (dtype(v), dims(v)) for v in node.inputs]
    got = schema.shape(ins, schema.with_defaults(node_attrs(node)))
    specs = [(ir.DataType(ONNX_CODES[dt]) if dt is not None else None, shape) for dt, shape in got]
    n = len(node.outputs)
    return (specs + [(None, None)] * n)[:n]


FUSED = {name: _fused_outputs for name in FUSED_OPS}


def untyped(values) -> list[str]:
    """Names of ``values`` lacking a dtype or a static shape (for checks and tests)."""
    return [v.name or "?" for v in values if dtype_of(v) is None or not _static(dims(v))]


__all__ = ["annotate", "dtype_of", "infer_outputs", "set_spec", "untyped"]
