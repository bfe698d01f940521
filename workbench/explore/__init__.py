"""The engine explorer: views of an engine and its profile, each a pandas DataFrame that the
notebook also draws (Profile and Compare tabs), engine-vs-engine comparison and linters.

    import workbench as wb
    prof = ctx.profile(feeds)                          # runtime/profile.py (GPU: the replayed graph)
    wb.explore.latency_by(prof, ["type", "precision"]) # time per op type and precision (sunburst)
    wb.explore.memory_timeline(engine)                 # arena occupancy per layer step; memory_peak: who holds it
    wb.explore.roofline(engine, prof)                  # per layer against this machine's measured peaks
    wb.compare(engine_fp32, engine_fp16)               # per matched layer group: time, precision, tactic, error
    wb.lint(engine, prof)                              # findings with reasons and layers
    wb.latency_vs_batch(engine, [1, 8, 32])            # end-to-end ms per batch size (and bucket)

Modules: ``views.py`` (latency_by, memory_timeline, memory_peak, tensor_intervals, roofline),
``compare.py`` (compare, match_layers, tensor_values), ``lint.py`` (lint, Finding, findings_table),
``sweep.py`` (latency_vs_batch: times runs, so it needs a context; the batch range and default
batches come from ``runtime.buckets``).
``workbench.runtime.trace`` exports a profile as a Chrome / Perfetto trace.

May import: ``workbench.core``, ``workbench.runtime``, ``workbench.builder.memory`` (to plan the
arena of an engine whose extra outputs must stay live), pandas, NumPy. The notebook (``ui/``) draws
these tables; nothing here draws.
"""

from .compare import compare, match_layers, tensor_values
from .lint import Finding, findings_table, lint
from .sweep import latency_vs_batch
from .views import (
    latency_by,
    latency_by_precision,
    latency_by_type,
    memory_peak,
    memory_timeline,
    roofline,
    tensor_intervals,
)

__all__ = ["Finding", "compare", "findings_table", "latency_by", "latency_vs_batch", "latency_by_precision", "latency_by_type",
           "lint", "match_layers", "memory_peak", "memory_timeline", "roofline", "tensor_intervals",
           "tensor_values"]
