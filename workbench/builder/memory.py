"""Static memory plan: liveness intervals of every intermediate tensor, packed into one arena.

Tensors whose lifetimes do not overlap share bytes. Placement is greedy best-fit by decreasing
size (the heuristic TensorRT and TVM use): for each tensor, the lowest offset whose range does not
collide with an already placed tensor that is alive at the same time. That search looks at every
placed tensor alive with the new one, so it is quadratic where thousands of tensors are alive at
once; past ``BEST_FIT_LIMIT`` tensors the plan is placed in execution order instead (an offline
free-list allocator: best-fitting free block, coalesced on free), linear in practice.

``plan_memory`` writes the result into the plan (``plan.arena``: what the GPU runtime places every
tensor by) and returns the memory report for people (sizes, reuse, the same offsets).
"""

from __future__ import annotations

import bisect

from ..core.liveness import last_uses_of
from ..core.plan import Arena, Plan

# bytes: CUDA's allocation alignment, so a tensor in the arena is as aligned as its own allocation
# would be (cuBLASLt's fast paths want 16)
ALIGN = 256
# tensors: above this many, placement in execution order (see the module docstring)
BEST_FIT_LIMIT = 4096


def tensor_bytes(spec) -> int | None:
    """Bytes of a planned tensor (``TensorSpec.nbytes``); None without a spec."""
    return None if spec is None else spec.nbytes


def plan_memory(plan: Plan) -> dict:
    """Place every intermediate tensor with a static shape in one arena (``plan.arena``); returns
    the memory report."""
    last = last_uses_of(plan.layers, [o.name for o in plan.outputs])
    intervals = []  # (size, start, end, name)
    dynamic = []
    slots = Arena(alignment=ALIGN)
    for i, layer in enumerate(plan.layers):
        for name in layer.outputs:
            if not name:
                continue
            size = tensor_bytes(plan.tensors.get(name))
            if size is None:
                dynamic.append(name)
                continue
            intervals.append((slots.slot(size), i, last.get(name, i), name))
    if len(intervals) <= BEST_FIT_LIMIT:
        offsets = _best_fit_by_size(intervals)
        method = "best fit by decreasing size"
    else:
        offsets = _in_execution_order(intervals)
        method = "in execution order (large plan)"
    arena = max((offsets[name] + size for size, _, _, name in intervals), default=0)
    plan.arena = Arena(bytes=int(arena), offsets=dict(offsets), alignment=ALIGN)
    naive = sum(t[0] for t in intervals)
    peak_live = _peak_live(intervals)
    weights = sum(int(getattr(c, "nbytes", 0)) for c in plan.constants.values())
    return {
        "arena_bytes": int(arena),
        "naive_bytes": int(naive),
        "peak_live_bytes": int(peak_live),
        "weights_bytes": int(weights),
        "reuse_saving": (1 - arena / naive) if naive else 0.0,
        "tensors_planned": len(intervals),
        "tensors_dynamic": dynamic,
        "offsets": offsets,
        "alignment": ALIGN,
        "placement": method,
    }


def _best_fit_by_size(intervals) -> dict[str, int]:
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    offsets: dict[str, int] = {}
    for size, start, end, name in sorted(intervals, key=lambda t: (-t[0], t[1], t[3])):
        live = sorted((o, s) for o, s, a, b in placed if not (b < start or end < a))
        offset = 0
        for o, s in live:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, start, end))
        offsets[name] = offset
    return offsets


def _in_execution_order(intervals) -> dict[str, int]:
    """Walk the layers: a layer's outputs take the best-fitting free block (or grow the arena),
    then the tensors it read for the last time give their bytes back (merged with free neighbours).
    Outputs are placed before the layer's last reads are freed: a layer never writes over its input."""
    starts: dict[int, list] = {}
    ends: dict[int, list] = {}
    for t in intervals:
        starts.setdefault(t[1], []).append(t)
        ends.setdefault(t[2], []).append(t)
    free: list[list[int]] = []  # [offset, size], sorted by offset, never adjacent
    top = 0
    offsets: dict[str, int] = {}
    for step in sorted(set(starts) | set(ends)):
        for size, _, _, name in sorted(starts.get(step, ()), key=lambda t: -t[0]):
            best = None
            for k, (o, s) in enumerate(free):
                if s >= size and (best is None or s < free[best][1]):
                    best = k
            if best is not None:
                o, s = free[best]
                offsets[name] = o
                if s == size:
                    del free[best]
                else:
                    free[best] = [o + size, s - size]
            elif free and free[-1][0] + free[-1][1] == top:  # the last free block grows into the top
                offsets[name] = free[-1][0]
                top = free[-1][0] + size
                free.pop()
            else:
                offsets[name] = top
                top += size
        for size, _, _, name in ends.get(step, ()):
            _give_back(free, offsets[name], size)
    return offsets


def _give_back(free: list[list[int]], offset: int, size: int) -> None:
    k = bisect.bisect_left(free, [offset, 0])
    if k < len(free) and offset + size == free[k][0]:  # merge with the block after
        size += free[k][1]
        del free[k]
    if k > 0 and free[k - 1][0] + free[k - 1][1] == offset:  # and with the block before
        free[k - 1][1] += size
    else:
        free.insert(k, [offset, size])


def _peak_live(intervals) -> int:
    """Most bytes alive at one layer (a sweep over lifetime starts and ends)."""
    delta: dict[int, int] = {}
    for size, start, end, _ in intervals:
        delta[start] = delta.get(start, 0) + size
        delta[end + 1] = delta.get(end + 1, 0) - size
    peak = live = 0
    for step in sorted(delta):
        live += delta[step]
        peak = max(peak, live)
    return peak
