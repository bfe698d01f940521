"""The explorer's views of one engine and its profile, each a pandas DataFrame.

* ``latency_by(profile, "type" | "precision" | ["type", "precision"])``: time per op type, per
  precision, or per (type, precision) pair (the sunburst's rings): ms, pct, layers. The
  ``(gaps)`` row of a replay profile counts as its own type ``gaps`` (idle time is time too).
* ``memory_timeline(engine)``: the arena over the plan. One row per layer step: what is live while
  that layer runs (its inputs, its outputs and everything produced earlier and read later, by the
  plan's liveness), live bytes, the highest arena byte in use, the bytes of weights it reads;
  ``attrs``: arena_bytes, peak_step, peak_bytes, weights_bytes.
* ``memory_peak(engine)``: the tensors that hold the arena at its peak step, largest first.
* ``roofline(engine, profile, peaks=None)``: per layer, arithmetic intensity (FLOP per byte moved),
  achieved GFLOP/s and GB/s, the attainable rate min(peak, bandwidth x intensity) against the peaks
  measured on this machine (``runtime.profile.peaks_for``: NumPy on the CPU; CuPy GEMMs per
  precision and a device copy on the GPU), efficiency = achieved / attainable, and whether the layer
  is compute- or memory-bound.

FLOP and byte counts are the build's cost model (``layer.flops`` / ``layer.bytes_moved``); times
come from the profile, so every number here can be checked against the plan and the profile.
"""

from __future__ import annotations

import math

import pandas as pd

from ..core.liveness import last_uses_of
from ..runtime.profile import GAPS, UNATTRIBUTED, layer_rows, peak_gflops, peaks_for


def latency_by(profile, by="type") -> pd.DataFrame:
    """Median ms per group of layers (``by``: a profile column or a list of them), largest first."""
    keys = [by] if isinstance(by, str) else list(by)
    df = profile.copy()
    df.loc[df["layer"] == GAPS, keys] = "gaps"
    df.loc[df["layer"] == UNATTRIBUTED, keys] = "unattributed"
    total = float(df["median_ms"].sum())
    out = (df.groupby(keys, sort=False)
             .agg(ms=("median_ms", "sum"), layers=("layer", "count"))
             .reset_index())
    out["pct"] = 100.0 * out["ms"] / total if total else 0.0
    out = out.sort_values("ms", ascending=False, kind="stable").reset_index(drop=True)
    out.attrs["total_ms"] = total
    return out[keys + ["ms", "pct", "layers"]]


def latency_by_type(profile) -> pd.DataFrame:
    return latency_by(profile, "type")


def latency_by_precision(profile) -> pd.DataFrame:
    return latency_by(profile, "precision")


# ---- memory -------------------------------------------------------------------------------------

def tensor_intervals(engine) -> pd.DataFrame:
    """Every intermediate tensor: producer step, last step it is read, bytes, arena offset."""
    plan = engine.plan
    last = last_uses_of(plan.layers, [o.name for o in plan.outputs])
    rows = []
    for i, layer in enumerate(plan.layers):
        specs = {s.name: s for s in layer.output_specs}
        for name in layer.outputs:
            if not name:
                continue
            spec = specs.get(name) or plan.tensors.get(name)
            size = spec.nbytes if spec is not None else None
            rows.append({"tensor": name, "producer": layer.name, "first": i, "last": max(last.get(name, i), i),
                         "bytes": size, "arena_bytes": plan.arena.slot(size) if size is not None else None,
                         "offset": plan.arena.offsets.get(name)})
    return pd.DataFrame(rows, columns=["tensor", "producer", "first", "last", "bytes", "arena_bytes", "offset"])


def memory_timeline(engine, intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """The arena's occupancy at every layer step (see the module doc); ``intervals``: the engine's
    ``tensor_intervals`` when the caller has them already."""
    plan = engine.plan
    t = tensor_intervals(engine) if intervals is None else intervals
    rows = []
    for i, layer in enumerate(plan.layers):
        live = t[(t["first"] <= i) & (t["last"] >= i)]
        sized = live.dropna(subset=["arena_bytes"])
        placed = sized.dropna(subset=["offset"])
        high = int((placed["offset"] + placed["arena_bytes"]).max()) if len(placed) else 0
        weights = sum(int(plan.constants[n].nbytes) for n in dict.fromkeys(layer.inputs) if n in plan.constants)
        rows.append({"step": i, "layer": layer.name, "type": layer.op, "live_tensors": len(live),
                     "live_bytes": int(sized["arena_bytes"].sum()), "arena_high_bytes": high,
                     "output_bytes": int(t[t["first"] == i]["bytes"].fillna(0).sum()), "weights_bytes": weights,
                     "unsized_tensors": int(len(live) - len(sized))})
    df = pd.DataFrame(rows, columns=["step", "layer", "type", "live_tensors", "live_bytes", "arena_high_bytes",
                                     "output_bytes", "weights_bytes", "unsized_tensors"])
    peak = int(df["live_bytes"].idxmax()) if len(df) else -1
    df.attrs.update({"arena_bytes": int(plan.arena.bytes), "peak_step": peak,
                     "peak_bytes": int(df["live_bytes"].max()) if len(df) else 0,
                     "peak_layer": df["layer"].iloc[peak] if len(df) else "",
                     "weights_bytes": int(sum(int(getattr(c, "nbytes", 0)) for c in plan.constants.values()))})
    return df


def memory_peak(engine) -> pd.DataFrame:
    """The tensors live at the arena's peak step, largest first (what holds the peak)."""
    t = tensor_intervals(engine)
    timeline = memory_timeline(engine, t)
    step = timeline.attrs["peak_step"]
    live = t[(t["first"] <= step) & (t["last"] >= step)].sort_values("arena_bytes", ascending=False, kind="stable")
    total = float(live["arena_bytes"].sum())
    live = live.assign(pct=100.0 * live["arena_bytes"] / total if total else 0.0).reset_index(drop=True)
    live.attrs.update({"step": step, "layer": timeline.attrs["peak_layer"], "peak_bytes": timeline.attrs["peak_bytes"]})
    return live


# ---- roofline ----------------------------------------------------------------------------------

def roofline(engine, profile, peaks: dict | None = None) -> pd.DataFrame:
    """Per layer: intensity, achieved rates, attainable rate and efficiency (see the module doc)."""
    peaks = peaks or peaks_for(engine)
    bw = float(peaks["gbps"])
    rows = []
    for _, r in layer_rows(profile).iterrows():
        ms, flops, nbytes = float(r["median_ms"]), float(r["flops"]), float(r["bytes"])
        pf = peak_gflops(peaks, str(r["precision"]))
        intensity = flops / nbytes if nbytes > 0 else math.nan
        secs = ms / 1e3 if ms > 0 else math.nan
        achieved = flops / secs / 1e9 if flops > 0 else 0.0
        attainable = min(pf, bw * intensity) if flops > 0 and nbytes > 0 else (bw if nbytes > 0 else math.nan)
        # a layer with no arithmetic (copies, layout) is measured against bandwidth alone
        rate = achieved if flops > 0 else (nbytes / secs / 1e9 if nbytes > 0 else math.nan)
        eff = rate / attainable if attainable and attainable == attainable and rate == rate else math.nan
        bound = ("compute" if flops > 0 and nbytes > 0 and bw * intensity >= pf
                 else "memory" if nbytes > 0 else "-")
        rows.append({"layer": r["layer"], "type": r["type"], "precision": r["precision"], "median_ms": ms,
                     "flops": flops, "bytes": nbytes, "intensity": intensity, "achieved_gflops": achieved,
                     "achieved_gbps": nbytes / secs / 1e9 if nbytes > 0 else 0.0, "peak_gflops": pf,
                     "attainable_gflops": attainable if flops > 0 else math.nan, "efficiency": eff, "bound": bound,
                     "pct": float(r["pct"])})
    df = pd.DataFrame(rows, columns=["layer", "type", "precision", "median_ms", "flops", "bytes", "intensity",
                                     "achieved_gflops", "achieved_gbps", "peak_gflops", "attainable_gflops",
                                     "efficiency", "bound", "pct"])
    df.attrs["peaks"] = dict(peaks)
    return df
