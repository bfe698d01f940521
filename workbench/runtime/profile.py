"""Profiling: time every layer over several runs and tabulate it with the build's cost estimates.

Columns: layer, type, onnx_ops, precision, tactic, mean_ms, median_ms, pct, flops, bytes,
gflops_per_s, gb_per_s. ``df.attrs`` holds the end-to-end median and the sum of layer medians
(per-layer timing adds overhead, so the sum exceeds end-to-end; both are reported).
"""

from __future__ import annotations

import json
import statistics

from ..runtime.feeds import random_feeds


def profile_context(ctx, feeds=None, runs: int = 10, warmup: int = 1):
    if runs < 1:
        raise ValueError("runs must be at least 1")
    engine = ctx.engine
    feeds = feeds if feeds is not None else random_feeds(engine.inputs)
    for _ in range(warmup):
        ctx.run(feeds)
    per_layer: list[list[float]] = [[] for _ in engine.layers]
    totals = []
    for _ in range(runs):
        times, total = ctx.time_layers(feeds)
        totals.append(total)
        for i, t in enumerate(times):
            per_layer[i].append(t * 1e3)
    e2e = [_timed_run(ctx, feeds) for _ in range(runs)]
    return profile_table(engine, per_layer, e2e, device=ctx.device,
                         note="per-layer times come from separate runs with a timer around every layer, which adds "
                              "overhead; end-to-end times come from plain runs")


def profile_table(engine, per_layer_ms: list[list[float]], end_to_end_ms: list[float], *, device: str, note: str):
    """The profile DataFrame (one row per layer) from per-layer and end-to-end samples in ms."""
    import pandas as pd

    rows = []
    for layer, ts in zip(engine.layers, per_layer_ms):
        rows.append({
            "layer": layer.name,
            "type": layer.op,
            "onnx_ops": "+".join(layer.onnx_ops),
            "precision": layer.precision,
            "tactic": layer.tactic,
            "mean_ms": statistics.fmean(ts) if ts else 0.0,
            "median_ms": statistics.median(ts) if ts else 0.0,
            "flops": layer.flops,
            "bytes": layer.bytes_moved,
        })
    df = pd.DataFrame(rows, columns=["layer", "type", "onnx_ops", "precision", "tactic", "mean_ms", "median_ms",
                                     "flops", "bytes"])
    total_med = float(df["median_ms"].sum()) if len(df) else 0.0
    df["pct"] = 100.0 * df["median_ms"] / total_med if total_med else 0.0
    secs = df["median_ms"].where(df["median_ms"] > 0) / 1e3
    df["gflops_per_s"] = (df["flops"] / secs / 1e9).fillna(0.0)
    df["gb_per_s"] = (df["bytes"] / secs / 1e9).fillna(0.0)
    df.attrs["end_to_end_ms"] = float(statistics.median(end_to_end_ms))
    df.attrs["sum_of_layers_ms"] = total_med
    df.attrs["runs"] = len(end_to_end_ms)
    df.attrs["device"] = device
    df.attrs["note"] = note
    return df


def _timed_run(ctx, feeds) -> float:
    import time

    t0 = time.perf_counter()
    ctx.run(feeds)
    return (time.perf_counter() - t0) * 1e3


def to_chrome_trace(df, path=None) -> dict:
    """A Chrome-trace (chrome://tracing, Perfetto) of one run laid end to end by median times."""
    events = []
    t = 0.0
    for row in df.itertuples(index=False):
        dur = float(row.median_ms) * 1e3
        events.append({"name": row.layer, "cat": row.type, "ph": "X", "ts": t, "dur": dur, "pid": 0, "tid": 0,
                       "args": {"onnx_ops": row.onnx_ops, "precision": row.precision, "tactic": row.tactic}})
        t += dur
    trace = {"traceEvents": events, "displayTimeUnit": "ms"}
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(trace, f)
    return trace
