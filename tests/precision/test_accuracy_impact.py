"""Each layer's impact on the outputs measured against an fp32 engine (workbench.runtime
.accuracy_impact), which the precision search uses on the GPU: on CPU engines it agrees with the
accuracy report's ``output_err`` (the same quantity against the reference kernels), for half
precision, int8 and fp8 layers; tensors renamed by the GPU builder's storage-type casts are read
under their names in the fp32 build; the search falls back to the report, and says so, where the
measurement fails or cannot place a layer."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

import workbench as wb
from workbench.builder import mixed
from workbench.core.plan import Layer, Plan, TensorSpec
from workbench.errors import WorkbenchError
from workbench.precision.casts import insert_casts
from workbench.runtime.accuracy import measure
from workbench.runtime.accuracy_impact import engine_impact, logical_names
from workbench.runtime.feeds import random_feeds
from tests.support.paths import MODELS

BERT = ("bert_legacy.onnx", {"input_ids": (2, 16), "attention_mask": (2, 16), "token_type_ids": (2, 16)})
RESNET = ("resnet_legacy.onnx", {"pixel_values": (2, 3, 64, 64)})


def engines(model, precision):
    path, shapes = model
    fp32 = wb.build(wb.load_onnx(os.path.join(MODELS, path)), wb.BuilderConfig(device="cpu", shapes=shapes))
    feeds = [random_feeds(fp32.inputs, seed=s) for s in range(2)]
    cal = wb.Calibration(feeds) if precision in ("int8", "fp8") else None
    engine = wb.build(wb.load_onnx(os.path.join(MODELS, path)),
                      wb.BuilderConfig(device="cpu", precision=precision, shapes=shapes, calibration=cal))
    return engine, fp32, feeds


@pytest.mark.parametrize("model,precision", [(BERT, "fp16"), (BERT, "int8"), (RESNET, "fp8")])
def test_agrees_with_the_reports_output_error(model, precision):
    engine, fp32, feeds = engines(model, precision)
    got = engine_impact(engine, fp32, feeds)
    rows = {r["layer"]: r for r in measure(engine, feeds, reference=fp32).layers}
    assert sorted(got) == sorted(l.name for l in engine.layers)  # every layer placed (no casts on the CPU)
    lowered = [l.name for l in engine.layers if l.precision == precision]
    assert lowered
    for name in lowered:  # the same inputs up to the fp32 engine's round-off: the same error
        assert got[name]["output_err"] == pytest.approx(rows[name]["output_err"], rel=0.05, abs=1e-9), name
    # (most layers at reduced precision move the outputs; a cast of a 0/1 mask does not)
    assert sum(got[n]["output_err"] > 1e-5 for n in lowered) > len(lowered) / 2
    for layer in engine.layers:  # and an fp32 layer next to its fp32 twin changes nothing
        if layer.precision == "fp32":
            assert got[layer.name]["output_err"] < 1e-6, layer.name
    # ranges: the largest value the layer reads or writes, as the report sees them
    for name in lowered:
        assert got[name]["ref_amax"] == pytest.approx(rows[name]["ref_amax"], rel=0.1)


def test_only_the_layers_asked_for_are_run():
    engine, fp32, feeds = engines(BERT, "fp16")
    some = [l.name for l in engine.layers][2:5]
    got = engine_impact(engine, fp32, feeds[:1], layers=some)
    assert sorted(got) == sorted(some)


def test_bad_pairs_are_refused():
    engine, fp32, feeds = engines(BERT, "fp16")
    with pytest.raises(WorkbenchError, match="against a cpu reference, not a gpu one"):
        engine_impact(engine, SimpleNamespace(backend="gpu", plan=fp32.plan), feeds)
    other, _, _ = engines(RESNET, "fp16")
    with pytest.raises(WorkbenchError, match="different graph outputs"):
        engine_impact(other, fp32, feeds)
    with pytest.raises(WorkbenchError, match="no feeds"):
        engine_impact(engine, fp32, [])


def test_cast_results_and_renamed_outputs_map_to_their_names_in_the_fp32_build():
    f16, f32 = "float16", "float32"
    a = Layer("a", "Relu", inputs=["x"], outputs=["t"], precision="fp16",
              input_specs=[TensorSpec("x", f16, [4])], output_specs=[TensorSpec("t", f16, [4])])
    b = Layer("b", "Exp", inputs=["t"], outputs=["u"], precision="fp32",
              input_specs=[TensorSpec("t", f32, [4])], output_specs=[TensorSpec("u", f32, [4])])
    c = Layer("c", "Add", inputs=["t", "u"], outputs=["y"], precision="fp16",
              input_specs=[TensorSpec("t", f16, [4]), TensorSpec("u", f16, [4])], output_specs=[TensorSpec("y", f16, [4])])
    plan = Plan(inputs=[TensorSpec("x", f32, [4])], outputs=[TensorSpec("y", f32, [4])], layers=[a, b, c])
    insert_casts(plan)
    casts = [l for l in plan.layers if l.name.startswith("wb_cast:")]
    assert len(casts) == 4  # x to fp16, t to fp32, u to fp16, y back to fp32
    names = logical_names(plan)
    assert c.outputs == ["y/float16"] and names["y/float16"] == "y"
    for layer in (a, b, c):
        assert [names.get(n, n) for n in layer.inputs] == {"a": ["x"], "b": ["t"], "c": ["t", "u"]}[layer.name]


def _searcher(backend, fp32, feeds, engine):
    return SimpleNamespace(backend=backend, fp32=fp32, sens_feeds=feeds, notes=[], _tick=lambda what: None,
                           facts={l.name: {} for l in engine.layers})


def test_the_gpu_search_measures_sensitivities_here_and_falls_back_to_the_report(monkeypatch):
    engine, fp32, feeds = engines(BERT, "fp16")
    fake = _searcher("gpu", fp32, feeds, engine)  # (CPU engines: the device path runs on them too)
    rows, impact = mixed._Search._sensitivities(fake, engine, "fp16")
    want = {r["layer"]: r for r in measure(engine, feeds, reference=fp32).layers}
    assert impact and not fake.notes
    assert sorted(rows) == sorted(l.name for l in engine.layers if l.precision == "fp16")  # the layers at fp16
    for name, row in rows.items():
        assert row["output_err"] == pytest.approx(want[name]["output_err"], rel=0.05)
    # it fails: the report against the reference kernels, with the reason
    def boom(*args, **kw):
        raise RuntimeError("cudaErrorIllegalAddress")

    monkeypatch.setattr(mixed, "engine_impact", boom)
    rows, impact = mixed._Search._sensitivities(fake, engine, "fp16")
    assert impact and "added_err" in next(iter(rows.values()))
    assert "sensitivities on the device failed (RuntimeError: cudaErrorIllegalAddress)" in fake.notes[0]
    # a layer it cannot place: the same
    fake.notes.clear()
    monkeypatch.setattr(mixed, "engine_impact", lambda *a, **kw: {})
    rows, impact = mixed._Search._sensitivities(fake, engine, "fp16")
    assert "have no counterpart in the fp32 build" in fake.notes[0] and len(rows) == len(engine.layers)
    # the CPU never takes the device path
    fake = _searcher("cpu", fp32, feeds, engine)
    rows, impact = mixed._Search._sensitivities(fake, engine, "fp16")
    assert impact and not fake.notes and np.isfinite(rows[engine.layers[0].name]["added_err"])
