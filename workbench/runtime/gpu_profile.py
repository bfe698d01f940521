"""GPU profile: end-to-end latency from CUDA-graph replays, and a separate eager run with a CUDA
event pair around every layer for the breakdown. Same columns as the CPU profile. The per-layer
sum exceeds end to end: eager launches leave gaps that graph replay removes, and every event pair
adds its own cost."""

from __future__ import annotations

import statistics

from ..runtime.feeds import random_feeds


def profile_gpu(ctx, feeds=None, runs: int = 10, warmup: int = 1):
    import pandas as pd

    if runs < 1:
        raise ValueError("runs must be at least 1")
    engine = ctx.engine
    feeds = feeds if feeds is not None else random_feeds(engine.inputs)
    for _ in range(warmup):
        ctx.run(feeds)
    e2e = ctx.time_replays(feeds, runs)
    per_layer = ctx.time_layers_gpu(feeds, runs)
    rows = []
    for layer, ts in zip(engine.layers, per_layer):
        rows.append({
            "layer": layer.name, "type": layer.op, "onnx_ops": "+".join(layer.onnx_ops), "precision": layer.precision,
            "tactic": layer.tactic, "mean_ms": statistics.fmean(ts), "median_ms": statistics.median(ts),
            "flops": layer.flops, "bytes": layer.bytes_moved,
        })
    df = pd.DataFrame(rows)
    total = float(df["median_ms"].sum()) if len(df) else 0.0
    df["pct"] = 100.0 * df["median_ms"] / total if total else 0.0
    secs = df["median_ms"].where(df["median_ms"] > 0) / 1e3
    df["gflops_per_s"] = (df["flops"] / secs / 1e9).fillna(0.0)
    df["gb_per_s"] = (df["bytes"] / secs / 1e9).fillna(0.0)
    df.attrs["end_to_end_ms"] = float(statistics.median(e2e))
    df.attrs["sum_of_layers_ms"] = total
    df.attrs["runs"] = runs
    df.attrs["device"] = "gpu"
    df.attrs["cuda_graph"] = bool(ctx.cuda_graph and not ctx.graph_error)
    df.attrs["note"] = ("end-to-end is the median of whole-engine CUDA-graph replays timed with CUDA events; per-layer "
                        "times come from separate eager runs with an event pair around every layer, so their sum "
                        "exceeds end-to-end (launch gaps and event overhead)")
    return df
