"""The notebook side of workbench: the ``Workbench`` app (ipywidgets), the ``GraphView`` widget
(anywidget + elkjs, built from ``extension/``) and the ``%load_ext workbench`` magics."""

from .app import Workbench, supported_precisions
from .graph import GraphView, engine_graph, network_graph

__all__ = ["GraphView", "Workbench", "engine_graph", "network_graph", "supported_precisions"]
