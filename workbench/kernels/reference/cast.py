"""Reference kernels: Cast, CastLike, BitCast.

``convert`` is the one conversion routine (QuantizeLinear uses it too). NumPy / ml_dtypes do
round-to-nearest-even for every float target; what ONNX adds on top is spelled out here:
saturation of float8 / float4 (out-of-range and inf become the largest finite value), modular
wrap-around for the 2- and 4-bit integer types, float8e8m0's own rounding modes, and strings.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from workbench.dtypes import from_numpy, from_onnx_code, to_numpy

from ._base import KernelError

_SATURATING = ("float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float4e2m1")
_SUBBYTE_INT = {"int4": (4, True), "uint4": (4, False), "int2": (2, True), "uint2": (2, False)}


def _float_to_string(v) -> str:
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "INF" if v > 0 else "-INF"
    return str(v)


def _to_string(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=object)
    flat = out.reshape(-1)
    src = x.reshape(-1)
    if x.dtype.kind == "f" or from_numpy(x.dtype) in ("bfloat16",) + _SATURATING + ("float8e8m0",):
        # narrower floats print through float32, as onnxruntime does (float16 0.1 -> "0.099975586")
        vals = src.astype(np.float32) if x.dtype != np.float64 else src
        for i, v in enumerate(vals):
            flat[i] = _float_to_string(v)
    elif x.dtype == np.bool_:
        for i, v in enumerate(src):
            flat[i] = "1" if v else "0"
    else:
        for i, v in enumerate(src):
            flat[i] = str(int(v)) if x.dtype.kind in "iu" else str(v)
    return out


def _from_string(x: np.ndarray, to: str) -> np.ndarray:
    dt = to_numpy(to)
    try:
        if dt.kind in "iu":
            vals = [int(float(s)) if any(c in s for c in ".eEnN") else int(s) for s in x.reshape(-1)]
            return np.array(vals, dtype=np.int64).astype(dt).reshape(x.shape)
        if dt == np.bool_:
            return np.array([float(s) != 0 for s in x.reshape(-1)], dtype=bool).reshape(x.shape)
        f = np.array([float(s) for s in x.reshape(-1)], dtype=np.float64).reshape(x.shape)
    except ValueError as e:
        raise KernelError(f"Cast: cannot parse string as {to}: {e}") from None
    return convert(f, to)


def _to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8e8m0 holds only powers of two 2^-127..2^127 (code 255 is NaN): pick the exponent."""
    f = np.abs(x.astype(np.float64))
    with np.errstate(all="ignore"):
        mant, exp = np.frexp(f)  # f = mant * 2^exp, mant in [0.5, 1)
        exact = mant == 0.5
        if round_mode == "up":
            e = np.where(exact, exp - 1, exp)
        elif round_mode == "down":
            e = exp - 1
        elif round_mode == "nearest":
            e = np.where(mant >= 0.75, exp, exp - 1)
        else:
            raise KernelError(f"Cast: unknown round_mode {round_mode!r}")
    e = e.astype(np.int64)
    e = np.where(f == 0, -127, np.maximum(e, -127))
    code = (e + 127).astype(np.int64)
    over = (e > 127) | np.isinf(f)
    code = np.where(over, 254 if saturate else 255, code)
    code = np.where(np.isnan(f), 255, code)
    return code.astype(np.uint8).view(to_numpy("float8e8m0"))


def convert(x: np.ndarray, to: str, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """``x`` converted to the canonical dtype ``to`` with ONNX Cast semantics."""
    x = np.asarray(x)
    src = from_numpy(x.dtype)
    if to == "string":
        return _to_string(x)
    if src == "string":
        return _from_string(x, to)
    dt = to_numpy(to)
    if src == to:
        return x.copy()
    if to in _SUBBYTE_INT:
        bits, signed = _SUBBYTE_INT[to]
        if x.dtype.kind in "iub":
            v = x.astype(np.int64)
        else:
            f = x.astype(np.float64)
            v = np.where(np.isfinite(f), np.rint(np.nan_to_num(f)), 0).astype(np.int64)
        # ONNX wraps out-of-range integers modulo 2^bits (two's complement for signed)
        v = np.mod(v, 1 << bits)
        if signed:
            v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
        return v.astype(dt)
    if to == "float8e8m0":
        return _to_e8m0(x, saturate, round_mode)
    if to in _SATURATING and saturate and src not in _SUBBYTE_INT:
        limit = float(ml_dtypes.finfo(dt).max)
        f = x.astype(np.float32) if x.dtype.kind != "f" else x
        return np.clip(f, -limit, limit).astype(dt)
    if x.dtype.kind not in "fiub" and dt.kind in "iub":
        # ml_dtypes floats convert to integers through float32 (no direct path for all pairs)
        return x.astype(np.float32).astype(dt)
    with np.errstate(all="ignore"):
        return x.astype(dt)


def cast(ctx, inputs, attrs):
    x = inputs[0]
    to = from_onnx_code(attrs["to"])
    return [convert(x, to, bool(attrs.get("saturate", 1)), attrs.get("round_mode", "up"))]


def cast_like(ctx, inputs, attrs):
    to = from_numpy(inputs[1].dtype)
    return [convert(inputs[0], to, bool(attrs.get("saturate", 1)), attrs.get("round_mode", "up"))]


def bit_cast(ctx, inputs, attrs):
    x = inputs[0]
    dt = to_numpy(from_onnx_code(attrs["to"]))
    if dt.itemsize != x.dtype.itemsize or x.dtype == object:
        raise KernelError(f"BitCast: {x.dtype} and {dt} differ in size")
    return [x.copy(order="C").view(dt)]


KERNELS = {"Cast": cast, "CastLike": cast_like, "BitCast": bit_cast}
