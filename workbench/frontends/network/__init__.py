"""The network-definition API: write a model in Python (``wb.NetworkDefinition``), get a
:class:`workbench.ir.Network` to build, like TensorRT's INetworkDefinition.

Optimizer side: may import ``ir``, ``frontends.onnx`` and the bottom layers."""

from .definition import NetworkDefinition
from .tensor import NetworkDefinitionError, Tensor

__all__ = ["NetworkDefinition", "NetworkDefinitionError", "Tensor"]
