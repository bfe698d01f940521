"""The accuracy report and the budgeted search on GPU engines: the eager layer-by-layer run copies
every output to the host (channels-last tensors put back in NCHW order), the layer-alone run writes
reference inputs into the layer's buffers and restores them. Marked ``gpu``: skipped without one."""

from __future__ import annotations

import os

import numpy as np
import pytest

import workbench as wb
from workbench.precision.calibration import Calibration
from tests.support.paths import MODELS

pytestmark = pytest.mark.gpu
SHAPES = {"pixel_values": (2, 3, 64, 64)}


def feeds(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [{"pixel_values": rng.standard_normal(SHAPES["pixel_values"]).astype(np.float32)} for _ in range(n)]


def pooled(got, want) -> float:
    num = sum(float(np.sum((np.asarray(g, np.float64) - w) ** 2)) for g, w in zip(got, want))
    return (num / sum(float(np.sum(np.asarray(w, np.float64) ** 2)) for w in want)) ** 0.5


@pytest.fixture(scope="module")
def resnet():
    net = wb.load_onnx(os.path.join(MODELS, "resnet_legacy.onnx"))
    return (net, wb.build(net, wb.BuilderConfig(device="gpu", precision="fp16", shapes=SHAPES)),
            wb.build(net, wb.BuilderConfig(device="cpu", shapes=SHAPES)))


def test_fp16_gpu_report(resnet):
    _, engine, cpu32 = resnet
    fs = feeds(2)
    before = [engine.create_context().run(f)["logits"] for f in fs]
    report = engine.accuracy(fs)
    assert [r["layer"] for r in report.layers] == [l.name for l in engine.layers]
    assert report.first_nonfinite is None and all(r["nonfinite"] == 0 for r in report.layers)
    # the engine's own (graph-replayed) outputs against an fp32 CPU engine: the report's output error
    want = [cpu32.create_context().run(f)["logits"] for f in fs]
    assert report.error == pytest.approx(pooled(before, want), rel=0.2, abs=1e-5)
    assert 0 < report.error < 2e-2
    # every half-precision layer: small errors (a tensor read in the wrong layout would be ~1)
    nhwc = 0
    for layer, row in zip(engine.layers, report.layers):
        if layer.precision == "fp16":
            assert row["rel_err"] < 2e-2 and row["added_err"] < 2e-2 and row["cosine"] > 0.999, row
            nhwc += "nhwc" in (layer.attrs.get("out_layouts") or []) or "nhwc" in (layer.attrs.get("in_layouts") or [])
    assert nhwc > 0  # the channels-last paths were exercised
    # measuring left the engine as it was
    after = [engine.create_context().run(f)["logits"] for f in fs]
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_budgeted_search_on_the_gpu(resnet):
    net, _, cpu32 = resnet
    data = feeds(8, seed=1)
    budget = 5e-3
    engine = wb.build(net, wb.BuilderConfig(device="gpu", precision="best", shapes=SHAPES, accuracy_budget=budget,
                                            calibration=Calibration(data)))
    rep = engine.reports["mixed_precision"]
    held = [data[3], data[7]]
    got = [engine.create_context().run(f)["logits"] for f in held]
    gpu32 = wb.build(net, wb.BuilderConfig(device="gpu", shapes=SHAPES))
    want = [gpu32.create_context().run(f)["logits"] for f in held]
    assert pooled(got, want) <= budget and rep["error"]["held_out"] <= budget
    assert rep["latency_source"].startswith("measured") and rep["fraction_below_fp32"] > 0.5
    print(f"ResNet (GPU) best under {budget:g}: held-out {rep['error']['held_out']:.3g}, "
          f"{rep['below_fp32']}/{rep['layers']} below fp32, {rep['latency_ms']:.4g} ms vs {rep['fp32_latency_ms']:.4g}")


@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_impact_against_the_fp32_build_on_the_device(resnet, precision):
    """``runtime.accuracy_impact`` (the search's sensitivities on the GPU): every layer at the
    precision is placed in the fp32 build (channels-last tensors, inserted casts and fp8 codes
    read and written through), and its outputs' error agrees with the accuracy report's, whose
    downstream runs are the CPU's reference kernels."""
    from workbench.runtime.accuracy import measure
    from workbench.runtime.accuracy_impact import engine_impact

    net, fp16, _ = resnet
    fs = feeds(2, seed=3)
    engine = fp16 if precision == "fp16" else wb.build(net, wb.BuilderConfig(
        device="gpu", precision="fp8", shapes=SHAPES, calibration=Calibration(feeds(4, seed=4)), strict_precision=True))
    gpu32 = wb.build(net, wb.BuilderConfig(device="gpu", shapes=SHAPES))
    before = engine.create_context().run(fs[0])["logits"]
    got = engine_impact(engine, gpu32, fs)
    rows = {r["layer"]: r for r in measure(engine, fs, reference=gpu32).layers}
    lowered = [l.name for l in engine.layers if l.precision == precision and not l.name.startswith("wb_cast:")]
    assert lowered and set(lowered) <= set(got)
    for name in lowered:
        want = rows[name]["output_err"]
        print(f"{precision} {name}: device {got[name]['output_err']:.3e} report {want:.3e}")
        if want > 1e-4:
            assert got[name]["output_err"] == pytest.approx(want, rel=0.3), name
    np.testing.assert_allclose(engine.create_context().run(fs[0])["logits"], before, rtol=1e-3, atol=1e-3)
