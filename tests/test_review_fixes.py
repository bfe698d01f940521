"""Regressions found in review: constant data in CSE keys, outputs that alias weights or feeds,
--disable fold_constants inside simplify, Engine.load of a bad path, disable given as a string."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.errors import EngineFormatError


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


def test_writing_to_outputs_changes_neither_the_engine_nor_the_feeds():
    w = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    nodes = [helper.make_node("Identity", ["w"], ["y"]), helper.make_node("Identity", ["x"], ["z"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]), helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])]
    engine = wb.build(wb.load_onnx(_model(nodes, [x], outs, [w])), wb.BuilderConfig(device="cpu"))
    feed = np.ones(3, np.float32)
    first = engine.create_context().run({"x": feed})
    first["y"][:] = 99
    first["z"][:] = 99
    assert np.array_equal(feed, np.ones(3, np.float32))
    again = engine.create_context().run({"x": feed})
    assert np.array_equal(again["y"], np.arange(3, dtype=np.float32))


def test_disabling_fold_constants_holds_inside_simplify():
    s = numpy_helper.from_array(np.array([2, 3], np.int64), "s")
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Reshape", ["i", "s"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    engine = wb.build(wb.load_onnx(_model(nodes, [x], [y], [s])), wb.BuilderConfig(device="cpu", disable="fold_constants"))
    assert engine.reports["counters"].get("fold_constants", 0) == 0
    assert engine.build_info["disabled"] == ["fold_constants"]


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_engine_load_of_a_bad_path_is_an_engine_error(tmp_path, kind):
    path = tmp_path / "e.wbe"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(EngineFormatError, match="e.wbe"):
        wb.Engine.load(path)
