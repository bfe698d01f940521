"""Reference kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Scales and zero points come in three granularities: per tensor (one element), per axis (1-D, one
per slice of ``axis``) and blocked (same rank as the input, ``block_size`` consecutive elements
along ``axis`` sharing one value). ``_expand_param`` turns all three into something that
broadcasts against the input, so the arithmetic below is written once.
"""

from __future__ import annotations

import numpy as np

from workbench.dtypes import from_numpy, from_onnx_code, to_numpy

from ._base import KernelError
from .cast import convert
from .tensor import norm_axis

_INT_RANGE = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}


def _expand_param(p: np.ndarray, x: np.ndarray, axis: int, block: int, what: str) -> np.ndarray:
    p = np.asarray(p)
    if p.size == 1 and block == 0:
        return p.reshape(())
    axis = norm_axis(axis, x.ndim, what)
    if block > 0:
        if p.ndim != x.ndim:
            raise KernelError(f"{what}: blocked scale must have rank {x.ndim}, got {p.ndim}")
        expect = -(-x.shape[axis] // block)
        if p.shape[axis] != expect:
            raise KernelError(f"{what}: blocked scale has {p.shape[axis]} blocks on axis {axis}, "
                              f"expected {expect} for block_size {block}")
        rep = np.repeat(p, block, axis=axis)
        return np.take(rep, np.arange(x.shape[axis]), axis=axis)
    if p.ndim != 1 or p.shape[0] != x.shape[axis]:
        raise KernelError(f"{what}: per-axis scale of shape {list(p.shape)} does not match dim "
                          f"{x.shape[axis]} of axis {axis}")
    shape = [1] * x.ndim
    shape[axis] = p.shape[0]
    return p.reshape(shape)


def quantize_linear(ctx, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    zp = inputs[2] if len(inputs) > 2 else None
    axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
    if zp is not None:
        out = from_numpy(zp.dtype)
    elif attrs.get("output_dtype", 0):
        out = from_onnx_code(attrs["output_dtype"])
    else:
        out = "uint8"
    # the division runs in `precision` when given, else in the scale's type (at least float32)
    work = (to_numpy(from_onnx_code(attrs["precision"])) if attrs.get("precision")
            else np.result_type(np.float32, scale.dtype if scale.dtype.kind == "f" else np.float32))
    s = _expand_param(scale, x, axis, block, "QuantizeLinear").astype(work)
    q = x.astype(work) / s
    if out in _INT_RANGE or to_numpy(out).kind in "iu":
        lo, hi = _INT_RANGE.get(out) or (np.iinfo(to_numpy(out)).min, np.iinfo(to_numpy(out)).max)
        q = np.rint(q)
        if zp is not None:
            q = q + _expand_param(zp, x, axis, block, "QuantizeLinear").astype(np.float64)
        return [np.clip(q, lo, hi).astype(np.int64).astype(to_numpy(out))]
    # float8 / float4: zero point is a float of that type (normally 0), then a saturating cast
    if zp is not None:
        q = q + _expand_param(zp, x, axis, block, "QuantizeLinear").astype(work)
    return [convert(q.astype(np.float32), out, bool(attrs.get("saturate", 1)))]


def dequantize_linear(ctx, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    zp = inputs[2] if len(inputs) > 2 else None
    axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
    out_dt = to_numpy(from_onnx_code(attrs["output_dtype"])) if attrs.get("output_dtype") else scale.dtype
    s = _expand_param(scale, x, axis, block, "DequantizeLinear")
    v = x.astype(np.float64) if x.dtype.kind in "iub" else x.astype(np.float32).astype(np.float64)
    if zp is not None:
        z = _expand_param(zp, x, axis, block, "DequantizeLinear")
        v = v - (z.astype(np.float64) if z.dtype.kind in "iub" else z.astype(np.float32).astype(np.float64))
    y = v.astype(np.float32) * s.astype(np.float32)
    return [y.astype(out_dt)]


def dynamic_quantize_linear(ctx, inputs, attrs):
    x = inputs[0].astype(np.float32)
    lo = np.float32(min(0.0, float(x.min()) if x.size else 0.0))
    hi = np.float32(max(0.0, float(x.max()) if x.size else 0.0))
    scale = np.float32((hi - lo) / np.float32(255))
    if scale == 0:  # an all-zero input: any zero point is exact, the spec's formula divides by 0
        return [np.zeros(x.shape, np.uint8), np.array(scale, np.float32), np.array(0, np.uint8)]
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    y = np.clip(np.rint(x / scale) + zp, 0, 255)
    return [y.astype(np.uint8), np.array(scale, np.float32), np.array(zp, np.uint8)]


KERNELS = {
    "QuantizeLinear": quantize_linear,
    "DequantizeLinear": dequantize_linear,
    "DynamicQuantizeLinear": dynamic_quantize_linear,
}
