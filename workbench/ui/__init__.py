"""The notebook side of workbench: the ``Workbench`` app (ipywidgets; its state and actions in
``session.py``), the ``GraphView`` widget (anywidget + elkjs, built from ``extension/``) and the
``%load_ext workbench`` magics.

May import: ``workbench`` (the public API), ``workbench.core``, ``workbench.runtime`` and its own
modules; tabs never import ``app.py``.
"""

from ..core.precisions import supported_precisions
from .app import Workbench
from .graph import GraphView, engine_graph, network_graph
from .session import Session

__all__ = ["GraphView", "Session", "Workbench", "engine_graph", "network_graph", "supported_precisions"]
