"""The engine file: ``container`` (checksummed header + 64-aligned blobs, no pickle, deterministic
bytes), ``serialize`` (Plan <-> header and blobs: what the runtime needs lives in the plan, reports
are for people) and ``strict`` (the type-exact readers of header values).

May import: ``core``, ``errors``, ``dtypes`` (and NumPy). Never ``kernels``, ``runtime`` or anything
of the optimizer, nor onnx / onnx_ir.
"""
