"""GpuTarget: precision assignment and autotuned tactic selection for GPU engines.

For every layer: the precision (``workbench.precision``), then each source's ``supports`` ->
candidate configs -> build -> time with CUDA events -> the fastest wins. The tactic table keeps
every candidate's time and every declining source's reason. A timing cache (JSON, keyed by layer
signature, GPU and library versions) lets a warm build skip timing and compilation. Compiled cubins
go into the engine (``finish``), so loading it compiles nothing. No layer ever falls back to the
CPU: a layer no tactic can run is a BuildError naming its node and op.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from ..._version import __version__
from ..timing_cache import TimingCache, layer_signature
from ...errors import BuildError
from ...precision import assign_precisions
from ...kernels.cuda import nvrtc
from ...kernels.cuda.device import cupy, gpu_info, storage_dtype, to_device_bits
from ...kernels.cuda.layer_io import aligned_inputs
from ...kernels.cuda.sources import load_sources
from ..layout import assign_layouts
from ...kernels.cuda.timing import time_launches

KERNEL_MAP = "gpu/kernel_map.json"


class GpuTarget:
    name = "gpu"
    # what a layer may be set to (int8 / fp8 are refused with a clear BuildError for now)
    precisions = ("fp32", "tf32", "fp16", "bf16")

    def __init__(self):
        self.gpu = gpu_info()
        self.primary, self.fallback, self.unavailable = load_sources()
        self.by_name = {t.name: t for t in self.primary + self.fallback}
        self.binaries: dict[int, dict[str, bytes]] = {}
        self.precision_rows: list[dict] = []
        self.build_stats: dict = {}
        self._dev: dict[tuple[str, str], object] = {}

    def target(self) -> dict:
        return {"backend": "gpu", "device": self.gpu.name, "arch": self.gpu.arch, "sm_count": self.gpu.sm_count,
                "libraries": dict(self.gpu.libraries), "sources": [t.name for t in self.primary + self.fallback],
                "unavailable_sources": dict(self.unavailable)}

    # ---- precision ---------------------------------------------------------------------------
    def _supports(self, layer, precision: str) -> bool:
        # only primary sources justify half precision; the generic fallback keeps a layer in fp32.
        # Cheap checks first: cuDNN's supports() validates a graph, the others only look at shapes
        for t in sorted(self.primary, key=lambda t: t.name.startswith("cudnn.")):
            try:
                if t.supports(layer, precision, self.gpu) is None:
                    return True
            except Exception:
                continue
        return False

    # ---- assignment --------------------------------------------------------------------------
    def assign(self, plan, config) -> None:
        t0 = time.perf_counter()
        _check_static(plan)
        self.materialized = materialize_constants(plan)
        self.precision_rows = assign_precisions(plan, config, self._supports)
        self.layout_rows = assign_layouts(plan, self.by_name, self.gpu)
        cache = None
        if config.timing_cache:
            cache = TimingCache(config.timing_cache, {"gpu": self.gpu.name, "arch": self.gpu.arch,
                                                      "libraries": self.gpu.libraries, "workbench": __version__})
            nvrtc.external_store = cache.kernels
        compiles0 = nvrtc.COMPILES["count"]
        stream = cupy().cuda.Stream(non_blocking=True)
        try:
            for idx, layer in enumerate(plan.layers):
                self._select(idx, layer, plan, config, cache, stream)
        finally:
            nvrtc.external_store = None
        if cache is not None:
            cache.save()
        self.build_stats = {"tactics_ms": (time.perf_counter() - t0) * 1e3,
                            "nvrtc_compiles": nvrtc.COMPILES["count"] - compiles0,
                            "timing_cache": cache.stats() if cache else None}

    def _weights(self, layer, plan) -> dict:
        out = {}
        for name, spec in zip(layer.inputs, aligned_inputs(layer)):
            if name and name in plan.constants and spec is not None:
                key = (name, spec.dtype)
                if key not in self._dev:
                    self._dev[key] = cupy().asarray(to_device_bits(plan.constants[name], spec.dtype))
                out[name] = self._dev[key]
        return out

    def _select(self, idx, layer, plan, config, cache, stream) -> None:
        weights = self._weights(layer, plan)
        key = layer_signature(layer, plan.constants)
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit["tactic"] in self.by_name:
            # a warm build builds the recorded choice only: no supports/configs (which may plan every
            # candidate), no timing; a choice that no longer builds is tuned again
            tactic = self.by_name[hit["tactic"]]
            try:
                built = tactic.build(layer, layer.precision, hit["config"], weights, self.gpu)
                self._choose(idx, layer, hit["tactic"], hit["config"], hit["table"], built)
                return
            except Exception:
                pass
        table, cands = [], []
        for group in (self.primary, self.fallback):
            for t in group:
                try:
                    reason = t.supports(layer, layer.precision, self.gpu)
                except Exception as exc:
                    reason = f"supports() failed: {type(exc).__name__}: {exc}"
                if reason:
                    table.append({"tactic": t.name, "reason": str(reason)})
                    continue
                try:
                    configs = t.configs(layer, layer.precision, self.gpu)
                except Exception as exc:
                    table.append({"tactic": t.name, "reason": f"configs() failed: {exc}"})
                    continue
                for cfg in configs:
                    try:
                        cands.append((t, cfg, t.build(layer, layer.precision, cfg, weights, self.gpu)))
                    except Exception as exc:
                        table.append({"tactic": t.name, "config": cfg, "reason": f"build failed: {type(exc).__name__}: {exc}"})
            if cands:
                break
        if not cands:
            node = layer.onnx_nodes[0] if layer.onnx_nodes else layer.name
            why = "; ".join(f"{r['tactic']}: {r['reason']}" for r in table if "reason" in r)
            raise BuildError(f"node {node!r}: no GPU tactic can run {layer.op} at {layer.precision} ({why})")
        timed = []
        if config.autotune and len(cands) > 1:
            ins, outs, ws = self._buffers(layer, weights, max(c[2].workspace_bytes for c in cands))
            for t, cfg, built in cands:
                try:
                    ms, graph, why = time_launches(lambda: built.run(ins, outs, ws, stream), stream,
                                                   capturable=built.capturable)
                    if not graph and built.capturable:
                        built.capturable = False
                    timed.append((not graph, ms, t, cfg, built))
                    row = {"tactic": t.name, "config": cfg, "ms": round(ms, 5), "graph": graph}
                    if why and not graph:
                        row["not_captured"] = why
                    table.append(row)
                except Exception as exc:
                    table.append({"tactic": t.name, "config": cfg, "reason": f"run failed: {type(exc).__name__}: {exc}"})
            if not timed:
                raise BuildError(f"layer {layer.name!r} ({layer.op}): every GPU candidate failed to run")
            # the fastest capturable candidate; one that must run outside the CUDA graph only when
            # no candidate can be captured (eager layers split the graph and pay host latency)
            _, _, t, cfg, built = min(timed, key=lambda r: (r[0], r[1]))
        else:
            t, cfg, built = cands[0]
            table.append({"tactic": t.name, "config": cfg, "ms": None})
            table += [{"tactic": o.name, "config": c, "reason": "not timed (single candidate or autotune off)"}
                      for o, c, _ in cands[1:]]
        if cache is not None:
            cache.put(key, t.name, cfg, table)
        self._choose(idx, layer, t.name, cfg, table, built)

    def _choose(self, idx, layer, tactic, cfg, table, built) -> None:
        layer.tactic = tactic
        layer.tactic_table = [dict(r) for r in table]
        # the runtime rebuilds the row marked "chosen" (tactic + config) at engine load
        row = next((r for r in layer.tactic_table if r.get("tactic") == tactic and r.get("config") == cfg
                    and "ms" in r), None)
        if row is None:
            row = {"tactic": tactic, "config": cfg, "ms": None}
            layer.tactic_table.append(row)
        row["chosen"] = True
        self.binaries[idx] = dict(built.binaries)

    def _buffers(self, layer, weights, ws_bytes):
        cp = cupy()
        rng = np.random.default_rng(0)
        ins = []
        for name, spec in zip(layer.inputs, aligned_inputs(layer)):
            if not name or spec is None:
                ins.append(None)
            elif name in weights:
                ins.append(weights[name])
            else:
                ins.append(cp.asarray(_random_bits(spec, rng)))
        outs = [cp.empty(tuple(s.shape), storage_dtype(s.dtype)) if s.name else None for s in layer.output_specs]
        ws = cp.empty(max(ws_bytes, 1), cp.uint8)
        return ins, outs, ws

    def finish(self, engine, config) -> None:
        kmap: dict[str, dict[str, str]] = {}
        for idx, bins in sorted(self.binaries.items()):
            for name, cubin in sorted(bins.items()):
                blob = "cubin/" + hashlib.sha256(cubin).hexdigest()[:32]
                engine.blobs[blob] = cubin
                kmap.setdefault(str(idx), {})[name] = blob
        engine.blobs[KERNEL_MAP] = json.dumps(kmap, sort_keys=True).encode()
        engine.target["cuda_graph"] = bool(config.cuda_graph)
        engine.reports["precision"] = self.precision_rows
        engine.reports["layouts"] = getattr(self, "layout_rows", [])
        engine.reports.setdefault("memory", {})["weights_device_bytes"] = int(sum(a.nbytes for a in self._dev.values()))
        self._dev.clear()


def selected_config(layer) -> dict:
    for row in layer.tactic_table:
        if row.get("chosen"):
            return row.get("config") or {}
    return {}


def _random_bits(spec, rng) -> np.ndarray:
    shape = tuple(spec.shape)
    if spec.dtype in ("float32", "float16", "bfloat16", "float64"):
        return to_device_bits(rng.standard_normal(shape).astype(np.float32), spec.dtype)
    return np.zeros(shape, dtype=storage_dtype(spec.dtype))


# ops whose results are fixed once all their inputs are: safe to evaluate at build
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
                     "Dropout"}


def materialize_constants(plan) -> list[str]:
    """Evaluate, on the host, layers that read only constants (e.g. the ConstantOfShape layers that
    produce the light_* models' weights, left unfolded by the optimizer's size cap), so that GPU
    tactics see them as weights to pack and upload once. Returns the names of removed layers."""
    from ...core.liveness import subgraphs_of
    from ...kernels.reference import KernelContext, get_kernel

    outputs = {s.name for s in plan.outputs}
    kept, removed = [], []
    for layer in plan.layers:
        fn = get_kernel(layer.domain, layer.op)
        if (fn is None or layer.op in _NONDETERMINISTIC or subgraphs_of(layer) or any(o in outputs for o in layer.outputs)
                or not all(n in plan.constants for n in layer.inputs if n)):
            kept.append(layer)
            continue
        ctx = KernelContext(opset=layer.opset, n_outputs=len(layer.outputs),
                            output_dtypes=[s.dtype for s in layer.output_specs], name=layer.name)
        vals = fn(ctx, [plan.constants[n] if n else None for n in layer.inputs], layer.attrs)
        for name, v in zip(layer.outputs, vals):
            if name:
                plan.constants[name] = np.asarray(v)
                plan.tensors.pop(name, None)
        removed.append(layer.name)
    plan.layers = kept
    return removed


def _check_static(plan) -> None:
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
    import importlib

    for mod, attr in (("cudnn_conv", "_GRAPHS"), ("cudnn_sdpa", "_GRAPHS"), ("cublaslt", "_NALGOS"), ("nvrtc", "_CUBINS")):
        try:
            getattr(importlib.import_module(f"workbench.kernels.cuda.{mod}"), attr).clear()
        except Exception:  # noqa: BLE001 - a source whose library is missing has nothing cached
            pass
