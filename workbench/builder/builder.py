"""The builder: Network + BuilderConfig -> Engine, as a list of stages (``_build`` reads in order).

prepare (fix input shapes) -> optimize (the passes, with the fusion log) -> lower (to a plan) ->
precision + tactics (the target: CPU, or GPU's precision -> layout -> autotune) -> memory plan ->
engine (the target finishes it: cubins, run options, its reports).
"""

from __future__ import annotations

import time

import onnx_ir as ir

from .._version import __version__
from ..errors import ResourceLimitError, WorkbenchError
from ..ir.network import Network
from ..kernels.reference.limits import element_cap
from ..passes.context import PassContext
from ..passes.pipeline import known_names, run_pipeline
from ..passes.qdq import explicit_quantization
from ..precision.quantize import prepare_quantization
from ..runtime.engine import Engine
from . import fallback
from .config import BuilderConfig
from .cost import annotate_costs
from .front import Front, FrontCache
from .lower import lower_model
from .memory import plan_memory
from .progress import STAGES, BuildProgress
from .shapes import apply_input_shapes
from .targets import Target, get_target, resolve_device


class Builder:
    STAGES = STAGES  # the stage names a progress callback receives, in order

    def __init__(self, config: BuilderConfig | None = None, *, front: FrontCache | None = None):
        self.config = config or BuilderConfig()
        # lowered plans shared by the builds of one network that differ only after lowering
        # (builder/front.py); the budgeted search and the int8 / fp8 fallback step pass one
        self.front = front

    def build(self, network: Network) -> Engine:
        cfg = self.config
        if not isinstance(network, Network):
            raise WorkbenchError(f"build() takes a Network (from workbench.load_onnx), got {type(network).__name__}")
        unknown = [n for n in cfg.disable if n not in known_names()]
        if unknown:
            raise WorkbenchError(f"cannot disable unknown pass or rule {unknown[0]!r}; known: {', '.join(sorted(known_names()))}")
        if cfg.profiles:  # shape ranges: one symbolic plan (CPU) or a static build per bucket
            from .profile_build import build_with_profiles  # noqa: PLC0415 - it builds through this class

            return build_with_profiles(network, cfg)
        if cfg.precision == "best" and cfg.accuracy_budget is not None:
            # per-layer precisions searched under the budget, by builds without one (builder/mixed.py)
            from .mixed import search

            return search(network, cfg, self._sub_builds(network))
        if fallback.applies(cfg, resolve_device(cfg.device)):
            # int8 / fp8 allowed, not forced: fp16 where measured faster (builder/fallback.py)
            return fallback.build_fastest(cfg, self._sub_builds(network))
        t0 = time.perf_counter()
        progress = BuildProgress(cfg.progress)
        try:
            engine, ctx, target, reused = self._build(network, cfg, progress)
        except MemoryError:
            # whatever allocation no budget check predicted: one line naming the stage, no traceback
            raise ResourceLimitError(f"out of memory during the {progress.current or 'build'} stage; lower "
                                     "BuilderConfig.memory_budget or fix the input shapes") from None
        finally:
            progress.close()
        # timings vary run to run, so they stay out of the saved file (same build -> same bytes)
        engine.build_stats = {"passes": ctx.timings, "build_ms": (time.perf_counter() - t0) * 1e3, **target.build_stats}
        if reused:  # (``passes``: the timings of the build that made the plan)
            engine.build_stats["front"] = "the lowered plan of an earlier build of this network (builder/front.py)"
        return engine

    def _sub_builds(self, network: Network):
        """``build(cfg)`` for the builds a search or the fallback step makes of ``network``: all
        on one lowered plan (this builder's cache, else a new one)."""
        front = self.front or FrontCache()
        return lambda sub: Builder(sub, front=front).build(network)

    def _build(self, network: Network, cfg: BuilderConfig,
               progress: BuildProgress) -> tuple[Engine, PassContext, Target, bool]:
        device = resolve_device(cfg.device)
        reused = False
        if self.front is None:
            front = _front(network, cfg, device, progress)
        else:
            front, reused = self.front.get(cfg, device, lambda: _front(network, cfg, device, progress))
            if reused:  # (the stages ran for an earlier build of this network)
                for stage in ("prepare", "optimize", "lower"):
                    progress.stage(stage)
        plan, ctx = front.plan, front.ctx

        progress.stage("precision + tactics")
        target = get_target(device)
        # int8 / fp8 scales: the model's Q/DQ, and calibration of this fp32 plan where a layer may be quantized
        quant = prepare_quantization(plan, cfg, device, front.explicit, progress=cfg.progress is True)
        target.assign(plan, cfg, quant=quant)  # GPU: precision -> layout -> autotune (targets/gpu.py)

        progress.stage("memory plan")
        memory = plan_memory(plan)  # fills plan.arena

        progress.stage("engine")
        engine = Engine(plan, target.target(), _build_info(network, cfg, device),
                        {"fusions": ctx.log, "counters": dict(ctx.counters),
                         "nodes": {**front.nodes, "layers": len(plan.layers)}, "memory": memory})
        target.finish(engine, cfg)  # GPU: cubins into the engine, CUDA-graph option, reports
        return engine, ctx, target, reused


def _front(network: Network, cfg: BuilderConfig, device: str, progress: BuildProgress) -> Front:
    """The stages before precision and tactics: prepare, optimize, lower."""
    progress.stage("prepare")
    model = ir.from_proto(ir.to_proto(network.model))  # the network stays as the user gave it
    nodes_before = len(model.graph)
    apply_input_shapes(model, cfg.shapes, max_elements=cfg.max_elements)

    progress.stage("optimize")
    ctx = PassContext(disabled=frozenset(cfg.disable), device=device, max_engine_bytes=cfg.max_engine_bytes)
    # constant folding runs the same kernels, under the build's caps and byte budget
    with element_cap(cfg.max_elements, memory_budget=cfg.memory_budget,
                     max_loop_iterations=cfg.max_loop_iterations):
        run_pipeline(model, ctx, optimize=cfg.optimize)

    progress.stage("lower")
    plan = lower_model(model)
    plan.options.max_elements = int(cfg.max_elements)
    annotate_costs(plan.layers)
    return Front(plan, ctx, {"before": nodes_before, "after": len(model.graph)}, explicit_quantization(model))


def _build_info(network: Network, cfg: BuilderConfig, device: str) -> dict:
    """How the engine was built (for people and for rebuilding it)."""
    return {
        "producer": {"name": "workbench", "version": __version__},
        "source": network.source,
        "device": device,
        "precision": cfg.precision,
        "shapes": {k: list(v) for k, v in cfg.shapes.items()},
        "disabled": sorted(cfg.disable),
        "layer_precisions": dict(cfg.layer_precisions),
        "strict_precision": bool(cfg.strict_precision),
        "max_elements": int(cfg.max_elements),
    }


def build(network: Network, config: BuilderConfig | None = None) -> Engine:
    """Optimize ``network`` and build an engine for ``config`` (defaults: auto device, fp32)."""
    return Builder(config).build(network)
