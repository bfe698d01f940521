"""``Workbench``: the notebook app. Its state and actions are a :class:`session.Session` (model,
engines, profiles; the public API only); this module adds the tabs, each its own module, which draw
from that state and call back into it. Tabs never import this module.

    from workbench.ui import Workbench
    app = Workbench("model.onnx", shapes={"x": (1, 3, 224, 224)})
    app                       # shows the tabs; app.build(), app.profile(), app.export("m.wbe") script it
"""

from __future__ import annotations

import ipywidgets as W

from .compare_tab import CompareTab
from .export_tab import ExportTab
from .html import STYLE
from .model_tab import ModelTab
from .optimize_tab import OptimizeTab
from .precision_tab import PrecisionTab
from .profile_tab import ProfileTab
from .session import Session

TAB_TITLES = ("Model", "Optimize", "Precision", "Profile", "Compare", "Export")


class Workbench(Session):
    """Load -> optimize (fusion log, graph) -> per-layer precision -> profile -> compare -> export."""

    def __init__(self, model=None, *, device: str = "auto", precision: str = "fp32", shapes=None,
                 feeds: dict | None = None, calibration=None, build: bool = False):
        super().__init__(device=device, precision=precision, shapes=shapes, feeds=feeds, calibration=calibration)
        self.model_tab = ModelTab(self)
        self.optimize_tab = OptimizeTab(self)
        self.precision_tab = PrecisionTab(self)
        self.profile_tab = ProfileTab(self)
        self.compare_tab = CompareTab(self)
        self.export_tab = ExportTab(self)
        self.tab_objects = [self.model_tab, self.optimize_tab, self.precision_tab, self.profile_tab,
                            self.compare_tab, self.export_tab]
        self.tabs = W.Tab(children=[t.widget for t in self.tab_objects], titles=TAB_TITLES)
        self.widget = W.VBox([W.HTML(STYLE), self.tabs])
        if model is not None:
            self.open(model)
            if build and self.net is not None:
                self.build()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ---- redrawing on state changes --------------------------------------------------------
    def _opened(self) -> None:
        for tab in self.tab_objects:
            getattr(tab, "refresh_model", tab.refresh)()

    def _opened_engine(self) -> None:
        self.model_tab.refresh()
        self.optimize_tab.refresh_model()

    def _engine_added(self) -> None:
        for tab in self.tab_objects:
            tab.refresh()

    # ---- actions that also move the view ---------------------------------------------------
    def build(self, progress=None, **overrides):
        engine = super().build(progress, **overrides)
        self.tabs.selected_index = 1  # show the result: fusion log and graph
        return engine

    def compare(self, label_a: str, label_b: str, runs: int = 5):
        return self.compare_tab.compare(label_a, label_b, runs)

    def export(self, path) -> dict:
        return self.export_tab.export(path)
