"""Random feeds that match an engine's inputs (for profiling and the CLI when no inputs are given)."""

from __future__ import annotations

import math

import numpy as np

from ..core.budget import check_budget
from ..core.numerics import random_inputs
from ..dtypes import itemsize
from ..errors import InputError, ResourceLimitError


def random_feeds(specs, seed: int = 0, int_high: int = 2, memory_budget: int | None = None) -> dict[str, np.ndarray]:
    """``core.numerics.random_inputs`` for inputs of static shape and known type: normal floats,
    ints in [0, int_high) (valid as token ids, token types and mask values of any vocabulary),
    random bools. An input without a static shape is an InputError saying how to give one; inputs
    that together exceed ``memory_budget`` (default: the process's, ``core.budget``) are refused
    before anything is allocated."""
    specs = list(specs)
    budget = check_budget(memory_budget)
    total = 0
    for spec in specs:
        if spec.dtype is None or not spec.is_static:
            raise InputError(
                f"input {spec.name!r} has shape {spec.shape}; give inputs (--inputs) or build with fixed --shapes")
        total += math.prod(spec.shape) * max(int(np.ceil(itemsize(spec.dtype))), 1)
        if total > budget:
            raise ResourceLimitError(f"random data for input {spec.name!r} (shape {spec.shape}, {spec.dtype}) "
                                     f"would take the inputs to {total} bytes; the memory budget is {budget} bytes")
    try:
        return random_inputs(specs, seed=seed, int_high=int_high)
    except TypeError as exc:  # a type random_array has no data for (strings)
        raise InputError(f"cannot make random data for the engine's inputs: {exc}") from None
