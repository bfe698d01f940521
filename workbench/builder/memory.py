"""Static memory plan: liveness intervals of every intermediate tensor, packed into one arena.

Tensors whose lifetimes do not overlap share bytes. Placement is greedy best-fit by decreasing
size (the heuristic TensorRT and TVM use): for each tensor, the lowest offset whose range does not
collide with an already placed tensor that is alive at the same time.

``plan_memory`` writes the result into the plan (``plan.arena``: what the GPU runtime places every
tensor by) and returns the memory report for people (sizes, reuse, the same offsets).
"""

from __future__ import annotations

from ..dtypes import itemsize
from ..core.liveness import last_uses_of
from ..core.plan import Arena, Plan

# bytes: CUDA's allocation alignment, so a tensor in the arena is as aligned as its own allocation
# would be (cuBLASLt's fast paths want 16)
ALIGN = 256


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def tensor_bytes(spec) -> int | None:
    if spec is None or spec.dtype is None or spec.dtype == "string" or not spec.is_static:
        return None
    n = 1
    for d in spec.shape:
        n *= d
    return int(-(-n * itemsize(spec.dtype) // 1))


def plan_memory(plan: Plan) -> dict:
    """Place every intermediate tensor with a static shape in one arena (``plan.arena``); returns
    the memory report."""
    last = last_uses_of(plan.layers, [o.name for o in plan.outputs])
    intervals = []  # (size, start, end, name)
    dynamic = []
    for i, layer in enumerate(plan.layers):
        for name in layer.outputs:
            if not name:
                continue
            size = tensor_bytes(plan.tensors.get(name))
            if size is None:
                dynamic.append(name)
                continue
            intervals.append((_aligned(max(size, 1)), i, last.get(name, i), name))
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
    arena = max((o + s for o, s, _, _ in placed), default=0)
    plan.arena = Arena(bytes=int(arena), offsets=dict(offsets), alignment=ALIGN)
    naive = sum(t[0] for t in intervals)
    peak_live = 0
    for i in range(len(plan.layers) + 1):
        peak_live = max(peak_live, sum(s for s, a, b, _ in intervals if a <= i <= b))
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
    }
