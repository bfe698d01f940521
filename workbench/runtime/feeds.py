"""Random feeds that match an engine's inputs (for profiling and the CLI when no inputs are given)."""

from __future__ import annotations

import numpy as np

from ..core.numerics import random_inputs
from ..errors import InputError


def random_feeds(specs, seed: int = 0, int_high: int = 2) -> dict[str, np.ndarray]:
    """``core.numerics.random_inputs`` for inputs of static shape and known type: normal floats,
    ints in [0, int_high) (valid as token ids, token types and mask values of any vocabulary),
    random bools. An input without a static shape is an InputError saying how to give one."""
    specs = list(specs)
    for spec in specs:
        if spec.dtype is None or not spec.is_static:
            raise InputError(
                f"input {spec.name!r} has shape {spec.shape}; give inputs (--inputs) or build with fixed --shapes")
    try:
        return random_inputs(specs, seed=seed, int_high=int_high)
    except TypeError as exc:  # a type random_array has no data for (strings)
        raise InputError(f"cannot make random data for the engine's inputs: {exc}") from None
