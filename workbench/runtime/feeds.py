"""Random feeds that match an engine's inputs (for profiling and the CLI when no inputs are given)."""

from __future__ import annotations

import numpy as np

from ..dtypes import to_numpy
from ..errors import InputError


def random_feeds(specs, seed: int = 0, int_high: int = 2) -> dict[str, np.ndarray]:
    """Normal floats, ints in [0, int_high) (valid as token ids, token types and mask values of any
    vocabulary), random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if spec.dtype is None or not spec.is_static:
            raise InputError(
                f"input {spec.name!r} has shape {spec.shape}; give inputs (--inputs) or build with fixed --shapes")
        dt = to_numpy(spec.dtype)
        shape = tuple(spec.shape)
        if spec.dtype == "bool":
            feeds[spec.name] = rng.random(shape) < 0.5
        elif dt.kind in "iu":
            feeds[spec.name] = rng.integers(0, int_high, size=shape).astype(dt)
        elif dt.kind == "f" or spec.dtype in ("bfloat16",) or spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32).astype(dt)
        else:
            raise InputError(f"cannot make random data for input {spec.name!r} of type {spec.dtype}")
    return feeds
