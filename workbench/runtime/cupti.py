"""Per-layer GPU times of the replayed CUDA graph, from CUPTI activity records (``cupti-python``).

Timing each layer with a CUDA event pair around an eager launch measures launch gaps the deployed
engine never has: the engine replays CUDA graphs. This module profiles the replay itself:

1. The engine's segments are captured again exactly as the context captures them
   (``runtime/gpu/graphs.capture_segments``: same kernels, same arena, same eager layers), while a
   CUPTI resource callback records, for every graph node created, the layer being captured
   (``GRAPHNODE_CREATED``), and, when the graph is instantiated, which executable node is a clone of
   which captured one (``GRAPHNODE_CLONED``).
2. Kernel, memcpy and memset activity records (``CONCURRENT_KERNEL``, ``MEMCPY``, ``MEMSET``) are
   collected over ``runs`` replays, each between two host timestamps on CUPTI's clock with a stream
   synchronize after it, so every record falls in the window of the run that launched it.
3. Each record names the executable graph's node that ran it (``graph_node_id``); a clone's id maps
   to its captured node's layer. (Seen on an H100 with libcupti 13.0 and cupti-python 13.4: kernel
   and memcpy records carry the clone's id, and a ``GRAPHNODE_CLONED`` callback per node at
   instantiation names the captured original.) Layers that run eagerly between graphs (not
   capturable) are launched under an external correlation id
   (``activity_push_external_correlation_id``, kind CUSTOM0 = layer + 1), which maps their records
   through the launching API call's correlation id.
4. Per run, records are laid on one time line; each gets the time it adds to the run's busy time
   (overlaps with earlier records are counted once), and the idle time between them is the run's
   *gaps*. So per run: sum over layers + gaps = the span from the first record's start to the last
   one's end. The profile reports the median over runs of each, per layer and for the gaps.

``replay_profile(ctx, feeds, runs)`` returns a :class:`ReplayTrace`; ``runtime/profile.py`` tabulates
it. :class:`CuptiUnavailable` (a one-line reason) means the caller falls back to event timing.
CUPTI allows one subscriber per process: under another CUPTI tool (Nsight Systems) the replay
profile is unavailable too.
"""

from __future__ import annotations

import bisect
import statistics
import threading
from dataclasses import dataclass, field

from ..errors import WorkbenchError

BUFFER_BYTES = 8 * 2**20


class CuptiUnavailable(WorkbenchError):
    """The replay profile cannot be taken here; the message says why in one line."""


def load_cupti():
    """The ``cupti.cupti`` module of cupti-python, or CuptiUnavailable naming what is missing."""
    try:
        from cupti import cupti as api  # noqa: PLC0415 - optional, GPU only
    except Exception as exc:  # noqa: BLE001 - ImportError, or libcupti failing to load
        raise CuptiUnavailable(f"CUPTI is not available (cupti-python: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'not installed'}); install "
                               "'workbench[gpu]'") from None
    return api


# ---- records ------------------------------------------------------------------------------------

@dataclass
class Record:
    """One GPU activity: a kernel, memcpy or memset, with its node, correlation id and ns times."""

    kind: str
    name: str
    start: int
    end: int
    node: int = 0  # graph_node_id: the executable graph's node (0: not launched by a graph)
    correlation: int = 0
    stream: int = 0


@dataclass
class ReplayTrace:
    """What ``runs`` replays gave: per-layer ms samples (one list per layer, one sample per run),
    the gaps, the spans, the kernels of the median run and per-kernel medians."""

    layers: list[list[float]]
    gaps_ms: list[float]
    span_ms: list[float]
    unattributed_ms: list[float]
    kernels: list[dict] = field(default_factory=list)  # the median run: layer, name, start_us, dur_us
    kernel_stats: list[dict] = field(default_factory=list)  # layer, index, name, median_us, count
    eager_layers: list[int] = field(default_factory=list)  # layers run outside the graphs
    records: int = 0

    @property
    def runs(self) -> int:
        return len(self.span_ms)


def _record(api, a) -> Record | None:
    """A plain Record from a CUPTI activity object (read at once: the buffer is reused)."""
    kind = a.kind
    if kind in (api.ActivityKind.CONCURRENT_KERNEL, api.ActivityKind.KERNEL):
        # (source_graph_node_id is not read: a libcupti older than cupti-python's record layout, as
        # seen with libcupti 13.0 under cupti-python 13.4, leaves it unset)
        return Record("kernel", str(a.name), int(a.start), int(a.end), int(getattr(a, "graph_node_id", 0) or 0),
                      int(a.correlation_id), int(getattr(a, "stream_id", 0) or 0))
    if kind == api.ActivityKind.MEMCPY:
        try:
            what = api.ActivityMemcpyKind(a.copy_kind).name
        except Exception:  # noqa: BLE001 - an unknown copy kind keeps its number
            what = str(a.copy_kind)
        return Record("memcpy", f"memcpy {what} {int(a.bytes)} B", int(a.start), int(a.end),
                      int(getattr(a, "graph_node_id", 0) or 0), int(a.correlation_id),
                      int(getattr(a, "stream_id", 0) or 0))
    if kind == api.ActivityKind.MEMSET:
        return Record("memset", f"memset {int(a.bytes)} B", int(a.start), int(a.end),
                      int(getattr(a, "graph_node_id", 0) or 0), int(a.correlation_id),
                      int(getattr(a, "stream_id", 0) or 0))
    return None


# ---- aggregation (pure: unit-tested without a GPU) ------------------------------------------------

def layer_of(rec: Record, node_layer: dict[int, int], corr_layer: dict[int, int]) -> int | None:
    """The layer index a record belongs to (by its graph node, else by its launch's correlation
    id), or None."""
    if rec.node and rec.node in node_layer:
        return node_layer[rec.node]
    return corr_layer.get(rec.correlation)


def split_runs(records: list[Record], windows: list[tuple[int, int]]) -> list[list[Record]]:
    """Records grouped by the run whose host window [t0, t1) holds their start; others dropped."""
    runs: list[list[Record]] = [[] for _ in windows]
    order = sorted(range(len(windows)), key=lambda i: windows[i][0])
    starts = [windows[i][0] for i in order]
    for rec in records:
        k = bisect.bisect_right(starts, rec.start) - 1
        if k >= 0:
            i = order[k]
            if rec.start < windows[i][1]:
                runs[i].append(rec)
    return runs


def busy_times(recs: list[Record]) -> tuple[list[tuple[Record, int, int]], int, int]:
    """((record, attributed start, attributed ns), span ns, gaps ns) of one run: records in start
    order, each attributed the part of it no earlier record covered, so attributed + gaps = span."""
    recs = sorted(recs, key=lambda r: (r.start, r.end))
    if not recs:
        return [], 0, 0
    first = recs[0].start
    cover = first
    out = []
    busy = 0
    for r in recs:
        s = max(r.start, cover)
        d = max(0, r.end - s)
        out.append((r, s, d))
        busy += d
        cover = max(cover, r.end)
    span = cover - first
    return out, span, span - busy


def aggregate(records: list[Record], windows: list[tuple[int, int]], node_layer: dict[int, int],
              corr_layer: dict[int, int], n_layers: int) -> ReplayTrace:
    """The ReplayTrace of ``records`` taken over the runs ``windows`` (host ns on CUPTI's clock)."""
    per_layer: list[list[float]] = [[] for _ in range(n_layers)]
    gaps, spans, other = [], [], []
    run_rows = []
    for recs in split_runs(records, windows):
        if not recs:
            continue
        timed, span, gap = busy_times(recs)
        ms = [0.0] * n_layers
        lost = 0.0
        rows = []
        for rec, s, d in timed:
            layer = layer_of(rec, node_layer, corr_layer)
            if layer is None or not 0 <= layer < n_layers:
                lost += d / 1e6
                layer = -1
            else:
                ms[layer] += d / 1e6
            rows.append((layer, rec, s, d))
        for i in range(n_layers):
            per_layer[i].append(ms[i])
        gaps.append(gap / 1e6)
        spans.append(span / 1e6)
        other.append(lost)
        run_rows.append(rows)
    trace = ReplayTrace(per_layer, gaps, spans, other, records=len(records))
    if run_rows:
        trace.kernels = _median_run(run_rows, spans)
        trace.kernel_stats = _kernel_stats(run_rows)
    return trace


def _median_run(run_rows: list, spans: list[float]) -> list[dict]:
    """The kernels of the run whose span is the median one (times from that run's first start)."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    rows = run_rows[order[len(order) // 2]]
    t0 = min(rec.start for _, rec, _, _ in rows)
    return [{"layer": layer, "name": rec.name, "kind": rec.kind, "start_us": (rec.start - t0) / 1e3,
             "dur_us": (rec.end - rec.start) / 1e3, "busy_us": d / 1e3} for layer, rec, _s, d in rows]


def _kernel_stats(run_rows: list) -> list[dict]:
    """Per layer, its k-th kernel's name and median duration over the runs (a layer may launch
    several kernels; their order within a layer is the replay's)."""
    samples: dict[tuple[int, int], list[float]] = {}
    names: dict[tuple[int, int], str] = {}
    for rows in run_rows:
        seen: dict[int, int] = {}
        for layer, rec, _s, _d in rows:
            k = seen.get(layer, 0)
            seen[layer] = k + 1
            samples.setdefault((layer, k), []).append((rec.end - rec.start) / 1e3)
            names.setdefault((layer, k), rec.name)
    return [{"layer": layer, "index": k, "name": names[(layer, k)], "median_us": statistics.median(v),
             "count": len(v)} for (layer, k), v in sorted(samples.items())]


# ---- collection on the GPU ----------------------------------------------------------------------

class _Collector:
    """CUPTI's buffer callbacks are registered once per process; they hand records to the
    collector that is active (one profile at a time: the context lock is held)."""

    lock = threading.Lock()
    active: "_Collector | None" = None
    registered = False

    def __init__(self, api):
        self.api = api
        self.records: list[Record] = []
        self.corr_layer: dict[int, int] = {}
        self.node_layer: dict[int, int] = {}
        self.current: int | None = None
        self.errors: list[str] = []

    @classmethod
    def register(cls, api) -> None:
        if cls.registered:
            return

        def requested():
            return BUFFER_BYTES, 0

        def completed(activities):
            col = cls.active
            if col is None:
                return
            for a in activities:
                try:
                    if a.kind == api.ActivityKind.EXTERNAL_CORRELATION:
                        if a.external_kind == api.ExternalCorrelationKind.CUSTOM0 and a.external_id:
                            col.corr_layer[int(a.correlation_id)] = int(a.external_id) - 1
                        continue
                    rec = _record(api, a)
                except Exception as exc:  # noqa: BLE001 - a record we cannot read is counted, not fatal
                    col.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if rec is not None:
                    col.records.append(rec)

        api.activity_register_callbacks(requested, completed)
        cls.registered = True

    # resource callback: graph nodes created while a layer is captured, and their clones
    def on_resource(self, userdata, domain, cbid, cbdata) -> None:
        api = self.api
        try:
            if domain != api.CallbackDomain.RESOURCE:
                return
            if cbid not in (api.CallbackIdResource.GRAPHNODE_CREATED, api.CallbackIdResource.GRAPHNODE_CLONED):
                return
            data = _graph_data(api, cbdata)
            node = int(api.get_graph_node_id(data.node))
            if cbid == api.CallbackIdResource.GRAPHNODE_CREATED:
                if self.current is not None:
                    self.node_layer[node] = self.current
            else:  # a clone: at instantiation, or a library's own graph added to the layer being captured
                orig = int(api.get_graph_node_id(data.original_node)) if data.original_node else 0
                layer = self.node_layer.get(orig, self.current)
                if layer is not None:
                    self.node_layer[node] = layer
        except Exception as exc:  # noqa: BLE001 - never raise into the driver
            if len(self.errors) < 20:
                self.errors.append(f"resource callback: {type(exc).__name__}: {exc}")


def _graph_data(api, cbdata):
    """The CUpti_GraphData of a resource callback (cupti-python hands the callback data either
    decoded or as a pointer)."""
    res = cbdata
    if not hasattr(res, "resource_descriptor"):
        res = api.ResourceData.from_ptr(int(cbdata))
    return api.GraphData.from_ptr(int(res.resource_descriptor))


ACTIVITIES = ("CONCURRENT_KERNEL", "MEMCPY", "MEMSET")
EAGER_ACTIVITIES = ("EXTERNAL_CORRELATION", "DRIVER", "RUNTIME")


def replay_profile(ctx, feeds: dict, runs: int) -> ReplayTrace:
    """Replay ``ctx``'s engine ``runs`` times under CUPTI (after one warm-up replay) and aggregate
    per layer. ``ctx`` is a GpuExecutionContext; ``feeds`` are loaded once before the runs."""
    api = load_cupti()
    from ..kernels.cuda.device import cupy  # noqa: PLC0415 - GPU only
    from .gpu.graphs import capture_segments, replay  # noqa: PLC0415

    cp = cupy()
    cupti_error = getattr(api, "cuptiError", None) or type("NoCuptiError", (Exception,), {})
    n = len(ctx.engine.layers)
    feeds = ctx._checked(feeds)
    with ctx._lock:
        ctx._load_inputs(feeds)
        with ctx.stream:
            ctx._execute()  # the context's own capture: learns which layers must run eagerly
        ctx.stream.synchronize()
        graphs = bool(ctx.cuda_graph and not ctx.debug and not ctx.graph_error and ctx._segments is not None)
        col = _Collector(api)
        with _Collector.lock:
            try:
                _Collector.register(api)
                sub = api.subscribe(col.on_resource, None)
            except Exception as exc:  # noqa: BLE001 - e.g. another CUPTI subscriber (a profiler) in this process
                raise CuptiUnavailable(f"CUPTI cannot be used in this process ({type(exc).__name__}: {exc})") from None
            _Collector.active = col
            enabled = []
            pools: list = []
            segments = None
            try:
                api.enable_callback(1, sub, api.CallbackDomain.RESOURCE, api.CallbackIdResource.GRAPHNODE_CREATED)
                api.enable_callback(1, sub, api.CallbackDomain.RESOURCE, api.CallbackIdResource.GRAPHNODE_CLONED)
                eager = sorted(ctx._eager_only) if graphs else list(range(n))
                kinds = ACTIVITIES + (EAGER_ACTIVITIES if eager else ())
                for name in kinds:
                    api.activity_enable(getattr(api.ActivityKind, name))
                    enabled.append(name)

                def capture_layer(i, stream=None):
                    col.current = i
                    try:
                        ctx._run_layer(i, stream)
                    finally:
                        col.current = None

                def eager_layer(i, stream=None):
                    api.activity_push_external_correlation_id(api.ExternalCorrelationKind.CUSTOM0, i + 1)
                    try:
                        ctx._run_layer(i, stream)
                    finally:
                        api.activity_pop_external_correlation_id(api.ExternalCorrelationKind.CUSTOM0)

                with ctx.stream:
                    if graphs:
                        segments = capture_segments(ctx.kernels, capture_layer, ctx.stream, pools,
                                                    eager_only=frozenset(ctx._eager_only))
                    else:
                        segments = [("eager", list(range(n)))]
                    replay(segments, ctx.stream, eager_layer)  # warm-up (and first upload of each graph)
                    ctx.stream.synchronize()
                    windows = []
                    for _ in range(runs):
                        t0 = int(api.get_timestamp())
                        replay(segments, ctx.stream, eager_layer)
                        ctx.stream.synchronize()
                        windows.append((t0, int(api.get_timestamp())))
                api.activity_flush_all(1)
            except cupti_error as exc:  # CUPTI itself refused (not a layer failing): fall back
                raise CuptiUnavailable(f"CUPTI failed while tracing the replays ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
            finally:
                for name in enabled:
                    try:
                        api.activity_disable(getattr(api.ActivityKind, name))
                    except Exception:  # noqa: BLE001, S110 - best effort: the profile is over
                        pass
                _Collector.active = None
                try:
                    api.unsubscribe(sub)
                except Exception:  # noqa: BLE001, S110
                    pass
                segments = None
                pools.clear()
                cp.cuda.get_current_stream().synchronize()
    if not col.records:
        raise CuptiUnavailable("CUPTI recorded no GPU activity during the replays"
                               + (f" ({col.errors[0]})" if col.errors else ""))
    trace = aggregate(col.records, windows, col.node_layer, col.corr_layer, n)
    trace.eager_layers = list(eager)
    if graphs and not col.node_layer:
        raise CuptiUnavailable("CUPTI reported no graph nodes while the engine was captured"
                               + (f" ({col.errors[0]})" if col.errors else ""))
    return trace
