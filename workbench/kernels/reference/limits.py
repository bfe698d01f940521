"""Caps on what a reference kernel may allocate from data-dependent sizes.

Shapes that come from tensor *values* (ConstantOfShape, Expand, Tile, Range, Resize, OneHot,
Reshape) are attacker-controlled in a model from a stranger: the kernel checks the element count
against this cap before asking NumPy for memory, so a crafted model fails with a clear error
instead of exhausting the host.
"""

from __future__ import annotations

import contextlib
import contextvars

from workbench.core.limits import MAX_LOOP_ITERATIONS
from workbench.errors import ResourceLimitError

MAX_ELEMENTS = 2**31
# the caps in force: an engine's (BuilderConfig / create_context) while it runs, else the defaults;
# the byte budget is None outside a build or run (no budget known)
_CAP: contextvars.ContextVar[int] = contextvars.ContextVar("workbench_max_elements", default=MAX_ELEMENTS)
_BUDGET: contextvars.ContextVar[int | None] = contextvars.ContextVar("workbench_memory_budget", default=None)
_LOOPS: contextvars.ContextVar[int] = contextvars.ContextVar("workbench_max_loop_iterations",
                                                             default=MAX_LOOP_ITERATIONS)


def set_limits(limit: int | None, memory_budget: int | None = None, max_loop_iterations: int | None = None) -> tuple:
    """Apply the limits in this thread / task until ``reset_limits(tokens)`` (what ``element_cap``
    does, without a generator: the CPU runtime calls it on every run)."""
    return (_CAP.set(int(limit) if limit else MAX_ELEMENTS), _BUDGET.set(memory_budget),
            _LOOPS.set(int(max_loop_iterations) if max_loop_iterations else MAX_LOOP_ITERATIONS))


def reset_limits(tokens: tuple) -> None:
    _CAP.reset(tokens[0])
    _BUDGET.reset(tokens[1])
    _LOOPS.reset(tokens[2])


@contextlib.contextmanager
def element_cap(limit: int | None, *, memory_budget: int | None = None, max_loop_iterations: int | None = None):
    """Apply ``limit`` (elements), ``memory_budget`` (bytes) and ``max_loop_iterations`` to every
    check in this thread / task while the block runs."""
    tokens = set_limits(limit, memory_budget, max_loop_iterations)
    try:
        yield
    finally:
        reset_limits(tokens)


def memory_budget() -> int | None:
    """The byte budget in force (None: none set)."""
    return _BUDGET.get()


def check_bytes(nbytes: int, what: str) -> None:
    """Raise ResourceLimitError if one allocation of ``nbytes`` would exceed the byte budget."""
    budget = _BUDGET.get()
    if budget is not None and nbytes > budget:
        raise ResourceLimitError(f"{what} needs {nbytes} bytes; the memory budget is {budget} bytes "
                                 "(BuilderConfig / create_context memory_budget)")


def check_iterations(count: int, what: str) -> None:
    """Raise ResourceLimitError once a Loop / Scan would run more than the iteration cap."""
    cap = _LOOPS.get()
    if count > cap:
        raise ResourceLimitError(f"{what}: more than {cap} iterations (max_loop_iterations); "
                                 "raise it in BuilderConfig / create_context if the model really needs them")


def count_elements(shape) -> int:
    """Exact element count of ``shape`` (Python ints, so no overflow)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def check_elements(shape, what: str, itemsize: int = 1) -> None:
    """Raise ResourceLimitError if a tensor of ``shape`` would exceed the element cap or (at
    ``itemsize`` bytes an element) the byte budget in force."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ResourceLimitError(f"{what}: negative dimension in output shape {dims}")
    n = count_elements(dims)
    cap = _CAP.get()
    if n > cap:
        raise ResourceLimitError(
            f"{what}: output shape {dims} has {n} elements, over the limit of {cap} (BuilderConfig.max_elements)")
    check_bytes(n * itemsize, f"{what}: output shape {dims}")
