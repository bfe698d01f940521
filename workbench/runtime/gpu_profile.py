"""GPU profile: end-to-end latency from CUDA-graph replays, and a separate eager run with a CUDA
event pair around every layer for the breakdown. Same columns as the CPU profile. The per-layer
sum exceeds end to end: eager launches leave gaps that graph replay removes, and every event pair
adds its own cost."""

from __future__ import annotations

from .profile import profile_table
from ..runtime.feeds import random_feeds


def profile_gpu(ctx, feeds=None, runs: int = 10, warmup: int = 1):
    if runs < 1:
        raise ValueError("runs must be at least 1")
    engine = ctx.engine
    feeds = feeds if feeds is not None else random_feeds(engine.inputs)
    for _ in range(warmup):
        ctx.run(feeds)
    e2e = ctx.time_replays(feeds, runs)
    per_layer = ctx.time_layers_gpu(feeds, runs)
    df = profile_table(engine, per_layer, e2e, device="gpu",
                       note="end-to-end is the median of whole-engine CUDA-graph replays timed with CUDA events; "
                            "per-layer times come from separate eager runs with an event pair around every layer, so "
                            "their sum exceeds end-to-end (launch gaps and event overhead)")
    df.attrs["cuda_graph"] = bool(ctx.cuda_graph and not ctx.graph_error)
    return df
