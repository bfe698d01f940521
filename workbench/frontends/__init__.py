"""Frontends: where a model comes from, turned into a :class:`workbench.ir.Network` for the builder.

``onnx/``: an ONNX file or bytes, read safely (size and depth limits, external data confined to the
model's folder), validated, converted to onnx-ir. ``network/``: the network-definition API (a model
written layer by layer in Python), finished through the ONNX frontend.

May import: ``ir`` and the bottom layers (``core``, ``dtypes``, ``errors``), onnx and onnx-ir; never
rewrite, passes, precision, builder or the runtime.
"""
