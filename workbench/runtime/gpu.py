"""GpuExecutionContext: runs a GPU engine through CuPy.

One device arena holds every intermediate tensor at the memory plan's offsets; weights are
uploaded once in the type each layer reads; graph inputs have persistent buffers. Everything runs
on one stream. By default the engine is captured into CUDA graphs (one per run of consecutive
capturable layers; a layer that must sync with the host, e.g. the generic reference tactic, runs
eagerly between them) and replayed, since CuPy spends ~10 µs of host time per launch. Captured
segments allocate CuPy temporaries from a private memory pool owned by the context, so no memory
the graphs use is ever handed to anyone else.
"""

from __future__ import annotations

import json
import threading
import warnings
from typing import Any

import numpy as np

from ..errors import EngineCompatibilityError, OutOfMemoryError
from .context import NonFiniteWarning
from .executor import LayerError
from .gpu_setup import build_kernels, place_tensors
from .validate import check_feeds


def _cp():
    import cupy as cp  # noqa: PLC0415

    return cp


class _CaptureFailed(Exception):
    """args[0]: index of the layer that broke stream capture."""


class GpuExecutionContext:
    device = "gpu"

    def __init__(self, engine, *, debug: bool = False, seed: int = 0, cuda_graph: bool | None = None):
        from ..kernels.cuda.compat import check_engine

        check_engine(engine)
        cp = _cp()
        self.engine = engine
        self.debug = debug
        self.cuda_graph = bool(engine.target.get("cuda_graph", True) if cuda_graph is None else cuda_graph)
        self._lock = threading.Lock()
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.first_nonfinite: tuple[str, str] | None = None
        self.graph_error: str | None = None
        self._segments = None
        self._eager_only: set[int] = set()  # layers whose capture failed; they run between graphs
        self._pools: list = []
        try:
            with self.stream:
                self.buffers, self.constants = place_tensors(engine)
                self.kernels = build_kernels(engine, self._kernel_map())
                ws = max([k.workspace_bytes for k in self.kernels] + [1])
                self.workspace = cp.empty(ws, cp.uint8)
            self.stream.synchronize()
        except cp.cuda.memory.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"GPU out of memory while loading the engine: {exc}") from None
        self._io = [self._bind(layer) for layer in engine.layers]

    # ---- setup -------------------------------------------------------------------------------
    def _kernel_map(self) -> dict:
        raw = self.engine.blobs.get("gpu/kernel_map.json")
        if raw is None:
            raise EngineCompatibilityError("GPU engine has no kernel map — rebuild it")
        kmap = json.loads(raw.decode())
        return {int(i): {n: self.engine.blobs[b] for n, b in names.items()} for i, names in kmap.items()}

    def _lookup(self, layer, name: str, dtype: str | None):
        if not name:
            return None
        if name in self.engine.plan.constants:
            return self.constants[(name, dtype)]
        if name in self.buffers:
            return self.buffers[name]
        raise LayerError(f"layer {layer.name!r} reads {name!r}, which has no device buffer")

    def _bind(self, layer):
        specs = iter(layer.input_specs)
        ins = []
        for name in layer.inputs:
            spec = next(specs) if name else None
            ins.append(self._lookup(layer, name, spec.dtype if spec else None))
        outs = [self.buffers.get(n) if n else None for n in layer.outputs]
        return ins, outs

    @property
    def inputs(self):
        return self.engine.inputs

    @property
    def outputs(self):
        return self.engine.outputs

    # ---- running -----------------------------------------------------------------------------
    def _run_layer(self, i: int) -> None:
        ins, outs = self._io[i]
        try:
            self.kernels[i].run(ins, outs, self.workspace, self.stream)
        except _cp().cuda.memory.OutOfMemoryError:
            raise
        except Exception as exc:
            layer = self.engine.layers[i]
            raise LayerError(f"layer {layer.name!r} ({layer.op}, tactic {layer.tactic}; ONNX nodes: "
                             f"{', '.join(layer.onnx_nodes)}) failed: {exc}") from exc

    def _eager(self, check_finite: bool = False) -> None:
        cp = _cp()
        bad = None
        for i, layer in enumerate(self.engine.layers):
            self._run_layer(i)
            if check_finite and bad is None:
                for name, out in zip(layer.outputs, self._io[i][1]):
                    if out is not None and out.dtype.kind == "f" and not bool(cp.isfinite(out).all()):
                        bad = (layer.name, name)
                        break
        self.first_nonfinite = bad

    def _capture(self) -> None:
        """Warm up eagerly, then capture each run of capturable layers into its own CUDA graph."""
        cp = _cp()
        groups, cur = [], []
        for i, k in enumerate(self.kernels):
            if k.capturable and i not in self._eager_only:
                cur.append(i)
            else:
                if cur:
                    groups.append(("graph", cur))
                    cur = []
                groups.append(("eager", [i]))
        if cur:
            groups.append(("graph", cur))
        segments = []
        for kind, idx in groups:
            if kind == "eager":
                segments.append(("eager", idx))
                continue
            pool = cp.cuda.MemoryPool()
            self._pools.append(pool)
            with cp.cuda.using_allocator(pool.malloc):
                for i in idx:  # warm the private pool so the capture reuses its blocks
                    self._run_layer(i)
                self.stream.synchronize()
                try:
                    self.stream.begin_capture(mode=cp.cuda.runtime.streamCaptureModeRelaxed)
                except TypeError:
                    self.stream.begin_capture()
                failed = None
                try:
                    for i in idx:
                        failed = i
                        self._run_layer(i)
                    failed = None
                except Exception:
                    pass  # the capture is ended below either way; the layer is reported by index
                try:
                    graph = self.stream.end_capture()
                except Exception:
                    graph = None
                if failed is not None or graph is None:
                    raise _CaptureFailed(failed if failed is not None else idx[0])
            segments.append(("graph", graph))
        self._segments = segments

    def _execute(self) -> None:
        if not self.cuda_graph or self.debug or self.graph_error:
            self._eager(check_finite=self.debug)
            return
        while self._segments is None and len(self._eager_only) < 16:
            try:
                self._capture()
            except _CaptureFailed as exc:  # this layer cannot be captured: run it between segments
                self._eager_only.add(exc.args[0])
                self.stream.synchronize()
            except Exception as exc:  # anything else: run eagerly from now on
                self.graph_error = f"{type(exc).__name__}: {exc}"
                self._segments = None
                warnings.warn(f"CUDA graph capture failed, running layer by layer: {self.graph_error}", RuntimeWarning,
                              stacklevel=3)
                self._eager()
                return
        if self._segments is None:
            self.graph_error = f"could not capture: layers {sorted(self._eager_only)} and more are not capturable"
            self._eager()
            return
        for kind, item in self._segments:
            if kind == "graph":
                item.launch(self.stream)
            else:
                for i in item:
                    self._run_layer(i)

    def _load_inputs(self, feeds: dict) -> bool:
        cp = _cp()
        on_device = any(isinstance(v, cp.ndarray) for v in feeds.values())
        if on_device:  # the caller's writes must land before we read: a device-side wait, no host sync
            ev = cp.cuda.Event(block=False, disable_timing=True)
            ev.record(cp.cuda.get_current_stream())
            self.stream.wait_event(ev)
        for spec in self.engine.inputs:
            buf, value = self.buffers[spec.name], feeds[spec.name]
            if isinstance(value, cp.ndarray):
                with self.stream:
                    cp.copyto(buf, value.view(buf.dtype) if value.dtype != buf.dtype else value)
            else:
                host = np.ascontiguousarray(value)
                buf.set(host.view(buf.dtype) if host.dtype != buf.dtype else host, stream=self.stream)
        return on_device

    def _collect(self, on_device: bool) -> dict:
        cp = _cp()
        from ..dtypes import to_numpy

        out = {}
        with self.stream:
            for spec in self.engine.outputs:
                dev = self.buffers.get(spec.name)
                if dev is None and spec.name in self.engine.plan.constants:
                    dev = self.constants[(spec.name, spec.dtype)]
                if on_device:
                    out[spec.name] = dev.copy()
                else:
                    host = dev.get(stream=self.stream)
                    out[spec.name] = host.view(to_numpy("bfloat16")) if spec.dtype == "bfloat16" else host
        if on_device:  # CuPy in, CuPy out: asynchronous like a CuPy op; the caller's stream waits on ours
            ev = cp.cuda.Event(block=False, disable_timing=True)
            ev.record(self.stream)
            cp.cuda.get_current_stream().wait_event(ev)
        else:
            self.stream.synchronize()
        return out

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run once. NumPy feeds -> NumPy outputs; CuPy feeds -> CuPy outputs (fresh arrays)."""
        cp = _cp()
        check_feeds(self.engine.inputs, feeds, array_types=(np.ndarray, cp.ndarray))
        with self._lock:
            try:
                on_device = self._load_inputs(feeds)
                with self.stream:
                    self._execute()
                outs = self._collect(on_device)
            except cp.cuda.memory.OutOfMemoryError as exc:
                self.stream.synchronize()
                raise OutOfMemoryError(f"GPU out of memory while running the engine: {exc}") from None
        if self.debug and self.first_nonfinite:
            layer, tensor = self.first_nonfinite
            warnings.warn(f"first non-finite value produced by layer {layer!r} (tensor {tensor!r})",
                          NonFiniteWarning, stacklevel=2)
        return outs

    def run_eager(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run layer by layer without CUDA graphs (for checking graph replay against)."""
        cp = _cp()
        check_feeds(self.engine.inputs, feeds, array_types=(np.ndarray, cp.ndarray))
        with self._lock:
            on_device = self._load_inputs(feeds)
            with self.stream:
                self._eager()
            return self._collect(on_device)

    # ---- timing ------------------------------------------------------------------------------
    def time_replays(self, feeds: dict, runs: int) -> list[float]:
        """Milliseconds of ``runs`` whole-engine executions (graph replays when enabled), inputs
        already on the device: the engine's own latency, without host copies."""
        cp = _cp()
        check_feeds(self.engine.inputs, feeds, array_types=(np.ndarray, cp.ndarray))
        times = []
        with self._lock:
            self._load_inputs(feeds)
            with self.stream:
                self._execute()
                for _ in range(runs):
                    a, b = cp.cuda.Event(), cp.cuda.Event()
                    a.record(self.stream)
                    self._execute()
                    b.record(self.stream)
                    b.synchronize()
                    times.append(cp.cuda.get_elapsed_time(a, b))
        return times

    def time_layers_gpu(self, feeds: dict, runs: int) -> list[list[float]]:
        """Per-layer milliseconds from an eager run with a CUDA event pair around every layer."""
        cp = _cp()
        check_feeds(self.engine.inputs, feeds, array_types=(np.ndarray, cp.ndarray))
        n = len(self.engine.layers)
        per = [[] for _ in range(n)]
        with self._lock:
            self._load_inputs(feeds)
            with self.stream:
                self._eager()
                for _ in range(runs):
                    ev = [cp.cuda.Event() for _ in range(n + 1)]
                    ev[0].record(self.stream)
                    for i in range(n):
                        self._run_layer(i)
                        ev[i + 1].record(self.stream)
                    ev[n].synchronize()
                    for i in range(n):
                        per[i].append(cp.cuda.get_elapsed_time(ev[i], ev[i + 1]))
        return per

    def profile(self, feeds: dict[str, Any] | None = None, runs: int = 10, warmup: int = 1):
        """Per-layer profile DataFrame (CPU columns) plus end-to-end graph-replay latency."""
        from .gpu_profile import profile_gpu

        return profile_gpu(self, feeds, runs=runs, warmup=warmup)
