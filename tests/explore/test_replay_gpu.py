"""The GPU profile of the replayed CUDA graph (CUPTI): per-layer times that add up to the replay,
eager layers mapped through correlation ids, the fallback to event timing without CUPTI, and the
explorer on GPU engines (roofline against measured peaks, compare with channels-last tensors)."""

from __future__ import annotations

import math
import warnings

import pytest

import workbench as wb
from tests.explore.trace_schema import check_trace
from workbench.runtime.profile import UNATTRIBUTED, ProfileFallbackWarning, format_profile, layer_rows
from workbench.runtime.trace import to_chrome_trace

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def resnet50():
    from workbench.demo import embedded_model_path, reference_io

    path = embedded_model_path("light_resnet50")
    feeds, _ = reference_io(path)
    return wb.build(wb.load_onnx(path), wb.BuilderConfig(device="gpu", precision="fp16")), feeds


def test_replay_profile_adds_up_to_the_replay_time(resnet50):
    pytest.importorskip("cupti")
    engine, feeds = resnet50
    df = engine.create_context().profile(feeds, runs=20)
    a = df.attrs
    assert a["mode"] == "replay" and a["cuda_graph"]
    # layers + gaps against the end-to-end replay timed with CUDA events (no CUPTI running)
    assert abs(a["sum_of_layers_ms"] - a["end_to_end_ms"]) <= 0.1 * a["end_to_end_ms"], format_profile(df)
    assert UNATTRIBUTED not in set(df["layer"])
    rows = layer_rows(df)
    assert len(rows) == len(engine.layers)
    assert (rows[rows["flops"] > 0]["kernels"] >= 1).all()  # every layer that computes launched kernels
    assert 0 <= a["gaps_ms"] < a["replay_ms"]
    assert check_trace(to_chrome_trace(df)) == []


def test_eager_layer_kernels_are_mapped_through_correlation(resnet50):
    pytest.importorskip("cupti")
    engine, feeds = resnet50
    ctx = engine.create_context()
    k = next(i for i, l in enumerate(engine.layers) if l.op == "FusedConv" and i > 2)
    ctx._eager_only.add(k)  # as if its capture had failed: it runs between two graphs
    df = ctx.profile(feeds, runs=5)
    name = engine.layers[k].name
    assert df.attrs["eager_layers"] == [name]
    row = df[df["layer"] == name].iloc[0]
    assert row["kernels"] >= 1 and row["median_ms"] > 0
    assert UNATTRIBUTED not in set(df["layer"])
    found = [f for f in wb.lint(engine, df) if f.rule == "eager-segments"]
    assert found and name in found[0].layers
    # a second replay profile in the same process (CUPTI subscribed again)
    again = engine.create_context().profile(feeds, runs=3)
    assert again.attrs["mode"] == "replay" and again.attrs["eager_layers"] == []


def test_without_cupti_the_profile_falls_back_with_the_caveat(resnet50, monkeypatch):
    import workbench.runtime.cupti as cupti_module

    engine, feeds = resnet50

    def missing():
        raise cupti_module.CuptiUnavailable("CUPTI is not available (cupti-python: not installed)")

    monkeypatch.setattr(cupti_module, "load_cupti", missing)
    with pytest.warns(ProfileFallbackWarning, match="CUPTI is not available"):
        df = engine.create_context().profile(feeds, runs=3)
    assert df.attrs["mode"] == "events" and "CUPTI" in df.attrs["fallback"]
    assert len(df) == len(engine.layers)
    assert "caveat: CUPTI is not available" in format_profile(df)


def test_events_mode_and_roofline_against_this_gpus_peaks(resnet50):
    engine, feeds = resnet50
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProfileFallbackWarning)  # asked for: no fallback warning
        df = engine.create_context().profile(feeds, runs=3, mode="events")
    assert df.attrs["mode"] == "events" and "kernels" not in df.columns
    r = wb.roofline(engine, df)
    peaks = r.attrs["peaks"]
    assert peaks["source"].startswith("measured on") and peaks["gflops_by_precision"]["fp16"] > peaks["gflops_by_precision"]["fp32"] > 0
    assert (r.loc[r["precision"] == "fp16", "peak_gflops"] == peaks["gflops_by_precision"]["fp16"]).all()
    assert r["efficiency"].dropna().gt(0).all()


def test_compare_gpu_fp32_vs_fp16_reads_channels_last_tensors():
    from tests.support.exporter_models import load_io, model_path

    feeds, _ = load_io("resnet_legacy")
    net = wb.load_onnx(model_path("resnet_legacy"))
    shapes = {k: v.shape for k, v in feeds.items()}
    a = wb.build(net, wb.BuilderConfig(device="gpu", shapes=shapes))
    b = wb.build(net, wb.BuilderConfig(device="gpu", shapes=shapes, precision="fp16"))
    assert any("nhwc" in (l.attrs.get("out_layouts") or []) for l in b.layers)
    df = wb.compare(a, b, feeds=feeds, runs=3)
    both = df[df["match"] == "both"]
    assert len(both) > 0 and both["rel_err"].notna().all()
    assert all(0 < e < 2e-2 for e in both["rel_err"]), both[["layer", "rel_err"]]
    assert math.isfinite(df.attrs["end_to_end_a"]) and math.isfinite(df.attrs["end_to_end_b"])
