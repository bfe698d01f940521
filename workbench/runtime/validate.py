"""Checks on the feeds given to an engine: names, element types, ranks and dims."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import from_numpy
from ..core.plan import TensorSpec
from ..errors import InputError, InputTypeError, ResourceLimitError


def _plain(name: str, value, spec: TensorSpec, budget: int | None):
    """A NumPy feed as a base-class ndarray (a view, no copy), so no subclass code
    (``__array_ufunc__``, ``__array_function__``, ``__getitem__``...) ever runs inside a layer."""
    if isinstance(value, np.ma.MaskedArray):
        raise InputTypeError(f"input {name!r} is a masked array; pass plain data "
                             "(e.g. arr.filled(fill_value)) — masks are not an engine input")
    if isinstance(value, np.matrix):
        raise InputTypeError(f"input {name!r} is a numpy.matrix; pass a numpy.ndarray (np.asarray(m))")
    plain = np.ndarray.view(value, np.ndarray) if type(value) is not np.ndarray else value
    if plain.dtype.hasobject:
        if spec.dtype != "string":
            raise InputTypeError(f"input {name!r} is an object array; expected {spec.dtype} data")
        for x in plain.reshape(-1) if plain.size < 1 << 24 else ():
            if not isinstance(x, (str, bytes)):
                raise InputTypeError(f"input {name!r}: string tensors hold str or bytes, got {type(x).__name__}")
    if budget is not None:
        nbytes = plain.size * plain.dtype.itemsize  # a strided or broadcast view is as big as it reads
        if nbytes > budget:
            raise ResourceLimitError(f"input {name!r} (shape {list(plain.shape)}, {plain.dtype}) is {nbytes} "
                                     f"bytes; the memory budget is {budget} bytes")
    return plain


def check_feeds(specs: list[TensorSpec], feeds: dict[str, Any], *, array_types=(np.ndarray,),
                memory_budget: int | None = None) -> dict[str, Any]:
    """Validate ``feeds`` against the engine inputs; returns them (never casts silently), NumPy
    arrays as base-class ndarrays (views of the caller's data)."""
    if not isinstance(feeds, dict):
        raise InputTypeError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing:
        raise InputError(f"missing input {missing[0]!r}; the engine expects: {', '.join(expected)}")
    if extra:
        raise InputError(f"unexpected input {extra[0]!r}; the engine expects: {', '.join(expected)}")
    bindings: dict[str, tuple[int, str]] = {}
    feeds = dict(feeds)
    for name, spec in expected.items():
        value = feeds[name]
        if spec.dtype is None:  # sequences / optionals: passed through as they are
            continue
        if not isinstance(value, array_types):
            kinds = " or ".join(t.__module__.split(".")[0] + "." + t.__name__ for t in array_types)
            raise InputTypeError(f"input {name!r} must be a {kinds}, got {type(value).__name__}")
        if isinstance(value, np.ndarray):
            value = feeds[name] = _plain(name, value, spec, memory_budget)
        try:
            actual = from_numpy(value.dtype)
        except TypeError:
            actual = str(value.dtype)
        if actual != spec.dtype:
            raise InputTypeError(f"input {name!r} has dtype {actual}, expected {spec.dtype}")
        if spec.shape is None:
            continue
        shape = tuple(value.shape)
        if len(shape) != len(spec.shape):
            raise InputError(
                f"input {name!r} has rank {len(shape)} (shape {list(shape)}), expected rank {len(spec.shape)} "
                f"(shape {spec.shape})")
        for axis, (got, want) in enumerate(zip(shape, spec.shape)):
            if isinstance(want, int):
                if got != want:
                    raise InputError(f"input {name!r} has shape {list(shape)}, expected {spec.shape} (axis {axis})")
            elif isinstance(want, str):
                seen = bindings.get(want)
                if seen is not None and seen[0] != got:
                    raise InputError(
                        f"input {name!r} axis {axis} ({want}) is {got} but it is {seen[0]} in input {seen[1]!r}")
                bindings[want] = (got, name)
    return feeds
