"""Reference kernels: elementwise math, logic, comparison and bitwise ops.

Every kernel returns arrays of the ONNX output dtype. NumPy ufuncs keep the dtype when both operands
share it, so most kernels are a ufunc call plus ``_arr`` (which turns the NumPy scalar a 0-d
operation returns back into a 0-d array).
"""

from __future__ import annotations

import math

import numpy as np

from ._base import KernelError


def _arr(x, dtype=None) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def _unary(fn):
    def kernel(ctx, inputs, attrs):
        x = inputs[0]
        with np.errstate(all="ignore"):
            return [_arr(fn(x), x.dtype)]
    kernel.__name__ = getattr(fn, "__name__", "unary")
    return kernel


def _binary(fn):
    def kernel(ctx, inputs, attrs):
        a, b = inputs[0], inputs[1]
        with np.errstate(all="ignore"):
            return [_arr(fn(a, b), a.dtype)]
    return kernel


def _compare(fn):
    def kernel(ctx, inputs, attrs):
        return [_arr(fn(inputs[0], inputs[1]), np.bool_)]
    return kernel


# --- erf without SciPy ------------------------------------------------------------------------------

_ERF_TAYLOR = [(-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(40)]


ERF_BLOCK = 1 << 15  # elements evaluated at a time (cache-sized: a GELU's input can be tens of millions)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def erf_float64(x: np.ndarray) -> np.ndarray:
    """erf in float64, vectorised: Taylor series near 0, a Chebyshev-fitted erfc (relative error
    < 1.2e-7, so < 6e-10 absolute on erf) for |x| >= 2 where erfc is tiny. Evaluated in blocks of
    ``ERF_BLOCK`` elements, in place: the 40-term Horner loop then runs in cache."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    with np.errstate(all="ignore"):  # (the series overflows for large |x|, where the erfc fit replaces it)
        for s in range(0, flat.size, ERF_BLOCK):
            out[s:s + ERF_BLOCK] = _erf_block(flat[s:s + ERF_BLOCK])
    return out.reshape(x.shape)


def _erf_block(xs: np.ndarray) -> np.ndarray:
    x2 = xs * xs
    acc = np.full_like(xs, _ERF_TAYLOR[-1])
    for c in reversed(_ERF_TAYLOR[:-1]):  # Horner on the Taylor coefficients in x^2 (highest first)
        acc *= x2
        acc += c
    acc *= xs
    acc *= _TWO_OVER_SQRT_PI
    big = ~(np.abs(xs) < 2.0)  # (NaN too: set below)
    if big.any():
        xb = xs[big]
        z = np.abs(xb)
        t = 1.0 / (1.0 + 0.5 * z)
        poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
            -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
                -0.82215223 + t * 0.17087277))))))))
        erfc = t * np.exp(-z * z + poly)
        acc[big] = np.where(np.isnan(xb), np.nan, np.sign(xb) * (1.0 - erfc))
    return acc


def _erf(ctx, inputs, attrs):
    x = inputs[0]
    if x.dtype == np.float64:
        # exact libm values where the caller asked for double precision
        return [np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.copy()]
    return [_arr(erf_float64(x), x.dtype)]


# --- arithmetic with dtype rules ---------------------------------------------------------------------

def _div(ctx, inputs, attrs):
    a, b = inputs
    if np.issubdtype(a.dtype, np.integer):
        # ONNX integer division truncates toward zero (C semantics), NumPy floors
        with np.errstate(divide="ignore"):
            q = np.floor_divide(a, b)
            r = np.remainder(a, b)
        fix = (r != 0) & ((a < 0) != (b < 0))
        return [_arr(q + fix.astype(q.dtype), a.dtype)]
    with np.errstate(all="ignore"):
        return [_arr(np.divide(a, b), a.dtype)]


def _mod(ctx, inputs, attrs):
    a, b = inputs
    fn = np.fmod if attrs.get("fmod", 0) else np.mod
    with np.errstate(all="ignore"):
        return [_arr(fn(a, b), a.dtype)]


def _pow(ctx, inputs, attrs):
    x, y = inputs
    with np.errstate(all="ignore"):
        if np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer):
            out = np.power(x.astype(np.int64), y.astype(np.int64))
        elif np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize >= 4:
            out = np.power(x, y.astype(x.dtype))
        else:
            # float16/bfloat16/integer bases: compute wide, then round once to the base dtype
            out = np.power(x.astype(np.float64), y.astype(np.float64))
    return [_arr(out, x.dtype)]


def _variadic(fn):
    def kernel(ctx, inputs, attrs):
        vals = [v for v in inputs if v is not None]
        if not vals:
            raise KernelError("variadic op needs at least one input")
        acc = vals[0]
        with np.errstate(all="ignore"):
            for v in vals[1:]:
                acc = fn(acc, v)
        return [_arr(acc, vals[0].dtype)]
    return kernel


def _mean(ctx, inputs, attrs):
    vals = [v for v in inputs if v is not None]
    total = _variadic(np.add)(ctx, vals, attrs)[0]
    with np.errstate(all="ignore"):
        return [_arr(total / np.asarray(len(vals), dtype=total.dtype), vals[0].dtype)]


def _clip(ctx, inputs, attrs):
    x = inputs[0]
    if ctx.opset and ctx.opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
        hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    out = x
    # ONNX: max(min(...)) order does not matter unless min > max, where the spec gives max
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, dtype=x.dtype))
    return [_arr(out, x.dtype)]


def _bitshift(ctx, inputs, attrs):
    x, s = inputs
    direction = attrs.get("direction", "")
    if direction == "LEFT":
        out = np.left_shift(x, s.astype(x.dtype))
    elif direction == "RIGHT":
        out = np.right_shift(x, s.astype(x.dtype))
    else:
        raise KernelError(f"BitShift direction must be LEFT or RIGHT, got {direction!r}")
    return [_arr(out, x.dtype)]


def _isinf(ctx, inputs, attrs):
    x = inputs[0]
    neg, pos = attrs.get("detect_negative", 1), attrs.get("detect_positive", 1)
    out = np.isinf(x)
    if not neg:
        out &= x > 0
    if not pos:
        out &= x < 0
    return [_arr(out, np.bool_)]


def _where(ctx, inputs, attrs):
    c, x, y = inputs
    return [_arr(np.where(c, x, y), x.dtype)]


def _round(x):
    return np.round(x)  # round-half-to-even, as ONNX specifies


KERNELS = {
    "Abs": _unary(np.abs),
    "Acos": _unary(np.arccos),
    "Acosh": _unary(np.arccosh),
    "Asin": _unary(np.arcsin),
    "Asinh": _unary(np.arcsinh),
    "Atan": _unary(np.arctan),
    "Atanh": _unary(np.arctanh),
    "Ceil": _unary(np.ceil),
    "Cos": _unary(np.cos),
    "Cosh": _unary(np.cosh),
    "Exp": _unary(np.exp),
    "Floor": _unary(np.floor),
    "Log": _unary(np.log),
    "Neg": _unary(np.negative),
    "Reciprocal": _unary(np.reciprocal),
    "Round": _unary(_round),
    "Sign": _unary(np.sign),
    "Sin": _unary(np.sin),
    "Sinh": _unary(np.sinh),
    "Sqrt": _unary(np.sqrt),
    "Tan": _unary(np.tan),
    "Tanh": _unary(np.tanh),
    "Not": _unary(np.logical_not),
    "BitwiseNot": _unary(np.invert),
    "Erf": _erf,
    "IsInf": _isinf,
    "IsNaN": lambda ctx, inputs, attrs: [_arr(np.isnan(inputs[0]), np.bool_)],
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _div,
    "Mod": _mod,
    "Pow": _pow,
    "And": _compare(np.logical_and),
    "Or": _compare(np.logical_or),
    "Xor": _compare(np.logical_xor),
    "BitwiseAnd": _binary(np.bitwise_and),
    "BitwiseOr": _binary(np.bitwise_or),
    "BitwiseXor": _binary(np.bitwise_xor),
    "BitShift": _bitshift,
    "Equal": _compare(np.equal),
    "Greater": _compare(np.greater),
    "GreaterOrEqual": _compare(np.greater_equal),
    "Less": _compare(np.less),
    "LessOrEqual": _compare(np.less_equal),
    "Max": _variadic(np.maximum),
    "Min": _variadic(np.minimum),
    "Sum": _variadic(np.add),
    "Mean": _mean,
    "Where": _where,
    "Clip": _clip,
}
