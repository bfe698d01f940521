"""Export tab: a file name and an Export button; shows the written file's path, size, sha256 and target."""

from __future__ import annotations

import os

import ipywidgets as W

from .html import error_html, kv_table, note_html


class ExportTab:
    def __init__(self, app):
        self.app = app
        self.filename = W.Text(description="file", placeholder="model.wbe", layout=W.Layout(width="60%"))
        self.button = W.Button(description="Export", button_style="success", icon="download")
        self.result = W.HTML()
        self.info: dict | None = None
        self.button.on_click(lambda _: self.export(self.filename.value.strip() or None))
        self.widget = W.VBox([W.HBox([self.filename, self.button]), self.result])

    def refresh_model(self) -> None:
        src = str(self.app.source or "model")
        stem = os.path.splitext(os.path.basename(src))[0] or "model"
        self.filename.value = f"{stem}.wbe"
        self.result.value = ""

    def refresh(self) -> None:
        self.button.disabled = self.app.engine is None

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
        target = ", ".join(f"{k}={v}" for k, v in engine.target.items() if not isinstance(v, (dict, list)))
        self.result.value = kv_table([("path", info["path"]), ("size", f"{info['size']:,} bytes"),
                                      ("sha256", info["sha256"]), ("target", target),
                                      ("engine", self.app.label)], "Engine written")
        return info
