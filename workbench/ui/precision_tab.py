"""Precision tab: one precision dropdown per layer (only what the target supports), paged and
filterable; Rebuild applies the overrides and shows output error vs fp32 and latency before / after."""

from __future__ import annotations

import ipywidgets as W
import pandas as pd

from ..core.precisions import supported_precisions
from ..runtime.profile import latency_ms
from .html import df_html, error_html, esc, note_html

PAGE = 40  # dropdowns per page: thousands of widgets at once make the front end crawl


class PrecisionTab:
    def __init__(self, app):
        self.app = app
        self.overrides: dict[str, str] = {}  # layer name -> precision, applied by Rebuild
        self.dropdowns: dict[str, W.Dropdown] = {}  # the current page's dropdowns, by layer name
        self.page = 0
        self.filter = W.Text(placeholder="filter layers by name, type or precision", description="filter")
        self.prev_button = W.Button(description="◀", layout=W.Layout(width="40px"))
        self.next_button = W.Button(description="▶", layout=W.Layout(width="40px"))
        self.page_label = W.HTML()
        self.set_all = W.Dropdown(description="set shown to", options=["fp32"])
        self.set_all_button = W.Button(description="Apply to filtered")
        self.clear_button = W.Button(description="Clear overrides")
        self.rows = W.VBox()
        self.runs = W.BoundedIntText(value=5, min=1, max=1000, description="timing runs")
        self.rebuild_button = W.Button(description="Rebuild", button_style="primary", icon="refresh")
        self.result = W.HTML()
        self.filter.observe(lambda _: self._goto(0), "value")
        self.prev_button.on_click(lambda _: self._goto(self.page - 1))
        self.next_button.on_click(lambda _: self._goto(self.page + 1))
        self.set_all_button.on_click(lambda _: self._apply_to_filtered())
        self.clear_button.on_click(lambda _: self._clear())
        self.rebuild_button.on_click(lambda _: self.rebuild())
        self.widget = W.VBox([
            W.HBox([self.filter, self.prev_button, self.page_label, self.next_button]),
            W.HBox([self.set_all, self.set_all_button, self.clear_button]),
            self.rows, W.HBox([self.runs, self.rebuild_button]), self.result])

    # ---- table -----------------------------------------------------------------------------
    def supported(self) -> list[str]:
        engine = self.app.engine
        return supported_precisions(engine.backend if engine is not None else "cpu")

    def filtered_layers(self) -> list:
        engine = self.app.engine
        if engine is None:
            return []
        q = self.filter.value.strip().lower()
        return [l for l in engine.layers
                if not q or q in l.name.lower() or q in l.op.lower() or q == l.precision
                or any(q in n.lower() for n in l.onnx_nodes)]

    def refresh_model(self) -> None:
        self.overrides.clear()
        self.result.value = ""
        self.refresh()

    def refresh(self) -> None:
        opts = self.supported()
        self.set_all.options = opts
        self._goto(self.page)

    def _goto(self, page: int) -> None:
        layers = self.filtered_layers()
        pages = max(1, -(-len(layers) // PAGE))
        self.page = min(max(page, 0), pages - 1)
        self.page_label.value = f"page {self.page + 1}/{pages} · {len(layers)} layers · {len(self.overrides)} overrides"
        opts = self.supported()
        self.dropdowns = {}
        rows = [W.HTML("<b style='display:inline-block;width:420px'>layer</b><b style='display:inline-block;"
                       "width:160px'>type</b><b>built</b> → <b>override</b>")]
        for layer in layers[self.page * PAGE:(self.page + 1) * PAGE]:
            value = self.overrides.get(layer.name, layer.precision)
            dd = W.Dropdown(options=opts + ([value] if value not in opts else []), value=value,
                            layout=W.Layout(width="100px"))
            dd.observe(lambda ch, name=layer.name: self._set(name, ch["new"]), "value")
            self.dropdowns[layer.name] = dd
            label = (f"<span style='display:inline-block;width:420px;overflow:hidden;text-overflow:ellipsis' "
                     f"title='{esc(layer.name)}'>{esc(layer.name)}</span><span style='display:inline-block;"
                     f"width:160px'>{esc(layer.op)}</span><span style='display:inline-block;width:50px'>"
                     f"{esc(layer.precision)}</span>")
            rows.append(W.HBox([W.HTML(label), dd]))
        self.rows.children = rows

    def _set(self, layer_name: str, precision: str) -> None:
        self.overrides[layer_name] = precision  # kept across rebuilds until "Clear overrides"
        self.page_label.value = self.page_label.value.rsplit("·", 1)[0] + f"· {len(self.overrides)} overrides"

    def _apply_to_filtered(self) -> None:
        for layer in self.filtered_layers():
            self.overrides[layer.name] = self.set_all.value
        self._goto(self.page)

    def _clear(self) -> None:
        self.overrides.clear()
        self._goto(self.page)

    # ---- rebuild ---------------------------------------------------------------------------
    def rebuild(self):
        """Build with the overrides; report output error vs fp32 and latency before vs after."""
        app = self.app
        before = app.engine
        self.result.value = note_html("rebuilding…")
        try:
            after = app.build(layer_precisions=dict(self.overrides))
            app.tabs.selected_index = 2  # stay on this tab to show the result
            feeds = app.feeds(after)
            t_before, t_after = latency_ms(before, feeds, self.runs.value), latency_ms(after, feeds, self.runs.value)
            errs = app.output_error(after)
        except Exception as exc:  # an override the target cannot run is reported, not raised
            self.result.value = error_html(exc)
            return None
        changed = [(l.name, l.precision) for l in after.layers if l.name in self.overrides]
        table = pd.DataFrame([{"output": k, "rel. error vs fp32": v} for k, v in errs.items()])
        lat = pd.DataFrame([{"engine": "before", "median ms": t_before}, {"engine": "after", "median ms": t_after},
                            {"engine": "speed-up", "median ms": t_before / t_after if t_after else float("nan")}])
        self.last_result = {"errors": errs, "before_ms": t_before, "after_ms": t_after, "changed": changed}
        self.result.value = (note_html(f"rebuilt as {app.label}: {len(changed)} layers overridden")
                             + df_html(table, 20, "Output error vs fp32 reference")
                             + df_html(lat, 5, "End-to-end latency"))
        return after
