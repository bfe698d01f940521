"""The graph IR: onnx-ir's Model/Graph/Node/Value, wrapped by :class:`Network` with the facts
workbench needs (where the model came from, its summary, dtype/shape conversions)."""

from .network import Network
from .types import spec_of, dtype_name, shape_of

__all__ = ["Network", "spec_of", "dtype_name", "shape_of"]
