"""Data-dependent allocations over the element cap are refused at run time, naming the op."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Reshape"])
def test_huge_data_dependent_allocation_is_refused(op):
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = []
    if op == "ConstantOfShape":
        nodes = [helper.make_node("ConstantOfShape", ["s"], ["y"])]
        inputs = [s]
    elif op == "Expand":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        nodes = [helper.make_node("Expand", ["x", "s"], ["y"])]
        inputs = [x, s]
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
        nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
        inputs = [x, s]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    engine = wb.build(wb.load_onnx(model.SerializeToString()), wb.BuilderConfig(device="cpu"))
    feeds = {"s": np.array([2**16, 2**16, 2**16, 2**14], np.int64)}  # 2**62 elements
    if op != "ConstantOfShape":
        feeds["x"] = np.ones(1 if op == "Expand" else 2, np.float32)
    with pytest.raises(WorkbenchError) as info:
        engine.create_context().run(feeds)
    assert op in str(info.value) or "elements" in str(info.value)
