"""The front half of a build, kept for the builds of one network that differ only after it.

A build prepares (fixes input shapes), optimizes (the passes) and lowers the network to a plan
before it assigns precisions and tactics (``builder.py``). None of the first three reads the
precision, the calibration or the tactic settings, so the builds that a budgeted search
(``mixed.py``: a uniform build per precision, then one per candidate on the GPU) or the int8 /
fp8 fallback step (``fallback.py``) makes of one network all start from the same lowered plan.
A ``FrontCache`` runs those stages once per distinct ``key`` and gives each build a deep copy of
what they made -- the plan, the pass log and the model's own Q/DQ scales -- since the later
stages change the plan in place. Read-only constants (the model's weights, views of its tensors)
are shared, not copied: nothing can change them in place. A build from the cache gets the same
engine as one without it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..core.plan import Plan
from ..passes.context import PassContext


@dataclass
class Front:
    plan: Plan  # the lowered plan, before precision and tactics
    ctx: PassContext  # the passes' log, counters and timings
    nodes: dict[str, int]  # {"before", "after"}: node counts around the passes
    explicit: dict[str, Any]  # the model's own Q/DQ scales (passes.qdq.explicit_quantization)


def key(cfg, device: str) -> str:
    """What the front half of a build depends on: the input shapes, the passes and their caps."""
    shapes = sorted((str(k), repr(v)) for k, v in dict(cfg.shapes or {}).items())
    return repr((device, shapes, bool(cfg.optimize), sorted(cfg.disable), cfg.max_elements, cfg.memory_budget,
                 cfg.max_loop_iterations, cfg.max_engine_bytes))


class FrontCache:
    """Lowered plans of one network by ``key``; ``get`` returns a copy to build on."""

    def __init__(self):
        self._fronts: dict[str, Front] = {}
        self.made = 0  # how many fronts were made (the others were copies)

    def get(self, cfg, device: str, make: Callable[[], Front]) -> tuple[Front, bool]:
        """(a front for ``cfg`` the caller may change, whether it came from the cache)."""
        k = key(cfg, device)
        kept = self._fronts.get(k)
        if kept is None:
            front = make()
            self.made += 1
            self._fronts[k] = _copy(front)
            return front, False
        return _copy(kept), True


def _copy(front: Front) -> Front:
    shared = {id(v): v for v in front.plan.constants.values() if isinstance(v, np.ndarray) and not v.flags.writeable}
    return copy.deepcopy(front, memo=shared)
