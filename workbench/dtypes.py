"""Element types, named once for the whole package.

Every stage speaks of dtypes by these canonical names ("float32", "bfloat16", "float8e4m3fn", ...).
The ONNX enum numbers are written out here so that the runtime can map an engine's dtypes to NumPy
without importing onnx.
"""

from __future__ import annotations

import numpy as np

try:  # ml_dtypes provides bfloat16, float8 and int4 as NumPy dtypes
    import ml_dtypes as _mld
except ImportError:  # pragma: no cover - ml_dtypes is a hard dependency
    _mld = None

# canonical name -> ONNX TensorProto.DataType enum value
ONNX_CODES: dict[str, int] = {
    "float32": 1,
    "uint8": 2,
    "int8": 3,
    "uint16": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "string": 8,
    "bool": 9,
    "float16": 10,
    "float64": 11,
    "uint32": 12,
    "uint64": 13,
    "complex64": 14,
    "complex128": 15,
    "bfloat16": 16,
    "float8e4m3fn": 17,
    "float8e4m3fnuz": 18,
    "float8e5m2": 19,
    "float8e5m2fnuz": 20,
    "uint4": 21,
    "int4": 22,
    "float4e2m1": 23,
    "float8e8m0": 24,
    "uint2": 25,
    "int2": 26,
}
NAMES_BY_CODE: dict[int, str] = {v: k for k, v in ONNX_CODES.items()}

_NUMPY: dict[str, object] = {
    "float32": np.float32,
    "uint8": np.uint8,
    "int8": np.int8,
    "uint16": np.uint16,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "string": np.object_,
    "bool": np.bool_,
    "float16": np.float16,
    "float64": np.float64,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "complex64": np.complex64,
    "complex128": np.complex128,
}
if _mld is not None:
    for _name, _attr in [
        ("bfloat16", "bfloat16"),
        ("float8e4m3fn", "float8_e4m3fn"),
        ("float8e4m3fnuz", "float8_e4m3fnuz"),
        ("float8e5m2", "float8_e5m2"),
        ("float8e5m2fnuz", "float8_e5m2fnuz"),
        ("uint4", "uint4"),
        ("int4", "int4"),
        ("float4e2m1", "float4_e2m1fn"),
        ("float8e8m0", "float8_e8m0fnu"),
        ("uint2", "uint2"),
        ("int2", "int2"),
    ]:
        if hasattr(_mld, _attr):
            _NUMPY[_name] = getattr(_mld, _attr)

_BY_NUMPY: dict[np.dtype, str] = {np.dtype(t): n for n, t in _NUMPY.items() if n != "string"}


def to_numpy(name: str) -> np.dtype:
    """The NumPy dtype for a canonical dtype name."""
    try:
        return np.dtype(_NUMPY[name])
    except KeyError:
        raise TypeError(f"unsupported element type {name!r}") from None


def from_numpy(dtype) -> str:
    """The canonical name of a NumPy dtype (strings map to 'string')."""
    dt = np.dtype(dtype)
    if dt.kind in ("U", "S", "O"):
        return "string"
    try:
        return _BY_NUMPY[dt]
    except KeyError:
        raise TypeError(f"unsupported NumPy dtype {dt}") from None


def from_onnx_code(code: int) -> str:
    try:
        return NAMES_BY_CODE[int(code)]
    except KeyError:
        raise TypeError(f"unknown ONNX element type {code}") from None


def itemsize(name: str) -> float:
    """Bytes per element (fractional for 4-bit and 2-bit types)."""
    if name in ("uint4", "int4", "float4e2m1"):
        return 0.5
    if name in ("uint2", "int2"):
        return 0.25
    if name == "string":
        return 8.0
    return float(to_numpy(name).itemsize)


FLOAT_TYPES = frozenset(
    {"float32", "float16", "float64", "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2",
     "float8e5m2fnuz", "float4e2m1", "float8e8m0"}
)
