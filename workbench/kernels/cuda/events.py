"""The one CUDA-event timing and graph-capture routine: build autotuning, the runtime's graph
segments and its profile all go through it.

``step_times`` is the measurement itself: on one stream, an event before the first step and one
after every step, then the differences. ``time_ms`` (probes), ``time_launches`` (autotuning) and the
runtime's per-layer and whole-engine timing are all built on it.

``capture`` records calls on a stream into a CUDA graph. CuPy's ``begin_capture`` takes a mode
(relaxed: library calls that query the device during capture, e.g. cuBLAS workspace lookups, are
allowed) only in newer versions; older ones raise TypeError and capture in the default mode.

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
from typing import Callable, Sequence

from .device import cupy


def step_times(steps: Sequence[Callable[[], None]], stream, runs: int) -> list[list[float]]:
    """Milliseconds of every step in each of ``runs`` runs of ``steps`` in order on ``stream``
    (the steps must launch their work on it): one list of ``runs`` samples per step."""
    cp = cupy()
    per: list[list[float]] = [[] for _ in steps]
    for _ in range(runs):
        events = [cp.cuda.Event() for _ in range(len(steps) + 1)]
        events[0].record(stream)
        for i, step in enumerate(steps):
            step()
            events[i + 1].record(stream)
        events[-1].synchronize()
        for i in range(len(steps)):
            per[i].append(cp.cuda.get_elapsed_time(events[i], events[i + 1]))
    return per


def time_ms(fn, stream=None, warmup: int = 3, iters: int = 10) -> float:
    """Median milliseconds of ``fn()`` on ``stream``, each call bracketed by its own event pair."""
    cp = cupy()
    stream = stream or cp.cuda.get_current_stream()
    with stream:
        for _ in range(warmup):
            fn()
        stream.synchronize()
        samples = step_times([fn], stream, iters)[0]
    return float(statistics.median(samples))


def capture(fn, stream, launches: int = 1):
    """A CUDA graph of ``launches`` calls of ``fn`` on ``stream``, or (None, why). An exception in
    ``fn`` does not escape: the capture is ended either way and the exception is the reason."""
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
        except Exception:  # noqa: BLE001, S110 - nothing to clear
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
            graph, why = capture(fn, stream, launches)
            stream.synchronize()
            if graph is not None:
                graph.launch(stream)
                stream.synchronize()

                def replay():
                    for _ in range(replays):
                        graph.launch(stream)

                out = [ms / (replays * launches) for ms in step_times([replay], stream, samples)[0]]
                del graph
                return float(statistics.median(out)), True, ""

        def eager():
            for _ in range(launches):
                fn()

        out = [ms / launches for ms in step_times([eager], stream, samples)[0]]
    return float(statistics.median(out)), False, why
