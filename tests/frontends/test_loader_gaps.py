"""Malformed graphs refused at load against the operator schemas (arity, attribute types), ranks
capped, local functions checked (cycles, missing inputs), sparse initializers densified under the
memory budget, one nesting limit from loader to saved engine, and onnx-ir's own errors turned into
one-line load errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.core.limits import MAX_NESTING, MAX_RANK
from workbench.errors import ModelLoadError, ModelTooLargeError, ResourceLimitError


def _x(name, shape=(2, 4), dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _model(nodes, inputs=None, outputs=None, inits=(), sparse=(), functions=()):
    g = helper.make_graph(nodes, "g", inputs or [_x("x")], outputs or [_x("y")], initializer=list(inits),
                          sparse_initializer=list(sparse))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             functions=list(functions))


def _gemm_alpha_ints():
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="gemm0")
    node.attribute.append(helper.make_attribute("alpha", [1, 2]))
    return _model([node], outputs=[_x("y", (2, 2))], inits=[numpy_helper.from_array(np.ones((4, 2), np.float32), "w")])


def _undefined_attr(op="LeakyRelu", attr="alpha"):
    node = helper.make_node(op, ["x"], ["y"], name="act0")
    a = node.attribute.add()
    a.name, a.type = attr, onnx.AttributeProto.UNDEFINED
    return _model([node])


def _function_model(body, formal_in, call_in, name="f"):
    fn = helper.make_function("local", name, formal_in, ["b"], body, [helper.make_opsetid("", 17)])
    return _model([helper.make_node(name, call_in, ["y"], domain="local", name="call0")], functions=[fn])


CASES = {
    "layernorm without scale": (lambda: _model([helper.make_node("LayerNormalization", ["x"], ["y"], name="ln0")]),
                                r"'ln0'.*LayerNormalization.*1 inputs.*2 to 3"),
    "one-input MatMul": (lambda: _model([helper.make_node("MatMul", ["x"], ["y"], name="mm0")]), r"'mm0'.*MatMul.*takes 2"),
    "op edited to Conv": (lambda: _model([helper.make_node("Conv", ["x"], ["y"], name="c0")]), r"'c0'.*Conv"),
    "required input left empty": (lambda: _model([helper.make_node("LayerNormalization", ["x", ""], ["y"], name="ln1")]),
                                  r"'ln1'.*required input 1 \(Scale\) empty"),
    "too many outputs": (lambda: _model([helper.make_node("Relu", ["x"], ["y", "z"], name="r0")]), r"'r0'.*2 outputs"),
    "Gemm alpha as ints": (_gemm_alpha_ints, r"'gemm0'.*'alpha' is INTS; Gemm needs FLOAT"),
    "UNDEFINED attribute": (_undefined_attr, r"'act0'.*'alpha' has no type \(UNDEFINED\)"),
    "unknown attribute": (lambda: _model([helper.make_node("Relu", ["x"], ["y"], name="r1", bogus=3)]),
                          r"'r1'.*'bogus'.*does not define"),
    "required attribute missing": (lambda: _model([helper.make_node("Transpose", ["x"], ["y"], name="t0"),
                                                   helper.make_node("Cast", ["y"], ["z"], name="cast0")],
                                                  outputs=[_x("z")]), r"'cast0'.*required attribute 'to'"),
    "function body with a cycle": (lambda: _function_model([helper.make_node("Relu", ["c"], ["b"]),
                                                            helper.make_node("Relu", ["b"], ["c"])], ["a"], ["x"]),
                                   r"function 'local::f'.*cycle"),
    "function called with too few inputs": (lambda: _function_model([helper.make_node("Add", ["a", "a2"], ["b"])],
                                                                    ["a", "a2"], ["x"]),
                                            r"'call0'.*1 of the 2 inputs.*'a2'"),
    "function body with a bad node": (lambda: _function_model([helper.make_node("MatMul", ["a"], ["b"], name="inner")],
                                                              ["a"], ["x"]), r"function 'local::f'.*'inner'.*MatMul"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_graph_refused_at_load(case):
    make, match = CASES[case]
    with pytest.raises(ModelLoadError, match=match) as e:
        wb.load_onnx(make().SerializeToString())
    assert "\n" not in str(e.value)


def test_function_input_the_body_never_reads_may_be_omitted():
    model = _function_model([helper.make_node("Relu", ["a"], ["b"])], ["a", "unused"], ["x"])
    engine = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu"))
    x = np.array([[-1, 2, -3, 4], [5, -6, 7, -8]], np.float32)
    np.testing.assert_array_equal(engine.create_context().run({"x": x})["y"], np.maximum(x, 0))


@pytest.mark.parametrize("where", ["initializer", "graph input"])
def test_rank_over_the_limit_refused(where):
    rank = MAX_RANK + 1
    if where == "initializer":
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1] * rank, raw_data=b"\0" * 4)
        model = _model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[w])
    else:
        model = _model([helper.make_node("Relu", ["x"], ["y"])], inputs=[_x("x", [1] * rank)])
    with pytest.raises(ModelTooLargeError, match=f"rank {rank}"):
        wb.load_onnx(model)


def _sparse_model(dims=(2, 4), values=(5.0, 6.0), indices=(1, 6)):
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array(values, np.float32), "w"),
                                   numpy_helper.from_array(np.array(indices, np.int64), "wi"), list(dims))
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], sparse=[sp])


def test_sparse_initializer_densified():
    model = _sparse_model()
    engine = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu"))
    y = engine.create_context().run({"x": np.zeros((2, 4), np.float32)})["y"]
    np.testing.assert_array_equal(y, [[0, 5, 0, 0], [0, 0, 6, 0]])
    assert len(model.graph.sparse_initializer) == 1  # the caller's proto is left as it was


def test_sparse_initializer_with_coordinates_densified():
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([7.0], np.float32), "w"),
                                   numpy_helper.from_array(np.array([[1, 3]], np.int64), "wi"), [2, 4])
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])], sparse=[sp])
    y = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu")).create_context().run(
        {"x": np.zeros((2, 4), np.float32)})["y"]
    assert y[1, 3] == 7 and y.sum() == 7


def test_sparse_initializer_over_the_budget_refused():
    model = _sparse_model(dims=(1024, 1024), indices=(1, 6))  # 4 MiB dense
    with pytest.raises(ResourceLimitError, match="sparse initializers needs 4194304 bytes.*budget is 1000000"):
        wb.load_onnx(model, memory_budget=1_000_000)


@pytest.mark.parametrize("indices, match", [((1, 8), "outside"), ((-1, 2), "outside"), ((3, 3), "twice")])
def test_sparse_initializer_bad_indices_refused(indices, match):
    with pytest.raises(ModelLoadError, match=f"sparse initializer 'w'.*{match}"):
        wb.load_onnx(_sparse_model(indices=indices))


def _nested_if(depth):
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "leaf", [], [_x("o")])
    inner = leaf
    for d in range(depth - 1):
        inner = helper.make_graph([helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=leaf)],
                                  f"b{d}", [], [_x("o")])
    node = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=leaf)
    return _model([node], inputs=[_x("x"), _x("c", [], TensorProto.BOOL)])


def test_nesting_at_the_limit_loads_builds_saves_and_runs(tmp_path):
    engine = wb.build(wb.load_onnx(_nested_if(MAX_NESTING)), wb.BuilderConfig(device="cpu"))
    engine.save(tmp_path / "deep.engine")
    loaded = wb.Engine.load(tmp_path / "deep.engine")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(loaded.create_context().run({"x": x, "c": np.array(True)})["y"], x)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 2 * MAX_NESTING])
def test_nesting_past_the_limit_refused_at_load(depth):
    with pytest.raises(ModelTooLargeError, match=f"nested {MAX_NESTING + 1} deep; the limit is {MAX_NESTING}"):
        wb.load_onnx(_nested_if(depth))


def test_onnx_ir_errors_become_load_errors(monkeypatch):
    import onnx_ir

    class SerdeError(RuntimeError):
        pass

    def boom(proto):
        raise SerdeError("Error calling deserialize_model with: <a very long\nmulti-line dump>")

    monkeypatch.setattr(onnx_ir.serde, "deserialize_model", boom)
    with pytest.raises(ModelLoadError, match="cannot read the model graph: SerdeError: Error calling") as e:
        wb.load_onnx(_model([helper.make_node("Relu", ["x"], ["y"])]))
    assert "\n" not in str(e.value)
