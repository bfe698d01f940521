"""matplotlib charts of a profile and of a comparison. Figures are made with the object API
(``matplotlib.figure.Figure``), not pyplot, so no global state or GUI backend is involved. The
numbers come from ``workbench.runtime.profile`` (profiles, roofline peaks); nothing here times."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def profile_figure(df, peaks: dict, top: int = 15) -> Figure:
    """2x2: top-N layer latency, time by op type, time by precision, roofline scatter."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    (a1, a2), (a3, a4) = fig.subplots(2, 2)
    d = df.sort_values("median_ms", ascending=False).head(top)[::-1]
    a1.barh([_short(n) for n in d["layer"]], d["median_ms"], color="#4c72b0")
    a1.set_xlabel("median ms")
    a1.set_title(f"top {len(d)} layers by latency")
    a1.tick_params(axis="y", labelsize=7)
    by_type = df.groupby("type")["median_ms"].sum().sort_values()[-15:]
    a2.barh(by_type.index.astype(str), by_type.values, color="#55a868")
    a2.set_xlabel("ms (sum of layer medians)")
    a2.set_title("time by op type")
    by_prec = df.groupby("precision")["median_ms"].sum().sort_values()
    a3.bar(by_prec.index.astype(str), by_prec.values, color="#c44e52")
    a3.set_ylabel("ms")
    a3.set_title("time by precision")
    _roofline(a4, df, peaks)
    return fig


def _roofline(ax, df, peaks: dict) -> None:
    ok = (df["flops"] > 0) & (df["bytes"] > 0) & (df["median_ms"] > 0)
    d = df[ok]
    intensity = d["flops"] / d["bytes"]
    ax.scatter(intensity, d["gflops_per_s"], s=12 + 200 * d["pct"] / 100, alpha=0.6, c="#8172b2")
    pf, bw = float(peaks["gflops"]), float(peaks["gbps"])
    lo = max(min(intensity.min() if len(d) else 0.1, pf / bw) / 4, 1e-3)
    hi = max(intensity.max() if len(d) else 10, pf / bw) * 4
    x = np.logspace(np.log10(lo), np.log10(hi), 100)
    ax.plot(x, np.minimum(pf, bw * x), color="k", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(f"roofline (peaks {pf:.0f} GFLOP/s, {bw:.0f} GB/s; {peaks.get('source', 'target')})", fontsize=9)


def compare_figure(table, label_a: str, label_b: str, top: int = 20) -> Figure:
    """Per-layer speed-up of B over A for the layers that take most time in A."""
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    d = table.sort_values("ms_a", ascending=False).head(top)[::-1]
    colors = ["#55a868" if s >= 1 else "#c44e52" for s in d["speedup"]]
    ax.barh([_short(n) for n in d["layer"]], d["speedup"], color=colors)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel(f"speed-up of {label_b} over {label_a} (>1: faster)")
    ax.set_title(f"per-layer speed-up, top {len(d)} layers by time in {label_a}")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def _short(name: str, n: int = 34) -> str:
    name = str(name).replace("$", r"\$")  # a '$' in a model name must not start mathtext
    return name if len(name) <= n else "…" + name[-(n - 1):]


def figure_png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
