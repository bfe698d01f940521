"""int8 / fp8 builds on the GPU keep a layer at the low precision only where the autotuner timed
it faster than fp16 (``builder/fallback.py``). The GPU builds are stood in for by engines whose
layers carry tactic tables with made-up times; the real thing runs in
tests/kernels/test_gpu_quant_gemm.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import workbench as wb
from workbench.builder import fallback
from workbench.cli import main


def _layer(name, precision, ms, op="FusedGemm"):
    return SimpleNamespace(name=name, op=op, precision=precision,
                           tactic_table=[{"tactic": "t", "chosen": True, "ms": ms}])


def _engine(layers):
    return SimpleNamespace(layers=layers, backend="gpu", build_info={"layer_precisions": {}}, build_stats={},
                           reports={"precision": [{"layer": l.name, "precision": l.precision, "reason": "as built"}
                                                  for l in layers]})


# layer -> (fp8 ms, fp16 ms): a is faster at fp8, b at fp16 (by more than the margin), c within it
TIMES = {"a": (0.010, 0.020), "b": (0.030, 0.012), "c": (0.010, 0.0098)}


def _builder(alt_extra_ms=0.0):
    seen = []

    def build(cfg):
        seen.append(cfg)
        if cfg.precision == "fp16":
            return _engine([_layer(n, "fp16", t16) for n, (_, t16) in TIMES.items()])
        pins = cfg.layer_precisions
        layers = [_layer(n, pins.get(n, "fp8"), t16 if pins.get(n) == "fp16" else t8) for n, (t8, t16) in TIMES.items()]
        if pins:  # what moving them costs the neighbours (a quantize launch of their own, say)
            layers.append(_layer("wb_quantize", "fp8", alt_extra_ms, op="QuantizeLinear"))
        return _engine(layers)
    return build, seen


def summed(engine):  # the fakes cannot run: their layers' summed times stand for a replay
    from workbench.builder.mixed import engine_ms

    return engine_ms(engine), "summed layer times"


def _cfg(**kw):
    return wb.BuilderConfig(device="cpu", precision="fp8", **kw)


def test_layers_faster_at_fp16_move_there_when_the_sum_drops():
    build, seen = _builder()
    eng = fallback.build_fastest(_cfg(), build, measure=summed)
    rep = eng.reports["precision_fallback"]
    assert [r["layer"] for r in rep["layers"]] == ["b"]  # c's 2% is inside the margin
    # (made-up tactic times: a + b + c placed, a + b at fp16 + c moved)
    assert rep["kept"] == "with_fallback" and rep["total_ms"] == {"placed": pytest.approx(0.050),
                                                                  "with_fallback": pytest.approx(0.032)}
    assert {l.name: l.precision for l in eng.layers if l.name in TIMES} == {"a": "fp8", "b": "fp16", "c": "fp8"}
    reason = next(r["reason"] for r in eng.reports["precision"] if r["layer"] == "b")
    assert "fp16 measured faster here: 12.0 us vs 30.0 us at fp8" in reason
    # every build is strict and shares one timing cache; the pins stay out of how it was asked for
    assert all(c.strict_precision for c in seen) and len({c.timing_cache for c in seen}) == 1
    assert [c.precision for c in seen] == ["fp8", "fp16", "fp8"] and seen[1].calibration is None
    assert eng.build_info["layer_precisions"] == {}
    assert set(eng.build_stats) == {"build_ms"}  # the whole step's build time replaces the placed build's
    assert rep["moved"] == ["b"] and "1 moved there" in fallback.fallback_text(rep)


def test_the_placed_engine_stays_when_moving_costs_more_than_it_saves():
    build, _ = _builder(alt_extra_ms=0.05)  # moving b saves 18 us and costs its neighbours 50
    eng = fallback.build_fastest(_cfg(), build, measure=summed)
    rep = eng.reports["precision_fallback"]
    assert rep["kept"] == "placed" and all(l.precision == "fp8" for l in eng.layers)
    # one try (nothing left to halve), timed at the made-up 32 us of layers plus the 50 us added
    assert [t["layers"] for t in rep["tries"]] == [1] and rep["tries"][0]["total_ms"] == pytest.approx(0.082)
    assert "kept at fp8: moving 1 of them took" in fallback.fallback_text(rep)


def test_when_moving_all_costs_more_the_half_with_the_largest_savings_is_tried():
    # four layers faster at fp16 (savings 40, 30, 20, 10 us); moving more than two costs their
    # neighbours 0.2 ms of quantize launches, so the first try loses and the second wins
    times = {"d1": (0.050, 0.010), "d2": (0.040, 0.010), "d3": (0.030, 0.010), "d4": (0.020, 0.010)}
    tried = []

    def build(cfg):
        if cfg.precision == "fp16":
            return _engine([_layer(n, "fp16", t16) for n, (_, t16) in times.items()])
        pins = cfg.layer_precisions
        tried.append(sorted(pins))
        layers = [_layer(n, pins.get(n, "fp8"), t16 if n in pins else t8) for n, (t8, t16) in times.items()]
        layers.append(_layer("wb_quantize", "fp8", 0.2 if len(pins) > 2 else 0.0, op="QuantizeLinear"))
        return _engine(layers)
    eng = fallback.build_fastest(_cfg(), build, measure=summed)
    rep = eng.reports["precision_fallback"]
    assert tried == [[], ["d1", "d2", "d3", "d4"], ["d1", "d2"]]
    assert rep["kept"] == "with_fallback" and rep["moved"] == ["d1", "d2"] and len(rep["tries"]) == 2
    assert {l.name: l.precision for l in eng.layers if l.name in times} == {"d1": "fp16", "d2": "fp16",
                                                                            "d3": "fp8", "d4": "fp8"}
    reasons = {r["layer"]: r["reason"] for r in eng.reports["precision"]}
    assert "measured faster" in reasons["d1"] and "measured faster" not in reasons["d3"]
    assert "2 moved there" in fallback.fallback_text(rep)


def test_layers_pinned_by_the_user_are_not_compared():
    build, seen = _builder()
    eng = fallback.build_fastest(_cfg(layer_precisions={"b": "fp8"}), build, measure=summed)
    assert eng.reports["precision_fallback"]["layers"] == [] and len(seen) == 2
    assert eng.build_info["layer_precisions"] == {"b": "fp8"}
    # named by one of its ONNX nodes, as layer_precisions also takes
    build, seen = _builder()
    original = build

    def with_nodes(cfg):
        eng = original(cfg)
        for l in eng.layers:
            l.onnx_nodes = [f"node_{l.name}"]
        return eng
    eng = fallback.build_fastest(_cfg(layer_precisions={"node_b": "fp8"}), with_nodes, measure=summed)
    assert eng.reports["precision_fallback"]["layers"] == []


def test_a_failed_fp16_build_leaves_the_placed_engine():
    build, _ = _builder()

    def failing(cfg):
        if cfg.precision == "fp16":
            raise wb.WorkbenchError("no fp16 tactic for layer b")
        return build(cfg)
    eng = fallback.build_fastest(_cfg(), failing, measure=summed)
    rep = eng.reports["precision_fallback"]
    assert rep["kept"] == "placed" and "no fp16 tactic" in rep["error"] and all(l.precision == "fp8" for l in eng.layers)
    assert "no fp16 tactic" in fallback.fallback_text(rep)


def test_where_it_applies():
    gpu = "gpu"
    assert fallback.applies(_cfg(), gpu) and fallback.applies(wb.BuilderConfig(precision="int8"), gpu)
    assert not fallback.applies(_cfg(strict_precision=True), gpu)
    assert not fallback.applies(_cfg(), "cpu")  # emulated: the latencies are estimates
    assert not fallback.applies(wb.BuilderConfig(precision="fp16"), gpu)
    with pytest.raises(wb.WorkbenchError, match="strict_precision"):
        wb.BuilderConfig(strict_precision="yes")


def _model(path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    calib = path.with_suffix(".npz")
    np.savez(calib, x=rng.standard_normal((4, 16)).astype(np.float32))
    return path, calib


def test_cpu_builds_are_as_placed(tmp_path):
    # a CPU int8 build (emulated numerics) is not compared: every layer that can take int8 has it
    path, calib = _model(tmp_path / "m.onnx")
    net = wb.load_onnx(str(path))
    eng = wb.build(net, wb.BuilderConfig(device="cpu", precision="int8", calibration=str(calib)))
    assert "precision_fallback" not in eng.reports and any(l.precision == "int8" for l in eng.layers)


def test_cli_takes_strict_precision(tmp_path):
    path, calib = _model(tmp_path / "m.onnx")
    out = tmp_path / "e.wbe"
    assert main(["build", str(path), "-o", str(out), "--device", "cpu", "--precision", "int8",
                 "--calib", str(calib), "--strict-precision", "-q"]) == 0
    assert out.exists()


def test_the_report_survives_a_save_and_shows_in_the_summary(tmp_path):
    # (a CPU engine standing in: the report is what a GPU build attaches)
    path, calib = _model(tmp_path / "m.onnx")
    eng = wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="cpu"))
    build, _ = _builder()
    rep = fallback.build_fastest(_cfg(), build, measure=summed).reports["precision_fallback"]
    eng.reports["precision_fallback"] = rep
    eng.save(str(tmp_path / "e.wbe"))
    from workbench.runtime.engine import Engine

    back = Engine.load(str(tmp_path / "e.wbe"))
    assert back.reports["precision_fallback"] == rep and back.describe()["precision_fallback"] == rep
    summary = back.report()["summary"]
    line = summary.loc[summary["item"] == "precision fallback", "value"].item()
    assert line.startswith("fp8: 1 layer(s) measured faster at fp16; 1 moved there")


def test_calibration_runs_once_for_every_build(tmp_path, monkeypatch):
    # real CPU builds stand in for the GPU ones, with a comparison forced to move a layer: the
    # calibration feeds are a generator, which only the first build may read
    import numpy as np

    from workbench.builder import Builder

    path, _ = _model(tmp_path / "m.onnx")
    net = wb.load_onnx(str(path))
    rng = np.random.default_rng(1)
    cal = wb.Calibration(({"x": rng.standard_normal((4, 16)).astype(np.float32)} for _ in range(3)))
    seen = []

    def build(cfg):
        seen.append(cfg)
        return Builder(cfg).build(net)

    def forced(low, half, precision):
        return [{"layer": low[0].name, f"{precision}_ms": 2.0, "fp16_ms": 1.0}]
    monkeypatch.setattr(fallback, "slower_layers", forced)
    monkeypatch.setattr("workbench.builder.mixed.engine_ms", lambda e: 1.0 if any(
        l.precision == "fp16" for l in e.layers if l.op != "Cast") else 2.0)
    eng = fallback.build_fastest(wb.BuilderConfig(device="cpu", precision="int8", calibration=cal), build, measure=summed)
    rep = eng.reports["precision_fallback"]
    assert rep["kept"] == "with_fallback" and "error" not in rep and len(seen) == 3
    shared = {id(c.calibration) for c in seen if c.calibration is not None}
    assert len(shared) == 1 and seen[1].calibration is None  # the fp16 build needs none
    assert cal.cache is None  # the user's object is not changed


def test_a_failed_rebuild_keeps_the_best_engine_so_far():
    build, _ = _builder()

    def failing(cfg):
        if cfg.layer_precisions:
            raise wb.WorkbenchError("layer b has no fp16 tactic with codes in")
        return build(cfg)
    eng = fallback.build_fastest(_cfg(), failing, measure=summed)
    rep = eng.reports["precision_fallback"]
    assert rep["kept"] == "placed" and rep["tries"] == [{"layers": 1, "error": "layer b has no fp16 tactic with codes in"}]
    assert "failed: layer b has no fp16 tactic" in fallback.fallback_text(rep)


def test_the_comparison_build_drops_pins_to_the_low_precisions():
    build, seen = _builder()
    fallback.build_fastest(_cfg(layer_precisions={"a": "fp8", "c": "fp32"}), build, measure=summed)
    assert seen[1].precision == "fp16" and seen[1].layer_precisions == {"c": "fp32"}


def test_untimed_layers_are_not_compared():
    placed = [_layer("a", "fp8", 0.030), SimpleNamespace(name="u", op="FusedGemm", precision="fp8",
                                                           tactic_table=[{"tactic": "only", "chosen": True}])]
    half = _engine([_layer("a", "fp16", 0.010), _layer("u", "fp16", 0.001)])
    assert [r["layer"] for r in fallback.slower_layers(placed, half, "fp8")] == ["a"]


def test_a_progress_callback_hears_done_once_at_the_end():
    build, _ = _builder()
    calls = []

    def placed_stages(cfg):
        if callable(cfg.progress):  # the placed build reports its stages, "done" among them
            for i, st in enumerate(wb.Builder.STAGES):
                cfg.progress(st, i, len(wb.Builder.STAGES))
            cfg.progress("done", 6, 6)
        else:
            assert cfg.progress is False
        return build(cfg)
    fallback.build_fastest(_cfg(progress=lambda *a: calls.append(a[0])), placed_stages, measure=summed)
    assert calls == [*wb.Builder.STAGES, "done"]


def test_an_incomplete_saved_report_still_reads():
    assert "incomplete" in fallback.fallback_text({"kept": "placed"})
    assert "no layer at fp8 to compare" in fallback.fallback_text(
        {"precision": "fp8", "compared": 0, "layers": [], "kept": "placed"})


def test_shape_range_buckets_are_built_as_placed():
    from workbench.builder.profile_build import _inner

    cfg = wb.BuilderConfig(device="cpu", precision="fp8", profiles=[{"x": ((1, 16), (2, 16), (4, 16))}])
    assert _inner(cfg).strict_precision is True


def test_engines_off_the_gpu_are_compared_by_their_summed_layer_times(tmp_path):
    path, _ = _model(tmp_path / "m.onnx")
    eng = wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="cpu"))
    ms, how = fallback.engine_latency(eng)
    assert how == "summed layer times" and ms > 0


def test_an_engine_that_cannot_be_timed_is_not_kept_or_lost():
    build, _ = _builder()

    def placed_fails(engine):
        if all(l.precision == "fp8" for l in engine.layers):
            raise wb.WorkbenchError("out of GPU memory while running the engine")
        return summed(engine)
    eng = fallback.build_fastest(_cfg(), build, measure=placed_fails)
    rep = eng.reports["precision_fallback"]
    assert rep["kept"] == "placed" and "timing the placed engine failed" in rep["error"] and "tries" in rep
    assert rep["tries"] == []

    def alt_fails(engine):
        if any(l.precision == "fp16" for l in engine.layers):
            raise MemoryError("Out of memory allocating 1 bytes")  # what CuPy raises
        return summed(engine)
    rep = fallback.build_fastest(_cfg(), build, measure=alt_fails).reports["precision_fallback"]
    assert rep["kept"] == "placed" and "Out of memory" in rep["tries"][0]["error"]
