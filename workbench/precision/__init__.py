"""Precision: which precision each layer runs at (``assign.py``, one assigner for both targets),
the Cast layers at storage-type boundaries (``casts.py``, GPU engines), calibration ranges
(``calibration.py``: runs the fp32 plan on the CPU executor and records each tensor's range) and
the placement of int8 / fp8 quantization by explicit rules (``quantize.py``).

Runs on the lowered plan, after the passes and before tactic selection. May import: ``core``,
``ops``, ``dtypes``, ``errors``, the CPU kernels and the runtime's CPU executor (calibration runs
the plan); never the builder, the passes or the IR (it sees plain Layers).
"""

from .assign import BEST, all_layers, assign_precisions, requested_precision, resolve_layer_precisions
from .casts import insert_casts

__all__ = ["BEST", "all_layers", "assign_precisions", "insert_casts", "requested_precision", "resolve_layer_precisions"]
