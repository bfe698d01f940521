"""The one numerics helper: relative error, per-dtype tolerances and random inputs.

Used by the package (the CuPy reference tactic's validation, the notebook's accuracy columns, the
demo, profiling and autotuning buffers), by ``bench/`` and by the tests, so that "how far apart are
two results" and "what random data does an input get" have one answer everywhere.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import to_numpy

# relative-norm tolerance of a result stored in each type, against a float64 (or fp32) reference;
# half types store ~3 (fp16: 11-bit mantissa) or ~2 (bf16: 8-bit) significant digits
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2,
             "float8e4m3fn": 1.5e-1, "float8e5m2": 2.5e-1}


def tolerance(dtype: str | None) -> float:
    """The relative-error tolerance for results of element type ``dtype`` (0 for exact types)."""
    return TOLERANCE.get(str(dtype), 0.0)


def host(x) -> np.ndarray:
    """A NumPy array from NumPy, CuPy (``.get()``) or anything array-like."""
    return np.asarray(x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x)


def rel_err(got, want) -> float:
    """||got - want|| / ||want|| in float64 over the finite elements.

    Infinite where the shapes differ or the two disagree on which elements are finite (a NaN where
    the reference has a number is an error of any size); an all-zero reference gives the absolute
    norm of ``got`` instead of a division by zero."""
    a, b = host(got).astype(np.float64), host(want).astype(np.float64)
    if a.shape != b.shape:
        return float("inf")
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb) or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
        return float("inf")
    diff = float(np.linalg.norm(a[fa] - b[fb]))
    den = float(np.linalg.norm(b[fb]))
    return diff / den if den else diff


def random_array(dtype: str, shape, rng: np.random.Generator, int_high: int = 2) -> np.ndarray:
    """Normal floats (rounded to ``dtype``), ints in [0, int_high) (valid token ids, token types and
    mask values of any vocabulary), random bools. Never all zeros."""
    dt = to_numpy(dtype)
    shape = tuple(shape)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(0, int_high, size=shape).astype(dt)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "f" or dtype.startswith(("float", "bfloat")):
        return rng.standard_normal(shape).astype(np.float32).astype(dt)
    raise TypeError(f"cannot make random data of type {dtype}")


def random_inputs(specs, seed: int = 0, int_high: int = 2) -> dict[str, np.ndarray]:
    """One random array per spec (``name``, ``dtype``, static ``shape``), keyed by name."""
    rng = np.random.default_rng(seed)
    return {s.name: random_array(s.dtype, s.shape, rng, int_high) for s in specs}
