"""Linters find seeded problems, name the layers and the reason, and stay quiet on a clean engine;
``workbench lint ENGINE [--json]``."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import workbench as wb
from tests.explore.conftest import synthetic_profile
from tests.support.cli import assert_user_error, run_cli
from workbench.explore import findings_table

PEAKS = {"gflops": 50.0, "gbps": 20.0, "source": "test peaks"}


def at_roofline(peaks=PEAKS):
    """Layer times exactly at the roofline of ``peaks`` (a layer with no cost: 1 us)."""
    def ms(i, layer):
        t = max(layer.flops / (peaks["gflops"] * 1e9), layer.bytes_moved / (peaks["gbps"] * 1e9))
        return t * 1e3 or 1e-3
    return ms


def qdq_model(path) -> None:
    """MatMul -> QuantizeLinear (a graph output, so nothing can fold it) -> DequantizeLinear ->
    Transpose -> Relu."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])
    q = helper.make_tensor_value_info("q", TensorProto.INT8, [4, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.random.default_rng(0).standard_normal(64).astype(np.float32))
    s = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    z = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dequant"),
             helper.make_node("Transpose", ["d"], ["t"], perm=[1, 0], name="tr"),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [x], [y, q], [w, s, z])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("lint") / "qdq.onnx"
    qdq_model(str(path))
    return wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="cpu", precision="fp16")), path


def rules(findings) -> dict:
    return {f.rule: f for f in findings}


def layers_of(findings, rule: str) -> set:
    return {n for f in findings if f.rule == rule for n in f.layers}


def test_clean_engine_has_no_findings(fp32, fp16):
    assert wb.lint(fp32) == [] and wb.lint(fp16) == []
    assert wb.lint(fp32, synthetic_profile(fp32, at_roofline()), peaks=PEAKS) == []


def test_seeded_problems_are_found_with_their_layers(seeded):
    engine, _ = seeded
    names = {l.op: l.name for l in engine.layers}
    assert {"QuantizeLinear", "DequantizeLinear", "Transpose"} <= set(names)
    # the MatMul runs 100x slower than its roofline; the Transpose takes as long (about half the time)
    base = at_roofline()
    slow = 100 * base(0, next(l for l in engine.layers if l.op == "MatMul"))

    def ms(i, layer):
        return slow if layer.op in ("MatMul", "Transpose") else base(i, layer)

    findings = wb.lint(engine, synthetic_profile(engine, ms), peaks=PEAKS)
    found = rules(findings)
    assert set(found) == {"fp32-in-low-precision", "conversions", "unfused-qdq", "below-roofline"}
    assert set(found["unfused-qdq"].layers) == {names["QuantizeLinear"], names["DequantizeLinear"]}
    # one finding per reason the precision assigner gave
    assert layers_of(findings, "fp32-in-low-precision") == {names["QuantizeLinear"], names["DequantizeLinear"]}
    for f in findings:
        if f.rule == "fp32-in-low-precision":
            assert "fp16 engine" in f.message and "kept in fp32" in f.message
    assert found["conversions"].layers == [names["Transpose"]] and "Transpose" in found["conversions"].message
    assert names["MatMul"] in found["below-roofline"].layers
    assert found["below-roofline"].severity == "info"
    table = findings_table(findings)
    assert list(table.columns) == ["rule", "severity", "message", "count", "layers"] and len(table) == len(findings)
    assert list(table["severity"]).index("info") == len(findings) - 1  # warnings first


def test_conversion_share_threshold(seeded):
    engine, _ = seeded
    prof = synthetic_profile(engine, lambda i, layer: 1.0 if layer.op == "Transpose" else 99.0)
    assert "conversions" not in rules(wb.lint(engine, prof, peaks=PEAKS))  # 0.25 %: under 5 %
    assert "conversions" in rules(wb.lint(engine, prof, peaks=PEAKS, conversion_share=0.002))


def test_a_users_fp32_override_is_not_reported(seeded):
    engine, _ = seeded
    e = copy.deepcopy(engine)
    e.reports["precision"] = [dict(r, reason="override for 'quant'") for r in e.reports["precision"]]
    assert "fp32-in-low-precision" not in rules(wb.lint(e))


def _as_gpu(engine, cuda_graph=True, eager_layer=None):
    e = copy.deepcopy(engine)
    e.target = {"backend": "gpu", "device": "test", "arch": "sm_90"}
    e.plan.options.cuda_graph = cuda_graph
    for layer in e.layers:
        layer.tactic_table = [{"tactic": "t", "config": {}, "ms": 0.01, "graph": True, "chosen": True}]
    if eager_layer is not None:
        e.layers[eager_layer].tactic_table = [{"tactic": "t", "config": {}, "ms": 0.01, "graph": False,
                                              "not_captured": "host sync inside", "chosen": True}]
    return e


def test_eager_segments_on_gpu_plans(fp32):
    assert "eager-segments" not in rules(wb.lint(_as_gpu(fp32)))
    found = rules(wb.lint(_as_gpu(fp32, eager_layer=2)))["eager-segments"]
    assert found.layers == [fp32.layers[2].name] and "host sync inside" in found.message
    everything = rules(wb.lint(_as_gpu(fp32, cuda_graph=False)))["eager-segments"]
    assert len(everything.layers) == len(fp32.layers)
    prof = synthetic_profile(fp32, at_roofline())
    prof.attrs["eager_layers"] = [fp32.layers[4].name]
    assert rules(wb.lint(_as_gpu(fp32), prof, peaks=PEAKS))["eager-segments"].layers == [fp32.layers[4].name]


@pytest.mark.slow
def test_cli_lint(seeded, fp32, tmp_path):
    engine, _ = seeded
    engine.save(tmp_path / "seeded.wbe")
    fp32.save(tmp_path / "clean.wbe")
    p = run_cli("lint", tmp_path / "seeded.wbe", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert {f["rule"] for f in out["findings"]} >= {"unfused-qdq", "fp32-in-low-precision"}
    assert all(f["layers"] and f["message"] for f in out["findings"])
    assert run_cli("lint", tmp_path / "seeded.wbe", "--strict").returncode == 1
    p = run_cli("lint", tmp_path / "clean.wbe")
    assert p.returncode == 0 and "no findings" in p.stdout
    assert_user_error(run_cli("lint", tmp_path / "missing.wbe"), "does not exist")


def test_cli_profile_mode_replay_on_a_cpu_engine_is_a_user_error(fp32, tmp_path):
    fp32.save(tmp_path / "e.wbe")
    assert_user_error(run_cli("profile", tmp_path / "e.wbe", "--mode", "replay", "--runs", "1"), "replay", "CPU")
