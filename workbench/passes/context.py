"""PassContext: what every pass receives — the build config, counters and the fusion log."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PassContext:
    disabled: frozenset[str] = frozenset()
    device: str = "cpu"  # the build's target ("cpu" / "gpu")
    max_engine_bytes: int | None = None  # fold_constants keeps a layer whose results would pass it
    # every fusion attempt: {"rule", "status": "fired"|"declined", "reason", "nodes": [...], "root"}
    log: list[dict[str, Any]] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    # pass name -> {"ms": float, "changed": bool, "nodes_after": int}
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # True while the graph is as the last shape inference saw it (dead-code removal keeps it so):
    # the pipeline then skips its closing inference
    shapes_current: bool = False

    def enabled(self, name: str) -> bool:
        return name not in self.disabled

    def count(self, name: str, node=None, n: int = 1) -> None:
        self.counters[name] += n

    def fired(self, rule: str, nodes: list[str], root: str = "", reason: str = "") -> None:
        self.log.append({"rule": rule, "status": "fired", "reason": reason, "nodes": list(nodes), "root": root or (nodes[0] if nodes else "")})
        self.counters[rule] += 1

    def declined(self, rule: str, nodes: list[str], reason: str, root: str = "") -> None:
        self.log.append({"rule": rule, "status": "declined", "reason": reason, "nodes": list(nodes), "root": root or (nodes[0] if nodes else "")})
