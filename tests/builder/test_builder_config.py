"""BuilderConfig options are honoured: `disable` (also given as one string) holds inside simplify, and
`max_elements` caps data-dependent allocations of the engine it builds."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.errors import WorkbenchError


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def test_disabling_fold_constants_holds_inside_simplify():
    s = numpy_helper.from_array(np.array([2, 3], np.int64), "s")
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Reshape", ["i", "s"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    engine = wb.build(wb.load_onnx(_model(nodes, [x], [y], [s])), wb.BuilderConfig(device="cpu", disable="fold_constants"))
    assert engine.reports["counters"].get("fold_constants", 0) == 0
    assert engine.build_info["disabled"] == ["fold_constants"]


def test_builder_config_max_elements_caps_data_dependent_allocations():
    s = numpy_helper.from_array(np.array([1000], np.int64), "s")
    graph = helper.make_graph([helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["c", "x"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(WorkbenchError, match="1000"):
        engine = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu", max_elements=10))
        engine.create_context().run({"x": np.ones(1, np.float32)})
