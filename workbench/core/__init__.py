"""The bottom layer: the project's vocabulary as plain data (NumPy only).

``plan`` (TensorSpec, Layer, Plan: what an engine runs), ``liveness`` (who reads what, and when
for the last time), ``precisions`` (the one precision vocabulary) and ``numerics`` (relative error,
tolerances, random inputs). Imports nothing of workbench but ``errors`` and ``dtypes``."""
