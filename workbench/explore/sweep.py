"""Latency against batch size: one engine run at several batch sizes, as a DataFrame.

``latency_vs_batch(engine, batches=None, runs=20)`` makes seeded random feeds at each batch size (the
other dims at the opt shape of the chosen profile, or the engine's own static shape), runs each
once to warm up, then times ``runs`` end-to-end runs with the context's own timer
(``ExecutionContext.time_end_to_end``: on the GPU the replayed CUDA graph with inputs already on the
device, on the CPU whole ``run`` calls). An engine built as batch buckets reports which bucket each
batch ran in and the batch it was padded to, so the chart shows the steps at bucket boundaries.

Which batches: ``batches`` if given (each must lie in the profile's batch range; one outside is the
runtime's ShapeRangeError, naming the input and the range). Otherwise the buckets' batch sizes and
the range's ends, and for an engine without buckets, powers of two across the range. A static
engine has one batch size: its own; a CPU engine whose batch dim stayed symbolic (built without
shapes or ranges) runs any batch, by default powers of two up to 32.
"""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd

from ..core.plan import TensorSpec
from ..errors import InputError
from ..runtime.buckets import batch_inputs, default_batches, opt_specs
from ..runtime.feeds import random_feeds

COLUMNS = ["batch", "bucket", "padded_to", "median_ms", "p90_ms", "min_ms", "ms_per_sample", "samples_per_s"]


def latency_vs_batch(engine, batches=None, runs: int = 20, context=None, profile: int | None = None,
                     seed: int = 0) -> pd.DataFrame:
    """One row per batch size: the bucket it ran in (None without buckets), the batch it was padded
    to, median / p90 / min ms over ``runs`` timed runs, ms per sample and samples per second.
    ``attrs``: device, runs, profile, inputs (the batch inputs), timer."""
    ctx = context if context is not None else engine.create_context()
    plan = engine.plan
    p = profile if profile is not None else (getattr(ctx, "active_profile", None) or 0)
    if plan.profiles and not 0 <= p < len(plan.profiles):
        raise InputError(f"profile {p} does not exist; the engine has {len(plan.profiles)}")
    names, lo, hi = batch_inputs(plan, p)
    if batches is None:
        batches = default_batches(plan, p)
    batches = _checked_batches(batches)
    if int(runs) < 1:
        raise InputError(f"runs must be at least 1, got {runs}")
    base = opt_specs(plan, p) if plan.profiles else list(plan.inputs)
    rows = []
    for b in batches:
        specs = [TensorSpec(s.name, s.dtype, [b, *list(s.shape)[1:]]) if s.name in names else s for s in base]
        feeds = random_feeds(specs, seed=seed, memory_budget=_budget(ctx))
        bucket = padded = None
        if plan.buckets and hasattr(ctx, "select"):
            bucket = ctx.select(feeds)
            padded = plan.buckets[bucket].batch
        ctx.run(feeds)  # warm-up (and the range check, with the runtime's own error)
        times = ctx.time_end_to_end(feeds, int(runs))
        med = statistics.median(times)
        rows.append({"batch": b, "bucket": bucket, "padded_to": padded if padded is not None else b,
                     "median_ms": med, "p90_ms": float(np.percentile(times, 90)), "min_ms": min(times),
                     "ms_per_sample": med / b, "samples_per_s": b / med * 1e3 if med > 0 else float("inf")})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs.update({"device": getattr(ctx, "device", "?"), "runs": int(runs), "profile": p if plan.profiles else None,
                     "inputs": names, "range": [lo, hi],
                     "timer": "replayed CUDA graph, inputs on the device" if getattr(ctx, "device", "") == "gpu"
                     else "whole run() calls"})
    return df


def _budget(ctx) -> int | None:
    """The context's memory budget (the CPU context keeps it in ``limits``)."""
    limits = getattr(ctx, "limits", None)
    return getattr(limits, "memory_budget", None) if limits is not None else getattr(ctx, "memory_budget", None)


def _checked_batches(batches) -> list[int]:
    if isinstance(batches, (int, np.integer)):
        batches = [batches]
    out = []
    for b in batches:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise InputError(f"batch sizes must be positive integers, got {b!r}")
        out.append(int(b))
    if not out:
        raise InputError("no batch sizes to sweep")
    return sorted(set(out))
