"""The optimization pipeline: the passes, in order. Reading this list tells what the optimizer does.

Each entry is (name, function(model, ctx) -> changed). Any name can be disabled with
``BuilderConfig(disable=[name])`` / ``--disable name``. Every pass keeps the invariants in
``passes/README.md``: the graph stays topologically sorted, graph inputs and outputs keep their
names, and outputs are numerically unchanged (to per-dtype tolerance).
"""

from __future__ import annotations

import time

import onnx_ir as ir

from .cleanup import fold_to_fixed_point, infer_shapes, remove_dead_code, toposort
from .context import PassContext

PASSES = [
    ("fold_constants", fold_to_fixed_point),
    ("remove_dead_code", remove_dead_code),
]

PASS_NAMES = [name for name, _ in PASSES]


def run_pipeline(model: ir.Model, ctx: PassContext, *, optimize: bool = True) -> PassContext:
    """Run every enabled pass once, in order, then re-infer shapes for the final graph."""
    toposort(model)
    for name, fn in PASSES if optimize else []:
        if not ctx.enabled(name):
            continue
        t0 = time.perf_counter()
        changed = bool(fn(model, ctx))
        toposort(model)
        ctx.timings[name] = {"ms": (time.perf_counter() - t0) * 1e3, "changed": changed, "nodes_after": len(model.graph)}
    infer_shapes(model)
    return ctx


def known_names() -> set[str]:
    """Every name ``disable`` accepts: passes and the fusion rules inside them."""
    return set(PASS_NAMES)
