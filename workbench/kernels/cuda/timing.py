"""The one timing routine every tactic is measured with: CUDA events, warm-up, median.

``time_launches`` measures what a launch costs inside the engine. A capturable candidate is
captured ``launches`` times back to back into a CUDA graph, and the graph is replayed ``replays``
times between one event pair: the result is device time per launch, as in the engine's own graph
replay (host launch cost is paid once per graph, not per kernel). A candidate that cannot be
captured (or whose capture fails: that is how capturability is verified) is timed as ``launches``
eager calls between one event pair, so its host cost (Python, CuPy, library set-up) counts, as it
will when the runtime runs it between graph segments. Timing each launch alone with its own
events (``time_ms``) charges every candidate its host latency and is kept only for probes.
"""

from __future__ import annotations

import statistics

from .device import cupy


def time_ms(fn, stream=None, warmup: int = 3, iters: int = 10) -> float:
    """Median milliseconds of ``fn()`` on ``stream``, each call bracketed by its own event pair."""
    cp = cupy()
    stream = stream or cp.cuda.get_current_stream()
    with stream:
        for _ in range(warmup):
            fn()
        stream.synchronize()
        samples = []
        for _ in range(iters):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            samples.append(cp.cuda.get_elapsed_time(start, end))
    return float(statistics.median(samples))


def _capture(fn, stream, launches: int):
    """A CUDA graph of ``launches`` calls of ``fn`` on ``stream``, or (None, why)."""
    cp = cupy()
    try:
        stream.begin_capture(mode=cp.cuda.runtime.streamCaptureModeRelaxed)
    except TypeError:
        stream.begin_capture()
    err = None
    try:
        for _ in range(launches):
            fn()
    except Exception as exc:  # noqa: BLE001 - the capture is ended below either way
        err = f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        graph = stream.end_capture()
    except Exception as exc:  # noqa: BLE001
        graph, err = None, err or f"{type(exc).__name__}: {str(exc)[:200]}"
    if err is not None or graph is None:
        try:
            cp.cuda.runtime.getLastError()  # clear a non-sticky capture error
        except Exception:  # noqa: BLE001
            pass
        return None, err or "end_capture returned no graph"
    return graph, ""


def time_launches(fn, stream, capturable: bool = True, launches: int = 6, replays: int = 4,
                  samples: int = 5) -> tuple[float, bool, str]:
    """(median ms per launch, whether it was timed as a captured graph, why capture failed)."""
    cp = cupy()
    pool = cp.cuda.MemoryPool()  # temporaries a capture bakes in stay owned by this pool
    why = "tactic says it is not capturable"
    with cp.cuda.using_allocator(pool.malloc), stream:
        for _ in range(2):
            fn()
        stream.synchronize()
        if capturable:
            graph, why = _capture(fn, stream, launches)
            stream.synchronize()
            if graph is not None:
                graph.launch(stream)
                stream.synchronize()
                out = []
                for _ in range(samples):
                    a, b = cp.cuda.Event(), cp.cuda.Event()
                    a.record(stream)
                    for _ in range(replays):
                        graph.launch(stream)
                    b.record(stream)
                    b.synchronize()
                    out.append(cp.cuda.get_elapsed_time(a, b) / (replays * launches))
                del graph
                return float(statistics.median(out)), True, ""
        out = []
        for _ in range(samples):
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record(stream)
            for _ in range(launches):
                fn()
            b.record(stream)
            b.synchronize()
            out.append(cp.cuda.get_elapsed_time(a, b) / launches)
    return float(statistics.median(out)), False, why
