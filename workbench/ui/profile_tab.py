"""Profile tab: run the profiler; charts (per-layer latency top N, time by op type, time by precision,
roofline against the device's peaks) in an Output widget; the table; CSV and Chrome-trace export."""

from __future__ import annotations

import os

import ipywidgets as W
from IPython.display import Image, display

from ..runtime.profile import peaks_for, to_chrome_trace
from .charts import figure_png, profile_figure
from .html import df_html, error_html, esc, note_html

COLUMNS = ["layer", "type", "onnx_ops", "precision", "tactic", "median_ms", "pct", "flops", "bytes",
           "gflops_per_s", "gb_per_s"]


class ProfileTab:
    def __init__(self, app):
        self.app = app
        self.df = None
        self.figure = None
        self.runs = W.BoundedIntText(value=10, min=1, max=10000, description="runs")
        self.top = W.BoundedIntText(value=15, min=1, max=200, description="top N")
        self.run_button = W.Button(description="Profile", button_style="primary", icon="tachometer")
        self.summary = W.HTML()
        self.charts = W.Output()
        self.table = W.HTML()
        self.base = W.Text(description="file base", placeholder="profile (writes profile.csv / profile.trace.json)")
        self.csv_button = W.Button(description="Export CSV")
        self.trace_button = W.Button(description="Export Chrome trace")
        self.saved = W.HTML()
        self.run_button.on_click(lambda _: self.run())
        self.csv_button.on_click(lambda _: self.export_csv())
        self.trace_button.on_click(lambda _: self.export_trace())
        self.widget = W.VBox([W.HBox([self.runs, self.top, self.run_button]), self.summary, self.charts,
                              W.HBox([self.base, self.csv_button, self.trace_button]), self.saved, self.table])

    def refresh_model(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        df = self.app.profiles.get(self.app.label) if self.app.label else None
        self.show(df)

    def run(self):
        if self.app.engine is None:
            self.summary.value = note_html("build an engine first", "#b00")
            return None
        self.summary.value = note_html(f"profiling {self.app.label} over {self.runs.value} runs…")
        try:
            df = self.app.profile(runs=self.runs.value)
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
            self.summary.value = self.table.value = ""
            return
        a = df.attrs
        self.summary.value = (f"<b>{esc(self.app.label)}</b> on {esc(a.get('device', '?'))}: end-to-end "
                              f"<b>{a.get('end_to_end_ms', float('nan')):.3f} ms</b> (median of {esc(a.get('runs'))}); "
                              f"sum of layer medians {a.get('sum_of_layers_ms', float('nan')):.3f} ms. "
                              f"<span style='color:#666'>{esc(a.get('note', ''))}</span>")
        self.figure = profile_figure(df, peaks_for(self.app.engine), top=self.top.value)
        with self.charts:
            display(Image(data=figure_png(self.figure), format="png"))
        cols = [c for c in COLUMNS if c in df.columns]
        self.table.value = df_html(df.sort_values("median_ms", ascending=False)[cols], 60, "Layers by time")

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
