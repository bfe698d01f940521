"""The network-definition API: write a model in Python (``wb.NetworkDefinition``), get a
:class:`workbench.ir.Network` to build, like TensorRT's INetworkDefinition.

May import: ``ir``, ``frontends.onnx`` and the bottom layers; onnx and onnx-ir."""

from .definition import NetworkDefinition
from .tensor import NetworkDefinitionError, Tensor

__all__ = ["NetworkDefinition", "NetworkDefinitionError", "Tensor"]
