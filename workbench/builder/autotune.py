"""Autotuning: for each layer, build every candidate of the GPU tactic sources, time it, keep the
fastest (GPU builds).

Per layer: each source's ``supports`` -> candidate configs -> ``build`` -> time with CUDA events
(``kernels/cuda/events.time_launches``, the one timing routine) -> the fastest capturable candidate
wins. FALLBACK sources are asked only when no PRIMARY source can run the layer, and no layer ever
falls back to the CPU: a layer no tactic can run is a BuildError naming its node and op. The tactic
table (a report) keeps every candidate's time and every declining source's reason.

A timing cache (``timing_cache.py``: JSON keyed by layer signature, GPU and library versions) lets
a warm build skip timing and compilation: it builds the recorded choice only.
"""

from __future__ import annotations

import numpy as np

from ..core.numerics import random_array
from ..core.plan import Layer, Plan
from ..errors import BuildError
from ..kernels.cuda.device import cupy, storage_dtype, to_device_bits
from ..kernels.cuda.tactic import contract_refusal
from ..kernels.cuda.events import time_launches
from .timing_cache import TimingCache, layer_signature

_FLOATS = ("float32", "float16", "bfloat16", "float64")


class Autotuner:
    """Chooses a tactic for each layer of one build; keeps the weights it uploaded (shared by every
    candidate of a layer and by layers reading the same constant) and the chosen kernels' cubins."""

    def __init__(self, gpu, primary: list, fallback: list, cache: TimingCache | None, autotune: bool):
        self.gpu, self.primary, self.fallback = gpu, primary, fallback
        self.by_name = {t.name: t for t in primary + fallback}
        self.cache, self.autotune = cache, autotune
        self.cubins: dict[int, dict[str, bytes]] = {}  # layer index -> kernel name -> cubin
        self.weights_device: dict[tuple[str, str], object] = {}  # (constant, dtype) -> device array
        self.stream = cupy().cuda.Stream(non_blocking=True)

    def weights_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.weights_device.values()))

    def _weights(self, layer: Layer, plan: Plan) -> dict:
        out = {}
        for name, spec in zip(layer.inputs, layer.aligned_input_specs()):
            if name and name in plan.constants and spec is not None:
                key = (name, spec.dtype)
                if key not in self.weights_device:
                    self.weights_device[key] = cupy().asarray(to_device_bits(plan.constants[name], spec.dtype))
                out[name] = self.weights_device[key]
        return out

    def select(self, idx: int, layer: Layer, plan: Plan) -> None:
        weights = self._weights(layer, plan)
        key = layer_signature(layer, plan.constants)
        hit = self.cache.get(key) if self.cache is not None else None
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
        table, cands = self._candidates(layer, weights)
        if self.autotune and len(cands) > 1:
            t, cfg, built = self._fastest(layer, weights, cands, table)
        else:
            t, cfg, built = cands[0]
            table.append({"tactic": t.name, "config": cfg, "ms": None})
            table += [{"tactic": o.name, "config": c, "reason": "not timed (single candidate or autotune off)"}
                      for o, c, _ in cands[1:]]
        if self.cache is not None:
            self.cache.put(key, t.name, cfg, table)
        self._choose(idx, layer, t.name, cfg, table, built)

    def _candidates(self, layer: Layer, weights: dict) -> tuple[list[dict], list[tuple]]:
        """(table rows of declining sources and failed builds, [(tactic, config, built kernel)])."""
        table, cands = [], []
        for group in (self.primary, self.fallback):
            for t in group:
                try:
                    reason = contract_refusal(t, layer, layer.precision) or t.supports(layer, layer.precision, self.gpu)
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
        return table, cands

    def _fastest(self, layer: Layer, weights: dict, cands: list[tuple], table: list[dict]) -> tuple:
        """Time every candidate (rows appended to ``table``); the fastest capturable one, or the
        fastest of all when none can be captured (eager layers split the engine's CUDA graph and pay
        host latency)."""
        timed = []
        ins, outs, ws = self._buffers(layer, weights, max(c[2].workspace_bytes for c in cands))
        stream = self.stream
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
        _, _, t, cfg, built = min(timed, key=lambda r: (r[0], r[1]))
        return t, cfg, built

    def _choose(self, idx: int, layer: Layer, tactic: str, cfg: dict, table: list[dict], built) -> None:
        layer.tactic = tactic
        layer.tactic_config = dict(cfg)  # what the runtime rebuilds the kernel from
        layer.tactic_table = [dict(r) for r in table]
        # report only: mark the row people should read as the choice (add one if it was not timed)
        row = next((r for r in layer.tactic_table if r.get("tactic") == tactic and r.get("config") == cfg
                    and "ms" in r), None)
        if row is None:
            row = {"tactic": tactic, "config": cfg, "ms": None}
            layer.tactic_table.append(row)
        row["chosen"] = True
        self.cubins[idx] = dict(built.binaries)

    def _buffers(self, layer: Layer, weights: dict, ws_bytes: int):
        """Inputs (weights as uploaded, activations random), outputs and workspace to time with."""
        cp = cupy()
        rng = np.random.default_rng(0)
        ins = []
        for name, spec in zip(layer.inputs, layer.aligned_input_specs()):
            if not name or spec is None:
                ins.append(None)
            elif name in weights:
                ins.append(weights[name])
            else:
                ins.append(cp.asarray(_random_bits(spec, rng)))
        outs = [cp.empty(tuple(s.shape), storage_dtype(s.dtype)) if s.name else None for s in layer.output_specs]
        ws = cp.empty(max(ws_bytes, 1), cp.uint8)
        return ins, outs, ws


def _random_bits(spec, rng) -> np.ndarray:
    shape = tuple(spec.shape)
    if spec.dtype in _FLOATS:
        return to_device_bits(random_array("float32", shape, rng), spec.dtype)
    # integer and bool inputs (indices, masks) are zeros: an index of 0 is in bounds for every
    # candidate, a random one could make a kernel read out of bounds
    return np.zeros(shape, dtype=storage_dtype(spec.dtype))
