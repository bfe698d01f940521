"""Profiling, one way for every device: time an engine through its execution context and tabulate
it with the build's cost estimates.

``profile(ctx, mode=None)`` takes the context's own measurements. End-to-end: ``ctx.time_end_to_end``
(CPU: plain runs under a host timer; GPU: whole-engine CUDA-graph replays timed with CUDA events).
Per layer, by ``mode``:

* ``"replay"`` (GPU default when CUPTI is available, ``runtime/cupti.py``): kernel activity of the
  replayed CUDA graphs, mapped to layers through the graph nodes each layer created when it was
  captured; a layer may launch several kernels (column ``kernels``; ``df.attrs["kernel_stats"]``).
  The idle time between kernels is one more row, ``(gaps)``, so the rows add up to the replay's span
  (``attrs["replay_ms"]``), which differs from the event-timed end-to-end median only by the
  events' own overhead.
* ``"events"`` (GPU fallback; the CPU's only mode): a timer around every layer -- CUDA event pairs
  around eager launches on the GPU, a host timer on the CPU. Per-layer timing adds overhead, so the
  sum of layer medians exceeds the end-to-end median; both are reported, with the context's note
  saying how they were taken. Without CUPTI a GPU profile falls back to it, warns
  (:class:`ProfileFallbackWarning`) and keeps the caveat in ``attrs["fallback"]``.

Columns: layer, type, onnx_ops, precision, tactic, mean_ms, median_ms, pct, flops, bytes,
gflops_per_s, gb_per_s (replay adds kernels). ``df.attrs``: end_to_end_ms, sum_of_layers_ms, runs,
device, mode, note, and what the context adds (GPU: cuda_graph); replay adds replay_ms, gaps_ms,
kernels (the median run's kernels: layer index, name, start_us, dur_us) and kernel_stats.
``runtime/trace.py`` turns any profile into a Chrome / Perfetto trace.
"""

from __future__ import annotations

import functools
import statistics
import time
import warnings

import numpy as np

from ..errors import WorkbenchError
from .feeds import random_feeds
from .trace import to_chrome_trace  # noqa: F401 - part of this module's interface (CLI, notebook)

MODES = ("replay", "events")
GAPS = "(gaps)"
UNATTRIBUTED = "(unattributed)"


class ProfileFallbackWarning(UserWarning):
    """The replay profile was not available; the message says why and what was measured instead."""


def check_mode(ctx, mode: str | None) -> str | None:
    """``mode`` if this context can profile that way (None: the device's default)."""
    if mode is None:
        return None
    if mode not in MODES:
        raise WorkbenchError(f"unknown profile mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "replay" and ctx.device != "gpu":
        raise WorkbenchError("profile mode 'replay' times a CUDA graph's replay; this engine runs on the "
                             f"{ctx.device.upper()} -- leave mode out or use 'events'")
    return mode


def profile(ctx, feeds=None, runs: int = 10, warmup: int = 1, mode: str | None = None):
    """The profile DataFrame of ``runs`` measured runs of ``ctx`` after ``warmup`` plain ones
    (``feeds``: random data of the engine's input shapes when not given; ``mode``: see the module
    doc)."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    mode = check_mode(ctx, mode)
    engine = ctx.engine
    feeds = feeds if feeds is not None else random_feeds(engine.inputs)
    for _ in range(warmup):
        ctx.run(feeds)
    end_to_end = ctx.time_end_to_end(feeds, runs)
    caveat = None
    if ctx.device == "gpu" and mode != "events":
        from .cupti import CuptiUnavailable, replay_profile  # noqa: PLC0415 - GPU only

        try:
            trace = replay_profile(ctx, feeds, runs)
        except CuptiUnavailable as exc:
            caveat = (f"{exc} -- per-layer times fall back to eager runs timed with CUDA events, so their sum "
                      "exceeds the graph replay time")
            warnings.warn(caveat, ProfileFallbackWarning, stacklevel=3)
        else:
            df = replay_table(engine, trace, end_to_end, device=ctx.device)
            df.attrs.update(ctx.profile_attrs())
            return df
    per_layer = ctx.time_layers(feeds, runs)
    df = profile_table(engine, per_layer, end_to_end, device=ctx.device, note=ctx.profile_note)
    df.attrs["mode"] = "events"
    if caveat:
        df.attrs["fallback"] = caveat
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


COLUMNS = ["layer", "type", "onnx_ops", "precision", "tactic", "mean_ms", "median_ms", "flops", "bytes"]
REPLAY_NOTE = ("per-layer times are CUPTI kernel activity of CUDA-graph replays (median per layer over the runs; "
               "a kernel overlapping an earlier one counts once); idle time between kernels is the (gaps) row, so "
               "the rows add up to the replay's span; end-to-end is the median of replays timed with CUDA events")


def _layer_row(layer, ts: list[float]) -> dict:
    return {"layer": layer.name, "type": layer.op, "onnx_ops": "+".join(layer.onnx_ops), "precision": layer.precision,
            "tactic": layer.tactic, "mean_ms": statistics.fmean(ts) if ts else 0.0,
            "median_ms": statistics.median(ts) if ts else 0.0, "flops": layer.flops, "bytes": layer.bytes_moved}


def _finish(df, end_to_end_ms: list[float], *, device: str, note: str, runs: int):
    """Shares, achieved rates and the summary attrs of a profile table."""
    total_med = float(df["median_ms"].sum()) if len(df) else 0.0
    df["pct"] = 100.0 * df["median_ms"] / total_med if total_med else 0.0
    secs = df["median_ms"].where(df["median_ms"] > 0) / 1e3
    df["gflops_per_s"] = (df["flops"] / secs / 1e9).fillna(0.0)
    df["gb_per_s"] = (df["bytes"] / secs / 1e9).fillna(0.0)
    df.attrs["end_to_end_ms"] = float(statistics.median(end_to_end_ms))
    df.attrs["sum_of_layers_ms"] = total_med
    df.attrs["runs"] = runs
    df.attrs["device"] = device
    df.attrs["note"] = note
    return df


def profile_table(engine, per_layer_ms: list[list[float]], end_to_end_ms: list[float], *, device: str, note: str):
    """The profile DataFrame (one row per layer) from per-layer and end-to-end samples in ms."""
    import pandas as pd

    rows = [_layer_row(layer, ts) for layer, ts in zip(engine.layers, per_layer_ms)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return _finish(df, end_to_end_ms, device=device, note=note, runs=len(end_to_end_ms))


def replay_table(engine, trace, end_to_end_ms: list[float], *, device: str = "gpu"):
    """The profile DataFrame of a CUPTI replay (``runtime/cupti.ReplayTrace``): one row per layer
    with its kernel count, then ``(gaps)`` (and ``(unattributed)`` if some activity matched no
    layer)."""
    import pandas as pd

    counts: dict[int, int] = {}
    for k in trace.kernel_stats:
        counts[k["layer"]] = counts.get(k["layer"], 0) + 1
    rows = []
    for i, (layer, ts) in enumerate(zip(engine.layers, trace.layers)):
        rows.append({**_layer_row(layer, ts), "kernels": counts.get(i, 0)})
    extra = [(GAPS, "gaps", trace.gaps_ms)]
    if any(trace.unattributed_ms):
        extra.append((UNATTRIBUTED, "unattributed", trace.unattributed_ms))
    for name, kind, ts in extra:
        rows.append({"layer": name, "type": kind, "onnx_ops": "", "precision": "", "tactic": "",
                     "mean_ms": statistics.fmean(ts), "median_ms": statistics.median(ts), "flops": 0, "bytes": 0,
                     "kernels": counts.get(-1, 0) if kind == "unattributed" else 0})
    df = pd.DataFrame(rows, columns=COLUMNS + ["kernels"])
    _finish(df, end_to_end_ms, device=device, note=REPLAY_NOTE, runs=trace.runs)
    names = [layer.name for layer in engine.layers]
    df.attrs.update({
        "mode": "replay",
        "replay_ms": float(statistics.median(trace.span_ms)),
        "gaps_ms": float(statistics.median(trace.gaps_ms)),
        "kernels": [{**k, "layer": names[k["layer"]] if k["layer"] >= 0 else UNATTRIBUTED} for k in trace.kernels],
        "kernel_stats": [{**k, "layer": names[k["layer"]] if k["layer"] >= 0 else UNATTRIBUTED}
                         for k in trace.kernel_stats],
        "eager_layers": [names[i] for i in trace.eager_layers],
    })
    return df


def kernel_table(df):
    """The kernels of a replay profile as a DataFrame (layer, index, name, median_us, count): a layer
    may launch several. Empty for other modes."""
    import pandas as pd

    return pd.DataFrame(df.attrs.get("kernel_stats") or [], columns=["layer", "index", "name", "median_us", "count"])


def layer_rows(df):
    """The rows of a profile that are layers (without ``(gaps)`` / ``(unattributed)``)."""
    return df[~df["layer"].isin((GAPS, UNATTRIBUTED))] if len(df) else df


def _ms_text(ms: float) -> str:
    """About three significant digits: 0.0213, 4.56, 1,234 (a fixed 3 decimals shows 0.000)."""
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3g}"


def _printable(text) -> str:
    """Names come from the model file: escape control characters before they reach a terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def format_profile(df, top: int = 15) -> str:
    """The profile as text: the ``top`` slowest layers and a summary line (``workbench profile``)."""
    cols = ["layer", "type", "onnx_ops", "precision", "tactic", "median_ms", "pct", "gflops_per_s"]
    if "kernels" in df.columns:
        cols.insert(5, "kernels")
    view = df.sort_values("median_ms", ascending=False).head(top)[cols].copy()
    for col in ("layer", "type", "onnx_ops", "tactic"):
        view[col] = view[col].map(_printable)
    view["onnx_ops"] = view["onnx_ops"].str.slice(0, 40)
    formats = {"median_ms": _ms_text, "pct": lambda x: f"{x:.1f}", "gflops_per_s": lambda x: f"{x:,.2f}"}
    lines = [view.to_string(index=False, formatters=formats)]
    a = df.attrs
    n = len(layer_rows(df))
    if a.get("mode") == "replay":
        lines.append(f"{n:,} layers; end-to-end median {_ms_text(a['end_to_end_ms'])} ms over {a['runs']:,} runs; "
                     f"replay span {_ms_text(a['replay_ms'])} ms = layers {_ms_text(a['sum_of_layers_ms'] - a['gaps_ms'])}"
                     f" + gaps {_ms_text(a['gaps_ms'])} (medians; {a['note']})")
    else:
        lines.append(f"{n:,} layers; end-to-end median {_ms_text(a['end_to_end_ms'])} ms over "
                     f"{a['runs']:,} runs; sum of per-layer medians {_ms_text(a['sum_of_layers_ms'])} ms ({a['note']})")
    if a.get("fallback"):
        lines.append(f"caveat: {_printable(a['fallback'])}")
    return "\n".join(lines)


def compare_profiles(df_a, df_b):
    """(per-layer table, per-op-type table) of two profiles, each with ms_a, ms_b and
    speedup = ms_a / ms_b; layers are matched by name."""
    import pandas as pd

    df_a, df_b = layer_rows(df_a), layer_rows(df_b)
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
    """Peaks for the roofline, measured once per process: GFLOP/s of a GEMM and GB/s of a large
    copy. CPU: an fp32 GEMM with NumPy. GPU: fp16 and fp32 GEMMs and a device copy with CuPy;
    ``gflops_by_precision`` gives each precision the measured peak nearest to it (tf32 the fp32 one,
    bf16 / int8 / fp8 the fp16 one), ``gflops`` is the highest."""
    if device == "gpu":
        return _gpu_peaks()
    a = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32)
    a @ a
    best = min(max(host_ms(lambda: a @ a), 1e-6) for _ in range(5)) / 1e3
    big = np.ones(8 * 2**20, np.float32)
    copy = min(max(host_ms(big.copy), 1e-6) for _ in range(3)) / 1e3
    return {"gflops": 2 * 512**3 / best / 1e9, "gbps": 2 * big.nbytes / copy / 1e9, "source": "measured here (NumPy)"}


def _gpu_peaks(n: int = 4096, copy_mb: int = 512) -> dict:
    from ..kernels.cuda.device import cupy, gpu_info  # noqa: PLC0415 - GPU only
    from ..kernels.cuda.events import time_ms  # noqa: PLC0415

    cp = cupy()
    rng = cp.random.default_rng(0)
    rates = {}
    for prec, dtype in (("fp16", cp.float16), ("fp32", cp.float32)):
        a = rng.standard_normal((n, n), dtype=cp.float32).astype(dtype)
        b = rng.standard_normal((n, n), dtype=cp.float32).astype(dtype)
        ms = time_ms(lambda a=a, b=b: cp.matmul(a, b), warmup=3, iters=10)
        rates[prec] = 2 * n**3 / (ms / 1e3) / 1e9
        del a, b
    src = rng.standard_normal(copy_mb * 2**18, dtype=cp.float32)
    dst = cp.empty_like(src)
    ms = time_ms(lambda: cp.copyto(dst, src), warmup=3, iters=10)
    gbps = 2 * src.nbytes / (ms / 1e3) / 1e9
    del src, dst
    by_prec = {"fp32": rates["fp32"], "tf32": rates["fp32"], "fp16": rates["fp16"], "bf16": rates["fp16"],
               "int8": rates["fp16"], "fp8": rates["fp16"]}
    return {"gflops": max(rates.values()), "gbps": gbps, "gflops_by_precision": by_prec,
            "source": f"measured on {gpu_info().name} (CuPy: {n}x{n} GEMMs, a {copy_mb} MB copy)"}


def peaks_for(engine) -> dict:
    """The roofline peaks of an engine's target: the target's own (``engine.target["peaks"]``)
    where it reports them, else :func:`measured_peaks` of its backend on this machine."""
    p = engine.target.get("peaks") if isinstance(engine.target, dict) else None
    if isinstance(p, dict) and p.get("gflops") and p.get("gbps"):
        return p
    return measured_peaks(engine.backend)


def peak_gflops(peaks: dict, precision: str) -> float:
    """The compute peak that applies to a layer of ``precision``."""
    return float((peaks.get("gflops_by_precision") or {}).get(precision) or peaks["gflops"])


def profile_dict(df) -> dict:
    """The profile as plain JSON-able data (``workbench profile --json``): the summary from
    ``df.attrs`` and one record per layer in plan order."""
    def plain(v):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    layers = [{k: plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
    return {**{k: plain(v) for k, v in df.attrs.items()}, "layers": layers}
