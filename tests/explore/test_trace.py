"""The profile's Chrome / Perfetto trace: the Trace Event Format in its JSON object form, the same
schema for the CPU profiler's trace and a GPU replay profile's."""

from __future__ import annotations

import json

import pytest

from tests.explore.test_replay_aggregate import replay_df
from tests.explore.trace_schema import check_trace
from workbench.runtime.trace import KERNELS, LAYERS, to_chrome_trace


def x_events(trace, tid):
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == tid]


def test_cpu_profile_trace_is_well_formed(fp32, feeds, tmp_path):
    prof = fp32.create_context().profile(feeds, runs=2)
    path = tmp_path / "p.trace.json"
    trace = to_chrome_trace(prof, path)
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(trace))
    assert check_trace(trace) == []
    layers = x_events(trace, LAYERS)
    assert [e["name"] for e in layers] == [l.name for l in fp32.layers]
    for e, row in zip(layers, prof.itertuples()):
        assert e["dur"] == pytest.approx(row.median_ms * 1e3, abs=2e-3)  # microseconds
        assert e["cat"] == row.type and e["args"]["precision"] == row.precision
    # laid end to end: the layers track covers the sum of the medians
    assert layers[-1]["ts"] + layers[-1]["dur"] == pytest.approx(prof["median_ms"].sum() * 1e3, abs=0.05)
    assert [e["args"]["layer"] for e in x_events(trace, KERNELS)] == [l.name for l in fp32.layers]
    meta = {(e["name"], e["tid"]): e["args"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert meta[("thread_name", LAYERS)]["name"] == "layers" and meta[("thread_name", KERNELS)]["name"] == "kernels"
    assert "cpu" in meta[("process_name", 0)]["name"]
    assert trace["otherData"]["device"] == "cpu"


def test_replay_trace_has_the_same_schema_and_measured_times(fp32):
    df = replay_df(fp32, overlap_layer=3)
    trace = to_chrome_trace(df)
    assert check_trace(trace) == []
    concurrent = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] >= 10]
    assert [e["args"]["layer"] for e in concurrent] == [fp32.layers[3].name]  # the overlapping kernel
    kernels = x_events(trace, KERNELS) + concurrent
    assert len(kernels) == len(df.attrs["kernels"])
    layers = x_events(trace, LAYERS)
    assert {e["name"] for e in layers} == {k["layer"] for k in df.attrs["kernels"]}
    idle = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "gap"]
    span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
    busy = sum(k["busy_us"] for k in df.attrs["kernels"])
    assert busy + sum(e["dur"] for e in idle) == pytest.approx(span, abs=0.01)


def test_schema_checker_catches_overlaps_and_missing_fields():
    good = {"traceEvents": [{"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "t"}},
                            {"name": "a", "ph": "X", "ts": 0, "dur": 5, "pid": 1, "tid": 1},
                            {"name": "b", "ph": "X", "ts": 5, "dur": 5, "pid": 1, "tid": 1}]}
    assert check_trace(good) == []
    overlap = json.loads(json.dumps(good))
    overlap["traceEvents"][2]["ts"] = 4
    assert any("overlaps" in p for p in check_trace(overlap))
    missing = json.loads(json.dumps(good))
    del missing["traceEvents"][1]["dur"]
    assert any("missing" in p for p in check_trace(missing))
    assert check_trace([1, 2]) == ["not the JSON object form {'traceEvents': [...]}"]
