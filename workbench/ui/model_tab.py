"""Model tab: open a path or an uploaded file; the model's summary (inputs, outputs, op histogram,
parameters, opsets); optionally its full ONNX graph before optimization."""

from __future__ import annotations

import os
import tempfile

import ipywidgets as W
import pandas as pd

from .graph import GraphView, network_graph, shape_label
from .html import df_html, error_html, esc, kv_table


class ModelTab:
    def __init__(self, app):
        self.app = app
        self.path = W.Text(placeholder="path/to/model.onnx (or a saved .wbe engine)", layout=W.Layout(width="60%"))
        self.open_button = W.Button(description="Open", button_style="primary")
        self.upload = W.FileUpload(accept=".onnx", multiple=False, description="Upload .onnx")
        self.status = W.HTML()
        self.summary = W.HTML()
        self.graph_button = W.Button(description="Show ONNX graph", tooltip="every node of the model before optimization")
        self.graph_box = W.VBox()
        self.open_button.on_click(lambda _: self._open_path())
        self.upload.observe(self._on_upload, "value")
        self.graph_button.on_click(lambda _: self.show_graph())
        self.widget = W.VBox([W.HBox([self.path, self.open_button, self.upload]), self.status, self.summary,
                              self.graph_button, self.graph_box])

    def _open_path(self) -> None:
        try:
            self.app.open(self.path.value.strip())
        except Exception as exc:  # shown to the user: a bad path or model is their input, not a crash
            self.status.value = error_html(exc)

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        # keep the uploaded bytes in a private temp dir; the original file name is shown, not used as a path
        folder = tempfile.mkdtemp(prefix="workbench-upload-")
        path = os.path.join(folder, "uploaded.onnx")
        with open(path, "wb") as out:
            out.write(bytes(f["content"]))
        try:
            self.app.open(path)
            self.status.value = f"uploaded <code>{esc(f['name'])}</code> ({len(f['content']):,} bytes)"
        except Exception as exc:
            self.status.value = error_html(exc)

    def refresh_model(self) -> None:
        self.graph_box.children = ()
        self.status.value = ""
        app = self.app
        if app.net is None:
            self.summary.value = kv_table([("engine", app.source)], "Saved engine (no source model)")
            return
        s = app.net.summary()
        self.path.value = s["source"] if os.path.exists(str(s["source"])) else self.path.value
        rows = [("source", s["source"]), ("producer", s["producer"] or "—"), ("IR version", s["ir_version"]),
                ("opsets", ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in s["opsets"].items())),
                ("nodes", f"{s['nodes']:,}"), ("parameters", f"{s['parameters']:,}")]
        io = pd.DataFrame([{"": kind, "name": t["name"], "dtype": t["dtype"], "shape": shape_label(t)}
                           for kind, key in (("input", "inputs"), ("output", "outputs")) for t in s[key]])
        hist = pd.DataFrame(list(s["op_histogram"].items()), columns=["op", "count"])
        self.summary.value = (kv_table(rows, "Model") + df_html(io, 50, "Inputs and outputs")
                              + df_html(hist, 80, "Op histogram"))

    def refresh(self) -> None:
        pass  # the model summary does not change when an engine is built

    def show_graph(self) -> GraphView | None:
        if self.app.net is None:
            return None
        view = GraphView(graph=network_graph(self.app.net), color_by="op")
        self.graph_box.children = (view,)
        return view
