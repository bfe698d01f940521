"""Kernels: reference (NumPy) kernels, ONNX node cases, GPU tactics and attention."""
