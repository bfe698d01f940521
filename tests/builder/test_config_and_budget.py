"""BuilderConfig fields validated with one-line errors; folding declines past the memory budget
with a reason instead of running out of memory; one nesting limit from loader to format."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.errors import WorkbenchError


@pytest.mark.parametrize(("field", "value"), [
    ("max_elements", -1), ("max_elements", 0), ("max_elements", "abc"), ("max_elements", [1]),
    ("max_elements", True), ("memory_budget", 0), ("memory_budget", "1G"), ("max_loop_iterations", -5),
    ("device", [1]), ("precision", None), ("layer_precisions", [1]), ("disable", 5), ("optimize", "no"),
    ("timing_cache", 3), ("progress", "yes"), ("shapes", 7),
])
def test_bad_config_fields_give_one_line_errors(field, value):
    with pytest.raises(WorkbenchError) as e:
        wb.BuilderConfig(**{field: value})
    assert field in str(e.value) or "device" in str(e.value) or "precision" in str(e.value)
    assert "\n" not in str(e.value)


def test_default_budget_is_a_positive_byte_count():
    cfg = wb.BuilderConfig()
    assert isinstance(cfg.memory_budget, int) and cfg.memory_budget > 0
    assert wb.BuilderConfig(memory_budget=123456).memory_budget == 123456


def _broadcast_model(n):
    """A small model whose constant Add broadcasts to n x n (n*n*4 bytes if folded)."""
    a = numpy_helper.from_array(np.ones((n, 1), np.float32), "a")
    b = numpy_helper.from_array(np.ones((1, n), np.float32), "b")
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["big"]),
                           helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
                           helper.make_node("Add", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [a, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_folding_declines_past_the_budget_with_a_reason():
    engine = wb.build(wb.load_onnx(_broadcast_model(3000)),
                      wb.BuilderConfig(device="cpu", memory_budget=8 << 20))  # 36 MB would be folded
    declined = [f for f in engine.reports["fusions"] if f["rule"] == "fold_constants" and f["status"] == "declined"]
    assert declined and "memory budget" in declined[0]["reason"]
    out = engine.create_context(memory_budget=64 << 20).run({"x": np.zeros(1, np.float32)})
    assert out["y"].tolist() == [3000.0 * 3000 * 2]


def test_folding_reads_a_shared_initializer_once():
    w = numpy_helper.from_array(np.ones((256, 1024), np.float32), "w")  # 1 MiB
    g = helper.make_graph([helper.make_node("Concat", ["w"] * 200, ["c"], axis=0),
                           helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0),
                           helper.make_node("Add", ["x", "s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    # 200 copies would be 200 MiB of inputs; counted once it is 1 MiB, the output 200 MiB is over
    engine = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu", memory_budget=64 << 20))
    reasons = [f["reason"] for f in engine.reports["fusions"] if f["status"] == "declined"]
    assert any("outputs would take" in r for r in reasons)


def test_nesting_limit_shared_by_loader_and_format():
    from workbench.core.limits import MAX_NESTING
    from workbench.format.serialize import MAX_GRAPH_DEPTH
    from workbench.frontends.onnx.safe_read import read_model
    import inspect
    assert MAX_GRAPH_DEPTH == MAX_NESTING
    assert inspect.signature(read_model).parameters["max_nesting"].default == MAX_NESTING
