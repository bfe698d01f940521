"""CUDA graphs for a GPU engine: split the layers into segments, capture each run of consecutive
capturable layers into its own graph, replay the segments.

A layer whose kernel is not capturable (``BuiltKernel.capturable`` False, e.g. the generic
reference tactic, which syncs with the host) or whose capture failed runs eagerly between the
graphs. Each captured segment allocates CuPy temporaries from its own memory pool, which the
caller keeps alive as long as the graph: no memory a graph uses is ever handed to anyone else.
"""

from __future__ import annotations

from typing import Callable

from ...kernels.cuda.device import cupy
from ...kernels.cuda.events import capture

# a segment: ("graph", CUDA graph) or ("eager", [layer indices])
Segment = tuple[str, object]


class CaptureFailed(Exception):
    """args[0]: index of the layer that broke stream capture."""


def split(kernels: list, skip=frozenset(), eager_only=frozenset()) -> list[tuple[str, list[int]]]:
    """("graph" | "eager", layer indices) runs in order; layers in ``skip`` are left out."""
    groups, cur = [], []
    for i, k in enumerate(kernels):
        if i in skip:
            continue
        if k.capturable and i not in eager_only:
            cur.append(i)
        else:
            if cur:
                groups.append(("graph", cur))
                cur = []
            groups.append(("eager", [i]))
    if cur:
        groups.append(("graph", cur))
    return groups


def capture_segments(kernels: list, run_layer: Callable[[int], None], stream, pools: list,
                     skip=frozenset(), eager_only=frozenset()) -> list[Segment]:
    """Warm up each graph segment eagerly (so its private pool holds the blocks the capture then
    reuses), then capture it on ``stream``. New pools are appended to ``pools``. Raises
    CaptureFailed with the index of the layer that broke a capture."""
    cp = cupy()
    segments: list[Segment] = []
    for kind, idx in split(kernels, skip, eager_only):
        if kind == "eager":
            segments.append(("eager", idx))
            continue
        pool = cp.cuda.MemoryPool()
        pools.append(pool)
        with cp.cuda.using_allocator(pool.malloc):
            for i in idx:
                run_layer(i)
            stream.synchronize()
            at: list[int | None] = [None]

            def body(idx=idx, at=at):
                for i in idx:
                    at[0] = i
                    run_layer(i)
                at[0] = None

            graph, _why = capture(body, stream)
            if graph is None:
                raise CaptureFailed(at[0] if at[0] is not None else idx[0])
        segments.append(("graph", graph))
    return segments


def replay(segments: list[Segment], stream, run_layer: Callable[[int, object], None]) -> None:
    """Launch the graphs and run the eager layers between them, in order, on ``stream``."""
    for kind, item in segments:
        if kind == "graph":
            item.launch(stream)
        else:
            with stream:
                for i in item:
                    run_layer(i, stream)
