"""What a serving replica counts: requests by status, rows per engine batch, request latency, and
the engine's own time per batch (on the engine thread: the rows gathered, padded, run and sliced
back), which tells a slow model from a slow transport or a long queue.

``ReplicaStats`` keeps this replica's own numbers (``GET /v2/models/{name}/stats`` shows them);
``RayMetrics`` exports the same events as Ray metrics (``ray.serve.metrics``: Prometheus on every
node's metrics port, tagged with deployment, replica and model), so a cluster's dashboards see all
replicas together.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
_LATENCY_WINDOW = 10_000  # the latest requests the percentiles are taken over


class ReplicaStats:
    """This replica's counts since it started (safe to update from the engine thread and the event loop)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: collections.Counter[int] = collections.Counter()  # HTTP status -> count
        self.rows = 0
        self.batches: collections.Counter[int] = collections.Counter()  # rows in one engine batch -> count
        self.engine_runs = 0
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        self._engine_ms: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)

    def request(self, status: int, ms: float) -> None:
        with self._lock:
            self.requests[status] += 1
            self._latency_ms.append(ms)

    def batch(self, rows: int, runs: int, engine_ms: float) -> None:
        with self._lock:
            self.rows += rows
            self.batches[rows] += 1
            self.engine_runs += runs
            self._engine_ms.append(engine_ms)

    def snapshot(self) -> dict:
        with self._lock:
            lat = np.asarray(self._latency_ms, dtype=np.float64)
            eng = np.asarray(self._engine_ms, dtype=np.float64)
            ok = sum(n for s, n in self.requests.items() if s < 400)
            return {
                "requests": {str(k): v for k, v in sorted(self.requests.items())},
                "success_count": ok, "fail_count": sum(self.requests.values()) - ok,
                "inference_count": self.rows, "execution_count": self.engine_runs,
                "batch_sizes": {str(k): v for k, v in sorted(self.batches.items())},
                "latency_ms": _percentiles(lat),
                "engine_ms_per_batch": _percentiles(eng),
            }


def _percentiles(ms: np.ndarray) -> dict:
    return {"count": int(ms.size), **({f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)} if ms.size else {})}


class RayMetrics:
    """The same events as Ray metrics; made inside a replica (needs Ray)."""

    def __init__(self, model_name: str):
        from ray.serve import metrics  # noqa: PLC0415 - only inside a Ray Serve replica

        self.requests = metrics.Counter("workbench_requests", description="Inference requests by HTTP status.",
                                        tag_keys=("model", "code"))
        self.rows = metrics.Counter("workbench_rows", description="Rows inferred.", tag_keys=("model",))
        self.batch_rows = metrics.Histogram("workbench_batch_rows", description="Rows in each engine batch.",
                                            boundaries=BATCH_BOUNDARIES, tag_keys=("model",))
        self.latency = metrics.Histogram("workbench_request_latency_ms",
                                         description="Inference request latency in the replica, in ms.",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("model",))
        self.engine = metrics.Histogram("workbench_engine_ms_per_batch",
                                        description="Engine time of one batch on the engine thread, in ms.",
                                        boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("model",))
        for m in (self.requests, self.rows, self.batch_rows, self.latency, self.engine):
            m.set_default_tags({"model": model_name})  # a fresh dict each: Serve adds its own tags to it

    def request(self, status: int, ms: float) -> None:
        self.requests.inc(tags={"code": str(status)})
        self.latency.observe(ms)

    def batch(self, rows: int, runs: int, engine_ms: float) -> None:
        self.rows.inc(rows)
        self.batch_rows.observe(rows)
        self.engine.observe(engine_ms)
