"""Small onnx-ir graphs for tests that work on the IR directly (the rewrite engine, single rules),
and a plain-data view of a graph to compare against an expected structure."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.shape_inference
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper


def ir_model(nodes, inputs, outputs, inits=(), opset=17) -> ir.Model:
    """An ir.Model from ONNX nodes. ``inputs``: [(name, shape)] (float32); ``outputs``: names;
    ``inits``: {name: array}. ONNX shape inference types every value, as the loader's pipeline does."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          [numpy_helper.from_array(np.asarray(a), n) for n, a in dict(inits).items()])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(proto))


def node_named(graph: ir.Graph, name: str) -> ir.Node:
    return next(n for n in graph if n.name == name)


def structure(graph: ir.Graph) -> list[tuple]:
    """(op_type, domain, input names, output names) of each node, in graph order; a missing optional
    input is None."""
    return [(n.op_type, n.domain, [v.name if v is not None else None for v in n.inputs], [v.name for v in n.outputs])
            for n in graph]


def output_names(graph: ir.Graph) -> list[str]:
    return [v.name for v in graph.outputs]
