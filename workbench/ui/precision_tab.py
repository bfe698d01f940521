"""Precision tab: one precision dropdown per layer (only what the target supports), paged and
filterable, each with a bar of the error that layer adds (``engine.accuracy``: the outputs' error
with only that layer at its precision, against an fp32 reference of the same plan). Changing a
dropdown re-measures a preview build with the overrides (unless "re-measure on change" is off);
Rebuild applies them and shows output error vs fp32 and latency before / after. "Auto under
budget" builds ``precision="best"`` with an accuracy budget (``builder/mixed.py``) and draws the
latency-vs-error chart of the candidates it tried.

``layer_errors()`` is what a graph colouring by error reads: layer name -> error the layer adds."""

from __future__ import annotations

import dataclasses
import math

import ipywidgets as W
import pandas as pd

import workbench as wb

from ..core.precisions import supported_precisions
from ..runtime.accuracy import IMPACT_SECONDS
from ..runtime.describe import end_to_end_line
from ..runtime.profile import latency_ms
from .charts import chart_html
from .html import df_html, error_html, esc, note_html

PAGE = 40  # dropdowns per page: thousands of widgets at once make the front end crawl
BAR_PX = 140  # width of an error bar at the top of the scale
LOG_FLOOR, LOG_CEIL = -8, 0  # the bars' log10 scale: 1e-8 (empty) .. 1 (full)


def error_bar(value, title: str = "") -> str:
    """A horizontal bar (log scale) with the error in numbers; grey dash where none was measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span style='color:#999'>–</span>"
    if math.isinf(value):
        frac, text, color = 1.0, "inf", "#b00"
    else:
        lg = math.log10(value) if value > 0 else LOG_FLOOR
        frac = min(max((lg - LOG_FLOOR) / (LOG_CEIL - LOG_FLOOR), 0.0), 1.0)
        text = "0" if value == 0 else f"{value:.1e}"
        color = "#2a9d8f" if lg < -4 else "#e9c46a" if lg < -2 else "#e76f51"
    width = max(int(frac * BAR_PX), 1)
    return (f"<span title='{esc(title)}' style='display:inline-flex;align-items:center;gap:6px'>"
            f"<span style='display:inline-block;width:{BAR_PX}px;height:10px;background:#f1f1f1'>"
            f"<span style='display:block;width:{width}px;height:10px;background:{color}'></span></span>"
            f"<span style='font-size:11px;width:56px'>{esc(text)}</span></span>")


class PrecisionTab:
    def __init__(self, app):
        self.app = app
        self.overrides: dict[str, str] = {}  # layer name -> precision, applied by Rebuild
        self.dropdowns: dict[str, W.Dropdown] = {}  # the current page's dropdowns, by layer name
        self.bars: dict[str, W.HTML] = {}  # the current page's error bars, by layer name
        self.report = None  # the last AccuracyReport shown
        self.measured: str | None = None  # what it measured: the engine label, or "preview"
        self.last_result: dict | None = None
        self.last_auto: dict | None = None
        self.active = False  # a measure was asked for: changes re-measure from then on
        self.page = 0
        self.filter = W.Text(placeholder="filter layers by name, type or precision", description="filter")
        self.prev_button = W.Button(description="◀", layout=W.Layout(width="40px"))
        self.next_button = W.Button(description="▶", layout=W.Layout(width="40px"))
        self.page_label = W.HTML()
        self.set_all = W.Dropdown(description="set shown to", options=["fp32"])
        self.set_all_button = W.Button(description="Apply to filtered")
        self.clear_button = W.Button(description="Clear overrides")
        self.measure_button = W.Button(description="Measure error", icon="crosshairs")
        self.auto_measure = W.Checkbox(value=True, description="re-measure on change", indent=False)
        self.accuracy = W.HTML()
        self.rows = W.VBox()
        self.runs = W.BoundedIntText(value=5, min=1, max=1000, description="timing runs")
        self.rebuild_button = W.Button(description="Rebuild", button_style="primary", icon="refresh")
        self.result = W.HTML()
        self.budget = W.BoundedFloatText(value=1e-3, min=1e-12, max=1e6, step=1e-4, description="budget")
        self.calib = W.Text(placeholder="calibration data: .npz or folder (empty: random inputs)", description="data")
        self.auto_button = W.Button(description="Auto under budget", icon="magic")
        self.auto_result = W.HTML()
        self.auto_progress = W.Output()  # the search's steps (a tqdm bar: on the GPU it takes minutes)
        self.filter.observe(lambda _: self._goto(0), "value")
        self.prev_button.on_click(lambda _: self._goto(self.page - 1))
        self.next_button.on_click(lambda _: self._goto(self.page + 1))
        self.set_all_button.on_click(lambda _: self._apply_to_filtered())
        self.clear_button.on_click(lambda _: self._clear())
        self.measure_button.on_click(lambda _: self.measure())
        self.rebuild_button.on_click(lambda _: self.rebuild())
        self.auto_button.on_click(lambda _: self.auto())
        self.widget = W.VBox([
            W.HBox([self.filter, self.prev_button, self.page_label, self.next_button]),
            W.HBox([self.set_all, self.set_all_button, self.clear_button]),
            W.HBox([self.measure_button, self.auto_measure]), self.accuracy,
            self.rows, W.HBox([self.runs, self.rebuild_button]), self.result,
            W.HTML("<h4 style='margin:8px 0 2px'>Automatic mixed precision</h4>"),
            W.HBox([self.budget, self.calib, self.auto_button]), self.auto_progress, self.auto_result])

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
        self.result.value = self.auto_result.value = ""
        self._forget()
        self.refresh()

    def refresh(self) -> None:
        if self.measured is not None and self.measured != self.app.label:
            self._forget()  # the bars belong to another engine (or to a preview of it)
        self.set_all.options = self.supported()
        self._goto(self.page)

    def _forget(self) -> None:
        self.report, self.measured = None, None
        self.accuracy.value = ""
        self._colour_graph()

    def _colour_graph(self) -> None:
        """Give the Optimize tab's graph view the measured errors (its "error vs fp32" colouring);
        a non-finite error travels as text (JSON has no inf), which the view draws black."""
        graph = getattr(getattr(self.app, "optimize_tab", None), "graph", None)
        if graph is None:
            return
        errors = {}
        for name, err in self.layer_errors().items():
            if err is None:
                continue
            errors[name] = float(err) if math.isfinite(float(err)) else "non-finite"
        graph.errors = errors

    def _goto(self, page: int) -> None:
        layers = self.filtered_layers()
        pages = max(1, -(-len(layers) // PAGE))
        self.page = min(max(page, 0), pages - 1)
        self.page_label.value = f"page {self.page + 1}/{pages} · {len(layers)} layers · {len(self.overrides)} overrides"
        opts = self.supported()
        self.dropdowns, self.bars = {}, {}
        rows = [W.HTML("<b style='display:inline-block;width:420px'>layer</b><b style='display:inline-block;"
                       "width:160px'>type</b><b>built</b> → <b>override</b> <b style='margin-left:40px'>"
                       "error it adds (at the outputs)</b>")]
        for layer in layers[self.page * PAGE:(self.page + 1) * PAGE]:
            value = self.overrides.get(layer.name, layer.precision)
            dd = W.Dropdown(options=opts + ([value] if value not in opts else []), value=value,
                            layout=W.Layout(width="100px"))
            if not layer.onnx_nodes:  # inserted by the build (a cast at an output): its input's precision decides
                dd.disabled = True
                dd.tooltip = "inserted by the build: set the precision of the layer that feeds it"
            dd.observe(lambda ch, name=layer.name: self._set(name, ch["new"]), "value")
            self.dropdowns[layer.name] = dd
            bar = W.HTML(self._bar(layer.name))
            self.bars[layer.name] = bar
            label = (f"<span style='display:inline-block;width:420px;overflow:hidden;text-overflow:ellipsis' "
                     f"title='{esc(layer.name)}'>{esc(layer.name)}</span><span style='display:inline-block;"
                     f"width:160px'>{esc(layer.op)}</span><span style='display:inline-block;width:50px'>"
                     f"{esc(layer.precision)}</span>")
            rows.append(W.HBox([W.HTML(label), dd, bar]))
        self.rows.children = rows

    def _bar(self, name: str) -> str:
        if self.report is None:
            return error_bar(None)
        try:
            row = self.report.layer(name)
        except KeyError:
            return error_bar(None)
        col = self.report.sort_column
        title = (f"{row['precision']}: at the outputs {row['output_err']:.3g}, added {row['added_err']:.3g}, "
                 f"inherited {row['inherited_err']:.3g}, output {row['rel_err']:.3g}, non-finite {row['nonfinite']}")
        return error_bar(row[col], title)

    def _set(self, layer_name: str, precision: str) -> None:
        self.overrides[layer_name] = precision  # kept across rebuilds until "Clear overrides"
        self.page_label.value = self.page_label.value.rsplit("·", 1)[0] + f"· {len(self.overrides)} overrides"
        self._remeasure()

    def _remeasure(self) -> None:
        """Measure again after a change, once the person has asked for bars (the first measure)."""
        if self.auto_measure.value and self.active:
            self.measure()

    def _apply_to_filtered(self) -> None:
        for layer in self.filtered_layers():
            self.overrides[layer.name] = self.set_all.value
        self._goto(self.page)
        self._remeasure()

    def _clear(self) -> None:
        self.overrides.clear()
        self._goto(self.page)

    # ---- measuring -------------------------------------------------------------------------
    def _pending(self) -> dict[str, str]:
        """Overrides that differ from the current engine's precisions."""
        built = {l.name: l.precision for l in self.app.engine.layers} if self.app.engine is not None else {}
        return {k: v for k, v in self.overrides.items() if built.get(k) != v}

    def measure(self):
        """Per-layer error of the current engine, or of a preview build with the overrides when some
        differ from it (the preview is not kept: Rebuild keeps it)."""
        app = self.app
        if app.engine is None:
            self.accuracy.value = note_html("build an engine first", "#b00")
            return None
        self.active = True
        pending = self._pending()
        try:
            if pending and app.net is not None:
                engine = app.build_config(app.config(layer_precisions=dict(self.overrides)))
                label = "preview"
            else:
                engine, label = app.engine, app.label
            # the error at the outputs where it takes seconds, not minutes (else the added error ranks)
            report = engine.accuracy(app.feeds(engine), impact=IMPACT_SECONDS)
        except Exception as exc:  # an override the target cannot run is reported, not raised
            self.accuracy.value = error_html(exc)
            return None
        self.report, self.measured = report, label
        self._colour_graph()
        for name, bar in self.bars.items():
            bar.value = self._bar(name)
        self.accuracy.value = self._summary(report, label, pending and app.net is None)
        return report

    def _summary(self, report, label: str, stale: bool) -> str:
        what = ("a preview build with the overrides (Rebuild keeps it)" if label == "preview" else f"engine {label}")
        outs = ", ".join(f"{k} {v['rel_err']:.2e}" for k, v in report.outputs.items())
        bad = report.first_nonfinite
        top = ", ".join(r["layer"] for r in report.top(3))
        parts = [f"error vs an fp32 reference of {what}: {outs}",
                 "first non-finite value: " + (f"{bad['layer']} ({bad['tensor']})" if bad else "none"),
                 f"largest contributors: {top}"]
        skipped = str(report.engine.get("impact", ""))
        if skipped.startswith("skipped"):
            parts.append(f"layers ranked by the error they add at their own output: the error at the outputs was {skipped}")
        if stale:
            parts.append("(the overrides are not measured: this session holds a saved engine, which cannot be rebuilt)")
        return "".join(note_html(p) for p in parts)

    def layer_errors(self) -> dict[str, float]:
        """Layer name -> the error it adds (the measured report's ranking column); {} before a measure."""
        if self.report is None:
            return {}
        col = self.report.sort_column
        return {r["layer"]: r[col] for r in self.report.layers}

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
        self._remeasure()
        return after

    # ---- automatic mixed precision ---------------------------------------------------------
    def auto(self):
        """Build ``precision="best"`` under the budget; the new engine becomes current."""
        app = self.app
        if app.net is None:
            self.auto_result.value = note_html("open an ONNX model first (a saved engine cannot be rebuilt)", "#b00")
            return None
        budget = float(self.budget.value)
        self.auto_result.value = note_html(f"searching per-layer precisions under {budget:g}…")
        try:
            data = self.calib.value.strip()
            cfg = dataclasses.replace(app.config(precision="best", layer_precisions={}), accuracy_budget=budget,
                                      calibration=wb.Calibration(data) if data else None, progress=True)
            self.auto_progress.clear_output()
            with self.auto_progress:  # (interrupting the kernel ends the search; the current engine stays)
                engine = app.build_config(cfg)
        except Exception as exc:
            self.auto_result.value = error_html(exc)
            return None
        rep = engine.reports["mixed_precision"]
        self.overrides.clear()
        app.add_engine(engine, f"#{len(app.engines) + 1} {engine.backend} best ≤{budget:g}")
        app.tabs.selected_index = 2
        self.last_auto = rep
        self.auto_result.value = auto_html(rep)
        self._remeasure()
        return engine


def auto_html(rep: dict) -> str:
    """The search's result: summary, the latency-vs-error chart and the candidates table."""
    err = rep["error"]
    head = note_html(f"{rep['strategy']} result: error {_num(err['held_out']):.3g} on {rep['feeds']['held_out']} "
                     f"held-out batch(es) (budget {rep['budget']:g}); {rep['below_fp32']} of {rep['layers']} layers "
                     f"below fp32; latency {rep['latency_ms']:.4g} ms vs {rep['fp32_latency_ms']:.4g} ms in fp32 "
                     f"({rep['latency_source']})")
    e2e = end_to_end_line(rep)
    if e2e:
        head += note_html(e2e)
    notes = "".join(note_html(n, "#666") for n in rep.get("notes", []))
    table = pd.DataFrame([{"candidate": c["label"], "latency ms": c["latency_ms"], "error": _num(c["error"]),
                           "below fp32": c["layers_below_fp32"], "within budget": c["within_budget"]}
                          for c in rep["candidates"]])
    return head + notes + chart_html(tradeoff_figure(rep), "mixed-precision", "Latency vs error of the candidates") \
        + df_html(table, 80, "Candidates tried")


def tradeoff_figure(rep: dict):
    """Latency (x) vs error (y, log) of every candidate, the budget as a line, the result marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    pts = [(c["latency_ms"], _num(c["error"]), c["within_budget"], c["label"]) for c in rep["candidates"]]
    floor = min([e for _, e, _, _ in pts if e > 0 and math.isfinite(e)] + [rep["budget"]]) / 10
    for ok, color in ((True, "#2a9d8f"), (False, "#e76f51")):
        xs = [x for x, e, w, _ in pts if w == ok and math.isfinite(e)]
        ys = [max(e, floor) for x, e, w, _ in pts if w == ok and math.isfinite(e)]
        ax.scatter(xs, ys, s=18, color=color, label="within budget" if ok else "over budget")
    ax.axhline(rep["budget"], color="#264653", linestyle="--", linewidth=1, label=f"budget {rep['budget']:g}")
    ax.scatter([rep["latency_ms"]], [max(_num(rep["error"]["search"]), floor)], s=90, facecolors="none",
               edgecolors="#264653", linewidths=1.5, label="chosen")
    ax.set_yscale("log")
    ax.set_xlabel("latency, ms (" + rep["latency_source"].split(":")[0] + ")")
    ax.set_ylabel("error vs fp32")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _num(x) -> float:
    return float("nan") if x is None else float(x)
