"""matplotlib charts of a profile, of the explorer's views and of a comparison. Figures are made
with the object API (``matplotlib.figure.Figure``), not pyplot, so no global state or GUI backend is
involved. The numbers come from ``workbench.runtime.profile`` (profiles, roofline peaks),
``workbench.runtime.trace`` (the timeline) and the explorer's DataFrames (``workbench.explore``);
nothing here times. ``chart_box`` shows a figure as a titled image widget whose box has the classes
``wb-chart`` and ``wb-chart-NAME`` (what the browser tests look for); ``chart_html`` makes the same
as HTML text with an inline ``<img>``."""

from __future__ import annotations

import base64
import html

import numpy as np
from matplotlib.figure import Figure

import workbench as wb

from ..runtime.trace import CONCURRENT_BASE, IDLE, KERNELS, LAYERS, trace_events

PALETTE = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd", "#8c8c8c", "#e17c05", "#937860",
           "#da8bc3"]


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
    """Per-layer speed-up of B over A for the layers (matched groups) that take most time in A."""
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.subplots()
    d = table[table["speedup"].notna()].sort_values("ms_a", ascending=False).head(top)[::-1]
    colors = ["#55a868" if s >= 1 else "#c44e52" for s in d["speedup"]]
    ax.barh([_short(n) for n in d["layer"]], d["speedup"], color=colors)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel(f"speed-up of {_short(label_b, 40)} over {_short(label_a, 40)} (>1: faster)")
    ax.set_title(f"per-layer speed-up, top {len(d)} layers by time in {_short(label_a, 40)}")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def _colors(keys) -> dict:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(dict.fromkeys(keys))}


def timeline_figure(df, max_labels: int = 40) -> Figure:
    """The profile's trace (``runtime.trace``) drawn as tracks: layers coloured by op type, kernels,
    idle gaps. Replay profiles show the median replay as measured; others lay layers end to end."""
    events = [e for e in trace_events(df) if e["ph"] == "X"]
    tracks = sorted({e["tid"] for e in events})
    names = {LAYERS: "layers", KERNELS: "kernels", IDLE: "idle"}
    fig = Figure(figsize=(12, 1.2 + 0.7 * len(tracks)), layout="constrained")
    ax = fig.subplots()
    colors = _colors(e["cat"] for e in events if e["tid"] == LAYERS)
    for row, tid in enumerate(tracks):
        evs = [e for e in events if e["tid"] == tid]
        bars = [(e["ts"], max(e["dur"], 1e-3)) for e in evs]
        if tid == LAYERS:
            c = [colors[e["cat"]] for e in evs]
        elif tid == IDLE:
            c = "#dddddd"
        else:
            c = ["#333333" if i % 2 else "#777777" for i in range(len(evs))]
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=c, edgecolor="none")
    ax.set_yticks(range(len(tracks)))
    ax.set_yticklabels([names.get(t, f"kernels {t - CONCURRENT_BASE}") for t in tracks])
    ax.invert_yaxis()
    ax.set_xlabel("time (us)" + (" -- median replay" if df.attrs.get("mode") == "replay" else " -- layers by median"))
    types = list(colors)[:max_labels]
    ax.legend(handles=[_patch(colors[t], t) for t in types[:12]], fontsize=7, loc="upper right", ncol=2,
              title="op type", title_fontsize=7)
    ax.set_title(f"timeline ({df.attrs.get('device', '?')}, {df.attrs.get('mode', '?')})")
    return fig


def _patch(color, label):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, label=_short(label, 24))


def breakdown_figure(df) -> Figure:
    """Sunburst of time: op types on the inner ring, their precisions on the outer one; and time by
    precision as bars."""
    by_both = wb.latency_by(df, ["type", "precision"])
    by_type = wb.latency_by(df, "type")
    by_prec = wb.latency_by(df, "precision")
    fig = Figure(figsize=(12, 5), layout="constrained")
    a1, a2 = fig.subplots(1, 2, width_ratios=[1.3, 1])
    total = float(by_type["ms"].sum()) or 1.0
    tcol = _colors(by_type["type"])
    pcol = _colors(sorted(by_prec["precision"].astype(str)))
    order = list(by_type["type"])
    inner = [float(x) for x in by_type["ms"]]
    outer_rows = sorted(by_both.itertuples(index=False), key=lambda r: (order.index(r.type), -r.ms))
    a1.pie(inner, radius=0.7, colors=[tcol[t] for t in order], wedgeprops={"width": 0.35, "edgecolor": "w"},
           startangle=90, counterclock=False)
    a1.pie([r.ms for r in outer_rows], radius=1.0, colors=[pcol[str(r.precision)] for r in outer_rows],
           wedgeprops={"width": 0.3, "edgecolor": "w"}, startangle=90, counterclock=False)
    shown = [t for t, v in zip(order, inner) if v / total > 0.01][:12]
    types = a1.legend(handles=[_patch(tcol[t], f"{t} {100 * v / total:.0f}%") for t, v in zip(order, inner)
                               if t in shown], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                      title="op type (inner)", title_fontsize=7)
    a1.add_artist(types)
    a1.legend(handles=[_patch(pcol[p], p) for p in pcol], fontsize=7, loc="lower left", bbox_to_anchor=(1.0, 0.0),
              title="precision (outer)", title_fontsize=7)
    a1.set_title("time by op type (inner) and precision (outer)")
    a2.bar(by_prec["precision"].astype(str), by_prec["ms"], color=[pcol[str(p)] for p in by_prec["precision"]])
    a2.set_ylabel("ms (sum of medians)")
    a2.set_title("time by precision")
    return fig


def memory_figure(timeline) -> Figure:
    """Arena bytes live at every layer step, the highest arena byte in use, the arena's size and the
    peak (``explore.memory_timeline``)."""
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    ax = fig.subplots()
    mb = 2.0**20
    x = timeline["step"]
    ax.fill_between(x, timeline["live_bytes"] / mb, step="mid", alpha=0.5, color="#4c72b0", label="live tensors")
    ax.step(x, timeline["arena_high_bytes"] / mb, where="mid", color="#c44e52", lw=1, label="highest arena byte in use")
    a = timeline.attrs
    ax.axhline(a.get("arena_bytes", 0) / mb, color="k", lw=0.8, ls="--", label="arena size")
    if a.get("peak_step", -1) >= 0:
        ax.annotate(f"peak {a['peak_bytes'] / mb:.2f} MB at {_short(a.get('peak_layer', ''), 30)}",
                    (a["peak_step"], a["peak_bytes"] / mb), fontsize=8, xytext=(5, 5), textcoords="offset points")
    ax.set_xlabel("layer step")
    ax.set_ylabel("MB")
    ax.set_title(f"memory over the plan (arena {a.get('arena_bytes', 0) / mb:.2f} MB; weights "
                 f"{a.get('weights_bytes', 0) / mb:.2f} MB)")
    ax.legend(fontsize=7, loc="upper right")
    return fig


def latency_batch_figure(sweep) -> Figure:
    """Latency (median, p90) and throughput against batch size (``explore.latency_vs_batch``); a
    batch padded up to a bucket is drawn hollow and labelled with the bucket's batch."""
    fig = Figure(figsize=(12, 3.5), layout="constrained")
    ax = fig.subplots()
    x = sweep["batch"]
    ax.plot(x, sweep["median_ms"], "-", color="#4c72b0", lw=1.2, label="median ms")
    ax.plot(x, sweep["p90_ms"], "--", color="#4c72b0", lw=0.8, alpha=0.7, label="p90 ms")
    padded = sweep["padded_to"] > sweep["batch"]
    ax.scatter(x[~padded], sweep["median_ms"][~padded], color="#4c72b0", zorder=3, label="runs at its own size")
    if padded.any():
        ax.scatter(x[padded], sweep["median_ms"][padded], facecolors="white", edgecolors="#4c72b0", zorder=3,
                   label="padded up to a bucket")
        for b, ms, to in zip(x[padded], sweep["median_ms"][padded], sweep["padded_to"][padded]):
            ax.annotate(f"→{to}", (b, ms), fontsize=7, xytext=(3, -10), textcoords="offset points")
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per run")
    ax.set_ylim(bottom=0)
    tp = ax.twinx()
    tp.plot(x, sweep["samples_per_s"], ":", color="#c44e52", marker=".", label="samples/s")
    tp.set_ylabel("samples / s", color="#c44e52")
    tp.set_ylim(bottom=0)
    a = sweep.attrs
    ax.set_title(f"latency vs batch on {a.get('device', '?')} ({a.get('timer', '')}; median of {a.get('runs', '?')})",
                 fontsize=9)
    lines = ax.get_legend_handles_labels()
    more = tp.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    return fig


def chart_box(name: str, title: str):
    """(box, image): a titled PNG chart (``image.value = figure_png(fig)``) in a box with the classes
    ``wb-chart`` and ``wb-chart-NAME``, hidden until there is something to draw."""
    import ipywidgets as W

    image = W.Image(format="png", layout=W.Layout(max_width="100%"))
    box = W.VBox([W.HTML(f"<h4 style='margin:6px 0 2px'>{html.escape(title)}</h4>"), image],
                 layout=W.Layout(display="none"))
    box.add_class("wb-chart")
    box.add_class(f"wb-chart-{name}")
    return box, image


def chart_html(fig: Figure, name: str, title: str) -> str:
    """The figure as an ``<img>`` in a ``div.wb-chart[data-chart=name]`` (escaped title), for HTML
    text; widgets should prefer ``chart_box``, which puts no markup in an HTML value."""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return (f"<div class='wb-chart' data-chart='{html.escape(name, quote=True)}'>"
            f"<h4 style='margin:6px 0 2px'>{html.escape(title)}</h4>"
            f"<img alt='{html.escape(name, quote=True)}' src='data:image/png;base64,{data}' style='max-width:100%'/></div>")


def _short(name: str, n: int = 34) -> str:
    name = str(name).replace("$", r"\$")  # a '$' in a model name must not start mathtext
    return name if len(name) <= n else "…" + name[-(n - 1):]


def figure_png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
