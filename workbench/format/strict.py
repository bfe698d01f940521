"""Strict readers of engine-header values: each returns the value when it has exactly the expected
JSON type (``True`` is not an int, ``1.0`` is not an int) and otherwise raises EngineFormatError
naming where in the plan the value sits. Engines come from strangers: nothing is coerced."""

from __future__ import annotations

import math

from workbench.core.plan import TensorSpec
from workbench.core.quant import ELEMENT
from workbench.dtypes import ONNX_CODES
from workbench.errors import EngineFormatError

MAX_DIM = 1 << 62  # a dim above this overflows int64 arithmetic in every consumer
# a tensor spec (an input, an output, an intermediate) of more elements than this is refused: no
# real engine has one, and a feed or random input of that shape could never be allocated
MAX_SPEC_ELEMENTS = 1 << 40
QUANTIZED_CODES = tuple(ELEMENT.values())  # element types a spec with a scale may have


def fail(where: str, msg: str) -> EngineFormatError:
    return EngineFormatError(f"engine plan, {where}: {msg}")


def type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def fields(d, names: tuple[str, ...], where: str) -> dict:
    """``d`` as an object with exactly the fields ``names``."""
    obj(d, where)
    missing = [n for n in names if n not in d]
    extra = sorted(set(d) - set(names))
    if missing:
        raise fail(where, f"missing field {missing[0]!r}")
    if extra:
        raise fail(where, f"unknown field {extra[0]!r}")
    return d


# JSON kind -> (test, how an error names it); bool is an int subclass and 1.0 == 1, hence type() is
_KINDS = {
    "str": (lambda v: isinstance(v, str), "str"),
    "int": (lambda v: type(v) is int, "int"),
    "bool": (lambda v: type(v) is bool, "bool"),
    "list": (lambda v: isinstance(v, list), "list"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}


def expect(v, kind: str, where: str):
    """``v`` if it is of JSON ``kind`` (a key of _KINDS), else an EngineFormatError naming ``where``."""
    test, name = _KINDS[kind]
    if not test(v):
        raise fail(where, f"expected {name}, got {type_name(v)}")
    return v


def string(v, where: str) -> str:
    return expect(v, "str", where)


def integer(v, where: str) -> int:
    return expect(v, "int", where)


def boolean(v, where: str) -> bool:
    return expect(v, "bool", where)


def array(v, where: str) -> list:
    return expect(v, "list", where)


def obj(v, where: str) -> dict:
    return expect(v, "object", where)


def count(v, where: str) -> int:
    """A non-negative int (a size, an offset)."""
    if integer(v, where) < 0:
        raise fail(where, f"expected a non-negative int, got {v}")
    return v


def strings(v, where: str) -> list[str]:
    return [string(x, f"{where}[{i}]") for i, x in enumerate(array(v, where))]


def spec(d, where: str, extra: tuple[str, ...] = ()) -> TensorSpec:
    optional = ("scale",) if isinstance(d, dict) and "scale" in d else ()
    d = fields(d, ("name", "dtype", "shape") + extra + optional, where)
    dtype = d["dtype"]
    if dtype is not None and string(dtype, f"{where}.dtype") not in ONNX_CODES:
        raise fail(f"{where}.dtype", f"unknown element type {dtype!r:.60}")
    shape = d["shape"]
    if shape is not None:
        n = 1
        for i, dim in enumerate(array(shape, f"{where}.shape")):
            if dim is not None and not isinstance(dim, str) and type(dim) is not int:
                raise fail(f"{where}.shape[{i}]", f"expected int, str or null, got {type_name(dim)}")
            if type(dim) is int:
                if not 0 <= dim <= MAX_DIM:
                    raise fail(f"{where}.shape[{i}]", f"dimension {dim} is out of range [0, {MAX_DIM}]")
                n *= dim
        if n > MAX_SPEC_ELEMENTS:
            raise fail(f"{where}.shape", f"{shape} has {n} elements, over the limit of {MAX_SPEC_ELEMENTS}")
    scale = d.get("scale")
    if scale is not None:
        if type(scale) not in (int, float) or not math.isfinite(scale) or scale <= 0:
            raise fail(f"{where}.scale", f"expected a positive finite number, got {scale!r:.60}")
        if dtype not in QUANTIZED_CODES:
            raise fail(f"{where}.scale", f"a scale on a {dtype} tensor (only {' / '.join(QUANTIZED_CODES)} hold codes)")
    return TensorSpec(string(d["name"], f"{where}.name"), dtype, None if shape is None else list(shape),
                      None if scale is None else float(scale))
