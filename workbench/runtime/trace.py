"""Chrome trace / Perfetto export of a profile: the Trace Event Format in its JSON object form
(``{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}``), the same schema for
every device and mode, so chrome://tracing and ui.perfetto.dev open any of them.

One process (pid 1) named after the engine's device and the profile mode, with tracks (threads):

* tid 1 ``layers``: one complete event (``"ph": "X"``, ``ts`` and ``dur`` in microseconds) per layer,
  ``cat`` = its op type, ``args`` = ONNX ops, precision, tactic, median ms, kernel count;
* tid 2 ``kernels``: what ran for each layer. Replay profiles (``runtime/cupti.py``): the kernels,
  memcpys and memsets of the median run at their measured start times (kernels that overlap an
  earlier one go to further tracks, ``kernels (concurrent N)``, tid 10 + N); other profiles: one
  event per layer named by the tactic that ran it;
* tid 3 ``idle`` (replay only): the gaps between kernels.

Replay profiles place events where the median run had them; the other modes have no start times,
so their layers are laid end to end by median time. On every track the events are sorted by
``ts`` and never overlap. Metadata events (``"ph": "M"``) name the process and tracks and fix their
order.
"""

from __future__ import annotations

import json

from ..core.files import atomic_write

PID = 1
LAYERS, KERNELS, IDLE = 1, 2, 3
CONCURRENT_BASE = 10
SKIP_ROWS = ("(gaps)", "(unattributed)")


def _us(x: float) -> float:
    return round(float(x), 3)


def _x(name: str, cat: str, start: float, end: float, tid: int, args: dict) -> dict:
    ts, te = _us(start), _us(end)
    return {"name": str(name), "cat": str(cat), "ph": "X", "ts": ts, "dur": max(0.0, round(te - ts, 3)),
            "pid": PID, "tid": tid, "args": args}


def _meta(name: str, tid: int, args: dict) -> dict:
    return {"name": name, "ph": "M", "ts": 0, "pid": PID, "tid": tid, "args": args}


def _layer_args(row) -> dict:
    args = {"onnx_ops": str(row["onnx_ops"]), "precision": str(row["precision"]), "tactic": str(row["tactic"]),
            "median_ms": float(row["median_ms"]), "mean_ms": float(row["mean_ms"])}
    if "kernels" in row:
        args["kernels"] = int(row["kernels"])
    return args


def _laid_end_to_end(df) -> tuple[list[dict], set[int]]:
    """Layers one after another by median time; one tactic event per layer on the kernels track."""
    events = []
    t = 0.0
    for _, row in df.iterrows():
        if row["layer"] in SKIP_ROWS:
            continue
        dur = float(row["median_ms"]) * 1e3
        events.append(_x(row["layer"], row["type"], t, t + dur, LAYERS, _layer_args(row)))
        events.append(_x(row["tactic"] or row["type"], "tactic", t, t + dur, KERNELS, {"layer": str(row["layer"])}))
        t += dur
    return events, {LAYERS, KERNELS}


def _replayed(df) -> tuple[list[dict], set[int]]:
    """The median replay as measured: kernels at their start times, layers spanning their kernels,
    idle gaps between."""
    kernels = sorted(df.attrs.get("kernels") or [], key=lambda k: (k["start_us"], k["start_us"] + k["dur_us"]))
    rows = {row["layer"]: row for _, row in df.iterrows()}
    events, tids = [], {LAYERS, KERNELS, IDLE}
    lanes: list[float] = []  # end of the last kernel on each kernel track
    spans: dict[str, list[float]] = {}
    order: list[str] = []
    cover = kernels[0]["start_us"] if kernels else 0.0
    for k in kernels:
        start, end = float(k["start_us"]), float(k["start_us"]) + float(k["dur_us"])
        lane = next((i for i, last in enumerate(lanes) if _us(last) <= _us(start)), None)
        if lane is None:
            lanes.append(end)
            lane = len(lanes) - 1
        lanes[lane] = end
        tid = KERNELS if lane == 0 else CONCURRENT_BASE + lane
        tids.add(tid)
        events.append(_x(k["name"], k.get("kind", "kernel"), start, end, tid, {"layer": str(k["layer"])}))
        if start > cover:
            events.append(_x("idle", "gap", cover, start, IDLE, {}))
        cover = max(cover, end)
        if k["layer"] not in spans:
            spans[k["layer"]] = [start, end]
            order.append(k["layer"])
        else:
            spans[k["layer"]][1] = max(spans[k["layer"]][1], end)
    last = None
    for name in sorted(order, key=lambda n: spans[n][0]):
        start, end = spans[name]
        if last is not None:
            start = max(start, last)  # a track's events never overlap
        end = max(end, start)
        row = rows.get(name)
        args = _layer_args(row) if row is not None else {}
        cat = row["type"] if row is not None else "unattributed"
        events.append(_x(name, cat, start, end, LAYERS, args))
        last = end
    return events, tids


TRACK_NAMES = {LAYERS: "layers", KERNELS: "kernels", IDLE: "idle"}


def trace_events(df) -> list[dict]:
    """The trace's events: metadata first, then each track's complete events in time order."""
    replay = df.attrs.get("mode") == "replay" and bool(df.attrs.get("kernels"))
    events, tids = _replayed(df) if replay else _laid_end_to_end(df)
    events.sort(key=lambda e: (e["tid"], e["ts"], e["dur"]))
    device = df.attrs.get("device", "?")
    meta = [_meta("process_name", 0, {"name": f"workbench {device} engine ({df.attrs.get('mode', 'profile')})"}),
            _meta("process_sort_index", 0, {"sort_index": 0})]
    for tid in sorted(tids):
        name = TRACK_NAMES.get(tid, f"kernels (concurrent {tid - CONCURRENT_BASE})")
        meta.append(_meta("thread_name", tid, {"name": name}))
        meta.append(_meta("thread_sort_index", tid, {"sort_index": tid}))
    return meta + events


def to_chrome_trace(df, path=None) -> dict:
    """The Chrome trace (dict) of a profile DataFrame; written atomically to ``path`` when given
    (a reader never sees half a trace)."""
    trace = {"traceEvents": trace_events(df), "displayTimeUnit": "ms",
             "otherData": {k: v for k, v in df.attrs.items()
                           if isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and v != v)}}
    if path is not None:
        data = json.dumps(trace).encode("utf-8")
        atomic_write(path, lambda f: f.write(data))
    return trace
