"""What ops mean, shared by the optimizer, the precision assigner and the kernels.

``fused``: the op-schema table of the workbench domain's fused ops (inputs, outputs, attributes and
defaults, shape functions, the reference kernel that defines each, half-precision safety) and the
epilogue activation vocabulary. ``schema``: per-op precision facts (matrix math, half-safe ops,
float32-only inputs). ``geometry``: convolution / pooling window geometry.

Lean side: imports only ``core``, ``errors`` and ``dtypes``; never the optimizer, never onnx.
"""
