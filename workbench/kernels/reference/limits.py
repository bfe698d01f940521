"""Caps on what a reference kernel may allocate from data-dependent sizes.

Shapes that come from tensor *values* (ConstantOfShape, Expand, Tile, Range, Resize, OneHot,
Reshape) are attacker-controlled in a model from a stranger: the kernel checks the element count
against this cap before asking NumPy for memory, so a crafted model fails with a clear error
instead of exhausting the host.
"""

from __future__ import annotations

from workbench.errors import ResourceLimitError

MAX_ELEMENTS = 2**31


def count_elements(shape) -> int:
    """Exact element count of ``shape`` (Python ints, so no overflow)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


def check_elements(shape, what: str) -> None:
    """Raise ResourceLimitError if a tensor of ``shape`` would exceed MAX_ELEMENTS elements."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ResourceLimitError(f"{what}: negative dimension in output shape {dims}")
    n = count_elements(dims)
    if n > MAX_ELEMENTS:
        raise ResourceLimitError(
            f"{what}: output shape {dims} has {n} elements, over the limit of {MAX_ELEMENTS}")
