"""Export tab: a file name and an Export button (shows the written file's path, size, sha256 and
target); Serve starts a local deployment of the exported engine (Ray Serve, the Open Inference
Protocol) and shows its URL and curl examples; Stop ends it."""

from __future__ import annotations

import os

import ipywidgets as W

import workbench as wb

from .html import error_html, esc, kv_table, note_html


class ExportTab:
    def __init__(self, app):
        self.app = app
        self.filename = W.Text(description="file", placeholder="model.wbe", layout=W.Layout(width="60%"))
        self.button = W.Button(description="Export", button_style="success", icon="download")
        self.result = W.HTML()
        self.info: dict | None = None
        self._exported = None  # the engine that self.info describes
        self.port = W.BoundedIntText(value=8000, min=1, max=65535, description="port", layout=W.Layout(width="160px"))
        self.serve_button = W.Button(description="Serve", icon="play", tooltip="serve the exported engine over HTTP")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.serve_result = W.HTML()
        self.server = None
        self.button.on_click(lambda _: self.export(self.filename.value.strip() or None))
        self.serve_button.on_click(lambda _: self.serve())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = W.VBox([W.HBox([self.filename, self.button]), self.result,
                              W.HBox([self.port, self.serve_button, self.stop_button]), self.serve_result])

    def refresh_model(self) -> None:
        src = str(self.app.source or "model")
        stem = os.path.splitext(os.path.basename(src))[0] or "model"
        self.filename.value = f"{stem}.wbe"
        self.result.value = ""

    def refresh(self) -> None:
        self.button.disabled = self.app.engine is None
        self.serve_button.disabled = self.app.engine is None or self.server is not None

    def export(self, path=None) -> dict | None:
        """Save the current engine; returns {"path", "size", "sha256", "target"}."""
        engine = self.app.engine
        if engine is None:
            self.result.value = note_html("build an engine first", "#b00")
            return None
        path = os.path.abspath(path or self.filename.value.strip() or "model.wbe")
        try:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            info = dict(engine.save(path))
        except Exception as exc:
            self.result.value = error_html(exc)
            return None
        info["target"] = engine.target
        self.info = info
        self._exported = engine
        target = ", ".join(f"{k}={v}" for k, v in engine.target.items() if not isinstance(v, (dict, list)))
        self.result.value = kv_table([("path", info["path"]), ("size", f"{info['size']:,} bytes"),
                                      ("sha256", info["sha256"]), ("target", target),
                                      ("engine", self.app.label)], "Engine written")
        return info

    # ---- serving ---------------------------------------------------------------------------
    def serve(self, port: int | None = None, **options):
        """Serve the current engine (exported first if it has not been) on this machine; returns the
        server (``url``, ``model_url``, ``stop()``), or None with the error shown."""
        if self.server is not None:
            self.serve_result.value = note_html(f"already serving at {self.server.model_url}; Stop it first", "#b00")
            return self.server
        if self.app.engine is None:
            self.serve_result.value = note_html("build an engine first", "#b00")
            return None
        if self._exported is not self.app.engine and self.export() is None:
            self.serve_result.value = note_html("export the engine first (see the error above)", "#b00")
            return None
        self.serve_result.value = note_html("starting Ray Serve (this takes a few seconds)...")
        self.serve_button.disabled = True
        try:
            self.server = wb.serve.start(self.info["path"], port=port or int(self.port.value), **options)
        except Exception as exc:
            self.serve_result.value = error_html(exc)
            self.serve_button.disabled = False
            return None
        self.stop_button.disabled = False
        curl = self.server.curl_example(self._exported)
        self.serve_result.value = (
            kv_table([("model", self.server.name), ("URL", self.server.model_url),
                      ("infer", f"POST {self.server.model_url}/infer"),
                      ("health", f"{self.server.url}/v2/health/ready")], "Serving (Open Inference Protocol v2)")
            + f"<div>try:</div><pre style='white-space:pre-wrap'>{esc(curl)}</pre>")
        return self.server

    def stop(self) -> None:
        """End the deployment that Serve started."""
        server, self.server = self.server, None
        self.stop_button.disabled = True
        self.serve_button.disabled = self.app.engine is None
        if server is None:
            return
        try:
            server.stop()
        except Exception as exc:
            self.serve_result.value = error_html(exc)
            return
        self.serve_result.value = note_html(f"stopped serving {server.name}")
