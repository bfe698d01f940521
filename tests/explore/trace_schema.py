"""A checker of the Trace Event Format (the JSON that chrome://tracing and Perfetto read), as the
trace tests use it: the object form, the fields every event needs, complete ("X") and metadata
("M") events only, and on every track events in time order that never overlap."""

from __future__ import annotations

import json
import math

X_FIELDS = ("name", "ph", "ts", "dur", "pid", "tid")
M_FIELDS = ("name", "ph", "pid", "tid", "args")
METADATA_NAMES = {"process_name", "process_sort_index", "thread_name", "thread_sort_index", "process_labels"}


def check_trace(trace) -> list[str]:
    """Every problem found (empty: the trace is well formed)."""
    problems = []
    trace = json.loads(json.dumps(trace, allow_nan=False))  # plain JSON: no NaN, no objects
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        return ["not the JSON object form {'traceEvents': [...]}"]
    if trace.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        problems.append(f"displayTimeUnit {trace.get('displayTimeUnit')!r}")
    tracks: dict[tuple, list] = {}
    named = set()
    for i, e in enumerate(trace["traceEvents"]):
        ph = e.get("ph")
        if ph == "X":
            missing = [f for f in X_FIELDS if f not in e]
            if missing:
                problems.append(f"event {i}: missing {missing}")
                continue
            if not all(isinstance(e[f], (int, float)) and math.isfinite(e[f]) for f in ("ts", "dur")):
                problems.append(f"event {i}: ts/dur not finite numbers")
                continue
            if e["dur"] < 0 or e["ts"] < 0:
                problems.append(f"event {i}: negative ts or dur")
            if not isinstance(e["name"], str) or not isinstance(e["pid"], int) or not isinstance(e["tid"], int):
                problems.append(f"event {i}: name must be a string, pid and tid integers")
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
        elif ph == "M":
            missing = [f for f in M_FIELDS if f not in e]
            if missing:
                problems.append(f"metadata {i}: missing {missing}")
            elif e["name"] not in METADATA_NAMES:
                problems.append(f"metadata {i}: unknown name {e['name']!r}")
            elif e["name"] == "thread_name":
                named.add((e["pid"], e["tid"]))
        else:
            problems.append(f"event {i}: phase {ph!r} (only complete 'X' and metadata 'M' events are written)")
    for key, events in tracks.items():
        if key not in named:
            problems.append(f"track {key} has no thread_name")
        for a, b in zip(events, events[1:]):
            if b["ts"] < a["ts"]:
                problems.append(f"track {key}: {b['name']!r} starts before {a['name']!r} (not in time order)")
            elif b["ts"] < a["ts"] + a["dur"] - 1e-6:
                problems.append(f"track {key}: {b['name']!r} overlaps {a['name']!r}")
    return problems
