"""What one execution context may use: a byte budget, an element cap and a Loop/Scan iteration cap.

The engine file may carry the element cap its build ran with; it can only lower the reader's own
(the default, or what ``create_context(max_elements=...)`` says), never raise it. The byte budget
defaults to a share of the memory available to the process (``core.budget``); the context checks
what it can predict against it — the engine's static memory plan when it is made, each feed's size
on every run — and the kernels check their data-dependent allocations (``kernels.reference.limits``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ..core.budget import check_budget
from ..core.limits import MAX_LOOP_ITERATIONS
from ..errors import ResourceLimitError
from ..kernels.reference.limits import MAX_ELEMENTS, element_cap, reset_limits, set_limits


def positive_int(value, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ResourceLimitError(f"{what} must be a positive int, got {value!r:.60}")
    return value


@dataclass(frozen=True)
class RunLimits:
    memory_budget: int
    max_elements: int
    max_loop_iterations: int

    @classmethod
    def make(cls, engine, memory_budget=None, max_elements=None, max_loop_iterations=None) -> "RunLimits":
        budget = check_budget(memory_budget)
        cap = positive_int(max_elements, "max_elements", MAX_ELEMENTS)
        built = engine.plan.options.max_elements
        if built is not None:
            cap = min(cap, built)  # the file may lower the reader's cap, never raise it
        loops = positive_int(max_loop_iterations, "max_loop_iterations", MAX_LOOP_ITERATIONS)
        arena = engine.plan.arena.bytes
        if arena > budget:
            raise ResourceLimitError(f"the engine's memory plan needs {arena} bytes of activations; the memory "
                                     f"budget is {budget} bytes (create_context(memory_budget=...))")
        return cls(budget, cap, loops)

    @contextlib.contextmanager
    def apply(self):
        with element_cap(self.max_elements, memory_budget=self.memory_budget,
                         max_loop_iterations=self.max_loop_iterations):
            yield

    def enter(self) -> tuple:
        """``apply`` without a context manager (for the per-run hot path); undo with ``exit``."""
        return set_limits(self.max_elements, self.memory_budget, self.max_loop_iterations)

    @staticmethod
    def exit(tokens: tuple) -> None:
        reset_limits(tokens)
