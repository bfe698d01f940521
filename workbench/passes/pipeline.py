"""The optimization pipeline: the passes, in order. Reading this list tells what the optimizer does.

Each entry is (name, function(model, ctx) -> changed). Any name can be disabled with
``BuilderConfig(disable=[name])`` / ``--disable name``. Every pass keeps the invariants in
``passes/README.md``: the graph stays topologically sorted, graph inputs and outputs keep their
names, and outputs are numerically unchanged (to per-dtype tolerance).
"""

from __future__ import annotations

import time

import onnx_ir as ir

from . import qdq, simplify
from .epilogues import BATCHNORM_RULES, EPILOGUE_RULES
from .norms import NORM_RULES, SKIP_RULES
from .patches import PATCH_RULES
from .attention import ATTENTION_RULES
from .pointwise import POINTWISE_RULES
from .projections import PACKED_QKV_RULES, PARALLEL_GEMM_RULES, QKV_RULES
from ..rewrite.engine import apply
from .cleanup import (eliminate_common_subexpressions, fold_to_fixed_point, infer_shapes, remove_dead_code,
                      simplify as simplify_graph, toposort)
from .context import PassContext

def rule_pass(rules, *, reverse=False):
    """A pass that sweeps ``rules`` over the graph until none fires."""
    roots = frozenset(op for r in rules for op in r.ops)

    def run(model: ir.Model, ctx: PassContext) -> bool:
        if not any(node.op_type in roots for node in model.graph):  # nothing any rule could start from
            return False
        changed = False
        for _ in range(10):
            remove_dead_code(model, ctx)  # dead readers would make live values look shared
            if not apply(model, ctx, rules, reverse=reverse):
                break
            toposort(model)
            changed = True
        return changed
    return run


def merge_projections(model: ir.Model, ctx: PassContext) -> bool:
    """Q/K/V of one Attention first (so the log names them as such), then any other GEMMs that
    share their input; then Attentions read the merged Q/K/V in place of the Split's copies."""
    qkv = rule_pass(QKV_RULES)(model, ctx)
    parallel = rule_pass(PARALLEL_GEMM_RULES)(model, ctx)
    return rule_pass(PACKED_QKV_RULES)(model, ctx) or parallel or qkv


PASSES = [
    ("remove_identities", simplify.remove_identities),  # Identity bypassed before anything walks the graph
    ("fold_qdq_weights", rule_pass(qdq.WEIGHT_RULES)),  # DequantizeLinear of weights -> float constants (Q/DQ models)
    ("fold_constants", fold_to_fixed_point),          # shape arithmetic at static shapes included
    ("simplify", simplify_graph),                      # simplify.RULES, folding again after each sweep
    ("eliminate_common_subexpressions", eliminate_common_subexpressions),
    ("fold_batchnorm", rule_pass(BATCHNORM_RULES)),
    ("patch_embeddings", rule_pass(PATCH_RULES)),      # a ViT stem Conv -> patches -> one GEMM
    ("fuse_norms", rule_pass(NORM_RULES + SKIP_RULES)),
    ("fuse_attention", rule_pass(ATTENTION_RULES)),
    ("fuse_epilogues", rule_pass(EPILOGUE_RULES)),
    ("merge_projections", merge_projections),         # GEMMs sharing an input -> one GEMM + Split (read in place by attention)
    ("fold_qdq", rule_pass(qdq.PAIR_RULES)),           # activation Q/DQ pairs -> their readers' scales
    ("fuse_pointwise", rule_pass(POINTWISE_RULES)),
    ("remove_dead_code", remove_dead_code),
]

# the fusion rules inside each pass (each can be disabled by its own name too)
RULES = {
    "fold_qdq_weights": qdq.WEIGHT_RULES,
    "fold_qdq": qdq.PAIR_RULES,
    "simplify": simplify.RULES,
    "fold_batchnorm": BATCHNORM_RULES,
    "patch_embeddings": PATCH_RULES,
    "fuse_norms": NORM_RULES + SKIP_RULES,
    "fuse_attention": ATTENTION_RULES,
    "fuse_epilogues": EPILOGUE_RULES,
    "merge_projections": QKV_RULES + PARALLEL_GEMM_RULES + PACKED_QKV_RULES,
    "fuse_pointwise": POINTWISE_RULES,
}

PASS_NAMES = [name for name, _ in PASSES]


# passes that keep ctx.shapes_current themselves; after any other pass that changed the graph the
# inferred shapes are out of date
_TRACK_SHAPES = frozenset({"fold_constants", "simplify"})


def run_pipeline(model: ir.Model, ctx: PassContext, *, optimize: bool = True) -> PassContext:
    """Run every enabled pass once, in order, then re-infer shapes for the final graph unless the
    last inference already saw it as it is (whole-model inference costs as much as a pass)."""
    toposort(model)
    ctx.shapes_current = False
    for name, fn in PASSES if optimize else []:
        if not ctx.enabled(name):
            continue
        t0 = time.perf_counter()
        changed = bool(fn(model, ctx))
        if changed:  # a pass that changed nothing left the (sorted) order as it was
            toposort(model)
            if name not in _TRACK_SHAPES:
                ctx.shapes_current = False
        ctx.timings[name] = {"ms": (time.perf_counter() - t0) * 1e3, "changed": changed, "nodes_after": len(model.graph)}
    if not ctx.shapes_current:
        infer_shapes(model)
    return ctx


def known_names() -> set[str]:
    """Every name ``disable`` accepts: passes and the fusion rules inside them."""
    return set(PASS_NAMES) | {rule.name for rules in RULES.values() for rule in rules}
