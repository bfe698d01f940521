"""Profile tab: run the profiler (on the GPU: the replayed CUDA graph, or CUDA events, chosen by
``mode``); charts (per-layer latency top N, time by op type, time by precision, roofline against the
device's peaks) in an Output widget; the timeline of the profile's trace, the sunburst of time by op
type and precision, the memory over the plan, the linters' findings; the table (and on the GPU the
kernels of each layer); CSV and Chrome-trace export. "Latency vs batch" runs the engine at several
batch sizes (``wb.latency_vs_batch``: by default its buckets and its range's ends) and charts
median / p90 ms and samples per second, with the bucket each batch was padded to."""

from __future__ import annotations

import os

import ipywidgets as W
from IPython.display import Image, display

import workbench as wb

from ..runtime.buckets import default_batches
from ..runtime.profile import kernel_table, peaks_for, to_chrome_trace
from .charts import (
    breakdown_figure,
    chart_box,
    figure_png,
    latency_batch_figure,
    memory_figure,
    profile_figure,
    timeline_figure,
)
from .html import df_html, error_html, esc, note_html
from .ranges import parse_batches

COLUMNS = ["layer", "type", "onnx_ops", "precision", "tactic", "kernels", "median_ms", "pct", "flops", "bytes",
           "gflops_per_s", "gb_per_s"]


class ProfileTab:
    def __init__(self, app):
        self.app = app
        self.df = None
        self.figure = None
        self.runs = W.BoundedIntText(value=10, min=1, max=10000, description="runs")
        self.top = W.BoundedIntText(value=15, min=1, max=200, description="top N")
        self.mode = W.Dropdown(options=[("auto", None), ("replay (GPU)", "replay"), ("events", "events")], value=None,
                               description="mode")
        self.run_button = W.Button(description="Profile", button_style="primary", icon="tachometer")
        self.summary = W.HTML()
        self.charts = W.Output()
        self.timeline, self.timeline_image = chart_box("timeline", "Timeline")
        self.breakdown, self.breakdown_image = chart_box("breakdown", "Latency by op type and precision")
        self.memory, self.memory_image = chart_box("memory", "Memory over the plan")
        self.memory_table = W.HTML()
        self.findings = W.HTML()
        self.table = W.HTML()
        self.base = W.Text(description="file base", placeholder="profile (writes profile.csv / profile.trace.json)")
        self.csv_button = W.Button(description="Export CSV")
        self.trace_button = W.Button(description="Export Chrome trace")
        self.saved = W.HTML()
        self.batches = W.Text(description="batches", placeholder="default: the engine's buckets and range ends")
        self.sweep_button = W.Button(description="Latency vs batch", icon="line-chart")
        self.sweep_summary = W.HTML()
        self.sweep_box, self.sweep_image = chart_box("latency-batch", "Latency vs batch")
        self.sweep_table = W.HTML()
        self.sweep_df = None
        self.sweep_button.on_click(lambda _: self.sweep())
        self.run_button.on_click(lambda _: self.run())
        self.csv_button.on_click(lambda _: self.export_csv())
        self.trace_button.on_click(lambda _: self.export_trace())
        self.widget = W.VBox([W.HBox([self.runs, self.top, self.mode, self.run_button]), self.summary, self.charts,
                              self.timeline, self.breakdown, self.memory, self.memory_table, self.findings,
                              W.HBox([self.base, self.csv_button, self.trace_button]), self.saved, self.table,
                              W.HBox([self.batches, self.sweep_button]), self.sweep_summary, self.sweep_box,
                              self.sweep_table])

    def refresh_model(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        df = self.app.profiles.get(self.app.label) if self.app.label else None
        self.show(df)
        self.show_sweep(None)
        engine = self.app.engine
        try:
            picks = default_batches(engine.plan) if engine is not None else None
        except Exception:  # noqa: BLE001 - an engine without a batch to sweep: say so when asked
            picks = None
        self.batches.placeholder = (f"default {', '.join(map(str, picks))}" if picks
                                    else "default: the engine's buckets and range ends")

    def sweep(self):
        """Time the current engine at each batch in the ``batches`` field (or the defaults) and chart it."""
        if self.app.engine is None:
            self.sweep_summary.value = note_html("build an engine first", "#b00")
            return None
        try:
            batches = parse_batches(self.batches.value)
            self.sweep_summary.value = note_html(f"timing {self.app.label} at batch sizes "
                                                 f"{batches or default_batches(self.app.engine.plan)}…")
            df = wb.latency_vs_batch(self.app.engine, batches, runs=self.runs.value)
        except Exception as exc:
            self.sweep_summary.value = error_html(exc)
            return None
        self.show_sweep(df)
        return df

    def show_sweep(self, df) -> None:
        self.sweep_df = df
        if df is None:
            self.sweep_summary.value = self.sweep_table.value = ""
            self.sweep_box.layout.display = "none"
            return
        best = df.loc[df["samples_per_s"].idxmax()]
        self.sweep_summary.value = (f"<b>{esc(self.app.label)}</b>: {len(df)} batch sizes; highest throughput "
                                    f"{best['samples_per_s']:.0f} samples/s at batch {int(best['batch'])} "
                                    f"({best['median_ms']:.3f} ms)")
        self.sweep_image.value = figure_png(latency_batch_figure(df))
        self.sweep_box.layout.display = ""
        self.sweep_table.value = df_html(df, 50, "Latency by batch size")

    def run(self):
        if self.app.engine is None:
            self.summary.value = note_html("build an engine first", "#b00")
            return None
        self.summary.value = note_html(f"profiling {self.app.label} over {self.runs.value} runs…")
        try:
            df = self.app.profile(runs=self.runs.value, mode=self.mode.value)
        except Exception as exc:
            self.summary.value = error_html(exc)
            return None
        self.show(df)
        self.app.optimize_tab.update_timing()
        self.app.optimize_tab.show_details()
        return df

    def show(self, df) -> None:
        self.df = df
        self.charts.clear_output()
        if df is None:
            self.summary.value = self.table.value = self.memory_table.value = self.findings.value = ""
            for box in (self.timeline, self.breakdown, self.memory):
                box.layout.display = "none"
            return
        a = df.attrs
        if a.get("mode") == "replay":
            how = (f"replay span {a.get('replay_ms', float('nan')):.3f} ms = layers "
                   f"{a['sum_of_layers_ms'] - a.get('gaps_ms', 0.0):.3f} + gaps {a.get('gaps_ms', float('nan')):.3f} ms")
        else:
            how = f"sum of layer medians {a.get('sum_of_layers_ms', float('nan')):.3f} ms"
        caveat = f"<div style='color:#b00'>{esc(a['fallback'])}</div>" if a.get("fallback") else ""
        self.summary.value = (f"<b>{esc(self.app.label)}</b> on {esc(a.get('device', '?'))} ({esc(a.get('mode', '?'))}): "
                              f"end-to-end <b>{a.get('end_to_end_ms', float('nan')):.3f} ms</b> (median of "
                              f"{esc(a.get('runs'))}); {how}. <span style='color:#666'>{esc(a.get('note', ''))}</span>"
                              + caveat)
        engine = self.app.engine
        self.figure = profile_figure(df, peaks_for(engine), top=self.top.value)
        with self.charts:
            display(Image(data=figure_png(self.figure), format="png"))
        self.memory_view = wb.memory_timeline(engine)
        for box, image, fig in ((self.timeline, self.timeline_image, timeline_figure(df)),
                                (self.breakdown, self.breakdown_image, breakdown_figure(df)),
                                (self.memory, self.memory_image, memory_figure(self.memory_view))):
            image.value = figure_png(fig)
            box.layout.display = ""
        peak = wb.memory_peak(engine)
        self.memory_table.value = df_html(peak[["tensor", "producer", "first", "last", "arena_bytes", "pct"]], 10,
                                          f"What holds the peak (step {peak.attrs['step']})")
        self.lint_findings = wb.lint(engine, df)
        if self.lint_findings:
            import pandas as pd

            rows = pd.DataFrame([{"rule": f.rule, "severity": f.severity, "message": f.message,
                                  "layers": len(f.layers)} for f in self.lint_findings])
            self.findings.value = df_html(rows, 20, "Findings (linters)")
        else:
            self.findings.value = "<h4 style='margin:4px 0'>Findings (linters)</h4><i>none</i>"
        cols = [c for c in COLUMNS if c in df.columns]
        tables = df_html(df.sort_values("median_ms", ascending=False)[cols], 60, "Layers by time")
        kernels = kernel_table(df)
        if len(kernels):
            tables += df_html(kernels, 100, "Kernels of each layer (median replay)")
        self.table.value = tables

    def _base(self) -> str:
        return self.base.value.strip() or "profile"

    def export_csv(self, path: str | None = None) -> str | None:
        if self.df is None:
            self.saved.value = note_html("profile first", "#b00")
            return None
        path = path or self._base() + ".csv"
        self.df.to_csv(path, index=False)
        self.saved.value = f"CSV written: <code>{esc(os.path.abspath(path))}</code>"
        return path

    def export_trace(self, path: str | None = None) -> str | None:
        if self.df is None:
            self.saved.value = note_html("profile first", "#b00")
            return None
        path = path or self._base() + ".trace.json"
        to_chrome_trace(self.df, path)
        self.saved.value = (f"Chrome trace written: <code>{esc(os.path.abspath(path))}</code> "
                            "(open in chrome://tracing or ui.perfetto.dev)")
        return path
