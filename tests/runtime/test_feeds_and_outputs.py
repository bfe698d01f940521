"""What a context does with feeds and outputs: wrong feeds are named, nothing is cast silently or
mutated, NaN/Inf propagate (debug names the first layer), outputs are the caller's to write."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.cli import small_model
from workbench.errors import InputError, InputTypeError
from workbench.runtime import NonFiniteWarning


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    small_model(path)
    return wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu", shapes={"x": (2, 4)}))


@pytest.mark.parametrize("feeds,exc,words", [
    ({}, InputError, ["missing input 'x'"]),
    ({"x": np.ones((2, 4), np.float32), "y": np.ones(2)}, InputError, ["unexpected input 'y'"]),
    ({"x": np.ones((2, 4), np.float64)}, InputTypeError, ["'x'", "float64", "expected float32"]),
    ({"x": np.ones((2, 4), np.int32)}, InputTypeError, ["'x'", "int32"]),
    ({"x": np.ones((8,), np.float32)}, InputError, ["'x'", "rank 1", "expected rank 2"]),
    ({"x": np.ones((2, 5), np.float32)}, InputError, ["'x'", "[2, 5]", "[2, 4]"]),
    ({"x": [[1.0] * 4] * 2}, InputTypeError, ["'x'", "list"]),
])
def test_wrong_feeds_are_named(engine, feeds, exc, words):
    with pytest.raises(exc) as info:
        engine.create_context().run(feeds)
    for w in words:
        assert w in str(info.value)
    assert isinstance(info.value, (TypeError, ValueError))


def test_no_silent_cast_and_input_not_mutated(engine):
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    before = x.copy()
    engine.create_context().run({"x": x})
    assert np.array_equal(x, before)


def test_nan_inf_propagate_and_debug_names_first_layer(engine):
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    x[0, 0] = np.nan
    y = engine.create_context().run({"x": x})["y"]
    assert np.isnan(y[0]).any() and np.isfinite(y[1]).all()
    ctx = engine.create_context(debug=True)
    with pytest.warns(NonFiniteWarning, match="first non-finite value produced by layer"):
        ctx.run({"x": x})
    layer, tensor = ctx.first_nonfinite
    assert layer == engine.layers[0].name


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


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
