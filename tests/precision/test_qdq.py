"""Q/DQ models (workbench/passes/qdq.py + precision/quantize.py): a model quantized by onnxruntime's
``quantize_static`` and hand-made TensorRT-Model-Optimizer-style models (symmetric int8, fp8 opset
19) build to int8 / fp8 layers with the weights stored quantized, and run as onnxruntime runs them.

Tolerances. onnxruntime's reference execution of a Q/DQ model (ORT_DISABLE_ALL: every
QuantizeLinear / DequantizeLinear run as written, float Conv / MatMul in between) is what the model
means; the engine computes the same quantized values with exact integer products, so it agrees to
float32 round-off (< 1e-5 relative) and, where the output is itself quantized, to within one step of
the output scale. onnxruntime's default session fuses the pairs into its own int8 kernels
(QLinearConv, requantization in fixed point): against it the engine is within a few (<= 4) steps of
the output scale for the default QUInt8 model. That session is not a reference for symmetric int8
on CPUs without VNNI (its u8s8 kernels saturate 16-bit pair sums: 30% off its own reference run),
so the symmetric model is compared with the reference execution only.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.paths import MODELS
from workbench.core.numerics import rel_err

quantization = pytest.importorskip("onnxruntime.quantization")


def _ort(model, feeds, fused: bool):
    so = ort.SessionOptions()
    if not fused:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, batches):
        self.it = iter(batches)

    def get_next(self):
        return next(self.it, None)


def _images(seed, n=1):
    rng = np.random.default_rng(seed)
    return [{"pixel_values": rng.standard_normal((2, 3, 64, 64)).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module", params=["QUInt8", "QInt8-symmetric"])
def resnet_qdq(request, tmp_path_factory):
    """resnet_legacy quantized by onnxruntime (QDQ format, per-channel, QInt8 weights)."""
    sym = request.param != "QUInt8"
    out = tmp_path_factory.mktemp("qdq") / f"resnet_{request.param}.onnx"
    quantization.quantize_static(
        os.path.join(MODELS, "resnet_legacy.onnx"), str(out), _Reader(_images(0, 4)), quant_format=quantization.QuantFormat.QDQ,
        per_channel=True, weight_type=quantization.QuantType.QInt8,
        activation_type=quantization.QuantType.QInt8 if sym else quantization.QuantType.QUInt8,
        extra_options={"ActivationSymmetric": sym})
    return request.param, out


def test_quantize_static_model_matches_onnxruntime(resnet_qdq):
    kind, path = resnet_qdq
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    eng = wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="cpu"))
    plan = eng.plan
    # no run-time dequantization of a weight (nor any Q/DQ layer: every pair folded into its neighbours)
    assert not [l.name for l in plan.layers if l.op == "DequantizeLinear" and l.inputs[0] in plan.constants]
    assert not [l.name for l in plan.layers if l.op in ("QuantizeLinear", "DequantizeLinear")]
    weighted = [l for l in plan.layers if l.op in ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul")]
    assert len(weighted) == 7 and all(l.precision == "int8" for l in weighted)
    stored = {k: v for k, v in inits.items() if k.endswith("_quantized") and v.dtype == np.int8 and v.ndim > 1}
    for layer in weighted:
        w = plan.constants[layer.inputs[1]]
        assert w.dtype == np.int8
        # the model's own int8 weights, bit for bit, with its scales
        assert any(v.shape == w.shape and np.array_equal(v, w) for v in stored.values()), layer.name
    assert not [k for k, v in plan.constants.items() if v.dtype == np.float32 and v.ndim > 1]  # no float weights kept
    out_scale = float(inits["logits_scale"])
    for seed in (10, 11):
        feeds = _images(seed)[0]
        got = eng.create_context().run(feeds)["logits"]
        ref = _ort(path, feeds, fused=False)["logits"]
        assert rel_err(got, ref) < 1e-5 and np.abs(got - ref).max() <= 1.01 * out_scale
        if kind == "QUInt8":
            fused = _ort(path, feeds, fused=True)["logits"]
            assert np.abs(got - fused).max() <= 4.01 * out_scale and rel_err(got, fused) < 3e-2


def test_quantize_static_model_reports(resnet_qdq):
    _, path = resnet_qdq
    eng = wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="cpu"))
    fused = [f for f in eng.reports["fusions"] if f["rule"] in ("fold_weight_dequantize", "fold_qdq_pair")]
    assert sum(f["rule"] == "fold_weight_dequantize" and f["status"] == "fired" for f in fused) == 14  # 7 weights, 7 biases
    assert all(f["status"] == "fired" for f in fused)
    rows = {r["layer"]: r for r in eng.reports["precision"]}
    conv = next(l for l in eng.plan.layers if l.precision == "int8")
    assert "the model's Q/DQ" in rows[conv.name]["reason"]
    # the folded Q/DQ nodes are named on the layers that absorbed them
    assert any("DequantizeLinear" in n for n in conv.onnx_nodes)
    assert conv.attrs["q_source"] == "qdq"


def test_qdq_layer_forced_to_fp32_keeps_the_models_rounding(resnet_qdq):
    """A per-layer override to fp32 runs that layer in float; the Q/DQ rounding of its input stays
    (as a QuantizeLinear / DequantizeLinear layer pair), so the result is still the model's."""
    _, path = resnet_qdq
    first = "/model/resnet/encoder/stages.0/layers.0/layer/layer.0/convolution/Conv"
    eng = wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="cpu", layer_precisions={first: "fp32"}))
    layer = next(l for l in eng.plan.layers if first in l.onnx_nodes)
    assert layer.precision == "fp32" and not any(k.startswith("q_") for k in layer.attrs)
    pairs = [l for l in eng.plan.layers if l.op in ("QuantizeLinear", "DequantizeLinear")]
    assert len(pairs) == 2 and layer.inputs[0] == pairs[1].outputs[0]
    assert all("keeps the model's int8 Q/DQ rounding" in r["reason"] for r in eng.reports["precision"]
               if r["op"] in ("QuantizeLinear", "DequantizeLinear"))
    feeds = _images(12)[0]
    got = eng.create_context().run(feeds)["logits"]
    assert rel_err(got, _ort(path, feeds, fused=False)["logits"]) < 1e-2


# ----------------------------------------------------------------------------- Model Optimizer style


def _modelopt_style(fmt: str) -> bytes:
    """Q/DQ as TensorRT Model Optimizer places them: symmetric (zero point 0) on the inputs of the
    convolutions and the MatMul and on the residual input of the Add; weights stored quantized
    (int8 per output channel, or float8e4m3fn per tensor) behind a DequantizeLinear; opset 19."""
    rng = np.random.default_rng(0)
    qmax = 448.0 if fmt == "fp8" else 127.0
    inits, nodes = [], []

    def const(name, arr, e4m3=False):
        if e4m3:
            raw = np.asarray(arr, np.float32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8).tobytes()
            inits.append(helper.make_tensor(name, TensorProto.FLOAT8E4M3FN, np.shape(arr), raw, raw=True))
        else:
            inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def zero(name, shape=()):
        return const(name, np.zeros(shape, np.float32), True) if fmt == "fp8" else const(name, np.zeros(shape, np.int8))

    def qdq(x, amax, tag):
        s, z = const(f"{tag}_s", np.array(amax / qmax, np.float32)), zero(f"{tag}_z")
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{tag}_q"], name=f"{tag}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [f"{tag}_dq"], name=f"{tag}_DQ"))
        return f"{tag}_dq"

    def weight(w, tag, axis):
        if fmt == "fp8":
            s = np.float32(np.abs(w).max() / 448)
            const(f"{tag}_wq", np.clip(w / s, -448, 448), True)
            const(f"{tag}_ws", np.array(s, np.float32))
            zero(f"{tag}_wz")
            attrs = {}
        else:
            s = (np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis)) / 127).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            const(f"{tag}_wq", np.clip(np.rint(w / s.reshape(shape)), -127, 127).astype(np.int8))
            const(f"{tag}_ws", s)
            zero(f"{tag}_wz", s.shape)
            attrs = {"axis": axis}
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_wq", f"{tag}_ws", f"{tag}_wz"], [f"{tag}_w"],
                                      name=f"{tag}_WDQ", **attrs))
        return f"{tag}_w"

    b1 = const("b1", (rng.standard_normal(8) * 0.1).astype(np.float32))
    b2 = const("b2", (rng.standard_normal(8) * 0.1).astype(np.float32))
    w1, w2 = (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    nodes.append(helper.make_node("Conv", [qdq("x", 3.0, "x"), weight(w1, "c1", 0), b1], ["c1"], pads=[1] * 4, name="conv1"))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"], name="relu1"))
    nodes.append(helper.make_node("Conv", [qdq("r1", 2.5, "r1"), weight(w2, "c2", 0), b2], ["c2"], pads=[1] * 4, name="conv2"))
    nodes.append(helper.make_node("Add", ["c2", qdq("r1", 2.5, "res")], ["s"], name="add"))
    nodes.append(helper.make_node("Relu", ["s"], ["r2"], name="relu2"))
    nodes.append(helper.make_node("Flatten", ["r2"], ["f"], name="flat"))
    w3 = (rng.standard_normal((8 * 36, 10)) * 0.1).astype(np.float32)
    nodes.append(helper.make_node("MatMul", [qdq("f", 4.0, "f"), weight(w3, "m", 1)], ["y"], name="head"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_modelopt_style_model(fmt):
    data = _modelopt_style(fmt)
    eng = wb.build(wb.load_onnx(data), wb.BuilderConfig(device="cpu"))
    plan = eng.plan
    weighted = [l for l in plan.layers if l.op in ("FusedConv", "MatMul")]
    assert [l.op for l in weighted] == ["FusedConv", "FusedConv", "MatMul"]
    assert all(l.precision == fmt for l in weighted)
    assert not [l for l in plan.layers if l.op in ("QuantizeLinear", "DequantizeLinear")]
    elem = np.dtype(ml_dtypes.float8_e4m3fn) if fmt == "fp8" else np.dtype(np.int8)
    assert all(plan.constants[l.inputs[1]].dtype == elem for l in weighted)
    # the residual Add fused into the second convolution, its input read through the model's scale
    conv2 = weighted[1]
    assert conv2.attrs["residual"] == 1 and conv2.attrs["q_residual_scale"] == pytest.approx(2.5 / (448 if fmt == "fp8" else 127))
    assert conv2.attrs["activation"] == "Relu"
    for seed in range(2):
        x = np.random.default_rng(seed).standard_normal((2, 8, 6, 6)).astype(np.float32)
        got = eng.create_context().run({"x": x})["y"]
        assert rel_err(got, _ort(data, {"x": x}, fused=False)["y"]) < 1e-5


def test_qdq_model_round_trips_through_save_and_load(tmp_path):
    data = _modelopt_style("fp8")
    eng = wb.build(wb.load_onnx(data), wb.BuilderConfig(device="cpu"))
    path = tmp_path / "m.wbe"
    eng.save(str(path))
    back = wb.Engine.load(str(path))
    for name, arr in eng.plan.constants.items():
        assert back.plan.constants[name].dtype == arr.dtype
        np.testing.assert_array_equal(back.plan.constants[name].view(np.uint8), arr.view(np.uint8))
    x = np.random.default_rng(3).standard_normal((2, 8, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(back.create_context().run({"x": x})["y"], eng.create_context().run({"x": x})["y"])


def test_pair_a_float_reader_keeps_the_models_rounding():
    """A pair whose reader quantizes nothing (here a graph output and an Add) is computed in float by
    the ONNX ops that define it: the clamp of an asymmetric uint8 pair (onnxruntime drops a Relu in
    front of one) stays."""
    s = np.float32(0.05)
    inits = [numpy_helper.from_array(np.array(s), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="DQ"),
             helper.make_node("Add", ["dq", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5]),
                               helper.make_tensor_value_info("dq", TensorProto.FLOAT, [4, 5])], inits)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    eng = wb.build(wb.load_onnx(data), wb.BuilderConfig(device="cpu"))
    assert not [l for l in eng.plan.layers if l.op in ("QuantizeLinear", "DequantizeLinear")]
    x = (np.random.default_rng(0).standard_normal((4, 5)) * 8).astype(np.float32)
    got = eng.create_context().run({"x": x})
    ref = _ort(data, {"x": x}, fused=False)
    np.testing.assert_array_equal(got["dq"], ref["dq"])
    np.testing.assert_array_equal(got["y"], ref["y"])
    assert got["dq"].min() == 0.0 and x.min() < 0  # the uint8 range's clamp
