"""GpuExecutionContext: runs a GPU engine through CuPy.

One device arena holds every intermediate tensor at the plan's arena offsets; weights are uploaded
once in the type each layer reads; graph inputs have persistent buffers. Everything runs on one
stream. When the plan says so (``plan.options.cuda_graph``) the engine is captured into CUDA graphs
(``graphs.py``: one per run of consecutive capturable layers; a layer that must sync with the host,
e.g. the generic reference tactic, runs eagerly between them) and replayed, since CuPy spends
~10 µs of host time per launch.

Host path of ``run`` with CuPy feeds (the common case; see ``run``): the feeds are checked against
per-input expectations cached at load (a dict lookup and a dtype/shape compare per input; anything
unusual goes through the full ``check_feeds`` with its messages), the caller's stream is joined by
one event (no host sync), each input goes into its persistent buffer with one device-to-device
``cudaMemcpyAsync`` -- or, where the graph input's only reader is a kernel that may read it straight
from the caller's array (``BuiltKernel.reads_inputs_directly``: an elementwise cast such as fp32 ->
fp16, possibly writing channels-last), that kernel reads the caller's array directly and a second
CUDA graph without it is replayed -- then the graph replays, and outputs are copied into fresh
arrays (``copy_outputs=False`` returns the persistent output buffers instead).

IO binding (like TensorRT's ``set_tensor_address`` / ONNX Runtime's io_binding): write the inputs
into ``ctx.input_buffer(name)`` and call ``ctx.execute(stream)``, which only replays the graph on that
stream (the caller's current CuPy stream by default) and returns at once; read
``ctx.output_buffer(name)`` after the stream's work. No validation, copy or allocation per call.

Buckets (``gpu/bucketed.py``): one context per bucket, all made with one :class:`SharedDevice` (one
stream, one lock, one activation arena sized for the largest bucket, the weights uploaded once, one
workspace). The bucketed context checks the feeds itself and calls ``_run`` with ``rows``: a batch
smaller than the bucket's is copied into the first rows of the input buffers, the rest of each
buffer is filled with copies of the last row (real data, so no padded row computes NaN or reads an
invalid index), and the outputs are the first ``rows`` rows.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np

from ...dtypes import to_numpy
from ...errors import OutOfMemoryError
from ...kernels.cuda.compat import check_engine
from ...kernels.cuda.device import cupy
from ...kernels.cuda.events import step_times
from ..context import ExecutionContext, LayerError, NonFiniteWarning
from ..validate import check_feeds
from .graphs import CaptureFailed, capture_segments, replay
from .setup import build_kernels, direct_casts, place_tensors

MAX_EAGER_LAYERS = 16  # layers that may fail capture one by one before the whole engine runs eagerly


class SharedDevice:
    """What the bucket contexts of one engine share (see the module docstring); ``arena_bytes``:
    the largest bucket's arena."""

    def __init__(self, arena_bytes: int):
        cp = cupy()
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.lock = threading.Lock()
        self.arena = cp.empty(max(int(arena_bytes), 1), cp.uint8)
        self.constants: dict = {}
        self.workspace = cp.empty(1, cp.uint8)

    def reserve(self, nbytes: int) -> None:
        """A workspace of at least ``nbytes`` (grown before any capture, which bakes its address in)."""
        if nbytes > self.workspace.nbytes:
            self.workspace = cupy().empty(int(nbytes), cupy().uint8)


class GpuExecutionContext(ExecutionContext):
    device = "gpu"
    profile_note = ("end-to-end is the median of whole-engine CUDA-graph replays timed with CUDA events; "
                    "per-layer times come from separate eager runs with an event pair around every layer, so "
                    "their sum exceeds end-to-end (launch gaps and event overhead)")

    def __init__(self, engine, *, debug: bool = False, seed: int = 0, cuda_graph: bool | None = None,
                 memory_budget: int | None = None, shared: SharedDevice | None = None):
        super().__init__(engine)
        check_engine(engine)
        cp = cupy()
        self.debug = debug
        # host feeds are checked against it before they are copied to the device
        self.memory_budget = memory_budget
        self.cuda_graph = bool(engine.plan.options.cuda_graph if cuda_graph is None else cuda_graph)
        self._shared = shared
        self._lock = shared.lock if shared else threading.Lock()
        self.stream = shared.stream if shared else cp.cuda.Stream(non_blocking=True)
        self.first_nonfinite: tuple[str, str] | None = None
        self.graph_error: str | None = None
        self._segments = None
        self._eager_only: set[int] = set()  # layers whose capture failed; they run between graphs
        self._pools: list = []
        try:
            with self.stream:
                self.buffers, self.constants = place_tensors(engine, *((shared.arena, shared.constants) if shared else ()))
                self.kernels = build_kernels(engine, self.constants)
                ws = max([k.workspace_bytes for k in self.kernels] + [1])
                if shared:
                    shared.reserve(ws)
                else:
                    self._workspace = cp.empty(ws, cp.uint8)
            self.stream.synchronize()
        except cp.cuda.memory.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"GPU out of memory while loading the engine: {exc}") from None
        self._io = [self._bind(layer) for layer in engine.layers]
        self._prepare_io()

    @property
    def workspace(self):
        """Scratch memory of the kernels (one per engine; the buckets of one engine share one)."""
        return self._shared.workspace if self._shared is not None else self._workspace

    # ---- setup -------------------------------------------------------------------------------
    def _lookup(self, layer, name: str, dtype: str | None):
        if not name:
            return None
        if name in self.engine.plan.constants:
            return self.constants[(name, dtype)]
        if name in self.buffers:
            return self.buffers[name]
        raise LayerError(f"layer {layer.name!r} reads {name!r}, which has no device buffer")

    def _bind(self, layer):
        ins = [self._lookup(layer, name, spec.dtype if spec else None)
               for name, spec in zip(layer.inputs, layer.aligned_input_specs())]
        outs = [self.buffers.get(n) if n else None for n in layer.outputs]
        return ins, outs

    # ---- running -----------------------------------------------------------------------------
    def _run_layer(self, i: int, stream=None) -> None:
        ins, outs = self._io[i]
        try:
            self.kernels[i].run(ins, outs, self.workspace, stream or self.stream)
        except cupy().cuda.memory.OutOfMemoryError:
            raise
        except Exception as exc:
            layer = self.engine.layers[i]
            raise LayerError(f"layer {layer.name!r} ({layer.op}, tactic {layer.tactic}; ONNX nodes: "
                             f"{', '.join(layer.onnx_nodes)}) failed: {exc}") from exc

    def _eager(self, check_finite: bool = False) -> None:
        cp = cupy()
        bad = None
        for i, layer in enumerate(self.engine.layers):
            self._run_layer(i)
            if check_finite and bad is None:
                for name, out in zip(layer.outputs, self._io[i][1]):
                    if out is not None and out.dtype.kind == "f" and not bool(cp.isfinite(out).all()):
                        bad = (layer.name, name)
                        break
        self.first_nonfinite = bad

    def _capture(self, skip=frozenset()) -> list:
        """The engine's segments (``graphs.py``), layers in ``skip`` left out."""
        return capture_segments(self.kernels, self._run_layer, self.stream, self._pools, skip=skip,
                                eager_only=frozenset(self._eager_only))

    def _replay(self, segments, stream=None) -> None:
        replay(segments, stream or self.stream, self._run_layer)

    def _execute(self) -> None:
        if not self.cuda_graph or self.debug or self.graph_error:
            self._eager(check_finite=self.debug)
            return
        while self._segments is None and len(self._eager_only) < MAX_EAGER_LAYERS:
            try:
                self._segments = self._capture()
            except CaptureFailed as exc:  # this layer cannot be captured: run it between segments
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
        self._replay(self._segments)

    # ---- per-run host path ----------------------------------------------------------------------
    def _prepare_io(self) -> None:
        """Constant per-input / per-output facts, computed once: the fast checks and copies of
        ``run`` read only these."""
        cp = cupy()
        self._in_fast = []  # (name, buffer, expected array dtype, shape, nbytes)
        for spec in self.engine.inputs:
            buf = self.buffers[spec.name]
            try:
                want = np.dtype(to_numpy(spec.dtype))
            except Exception:  # noqa: BLE001 - no fast path for this type: full check every run
                want = None
            self._in_fast.append((spec.name, buf, want, tuple(buf.shape), int(buf.nbytes)))
        self._in_names = frozenset(s.name for s in self.engine.inputs)
        self._out_fast = []  # (name, device array, spec)
        for spec in self.engine.outputs:
            dev = self.buffers.get(spec.name)
            if dev is None and spec.name in self.engine.plan.constants:
                dev = self.constants[(spec.name, spec.dtype)]
            self._out_fast.append((spec.name, dev, spec))
        self._ev_in = cp.cuda.Event(block=False, disable_timing=True)
        self._ev_out = cp.cuda.Event(block=False, disable_timing=True)
        self._direct = direct_casts(self.engine, self.kernels)
        self._tail_segments = None

    def _fast_feeds(self, feeds, rows: int | None = None) -> bool:
        """True when every feed is a C-contiguous CuPy array of exactly the expected dtype and
        shape (then ``check_feeds`` would accept it); False sends the feeds through the full check.
        ``rows``: the feeds hold that many leading rows of the buffers' shapes (a padded bucket run)."""
        if type(feeds) is not dict or len(feeds) != len(self._in_fast):
            return False
        nd = cupy().ndarray
        for name, _buf, want, shape, _nb in self._in_fast:
            v = feeds.get(name)
            if rows is not None:
                shape = (rows,) + shape[1:]
            if type(v) is not nd or want is None or v.dtype != want or v.shape != shape or not v.flags.c_contiguous:
                return False
        return True

    def _load_inputs(self, feeds: dict, direct: bool = False, rows: int | None = None) -> tuple[bool, bool]:
        """Inputs into their buffers on ``self.stream``. Returns (on_device, tail): ``tail`` when
        every direct-cast input was cast straight from the caller's array (so the graph to replay
        is the one without those casts). ``rows``: the feeds fill only that many leading rows of
        the buffers; the rest repeat the last row."""
        cp = cupy()
        on_device = any(isinstance(v, cp.ndarray) for v in feeds.values())
        if on_device:  # the caller's writes must land before we read: a device-side wait, no host sync
            self._ev_in.record(cp.cuda.get_current_stream())
            self.stream.wait_event(self._ev_in)
        if rows is not None:
            self._load_rows(feeds, rows)
            return on_device, False
        tail = direct and bool(self._direct)
        for name, buf, _want, _shape, nbytes in self._in_fast:
            value = feeds[name]
            if isinstance(value, cp.ndarray):
                if tail and name in self._direct and value.flags.c_contiguous:
                    continue  # read by its cast kernel below, straight from the caller's array
                if value.flags.c_contiguous and value.dtype.itemsize == buf.dtype.itemsize and value.nbytes == nbytes:
                    if nbytes:
                        buf.data.copy_from_device_async(value.data, nbytes, self.stream)
                else:
                    with self.stream:
                        cp.copyto(buf, value.view(buf.dtype) if value.dtype != buf.dtype else value)
            else:
                host = np.ascontiguousarray(value)
                buf.set(host.view(buf.dtype) if host.dtype != buf.dtype else host, stream=self.stream)
        if tail:  # (``direct`` is only passed for fast feeds: C-contiguous CuPy arrays of the right type)
            for name, (i, pos) in self._direct.items():
                ins, outs = self._io[i]
                ins = list(ins)
                ins[pos] = feeds[name]
                self.kernels[i].run(ins, outs, self.workspace, self.stream)
        return on_device, tail

    def _load_rows(self, feeds: dict, rows: int) -> None:
        """The first ``rows`` rows of every input buffer from the feeds, the rest copies of the last
        fed row (zeros for an empty batch), all on ``self.stream``."""
        cp = cupy()
        for name, buf, _want, _shape, _nbytes in self._in_fast:
            value = feeds[name]
            head = buf[:rows]
            if isinstance(value, cp.ndarray):
                value = value.view(buf.dtype) if value.dtype != buf.dtype else value
                if value.flags.c_contiguous and head.nbytes:
                    head.data.copy_from_device_async(value.data, head.nbytes, self.stream)
                elif head.size:
                    with self.stream:
                        cp.copyto(head, value)
            elif head.size:
                host = np.ascontiguousarray(value)
                head.set(host.view(buf.dtype) if host.dtype != buf.dtype else host, stream=self.stream)
            if rows < buf.shape[0]:
                with self.stream:
                    if rows:
                        buf[rows:] = buf[rows - 1:rows]
                    else:
                        buf.fill(0)

    def _collect(self, on_device: bool, copy_outputs: bool = True, rows: int | None = None) -> dict:
        cp = cupy()
        out = {}
        outputs = self._out_fast if rows is None else [(n, dev[:rows], spec) for n, dev, spec in self._out_fast]
        if on_device:  # CuPy in, CuPy out: asynchronous like a CuPy op; the caller's stream waits on ours
            for name, dev, _spec in outputs:
                if copy_outputs:
                    o = cp.empty(dev.shape, dev.dtype)
                    if dev.nbytes:
                        o.data.copy_from_device_async(dev.data, dev.nbytes, self.stream)
                    out[name] = o
                else:
                    out[name] = dev
            self._ev_out.record(self.stream)
            cp.cuda.get_current_stream().wait_event(self._ev_out)
            return out
        for name, dev, spec in outputs:
            host = dev.get(stream=self.stream)
            out[name] = host.view(to_numpy("bfloat16")) if spec.dtype == "bfloat16" else host
        self.stream.synchronize()
        return out

    def _tail(self):
        """The segments without the direct-cast layers (captured on first use), or False."""
        if self._tail_segments is None:
            try:
                with self.stream:  # CuPy-based kernels launch on the current stream
                    self._tail_segments = self._capture(skip=frozenset(i for i, _ in self._direct.values()))
            except Exception as exc:  # noqa: BLE001 - only a shortcut: inputs are copied instead
                self._tail_segments = False
                self.stream.synchronize()
                warnings.warn(f"could not capture the graph without its input casts ({exc}); inputs are copied",
                              RuntimeWarning, stacklevel=3)
        return self._tail_segments

    def run(self, feeds: dict[str, Any], copy_outputs: bool = True) -> dict[str, Any]:
        """Run once. NumPy feeds -> NumPy outputs (synchronous); CuPy feeds -> CuPy outputs
        (asynchronous on the caller's current stream, like a CuPy op, no host sync).

        ``copy_outputs`` (CuPy feeds only): True (default) returns fresh arrays; False returns the
        context's persistent output buffers themselves -- no allocation or copy, but the next
        ``run``/``execute`` overwrites them, so read or copy them before that."""
        fast = self._fast_feeds(feeds)
        if not fast:
            feeds = self._checked(feeds)
        return self._run(feeds, fast, None, copy_outputs)

    def _run(self, feeds: dict, fast: bool, rows: int | None, copy_outputs: bool = True) -> dict[str, Any]:
        """``run`` on checked feeds (``fast``: they passed ``_fast_feeds``); ``rows``: a batch of
        that many rows, padded up to the buffers' (see ``_load_rows``), outputs cut back to it."""
        cp = cupy()
        with self._lock:
            try:
                direct = (rows is None and fast and bool(self._direct) and self._segments is not None
                          and not self.debug and not self.graph_error and self.cuda_graph and bool(self._tail()))
                on_device, tail = self._load_inputs(feeds, direct=direct, rows=rows)
                if tail:
                    self._replay(self._tail_segments)
                else:
                    with self.stream:
                        self._execute()
                outs = self._collect(on_device, copy_outputs, rows)
            except cp.cuda.memory.OutOfMemoryError as exc:
                self.stream.synchronize()
                raise OutOfMemoryError(f"GPU out of memory while running the engine: {exc}") from None
        if self.debug and self.first_nonfinite:
            layer, tensor = self.first_nonfinite
            warnings.warn(f"first non-finite value produced by layer {layer!r} (tensor {tensor!r})",
                          NonFiniteWarning, stacklevel=2)
        return outs

    # ---- IO binding ----------------------------------------------------------------------------
    def input_buffer(self, name: str):
        """The persistent device array (CuPy) that input ``name`` is read from by ``execute``. Write
        into it (``buf[...] = x``, ``cupy.copyto(buf, x)``) on the stream you pass to ``execute``,
        or before it. bfloat16 inputs are stored as uint16 bits."""
        if name not in self._in_names:
            raise KeyError(f"no engine input {name!r}; inputs: {', '.join(sorted(self._in_names))}")
        return self.buffers[name]

    def output_buffer(self, name: str):
        """The persistent device array (CuPy) that ``execute`` leaves output ``name`` in. It is
        overwritten by every ``execute``/``run``; read it on the stream given to ``execute`` (or
        after synchronizing)."""
        for n, dev, _spec in self._out_fast:
            if n == name:
                return dev
        raise KeyError(f"no engine output {name!r}; outputs: {', '.join(s.name for s in self.engine.outputs)}")

    def execute(self, stream=None) -> None:
        """Replay the engine on ``stream`` (a CuPy stream; default: the current CuPy stream) reading
        ``input_buffer``s and writing ``output_buffer``s. Asynchronous: returns once the work is
        enqueued; no validation, copy, allocation or host sync. Like a TensorRT context, one
        context must not be executed concurrently on two streams (its activations share one arena)."""
        cp = cupy()
        stream = stream if stream is not None else cp.cuda.get_current_stream()
        segs = self._segments
        if segs is None or self.debug or self.graph_error or not self.cuda_graph:
            with self._lock:  # first call (capture) or no graphs: the general path on our stream
                self._ev_in.record(stream)
                self.stream.wait_event(self._ev_in)
                with self.stream:
                    self._execute()
                self._ev_out.record(self.stream)
                stream.wait_event(self._ev_out)
            return
        with self._lock:
            self._replay(segs, stream)

    def capture(self) -> None:
        """Warm up and capture the CUDA graphs now, on whatever the input buffers hold (zeros until
        a run writes them), instead of on the first run (the bucketed context captures every
        bucket when it is made). Nothing happens when graphs are off."""
        if not self.cuda_graph or self.debug or self.graph_error or self._segments is not None:
            return
        with self._lock:
            with self.stream:
                self._execute()
            self.stream.synchronize()

    def run_eager(self, feeds: dict[str, Any], rows: int | None = None) -> dict[str, Any]:
        """Run layer by layer without CUDA graphs (for checking graph replay against). ``rows``:
        feeds already checked by the bucketed context, a batch of that many rows (see ``_run``)."""
        if rows is None:
            feeds = self._checked(feeds)
        with self._lock:
            on_device, _ = self._load_inputs(feeds, rows=rows)
            with self.stream:
                self._eager()
            return self._collect(on_device, rows=rows)

    def _checked(self, feeds: dict) -> dict:
        """The feeds validated (names, dtypes, shapes, the memory budget), NumPy ones as plain
        ndarrays so that no subclass code runs while they are copied in."""
        return check_feeds(self.engine.inputs, feeds, array_types=(np.ndarray, cupy().ndarray),
                           memory_budget=self.memory_budget)

    # ---- timing (CUDA events: kernels.cuda.events) -----------------------------------------------
    def time_end_to_end(self, feeds: dict, runs: int) -> list[float]:
        """Milliseconds of ``runs`` whole-engine executions (graph replays when enabled), inputs
        already on the device: the engine's own latency, without host copies."""
        feeds = self._checked(feeds)
        with self._lock:
            self._load_inputs(feeds)
            with self.stream:
                self._execute()
                return step_times([self._execute], self.stream, runs)[0]

    def time_layers(self, feeds: dict, runs: int) -> list[list[float]]:
        """Per-layer milliseconds from eager runs with a CUDA event pair around every layer."""
        feeds = self._checked(feeds)
        steps = [lambda i=i: self._run_layer(i) for i in range(len(self.engine.layers))]
        with self._lock:
            self._load_inputs(feeds)
            with self.stream:
                self._eager()
                return step_times(steps, self.stream, runs)

    def profile_attrs(self) -> dict:
        return {"cuda_graph": bool(self.cuda_graph and not self.graph_error)}
