"""The builder: Network + BuilderConfig -> Engine.

Stages, in order (each a separate module): fix input shapes -> optimization passes (with the fusion
log) -> lowering to a plan -> precision and tactic selection by the target -> cost estimates ->
memory plan -> Engine.
"""

from __future__ import annotations

import time

import onnx_ir as ir

from .._version import __version__
from ..runtime.engine import Engine
from ..errors import WorkbenchError
from ..ir.network import Network
from ..kernels.reference.limits import element_cap
from ..passes.context import PassContext
from ..passes.pipeline import known_names, run_pipeline
from .targets import get_target, resolve_device
from .config import BuilderConfig
from .cost import annotate_costs
from .lower import lower_model
from .memory import plan_memory
from .progress import BuildProgress
from .shapes import apply_input_shapes


class Builder:
    def __init__(self, config: BuilderConfig | None = None):
        self.config = config or BuilderConfig()

    def build(self, network: Network) -> Engine:
        cfg = self.config
        if not isinstance(network, Network):
            raise WorkbenchError(f"build() takes a Network (from workbench.load_onnx), got {type(network).__name__}")
        unknown = [n for n in cfg.disable if n not in known_names()]
        if unknown:
            raise WorkbenchError(f"cannot disable unknown pass or rule {unknown[0]!r}; known: {', '.join(sorted(known_names()))}")
        t0 = time.perf_counter()
        progress = BuildProgress(cfg.progress)
        try:
            engine, ctx, target = self._build(network, cfg, progress)
        finally:
            progress.close()
        # timings vary run to run, so they stay out of the saved file (same build -> same bytes)
        engine.build_stats = {"passes": ctx.timings, "build_ms": (time.perf_counter() - t0) * 1e3}
        engine.build_stats.update(getattr(target, "build_stats", {}))
        return engine

    def _build(self, network: Network, cfg: BuilderConfig, progress: BuildProgress):
        progress.stage("prepare")
        device = resolve_device(cfg.device)
        model = ir.from_proto(ir.to_proto(network.model))  # the network stays as the user gave it
        nodes_before = len(model.graph)
        apply_input_shapes(model, cfg.shapes, max_elements=cfg.max_elements)
        progress.stage("optimize")
        ctx = PassContext(disabled=frozenset(cfg.disable), device=device)
        with element_cap(cfg.max_elements):  # constant folding runs the same kernels
            run_pipeline(model, ctx, optimize=cfg.optimize)
        progress.stage("lower")
        plan = lower_model(model)
        target = get_target(device)
        annotate_costs(plan.layers)
        progress.stage("precision + tactics")
        target.assign(plan, cfg)
        progress.stage("memory plan")
        memory = plan_memory(plan)
        progress.stage("engine")
        build = {
            "producer": {"name": "workbench", "version": __version__},
            "source": network.source,
            "device": device,
            "precision": cfg.precision,
            "shapes": {k: list(v) for k, v in cfg.shapes.items()},
            "disabled": sorted(cfg.disable),
            "layer_precisions": dict(cfg.layer_precisions),
            "max_elements": int(cfg.max_elements),
        }
        reports = {
            "fusions": ctx.log,
            "counters": dict(ctx.counters),
            "nodes": {"before": nodes_before, "after": len(model.graph), "layers": len(plan.layers)},
            "memory": memory,
        }
        engine = Engine(plan, target.target(), build, reports)
        if hasattr(target, "finish"):
            target.finish(engine, cfg)
        return engine, ctx, target


def build(network: Network, config: BuilderConfig | None = None) -> Engine:
    """Optimize ``network`` and build an engine for ``config`` (defaults: auto device, fp32)."""
    return Builder(config).build(network)
