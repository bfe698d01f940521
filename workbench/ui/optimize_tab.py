"""Optimize tab: build settings, Build (with a tqdm progress bar), node counts before / after, the
fusion log (fired / declined with reasons, filterable), and the graph view with layer details."""

from __future__ import annotations

import ipywidgets as W
import pandas as pd
from tqdm.auto import tqdm

import workbench as wb

from ..core.precisions import DEVICES, REQUESTABLE
from .details import layer_details_html
from .graph import GraphView, engine_graph
from .html import df_html, error_html, esc
from .session import device_precisions


def shapes_text(shapes: dict) -> str:
    return ",".join(f"{k}:{'x'.join(str(d) for d in v)}" for k, v in shapes.items())


class OptimizeTab:
    def __init__(self, app):
        self.app = app
        self.device = W.Dropdown(options=list(DEVICES), value=app.settings["device"], description="device")
        self.precision = W.Dropdown(options=list(REQUESTABLE), value=app.settings["precision"],
                                    description="precision")
        self.shapes = W.Text(description="shapes", placeholder="input:1x3x224x224,mask:1x128",
                             layout=W.Layout(width="50%"))
        self.disable = W.SelectMultiple(options=sorted(wb.pass_names()), description="disable", rows=4)
        self.build_button = W.Button(description="Build", button_style="primary", icon="cogs")
        self.progress = W.Output()
        self.error = W.HTML()
        self.counts = W.HTML()
        self.log_status = W.ToggleButtons(options=["all", "fired", "declined"], value="all",
                                          style={"button_width": "70px"})
        self.log_filter = W.Text(placeholder="filter by rule, node or reason", description="filter")
        self.log = W.HTML()
        self.graph = GraphView()
        self.details = W.HTML("<i>click a layer in the graph</i>")
        self.device.observe(lambda _: self._precision_options(), "value")
        self.build_button.on_click(lambda _: self.build())
        self.log_status.observe(lambda _: self._render_log(), "value")
        self.log_filter.observe(lambda _: self._render_log(), "value")
        self.graph.observe(lambda _: self.show_details(), "selected")
        settings = W.VBox([W.HBox([self.device, self.precision]), self.shapes, self.disable,
                           W.HBox([self.build_button]), self.progress, self.error, self.counts])
        fusion_log = W.VBox([W.HTML("<h4 style='margin:4px 0'>Fusion log</h4>"),
                             W.HBox([self.log_status, self.log_filter]), self.log])
        self.widget = W.VBox([settings, fusion_log, self.graph, self.details])
        self._precision_options()

    def _precision_options(self) -> None:
        try:
            offered = device_precisions(self.device.value)
        except Exception as exc:  # e.g. "gpu" on a machine without one: say so in the tab
            self.error.value = error_html(exc)
            return
        opts = [p for p in REQUESTABLE if p in offered or p == "best"]
        value = self.precision.value if self.precision.value in opts else opts[0]
        self.precision.options = opts
        self.precision.value = value

    def refresh_model(self) -> None:
        self.shapes.value = shapes_text(self.app.settings["shapes"])
        self.error.value = self.counts.value = self.log.value = ""
        self.graph.graph = {"nodes": [], "edges": []}
        self.graph.selected = ""
        self.build_button.disabled = self.app.net is None

    def settings(self) -> dict:
        text = self.shapes.value.strip()
        return {"device": self.device.value, "precision": self.precision.value,
                "shapes": text if text else {}, "disable": list(self.disable.value)}

    def build(self):
        """Build from the widgets' settings; errors are shown in the tab (and returned as None)."""
        self.error.value = ""
        self.progress.clear_output()
        self.build_button.disabled = True
        try:
            with self.progress:
                return self.app.build(progress=tqdm, **self.settings())
        except Exception as exc:  # a bad shape string or unsupported op is the user's to fix: show it
            self.error.value = error_html(exc)
            return None
        finally:
            self.build_button.disabled = self.app.net is None

    def refresh(self) -> None:
        engine = self.app.engine
        if engine is None:
            return
        self.desc = engine.describe()
        nodes = self.desc.get("nodes", {})
        fus = self.desc.get("fusions", [])
        fired = sum(1 for f in fus if f.get("status") == "fired")
        self.counts.value = (f"<b>{esc(self.app.label)}</b>: {esc(nodes.get('before', '?'))} ONNX nodes → "
                             f"{esc(nodes.get('after', '?'))} nodes after optimization → "
                             f"<b>{len(self.desc['layers'])}</b> layers · {fired} fusions fired, "
                             f"{len(fus) - fired} declined · target {esc(engine.backend)}")
        self._render_log()
        self.graph.graph = engine_graph(engine, self.app.net)
        self.update_timing()
        self.show_details()

    def update_timing(self) -> None:
        df = self.app.profiles.get(self.app.label)
        self.graph.timing = {} if df is None else {r.layer: float(r.pct) for r in df.itertuples(index=False)}

    def fusion_rows(self) -> list[dict]:
        rows = []
        q = self.log_filter.value.strip().lower()
        for f in getattr(self, "desc", {}).get("fusions", []):
            if self.log_status.value != "all" and f.get("status") != self.log_status.value:
                continue
            nodes = f.get("nodes") or []
            row = {"rule": f.get("rule", ""), "status": f.get("status", ""), "reason": f.get("reason") or "",
                   "nodes": ", ".join(map(str, nodes[:6])) + (" …" if len(nodes) > 6 else "")}
            if q and q not in " ".join(map(str, row.values())).lower() + " ".join(map(str, nodes)).lower():
                continue
            rows.append(row)
        return rows

    def _render_log(self) -> None:
        rows = self.fusion_rows()
        total = len(getattr(self, "desc", {}).get("fusions", []))
        if not total:
            self.log.value = "<i>no fusion attempts logged for this engine</i>"
            return
        df = pd.DataFrame(rows, columns=["rule", "status", "reason", "nodes"])
        self.log.value = df_html(df, 200) + f"<div style='color:#666'>{len(rows)} of {total} attempts</div>"

    def show_details(self) -> None:
        engine = self.app.engine
        if engine is None or not hasattr(self, "desc"):
            return
        offsets = engine.reports.get("memory", {}).get("offsets")
        self.details.value = layer_details_html(self.desc, self.graph.selected,
                                                self.app.profiles.get(self.app.label), offsets)
