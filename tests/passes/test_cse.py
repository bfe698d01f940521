"""Simplify passes on constants: CSE keys constants by their data, not by a printed form that elides it."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import workbench as wb


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def test_cse_does_not_merge_large_constants_with_different_data():
    n = 1 << 20  # over the folding size limit, and repr() of such tensors elides the data
    a = helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(np.zeros(n, np.float32), "A"))
    b = helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.ones(n, np.float32), "B"))
    nodes = [a, b, helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
    engine = wb.build(wb.load_onnx(_model(nodes, [x], [y])), wb.BuilderConfig(device="cpu"))
    out = engine.create_context().run({"x": np.full(n, 3.0, np.float32)})["y"]
    assert np.array_equal(out, np.ones(n, np.float32))
