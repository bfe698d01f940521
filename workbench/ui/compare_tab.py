"""Compare tab: two engines of this session (e.g. fp32 vs fp16): end-to-end latency, and per layer
A vs B -- layers matched through the ONNX nodes they cover, so engines that fused differently still
line up (``workbench.compare``): time, precision, tactic and the relative error of B's tensors against
A's at each matched group's outputs; time by op type."""

from __future__ import annotations

import ipywidgets as W
from IPython.display import Image, display

import workbench as wb

from ..runtime.profile import compare_profiles
from .charts import compare_figure, figure_png
from .html import df_html, error_html, esc, note_html

LAYER_COLUMNS = ["layer", "match", "type_a", "type_b", "precision_a", "precision_b", "tactic_a", "tactic_b", "ms_a",
                 "ms_b", "speedup", "rel_err"]


class CompareTab:
    def __init__(self, app):
        self.app = app
        self.a = W.Dropdown(description="A")
        self.b = W.Dropdown(description="B")
        self.runs = W.BoundedIntText(value=5, min=1, max=10000, description="runs")
        self.button = W.Button(description="Compare", button_style="primary")
        self.summary = W.HTML()
        self.chart = W.Output()
        self.tables = W.HTML()
        self.result = None
        self.button.on_click(lambda _: self.compare(self.a.value, self.b.value, self.runs.value))
        self.widget = W.VBox([W.HBox([self.a, self.b, self.runs, self.button]), self.summary, self.chart, self.tables])

    def refresh_model(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        labels = list(self.app.engines)
        old_a, old_b = self.a.value, self.b.value
        self.a.options, self.b.options = labels, labels
        if labels:
            self.a.value = old_a if old_a in labels else labels[0]
            self.b.value = old_b if old_b in labels and old_b != self.a.value else labels[-1]

    def compare(self, label_a, label_b, runs: int = 5):
        """Profile both engines on the same inputs and match their layers; returns {"a", "b", "e2e_a",
        "e2e_b", "layers" (per matched layer group, ``workbench.compare``), "by_type"}."""
        if not label_a or not label_b:
            self.summary.value = note_html("build two engines first (e.g. fp32 and fp16)", "#b00")
            return None
        try:
            df_a = self.app.profile(runs=runs, label=label_a)
            df_b = self.app.profile(runs=runs, label=label_b)
            engine_a, engine_b = self.app.engines[label_a], self.app.engines[label_b]
            layers = wb.compare(engine_a, engine_b, df_a, df_b, feeds=self.app.feeds(engine_a))
        except Exception as exc:
            self.summary.value = error_html(exc)
            return None
        _, by_type = compare_profiles(df_a, df_b)
        e2e_a, e2e_b = df_a.attrs["end_to_end_ms"], df_b.attrs["end_to_end_ms"]
        self.result = {"a": label_a, "b": label_b, "e2e_a": e2e_a, "e2e_b": e2e_b, "layers": layers, "by_type": by_type}
        fused = layers.attrs.get("fused_differently", 0)
        self.summary.value = (f"end-to-end: <b>{esc(label_a)}</b> {e2e_a:.3f} ms · <b>{esc(label_b)}</b> "
                              f"{e2e_b:.3f} ms · speed-up of B over A <b>{e2e_a / e2e_b:.2f}×</b> · {len(layers)} "
                              f"matched layer groups, {fused} fused differently")
        self.chart.clear_output()
        if layers["speedup"].notna().any():
            self.figure = compare_figure(layers, label_a, label_b)
            with self.chart:
                display(Image(data=figure_png(self.figure), format="png"))
        self.tables.value = ("<div class='wb-compare-layers'>" + df_html(layers[LAYER_COLUMNS], 200, "Per layer: A vs B")
                             + "</div>" + df_html(by_type, 40, "Time by op type"))
        return self.result
