"""Static memory plan: liveness intervals of every intermediate tensor, packed into one arena.

Tensors whose lifetimes do not overlap share bytes. Placement is greedy best-fit by decreasing
size (the heuristic TensorRT and TVM use): for each tensor, the lowest offset whose range does not
collide with an already placed tensor that is alive at the same time.
"""

from __future__ import annotations

from ..dtypes import itemsize
from ..core.liveness import last_uses_of
from ..core.plan import Plan

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
