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

from ..core.plan import Plan, TensorSpec
from ..errors import InputError
from ..runtime.buckets import opt_specs
from ..runtime.feeds import random_feeds

# the largest default batch of an engine whose batch dim is symbolic without a range
UNBOUNDED_DEFAULT = 32
COLUMNS = ["batch", "bucket", "padded_to", "median_ms", "p90_ms", "min_ms", "ms_per_sample", "samples_per_s"]


def batch_inputs(plan: Plan, profile: int = 0) -> tuple[list[str], int, int]:
    """(inputs whose leading dim is the batch, smallest batch, largest batch) of ``profile``; a static
    plan's batch is its inputs' common leading dim."""
    if plan.profiles:
        ranges = plan.profiles[profile]
        names = [n for n, (lo, _, hi) in ranges.items() if len(lo) and lo[0] != hi[0]]
        if names:
            lo = max(ranges[n][0][0] for n in names)
            hi = min(ranges[n][2][0] for n in names)
            return names, lo, hi
        # the profile fixes every leading dim: the one batch of its opt shapes
        led = {n: r[1][0] for n, r in ranges.items() if len(r[1])}
        sizes = set(led.values())
        if len(sizes) != 1:
            raise InputError(f"profile {profile} fixes the inputs' leading dims to different sizes "
                             f"({_ranges_text(ranges)}); no single batch size to sweep")
        b = sizes.pop()
        return sorted(led), b, b
    led = {s.name: s.shape[0] for s in plan.inputs if s.shape}
    dynamic = sorted(n for n, d in led.items() if not isinstance(d, int))
    if dynamic:  # a symbolic batch (a CPU engine built without shapes): any batch, the rest must be static
        for s in plan.inputs:
            if s.name in dynamic and not all(isinstance(d, int) for d in list(s.shape)[1:]):
                raise InputError(f"input {s.name!r} has shape {list(s.shape)} with dynamic dims past the batch and "
                                 "the engine has no shape range; build with --min/--opt/--max-shapes "
                                 "(BuilderConfig(profiles=...)) to sweep batch sizes")
        return dynamic, 1, UNBOUNDED_DEFAULT
    sizes = set(led.values())
    if len(sizes) != 1:
        raise InputError(f"the inputs' leading dims differ ({led}); no single batch size to sweep")
    b = sizes.pop()
    return sorted(led), b, b


def default_batches(plan: Plan, profile: int = 0) -> list[int]:
    """The buckets' batch sizes in the profile's range and the range's ends; powers of two across the
    range where there are no buckets."""
    _, lo, hi = batch_inputs(plan, profile)
    picks = {lo, hi}
    buckets = [b.batch for b in plan.buckets if b.batch is not None and profile in b.profiles]
    if buckets:
        picks.update(b for b in buckets if lo <= b <= hi)
    else:
        p = 1
        while p <= hi:
            if p >= lo:
                picks.add(p)
            p *= 2
    return sorted(picks)


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


def parse_batches(text: str) -> list[int] | None:
    """'1,2, 8' -> [1, 2, 8]; '' -> None (the defaults); anything else is an InputError naming it."""
    text = text.strip()
    if not text:
        return None
    out = []
    for part in text.replace(" ", "").split(","):
        if not part.isdigit() or int(part) < 1:
            raise InputError(f"batch sizes are positive integers separated by commas; got {part!r}")
        out.append(int(part))
    return out


def _ranges_text(ranges: dict) -> str:
    return ", ".join(f"{n}: {'x'.join(map(str, lo))}..{'x'.join(map(str, hi))}" for n, (lo, _, hi) in ranges.items())
