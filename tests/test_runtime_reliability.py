"""RELIABILITY.md rows for the runtime: wrong feeds, NaN/Inf, threads, deterministic engines,
element caps on data-dependent allocations."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.errors import InputError, InputTypeError, WorkbenchError
from workbench.runtime import NonFiniteWarning
from tests.test_cli import small_model
from tests.exporter_models import load_io, model_path


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


def test_threads_with_own_contexts_match_serial():
    inputs, _ = load_io("bert_legacy")
    engine = wb.build(wb.load_onnx(model_path("bert_legacy")), wb.BuilderConfig(device="cpu"))
    rng = np.random.default_rng(3)
    feeds = []
    for _ in range(8):
        f = dict(inputs)
        f["input_ids"] = rng.integers(0, 100, size=inputs["input_ids"].shape).astype(np.int64)
        feeds.append(f)
    serial = [engine.create_context().run(f) for f in feeds]
    local = threading.local()

    def work(i):
        if not hasattr(local, "ctx"):
            local.ctx = engine.create_context()
        return local.ctx.run(feeds[i])

    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(work, range(8)))
    for a, b in zip(serial, parallel):
        for k in a:
            assert np.array_equal(a[k], b[k])


def test_one_context_shared_by_threads_is_serialized(engine):
    ctx = engine.create_context()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(32)]
    expected = [engine.create_context().run({"x": x})["y"] for x in xs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda x: ctx.run({"x": x})["y"], xs))
    for a, b in zip(expected, got):
        assert np.array_equal(a, b)


def test_same_build_gives_byte_identical_engine(tmp_path):
    net = wb.load_onnx(model_path("resnet_legacy"))
    inputs, _ = load_io("resnet_legacy")
    cfg = wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()})
    wb.build(net, cfg).save(tmp_path / "a.wbe")
    wb.build(wb.load_onnx(model_path("resnet_legacy")), cfg).save(tmp_path / "b.wbe")
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.wbe", "b.wbe")]
    assert digest[0] == digest[1]


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
