"""The ONNX frontend: safe reading, validation, conversion to onnx-ir."""

from .loader import load_onnx

__all__ = ["load_onnx"]
