"""Liveness over a plan: who reads what, and when each tensor is read for the last time.

Shared by the builder's memory planner and the runtime (which frees values after their last use).
"""

from __future__ import annotations

from .plan import Layer, Subgraph


def subgraphs_of(layer: Layer) -> list[Subgraph]:
    subs = []
    for v in layer.attrs.values():
        if isinstance(v, Subgraph):
            subs.append(v)
        elif isinstance(v, list):
            subs.extend(x for x in v if isinstance(x, Subgraph))
    return subs


def free_names(layers: list[Layer], defined: set[str]) -> set[str]:
    """Names a (sub)graph reads that it does not define itself (outer-scope captures)."""
    needed: set[str] = set()
    local = set(defined)
    for layer in layers:
        for name in layer.inputs:
            if name and name not in local:
                needed.add(name)
        for sub in subgraphs_of(layer):
            inner = set(sub.constants) | {s.name for s in sub.inputs}
            needed |= free_names(sub.layers, inner) - local
        local.update(o for o in layer.outputs if o)
    return needed


def layer_reads(layer: Layer) -> list[str]:
    """Every tensor a layer reads, including captures of its subgraphs."""
    reads = [n for n in layer.inputs if n]
    for sub in subgraphs_of(layer):
        inner = set(sub.constants) | {s.name for s in sub.inputs}
        reads.extend(sorted(free_names(sub.layers, inner)))
    return reads


def last_uses_of(layers: list[Layer], outputs: list[str]) -> dict[str, int]:
    """tensor name -> index of the last layer reading it; graph outputs live to len(layers)."""
    last: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for name in layer_reads(layer):
            last[name] = i
    for name in outputs:
        last[name] = len(layers)
    return last
