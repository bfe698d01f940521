"""Optimize tab: build settings, Build (with a tqdm progress bar), node counts before / after, the
fusion log (fired / declined with reasons, filterable), and the graph view with layer details.

Shapes: either static ``shapes`` text, or -- when it is empty -- a shape range per input with dynamic
dims: min / opt / max fields prefilled with visible defaults (``ui/ranges.py``), built as one
profile. After a build with ranges the tab lists the profiles and the buckets (GPU: one static plan
per bucket), and the graph shows the bucket picked in ``bucket`` (the largest first)."""

from __future__ import annotations

import ipywidgets as W
import pandas as pd
from tqdm.auto import tqdm

import workbench as wb

from ..core.precisions import DEVICES, REQUESTABLE
from ..runtime.buckets import bucket_engine, describe_ranges, fmt_range
from .details import layer_details_html
from .graph import GraphView, engine_graph
from .html import df_html, error_html, esc, note_html
from .ranges import NOTE, dynamic_inputs, parse_range_texts, range_text
from .session import device_precisions


def shapes_text(shapes: dict) -> str:
    return ",".join(f"{k}:{'x'.join(str(d) for d in v)}" for k, v in shapes.items())


class OptimizeTab:
    def __init__(self, app):
        self.app = app
        self.device = W.Dropdown(options=list(DEVICES), value=app.settings["device"], description="device")
        self.precision = W.Dropdown(options=list(REQUESTABLE), value=app.settings["precision"],
                                    description="precision")
        self.shapes = W.Text(description="shapes", placeholder="static: input:1x3x224x224,mask:1x128 (empty: ranges)",
                             layout=W.Layout(width="50%"))
        self.ranges: dict[str, tuple[W.Text, W.Text, W.Text]] = {}  # input -> (min, opt, max) fields
        self.ranges_box = W.VBox()
        self.ranges_view = W.HTML()  # after a build: the engine's profiles and buckets
        self.bucket = W.Dropdown(description="bucket", options=[], layout=W.Layout(display="none"))
        self.bucket.observe(lambda _: None if self._quiet else self._show_bucket(), "value")
        self._quiet = False
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
        settings = W.VBox([W.HBox([self.device, self.precision]), self.shapes, self.ranges_box, self.disable,
                           W.HBox([self.build_button]), self.progress, self.error, self.counts, self.ranges_view,
                           self.bucket])
        fusion_log = W.VBox([W.HTML("<h4 style='margin:4px 0'>Fusion log</h4>"),
                             W.HBox([self.log_status, self.log_filter]), self.log])
        self.widget = W.VBox([settings, fusion_log, self.graph, self.details])
        self.view_engine = None  # the engine the graph shows: the built one, or one of its buckets
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
        profiles = self.app.settings.get("profiles") or []
        self.shapes.value = "" if profiles else shapes_text(self.app.settings["shapes"])
        self._range_fields(profiles[0] if profiles else {})
        self.error.value = self.counts.value = self.log.value = ""
        self.graph.graph = {"nodes": [], "edges": []}
        self.graph.selected = ""
        self.build_button.disabled = self.app.net is None

    def _range_fields(self, profile: dict) -> None:
        """One row of min / opt / max fields per input with a dynamic dim, prefilled from ``profile``."""
        net = self.app.net
        self.ranges = {}
        rows = []
        for spec in dynamic_inputs(net) if net is not None else []:
            r = profile.get(spec.name)
            dims = "x".join(str(d) if d is not None else "?" for d in spec.shape)
            fields = tuple(W.Text(value=range_text(r[k]) if r else "", description=which, layout=W.Layout(width="22%"),
                                  style={"description_width": "30px"})
                           for k, which in enumerate(("min", "opt", "max")))
            self.ranges[spec.name] = fields
            rows.append(W.HBox([W.HTML(f"<code>{esc(spec.name)}</code> <span style='color:#666'>{esc(dims)}</span>",
                                       layout=W.Layout(width="28%")), *fields]))
        if rows:
            head = W.HTML("<b>Shape ranges</b> (used when <i>shapes</i> is empty) " + note_html(NOTE))
            self.ranges_box.children = [head, *rows]
        else:
            self.ranges_box.children = []

    def range_profile(self) -> dict:
        """{input: (min, opt, max)} from the fields (a ShapeError names a bad field)."""
        return parse_range_texts({n: tuple(f.value for f in fields) for n, fields in self.ranges.items()})

    def settings(self) -> dict:
        text = self.shapes.value.strip()
        profile = {} if text else self.range_profile()
        fixed = all(lo == opt == hi for lo, opt, hi in profile.values())
        shapes = text if text else {n: r[0] for n, r in profile.items()} if fixed else {}
        return {"device": self.device.value, "precision": self.precision.value, "shapes": shapes,
                "profiles": [] if text or fixed else [profile], "disable": list(self.disable.value)}

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
        self._render_ranges(engine)
        self._show_bucket()

    def _render_ranges(self, engine) -> None:
        """The engine's profiles and buckets, and the bucket picker (hidden without buckets)."""
        d = describe_ranges(engine)
        html = ""
        if d["profiles"]:
            rows = [{"profile": p["index"], **{k: fmt_range(r) for k, r in p["ranges"].items()},
                     **({"arena at max": p["arena_bytes_at_max"]} if "arena_bytes_at_max" in p else {})}
                    for p in d["profiles"]]
            html += df_html(pd.DataFrame(rows), 20, title="Shape ranges (profiles)")
        if d["buckets"]:
            rows = [{"bucket": b["index"], **{k: "x".join(map(str, v)) for k, v in b["shapes"].items()},
                     "batch padded": b["batch"] is not None, "layers": b["layers"], "arena bytes": b["arena_bytes"],
                     "profiles": ", ".join(map(str, b["profiles"]))} for b in d["buckets"]]
            html += df_html(pd.DataFrame(rows), 70, title="Buckets (one static plan each)")
        self.ranges_view.value = html
        labels = [(f"#{b['index']}: " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in b["shapes"].items()),
                   b["index"]) for b in d["buckets"]]
        self._quiet = True  # one redraw, by refresh(), not one per change of the picker
        try:
            self.bucket.options = labels
            self.bucket.value = labels[0][1] if labels else None
        finally:
            self._quiet = False
        self.bucket.layout.display = None if labels else "none"

    def _show_bucket(self) -> None:
        """The graph and layer details of the built engine, or of the bucket picked."""
        engine = self.app.engine
        if engine is None:
            return
        view = engine
        if engine.plan.buckets and self.bucket.value is not None and self.bucket.value < len(engine.plan.buckets):
            view = bucket_engine(engine, engine.plan.buckets[self.bucket.value])
        self.view_engine = view
        self.view_desc = view.describe()
        self.graph.graph = engine_graph(view, self.app.net)
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
        view = self.view_engine if self.view_engine is not None else engine
        desc = getattr(self, "view_desc", self.desc) if view is not engine else self.desc
        offsets = (engine.reports.get("memory", {}).get("offsets") if view is engine
                   else dict(view.plan.arena.offsets))
        self.details.value = layer_details_html(desc, self.graph.selected, self.app.profiles.get(self.app.label), offsets)
