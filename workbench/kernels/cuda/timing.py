"""The one timing routine every tactic is measured with: CUDA events, warm-up, median."""

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
