"""The ONNX frontend: safe reading (``safe_read``, ``proto_checks``, ``external_data``), validation
(``validate``), conversion to an onnx-ir :class:`workbench.ir.Network` (``loader``).

May import: ``ir.network`` and the bottom layers; onnx and onnx-ir."""

from .loader import load_onnx

__all__ = ["load_onnx"]
