"""GpuTarget: GPU engines, in four stages:

1. precision (``precision.assign``): each layer's precision and storage types, Cast layers at the
   boundaries; half precision only where a primary tactic runs the layer so;
2. layout (``builder/layout.py``): which 4-D activations are stored channels-last; an fp8
   convolution whose tactic refuses the layouts it ended with is planned again at fp16
   (``assign_with_layouts``);
3. autotune (``builder/autotune.py``): a tactic and config per layer, timed with CUDA events, with
   the timing cache;
4. finish: the chosen kernels' cubins into the engine (loading compiles nothing), run options and
   the target's reports.

GPU engines need static shapes and known types everywhere (checked first). Every constant-only
layer was already evaluated by the constant folder, which a GPU build runs without its size cap.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time

from ..._version import __version__
from ...core.plan import Plan
from ...core.precisions import supported_precisions
from ...errors import BuildError
from ...kernels.cuda import nvrtc, sources
from ...kernels.cuda.device import gpu_info
from ...kernels.cuda.tactic import contract_refusal
from ...precision import assign_precisions
from ...precision.quantize import FALLBACK, requested_formats
from ..autotune import Autotuner
from ..layout import assign_layouts, layout_refusals
from ..timing_cache import TimingCache


class GpuTarget:
    name = "gpu"
    precisions = tuple(supported_precisions("gpu"))

    def __init__(self):
        self.gpu = gpu_info()
        self.primary, self.fallback, self.unavailable = sources.load_sources()
        self.by_name = {t.name: t for t in self.primary + self.fallback}
        self.precision_rows: list[dict] = []
        self.layout_rows: list[dict] = []
        self.tuner: Autotuner | None = None
        self.build_stats: dict = {}

    def target(self) -> dict:
        return {"backend": "gpu", "device": self.gpu.name, "arch": self.gpu.arch, "sm_count": self.gpu.sm_count,
                "libraries": dict(self.gpu.libraries), "sources": [t.name for t in self.primary + self.fallback],
                "unavailable_sources": dict(self.unavailable)}

    def assign(self, plan: Plan, config, quant=None) -> None:
        t0 = time.perf_counter()
        _check_static(plan)
        self.precision_rows, self.layout_rows = assign_with_layouts(plan, config, self._supports, self.by_name,
                                                                    self.gpu, quant)
        self._autotune(plan, config)
        self.build_stats["tactics_ms"] = (time.perf_counter() - t0) * 1e3

    def _supports(self, layer, precision: str) -> bool:
        # only primary sources justify half precision: a layer only the fallback (cupy.reference)
        # runs stays fp32. Cheap checks first: sources whose supports() validates a cuDNN graph last
        for t in sorted(self.primary, key=lambda t: t.supports_cost):
            try:
                if contract_refusal(t, layer, precision) is None and t.supports(layer, precision, self.gpu) is None:
                    return True
            except Exception:
                continue
        return False

    def _autotune(self, plan: Plan, config) -> None:
        cache = None
        if config.timing_cache:
            cache = TimingCache(config.timing_cache, {"gpu": self.gpu.name, "arch": self.gpu.arch,
                                                      "libraries": self.gpu.libraries, "workbench": __version__})
            nvrtc.external_store = cache.kernels
        compiles0 = nvrtc.COMPILES["count"]
        self.tuner = Autotuner(self.gpu, self.primary, self.fallback, cache, bool(config.autotune))
        try:
            for idx, layer in enumerate(plan.layers):
                self.tuner.select(idx, layer, plan)
        finally:
            nvrtc.external_store = None
        if cache is not None:
            cache.save()
        self.build_stats.update({"nvrtc_compiles": nvrtc.COMPILES["count"] - compiles0,
                                 "timing_cache": cache.stats() if cache else None})

    def finish(self, engine, config) -> None:
        # cubins are stored once each, named by content: layers compiling the same source share one
        for idx, layer in enumerate(engine.plan.layers):
            layer.binaries = {}
            for name, cubin in sorted(self.tuner.cubins.get(idx, {}).items()):
                blob = "cubin/" + hashlib.sha256(cubin).hexdigest()[:32]
                engine.blobs[blob] = cubin
                layer.binaries[name] = blob
        engine.plan.options.cuda_graph = bool(config.cuda_graph)
        engine.reports["precision"] = self.precision_rows
        engine.reports["layouts"] = self.layout_rows
        engine.reports.setdefault("memory", {})["weights_device_bytes"] = self.tuner.weights_bytes()
        self.tuner.weights_device.clear()


def assign_with_layouts(plan: Plan, config, supports, by_name: dict, gpu, quant=None,
                        rounds: int = 3) -> tuple[list[dict], list[dict]]:
    """Precision, then layout assignment (stages 1 and 2), returning their report rows. An fp8
    convolution that its tactic refuses in the layouts it ended with (``layout.layout_refusals``)
    is planned again from the start at the fallback precision (fp16), with the reason in its row
    of the precision table."""
    if "fp8" not in requested_formats(config):  # only fp8 convolutions are re-planned
        return assign_precisions(plan, config, "gpu", supports, quant=quant), assign_layouts(plan, by_name, gpu)
    original = _snapshot(plan)
    demoted: dict[str, str] = {}
    for attempt in range(rounds + 1):
        rows = assign_precisions(plan, config, "gpu", supports, quant=quant)
        layout_rows = assign_layouts(plan, by_name, gpu)
        refused = {n: why for n, why in layout_refusals(plan, by_name, gpu).items() if n not in demoted}
        if not refused or attempt == rounds:
            break  # (still refused after the last round: the autotuner names the layer and why)
        demoted.update(refused)
        _restore(plan, original)
        config = dataclasses.replace(config, layer_precisions={**dict(config.layer_precisions),
                                                               **{n: FALLBACK["gpu"] for n in demoted}})
    for row in rows:
        if row["layer"] in demoted:
            row["requested"] = "fp8"
            row["reason"] = f"fp8 refused in its layouts: {demoted[row['layer']]}; planned at {row['precision']}"
    return rows, layout_rows


def _snapshot(plan: Plan) -> Plan:
    """What precision and layout assignment change in a plan, copied (constants are replaced,
    never changed in place, so the dict is copied and the arrays shared)."""
    snap = copy.copy(plan)
    snap.layers = copy.deepcopy(plan.layers)
    snap.constants = dict(plan.constants)
    snap.tensors = dict(plan.tensors)
    snap.inputs, snap.outputs = copy.deepcopy(plan.inputs), copy.deepcopy(plan.outputs)
    return snap


def _restore(plan: Plan, snap: Plan) -> None:
    fresh = _snapshot(snap)
    plan.layers, plan.constants, plan.tensors = fresh.layers, fresh.constants, fresh.tensors
    plan.inputs, plan.outputs = fresh.inputs, fresh.outputs


def _check_static(plan: Plan) -> None:
    for layer in plan.layers:
        for spec in list(layer.input_specs) + list(layer.output_specs):
            if spec.name and (spec.dtype is None or not spec.is_static):
                node = layer.onnx_nodes[0] if layer.onnx_nodes else layer.name
                raise BuildError(f"GPU engines need static shapes and known types: tensor {spec.name!r} of node "
                                 f"{node!r} ({layer.op}) has shape {spec.shape} and type {spec.dtype}; "
                                 "fix the input shapes with BuilderConfig(shapes=...) / --shapes")


def clear_process_caches() -> None:
    """Forget what earlier builds in this process planned or compiled (cuDNN graphs, cuBLASLt
    heuristics, NVRTC cubins), so that a build costs what it would in a new process; used by the
    benchmark's cold/warm timing-cache comparison."""
    sources.clear_caches()
