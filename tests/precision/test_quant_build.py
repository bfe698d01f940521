"""int8 / fp8 CPU engines built with calibration (precision/quantize.py placement, the quantized CPU
tactics): accuracy of the exporter test models against fp32, the placement rules and their
reasons, the refusals, and an int8 engine's round trip through save / load."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.paths import MODELS
from workbench.core.numerics import rel_err
from workbench.errors import BuildError
from workbench.precision import quantize as quantize_step
from workbench.precision.calibration import Calibration, CalibrationTable

# Relative L2 error vs the fp32 engine of the same model (the largest over its outputs, on each of
# two held-out random batches), calibrated with minmax on 4 other batches. Measured on these tiny
# random-weight models (transformers' definitions, initializer_range 0.2: peaky activations) at the
# time of writing: int8 resnet 0.012, mobilenetv2 0.0037, bert 0.025, vit 0.084 (pooler_output: a
# 2-row tanh), gpt2 0.032, llama 0.059; fp8 (e4m3: 3 significand bits, ~3% per rounding) resnet 0.080,
# mobilenetv2 0.014, bert 0.104, vit 0.162, gpt2 0.104, llama 0.136. The bounds leave ~1.5x room.
BOUNDS = {
    "resnet_legacy": {"int8": 0.03, "fp8": 0.15},
    "mobilenetv2_legacy": {"int8": 0.01, "fp8": 0.03},
    "bert_legacy": {"int8": 0.05, "fp8": 0.2},
    "vit_legacy": {"int8": 0.15, "fp8": 0.3},
    "gpt2_legacy": {"int8": 0.06, "fp8": 0.2},
    "llama_legacy": {"int8": 0.1, "fp8": 0.25},
}
WEIGHTED = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul")


def _batches(name: str, seeds) -> tuple[dict, list[dict]]:
    """The model's saved inputs, and random batches like them (token ids in [0, 100), the saved masks)."""
    data = np.load(os.path.join(MODELS, f"{name}.npz"))
    feeds = {k: data[k] for k in data.files if not k.startswith("output:")}
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        batch = {}
        for k, v in feeds.items():
            if v.dtype.kind == "f":
                batch[k] = rng.standard_normal(v.shape).astype(v.dtype)
            elif k == "input_ids":
                batch[k] = rng.integers(0, 100, v.shape).astype(v.dtype)
            else:
                batch[k] = v
        out.append(batch)
    return feeds, out


_FP32: dict[str, object] = {}


def _fp32_engine(name, net, shapes):
    if name not in _FP32:
        _FP32[name] = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, autotune=False))
    return _FP32[name]


def _case(name, fmt):
    fast = (name, fmt) == ("bert_legacy", "int8")
    return pytest.param(name, fmt, id=f"{name}-{fmt}", marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize("name,fmt", [_case(n, f) for n in BOUNDS for f in ("int8", "fp8")])
def test_exporter_models_within_their_bounds(name, fmt):
    feeds, cal = _batches(name, range(4))
    _, held = _batches(name, (100, 101))
    net = wb.load_onnx(os.path.join(MODELS, f"{name}.onnx"))
    shapes = {k: v.shape for k, v in feeds.items()}
    # autotune off: each layer takes its first candidate (the fast tactics; the others are pinned to
    # them bit for bit in test_quant_numerics.py)
    eng = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, precision=fmt, calibration=Calibration(cal),
                                         autotune=False))
    weighted = [l for l in eng.plan.layers if l.op in WEIGHTED]
    assert weighted and all(l.precision == fmt for l in weighted), [(l.name, l.precision) for l in weighted]
    elem = np.dtype(ml_dtypes.float8_e4m3fn) if fmt == "fp8" else np.dtype(np.int8)
    assert all(eng.plan.constants[l.inputs[1]].dtype == elem for l in weighted if l.attrs["q_weight_const"])
    # no other layer is quantized but an unmasked attention at fp8 (Q, K, V and its softmax in e4m3)
    others = {l.name: l.precision for l in eng.plan.layers if l.op not in WEIGHTED}
    attention = {l.name for l in eng.plan.layers if l.op == "Attention" and not (len(l.inputs) > 3 and l.inputs[3])}
    assert all(p == ("fp8" if fmt == "fp8" and n in attention else "fp32") for n, p in others.items()), others
    ref, ctx = _fp32_engine(name, net, shapes).create_context(), eng.create_context()
    for batch in held:
        want, got = ref.run(batch), ctx.run(batch)
        err = max(rel_err(got[k], v) for k, v in want.items())
        assert 0 < err < BOUNDS[name][fmt], (name, fmt, err)


# ----------------------------------------------------------------------------- placement and reasons


def _model(nodes, inits, inputs, outputs, opset=17) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8).SerializeToString()


def _attention_like() -> bytes:
    """x @ W -> Softmax, and a MatMul of two activations (scores of x with itself)."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
         helper.make_node("Softmax", ["h"], ["p"], axis=-1, name="softmax"),
         helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1], name="t"),
         helper.make_node("MatMul", ["x", "xt"], ["s"], name="scores")],
        {"w": rng.standard_normal((16, 8)).astype(np.float32)},
        [helper.make_tensor_value_info("x", f, [2, 5, 16])],
        [helper.make_tensor_value_info("p", f, [2, 5, 8]), helper.make_tensor_value_info("s", f, [2, 5, 5])])


def _cal(n=2, shape=(2, 5, 16), name="x"):
    rng = np.random.default_rng(1)
    return Calibration([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)])


def test_placement_rules_and_reasons():
    eng = wb.build(wb.load_onnx(_attention_like()), wb.BuilderConfig(device="cpu", precision="int8",
                                                                      calibration=_cal()))
    rows = {r["layer"]: r for r in eng.reports["precision"]}
    assert rows["proj"]["precision"] == "int8" and "minmax calibration" in rows["proj"]["reason"]
    assert rows["proj"]["requested"] == "int8"
    assert rows["softmax"]["precision"] == "fp32" and rows["softmax"]["reason"] == "Softmax kept in fp32 by rule"
    assert rows["scores"]["precision"] == "fp32" and "two activations" in rows["scores"]["reason"]
    proj = eng.plan.layer("proj")
    assert proj.attrs["q_source"] == "calibration:minmax" and proj.attrs["q_weight_scale"].shape == (8,)
    assert eng.plan.constants[proj.inputs[1]].dtype == np.int8
    assert "w" not in eng.plan.constants  # the float weight is not kept
    x = np.random.default_rng(2).standard_normal((2, 5, 16)).astype(np.float32)
    fp32 = wb.build(wb.load_onnx(_attention_like()), wb.BuilderConfig(device="cpu")).create_context().run({"x": x})
    got = eng.create_context().run({"x": x})
    assert 0 < rel_err(got["p"], fp32["p"]) < 2e-2
    np.testing.assert_array_equal(got["s"], fp32["s"])  # fp32 by rule: unchanged


def test_no_calibration_range_is_a_reason(monkeypatch):
    real = quantize_step.Placement.__init__

    def drop_x(self, plan, sources, device):
        real(self, plan, sources, device)
        t = self.sources.calibration
        ranges = {n: t.range(n) for n in t.names() if n != "x"}
        self.sources.calibration = CalibrationTable(t.method, ranges, ranges, inputs=t.inputs, covered=t.covered)

    monkeypatch.setattr(quantize_step.Placement, "__init__", drop_x)
    eng = wb.build(wb.load_onnx(_attention_like()), wb.BuilderConfig(device="cpu", precision="fp8", calibration=_cal()))
    row = next(r for r in eng.reports["precision"] if r["layer"] == "proj")
    assert row["precision"] == "fp32" and row["reason"] == "no calibration range for input 'x'"


def test_int8_build_without_calibration_is_one_line_error():
    with pytest.raises(BuildError) as err:
        wb.build(wb.load_onnx(_attention_like()), wb.BuilderConfig(device="cpu", precision="int8"))
    msg = str(err.value)
    assert "--calib" in msg and "\n" not in msg
    with pytest.raises(BuildError, match="--calib"):
        wb.build(wb.load_onnx(_attention_like()), wb.BuilderConfig(device="cpu", layer_precisions={"proj": "fp8"}))


def test_calibrates_only_when_a_layer_may_be_quantized(monkeypatch):
    calls = []
    from workbench.precision import calibration

    real = calibration.calibrate
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    net = wb.load_onnx(_attention_like())
    wb.build(net, wb.BuilderConfig(device="cpu", calibration=_cal()))  # fp32: the data is not needed
    assert calls == []
    eng = wb.build(net, wb.BuilderConfig(device="cpu", calibration=_cal(), layer_precisions={"proj": "int8"}))
    assert calls == [1]
    assert {l.name: l.precision for l in eng.plan.layers if l.op == "MatMul"} == {"proj": "int8", "scores": "fp32"}


def test_int32_overflow_keeps_a_layer_in_float():
    k = 140_000  # 140000 * 128 * 127 products could pass 2**31
    rng = np.random.default_rng(3)
    data = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="wide")],
                  {"w": rng.standard_normal((k, 2)).astype(np.float32)},
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    eng = wb.build(wb.load_onnx(data), wb.BuilderConfig(device="cpu", precision="int8", calibration=_cal(1, (1, k))))
    row = next(r for r in eng.reports["precision"] if r["layer"] == "wide")
    assert row["precision"] == "fp32" and "overflow an int32 accumulator" in row["reason"]


def test_int8_engine_round_trip(tmp_path):
    name = "resnet_legacy"
    feeds, cal = _batches(name, range(2))
    net = wb.load_onnx(os.path.join(MODELS, f"{name}.onnx"))
    eng = wb.build(net, wb.BuilderConfig(device="cpu", precision="int8", calibration=Calibration(cal)))
    path = tmp_path / "r.wbe"
    eng.save(str(path))
    back = wb.Engine.load(str(path))
    quantized = [l for l in back.plan.layers if l.precision == "int8"]
    assert len(quantized) == 7
    for layer in quantized:
        assert back.plan.constants[layer.inputs[1]].dtype == np.int8
        orig = eng.plan.layer(layer.name)
        np.testing.assert_array_equal(layer.attrs["q_weight_scale"], orig.attrs["q_weight_scale"])
        assert layer.attrs["q_input_scale"] == orig.attrs["q_input_scale"] and layer.tactic == orig.tactic
    np.testing.assert_array_equal(back.create_context().run(feeds)["logits"], eng.create_context().run(feeds)["logits"])
    described = {d["name"]: d["precision"] for d in back.describe()["layers"]}
    assert sorted(p for p in described.values() if p != "fp32") == ["int8"] * 7
