"""The explorer's views on CPU engines, each number checked against the plan or the profile."""

from __future__ import annotations

import math

import pytest

import workbench as wb
from tests.explore.conftest import synthetic_profile
from workbench.dtypes import itemsize
from workbench.runtime.profile import GAPS


def test_latency_by_type_and_precision_add_up_to_the_profile(fp32_split):
    prof = synthetic_profile(fp32_split, lambda i, layer: 0.05 * (i + 1))
    by_type = wb.latency_by(prof, "type")
    for row in by_type.itertuples():
        layers = [(i, l) for i, l in enumerate(fp32_split.layers) if l.op == row.type]
        assert row.layers == len(layers)
        assert row.ms == pytest.approx(sum(0.05 * (i + 1) for i, _ in layers))
    assert by_type["ms"].sum() == pytest.approx(prof["median_ms"].sum())
    assert by_type["pct"].sum() == pytest.approx(100.0)
    assert list(by_type["ms"]) == sorted(by_type["ms"], reverse=True)
    both = wb.latency_by(prof, ["type", "precision"])
    assert set(both["precision"]) == {"fp32"} and both["ms"].sum() == pytest.approx(by_type["ms"].sum())


def test_latency_by_counts_the_gaps_row_as_its_own_type(fp32):
    prof = synthetic_profile(fp32)
    gaps = prof.iloc[[0]].copy()
    gaps.loc[:, ["layer", "type", "precision", "median_ms"]] = [GAPS, "gaps", "", 1.5]
    import pandas as pd

    with_gaps = pd.concat([prof, gaps], ignore_index=True)
    by_prec = wb.latency_by(with_gaps, "precision")
    assert by_prec.set_index("precision").loc["gaps", "ms"] == pytest.approx(1.5)
    assert by_prec.set_index("precision").loc["fp32", "ms"] == pytest.approx(prof["median_ms"].sum())


def _intervals_overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_memory_timeline_matches_the_memory_plan(fp32_split):
    engine = fp32_split
    plan = engine.plan
    timeline = wb.memory_timeline(engine)
    report = engine.reports["memory"]
    assert len(timeline) == len(engine.layers)
    assert timeline.attrs["arena_bytes"] == plan.arena.bytes == report["arena_bytes"]
    assert timeline.attrs["peak_bytes"] == report["peak_live_bytes"]
    assert timeline["arena_high_bytes"].max() == plan.arena.bytes  # some step reaches the arena's end
    assert timeline.attrs["weights_bytes"] == report["weights_bytes"]
    sizes = {}
    for layer in engine.layers:
        for spec in layer.output_specs:
            sizes[spec.name] = -(-math.prod(spec.shape) * int(itemsize(spec.dtype)) // 256) * 256
    from workbench.explore import tensor_intervals

    t = tensor_intervals(engine)
    for row in timeline.itertuples():
        live = t[(t["first"] <= row.step) & (t["last"] >= row.step)]
        assert row.live_bytes == sum(sizes[n] for n in live["tensor"])
        # what is live at one step never shares arena bytes: the plan and the liveness agree
        ranges = [(plan.arena.offsets[n], plan.arena.offsets[n] + sizes[n]) for n in live["tensor"]]
        assert not any(_intervals_overlap(a, b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
        layer = engine.layers[row.step]
        assert set(layer.outputs) <= set(live["tensor"])  # a layer's outputs are live while it runs
        assert row.weights_bytes == sum(plan.constants[n].nbytes for n in set(layer.inputs) if n in plan.constants)


def test_memory_peak_names_the_tensors_that_hold_it(fp32_split):
    timeline = wb.memory_timeline(fp32_split)
    peak = wb.memory_peak(fp32_split)
    assert peak["arena_bytes"].sum() == timeline.attrs["peak_bytes"]
    assert peak.attrs["layer"] == fp32_split.layers[peak.attrs["step"]].name
    assert list(peak["arena_bytes"]) == sorted(peak["arena_bytes"], reverse=True)
    assert peak["pct"].sum() == pytest.approx(100.0)
    assert set(fp32_split.layers[peak.attrs["step"]].outputs) <= set(peak["tensor"])


def test_roofline_against_given_peaks(fp32):
    peaks = {"gflops": 100.0, "gbps": 10.0, "source": "test"}
    prof = synthetic_profile(fp32, lambda i, layer: 0.2)
    r = wb.roofline(fp32, prof, peaks=peaks)
    assert len(r) == len(fp32.layers)
    for row, layer in zip(r.itertuples(), fp32.layers):
        assert row.flops == layer.flops and row.bytes == layer.bytes_moved
        if layer.flops and layer.bytes_moved:
            intensity = layer.flops / layer.bytes_moved
            attainable = min(100.0, 10.0 * intensity)
            achieved = layer.flops / 0.2e-3 / 1e9
            assert row.intensity == pytest.approx(intensity)
            assert row.attainable_gflops == pytest.approx(attainable)
            assert row.achieved_gflops == pytest.approx(achieved)
            assert row.efficiency == pytest.approx(achieved / attainable)
            assert row.bound == ("compute" if 10.0 * intensity >= 100.0 else "memory")
    assert set(r["bound"]) >= {"compute", "memory"}  # convs and pools of this model fall on both sides


def test_roofline_uses_each_precisions_peak(fp32):
    peaks = {"gflops": 100.0, "gbps": 1e6, "gflops_by_precision": {"fp32": 10.0}, "source": "test"}
    prof = synthetic_profile(fp32)
    r = wb.roofline(fp32, prof, peaks=peaks)
    assert (r["peak_gflops"] == 10.0).all()
    prof.loc[:, "precision"] = "fp16"  # no fp16 entry: the overall peak applies
    assert (wb.roofline(fp32, prof, peaks=peaks)["peak_gflops"] == 100.0).all()


def test_profile_table_of_a_real_cpu_profile_feeds_the_views(fp32, feeds):
    prof = fp32.create_context().profile(feeds, runs=1)
    assert prof.attrs["mode"] == "events" and len(prof) == len(fp32.layers)
    assert wb.latency_by(prof)["ms"].sum() == pytest.approx(prof.attrs["sum_of_layers_ms"])
    r = wb.roofline(fp32, prof)
    assert r.attrs["peaks"]["source"].startswith("measured here")
