"""The lean runtime: loads engines and executes them, on the CPU (NumPy reference kernels, bound
through the CPU tactic source) or the GPU (CuPy, the GPU tactic sources, CUDA graphs).

``engine.py`` (Engine: load / save / describe), ``context.py`` (the one execution-context interface
and ``create_context``), ``cpu.py``, ``gpu/``, ``buckets.py`` (shape ranges: which profile and
bucket a run lands in, padding), ``profile.py`` (one profile for every device), ``cupti.py`` (GPU
per-layer times from CUPTI records of CUDA-graph replays), ``trace.py`` (Chrome-trace export),
``accuracy.py`` / ``accuracy_report.py`` / ``accuracy_sides.py`` (the per-layer accuracy report),
``feeds.py``, ``validate.py``, ``describe.py``.

May import: ``core``, ``ops``, ``kernels`` (reference and cuda), ``format``, ``errors``, ``dtypes``
(plus NumPy, ml_dtypes, and CuPy for GPU engines; pandas only for profiles and reports). Never
``ir``, ``passes``, ``builder``, ``precision``, ``frontends``, ``rewrite`` or ``ui``, nor onnx,
onnx_ir or onnxscript, not even inside functions: a deployment loads and runs engines without the
optimizer installed.
"""

from __future__ import annotations

from .context import ExecutionContext, LayerError, NonFiniteWarning, create_context

__all__ = ["ExecutionContext", "LayerError", "NonFiniteWarning", "create_context"]
