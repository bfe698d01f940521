"""Caps on what a reference kernel may allocate from data-dependent sizes.

Shapes that come from tensor *values* (ConstantOfShape, Expand, Tile, Range, Resize, OneHot,
Reshape) are attacker-controlled in a model from a stranger: the kernel checks the element count
against this cap before asking NumPy for memory, so a crafted model fails with a clear error
instead of exhausting the host.
"""

from __future__ import annotations

import contextlib
import contextvars

from workbench.errors import ResourceLimitError

MAX_ELEMENTS = 2**31
# the cap in force: an engine's ``max_elements`` (BuilderConfig) while it runs, else MAX_ELEMENTS
_CAP: contextvars.ContextVar[int] = contextvars.ContextVar("workbench_max_elements", default=MAX_ELEMENTS)


@contextlib.contextmanager
def element_cap(limit: int | None):
    """Apply ``limit`` to every check_elements call in this thread / task while the block runs."""
    token = _CAP.set(int(limit) if limit else MAX_ELEMENTS)
    try:
        yield
    finally:
        _CAP.reset(token)


def count_elements(shape) -> int:
    """Exact element count of ``shape`` (Python ints, so no overflow)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def check_elements(shape, what: str) -> None:
    """Raise ResourceLimitError if a tensor of ``shape`` would exceed the element cap in force."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ResourceLimitError(f"{what}: negative dimension in output shape {dims}")
    n = count_elements(dims)
    cap = _CAP.get()
    if n > cap:
        raise ResourceLimitError(
            f"{what}: output shape {dims} has {n} elements, over the limit of {cap} (BuilderConfig.max_elements)")
