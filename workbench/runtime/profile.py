"""Profiling, one way for every device: time an engine through its execution context and tabulate
it with the build's cost estimates.

``profile(ctx)`` takes the context's own measurements: ``ctx.time_end_to_end`` (CPU: plain runs
under a host timer; GPU: whole-engine CUDA-graph replays timed with CUDA events) and
``ctx.time_layers`` (CPU: a host timer around every layer; GPU: eager runs with a CUDA event pair
around every layer). Per-layer timing adds overhead, so the sum of layer medians exceeds the
end-to-end median; both are reported, with the context's note saying how they were taken.

Columns: layer, type, onnx_ops, precision, tactic, mean_ms, median_ms, pct, flops, bytes,
gflops_per_s, gb_per_s. ``df.attrs``: end_to_end_ms, sum_of_layers_ms, runs, device, note, and
what the context adds (GPU: cuda_graph).
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import numpy as np

from ..core.files import atomic_write
from .feeds import random_feeds


def profile(ctx, feeds=None, runs: int = 10, warmup: int = 1):
    """The profile DataFrame of ``runs`` measured runs of ``ctx`` after ``warmup`` plain ones
    (``feeds``: random data of the engine's input shapes when not given)."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    engine = ctx.engine
    feeds = feeds if feeds is not None else random_feeds(engine.inputs)
    for _ in range(warmup):
        ctx.run(feeds)
    end_to_end = ctx.time_end_to_end(feeds, runs)
    per_layer = ctx.time_layers(feeds, runs)
    df = profile_table(engine, per_layer, end_to_end, device=ctx.device, note=ctx.profile_note)
    df.attrs.update(ctx.profile_attrs())
    return df


def host_ms(fn) -> float:
    """Milliseconds of one call of ``fn`` by the host clock (the CPU context's timer)."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def latency_ms(engine, feeds, runs: int) -> float:
    """Median end-to-end milliseconds of ``engine`` on ``feeds`` (one warm-up run first)."""
    ctx = engine.create_context()
    ctx.run(feeds)
    return float(statistics.median(ctx.time_end_to_end(feeds, runs)))


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


def _ms_text(ms: float) -> str:
    """About three significant digits: 0.0213, 4.56, 1,234 (a fixed 3 decimals shows 0.000)."""
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3g}"


def _printable(text) -> str:
    """Names come from the model file: escape control characters before they reach a terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def format_profile(df, top: int = 15) -> str:
    """The profile as text: the ``top`` slowest layers and a summary line (``workbench profile``)."""
    cols = ["layer", "type", "onnx_ops", "precision", "tactic", "median_ms", "pct", "gflops_per_s"]
    view = df.sort_values("median_ms", ascending=False).head(top)[cols].copy()
    for col in ("layer", "type", "onnx_ops", "tactic"):
        view[col] = view[col].map(_printable)
    view["onnx_ops"] = view["onnx_ops"].str.slice(0, 40)
    formats = {"median_ms": _ms_text, "pct": lambda x: f"{x:.1f}", "gflops_per_s": lambda x: f"{x:,.2f}"}
    lines = [view.to_string(index=False, formatters=formats)]
    lines.append(f"{len(df):,} layers; end-to-end median {_ms_text(df.attrs['end_to_end_ms'])} ms over "
                 f"{df.attrs['runs']:,} runs; sum of per-layer medians {_ms_text(df.attrs['sum_of_layers_ms'])} ms "
                 f"({df.attrs['note']})")
    return "\n".join(lines)


def compare_profiles(df_a, df_b):
    """(per-layer table, per-op-type table) of two profiles, each with ms_a, ms_b and
    speedup = ms_a / ms_b; layers are matched by name."""
    import pandas as pd

    a = df_a[["layer", "type", "median_ms"]].rename(columns={"median_ms": "ms_a"})
    b = df_b[["layer", "precision", "median_ms"]].rename(columns={"median_ms": "ms_b", "precision": "precision_b"})
    layers = a.merge(b, on="layer", how="inner")
    layers["speedup"] = layers["ms_a"] / layers["ms_b"].where(layers["ms_b"] > 0)
    by_type = pd.concat([df_a.groupby("type")["median_ms"].sum().rename("ms_a"),
                         df_b.groupby("type")["median_ms"].sum().rename("ms_b")], axis=1).fillna(0.0)
    by_type["speedup"] = by_type["ms_a"] / by_type["ms_b"].where(by_type["ms_b"] > 0)
    by_type = by_type.reset_index().rename(columns={"index": "type"}).sort_values("ms_a", ascending=False)
    return layers.sort_values("ms_a", ascending=False), by_type


@functools.lru_cache(maxsize=4)
def measured_peaks(device: str = "cpu") -> dict:
    """Peaks for the roofline: GFLOP/s of an fp32 GEMM and GB/s of a large copy, measured once
    with NumPy on this host."""
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    a @ a
    best = min(max(host_ms(lambda: a @ a), 1e-6) for _ in range(5)) / 1e3
    big = np.ones(8 * 2**20, np.float32)
    copy = min(max(host_ms(big.copy), 1e-6) for _ in range(3)) / 1e3
    return {"gflops": 2 * 512**3 / best / 1e9, "gbps": 2 * big.nbytes / copy / 1e9, "source": "measured here (NumPy)"}


def peaks_for(engine) -> dict:
    """The roofline peaks of an engine's target: the target's own (``engine.target["peaks"]``)
    where it reports them, else :func:`measured_peaks`."""
    p = engine.target.get("peaks") if isinstance(engine.target, dict) else None
    if isinstance(p, dict) and p.get("gflops") and p.get("gbps"):
        return p
    return measured_peaks(engine.backend)


def profile_dict(df) -> dict:
    """The profile as plain JSON-able data (``workbench profile --json``): the summary from
    ``df.attrs`` and one record per layer in plan order."""
    def plain(v):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return str(v)
        return v

    layers = [{k: plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
    return {**{k: plain(v) for k, v in df.attrs.items()}, "layers": layers}


def to_chrome_trace(df, path=None) -> dict:
    """A Chrome-trace (chrome://tracing, Perfetto) of one run laid end to end by median times;
    written atomically to ``path`` when given (a reader never sees half a trace)."""
    events = []
    t = 0.0
    for row in df.itertuples(index=False):
        dur = float(row.median_ms) * 1e3
        events.append({"name": row.layer, "cat": row.type, "ph": "X", "ts": t, "dur": dur, "pid": 0, "tid": 0,
                       "args": {"onnx_ops": row.onnx_ops, "precision": row.precision, "tactic": row.tactic,
                                "mean_ms": float(row.mean_ms)}})
        t += dur
    trace = {"traceEvents": events, "displayTimeUnit": "ms",
             "otherData": {k: v for k, v in df.attrs.items() if isinstance(v, (str, int, float, bool))}}
    if path is not None:
        data = json.dumps(trace).encode("utf-8")
        atomic_write(path, lambda f: f.write(data))
    return trace
