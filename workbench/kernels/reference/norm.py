"""Reference kernels: batch/instance/layer/group/RMS normalization, LRN, Lp and MVN normalization.

Statistics are computed in float32 at least (``stash_type`` = 1, the ONNX default, asks for that
explicitly; half-precision statistics would lose the variance), float64 inputs stay float64.
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError


def _stat_dtype(dt, stash_type=1):
    dt = np.dtype(dt)
    if dt == np.float64:
        return dt
    return np.dtype(np.float32) if stash_type == 1 or dt.itemsize < 4 else dt


def _chan(v, ndim, dt):
    """A per-channel vector shaped to broadcast over [N, C, *spatial]. BatchNormalization before
    opset 9 with spatial=0 passes per-activation [C, *spatial] tensors: those broadcast as they are."""
    v = np.asarray(v).astype(dt, copy=False)
    if v.ndim > 1:
        return v.reshape((1,) + v.shape)
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _batch_norm(ctx, inputs, attrs):
    x, scale, bias, mean, var = inputs[:5]
    eps = attrs.get("epsilon", 1e-5)
    dt = _stat_dtype(x.dtype)
    xw = x.astype(dt, copy=False)
    training = attrs.get("training_mode", 0) and ctx.opset >= 14
    if training:
        axes = tuple(i for i in range(x.ndim) if i != 1)
        cur_mean = xw.mean(axis=axes)
        cur_var = xw.var(axis=axes)
        mom = attrs.get("momentum", 0.9)
        y = (xw - _chan(cur_mean, x.ndim, dt)) / np.sqrt(_chan(cur_var, x.ndim, dt) + dt.type(eps))
        y = y * _chan(scale, x.ndim, dt) + _chan(bias, x.ndim, dt)
        run_mean = mean.astype(dt) * dt.type(mom) + cur_mean * dt.type(1 - mom)
        run_var = var.astype(dt) * dt.type(mom) + cur_var * dt.type(1 - mom)
        return [y.astype(x.dtype), run_mean.astype(mean.dtype), run_var.astype(var.dtype)]
    # inference form: fold into one scale and shift per channel
    inv = _chan(scale, x.ndim, dt) / np.sqrt(_chan(var, x.ndim, dt) + dt.type(eps))
    y = (xw - _chan(mean, x.ndim, dt)) * inv + _chan(bias, x.ndim, dt)
    return [y.astype(x.dtype), mean, var]


def _normalize(xw, axes, eps):
    mean = xw.mean(axis=axes, keepdims=True)
    d = xw - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + xw.dtype.type(eps))
    return d * inv, mean, inv


def _instance_norm(ctx, inputs, attrs):
    x, scale, bias = inputs
    dt = _stat_dtype(x.dtype)
    y, _, _ = _normalize(x.astype(dt, copy=False), tuple(range(2, x.ndim)), attrs.get("epsilon", 1e-5))
    y = y * _chan(scale, x.ndim, dt) + _chan(bias, x.ndim, dt)
    return [y.astype(x.dtype)]


def _layer_norm(ctx, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = attrs.get("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    dt = _stat_dtype(x.dtype, attrs.get("stash_type", 1))
    y, mean, inv = _normalize(x.astype(dt, copy=False), tuple(range(axis, x.ndim)),
                              attrs.get("epsilon", 1e-5))
    y = y.astype(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype), mean, inv]


def _group_norm(ctx, inputs, attrs):
    x, scale, bias = inputs
    groups = attrs.get("num_groups")
    n, c = x.shape[:2]
    if not groups or c % groups:
        raise KernelError(f"GroupNormalization: {c} channels not divisible into {groups} groups")
    dt = _stat_dtype(x.dtype, attrs.get("stash_type", 1))
    xg = x.astype(dt, copy=False).reshape((n, groups, -1))
    y, _, _ = _normalize(xg, (2,), attrs.get("epsilon", 1e-5))
    y = y.reshape(x.shape)
    if scale.size == groups and groups != c:
        # opset 18 form: one scale/bias per group
        scale = np.repeat(scale, c // groups)
        bias = np.repeat(bias, c // groups)
    y = y * _chan(scale, x.ndim, dt) + _chan(bias, x.ndim, dt)
    return [y.astype(x.dtype)]


def _rms_norm(ctx, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    axis = attrs.get("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    dt = _stat_dtype(x.dtype, attrs.get("stash_type", 1))
    xw = x.astype(dt, copy=False)
    ms = np.mean(xw * xw, axis=tuple(range(axis, x.ndim)), keepdims=True)
    y = xw / np.sqrt(ms + dt.type(attrs.get("epsilon", 1e-5)))
    return [(y.astype(x.dtype) * scale).astype(x.dtype)]


def _lrn(ctx, inputs, attrs):
    x = inputs[0]
    size = attrs.get("size")
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    dt = _stat_dtype(x.dtype)
    xw = x.astype(dt, copy=False)
    sq = xw * xw
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    # windowed channel sum via a cumulative sum along C
    padded = np.pad(sq, [(0, 0), (lo + 1, hi)] + [(0, 0)] * (x.ndim - 2))
    cs = np.cumsum(padded, axis=1)
    c = x.shape[1]
    win = cs[:, size:size + c] - cs[:, :c]
    y = xw / (dt.type(bias) + dt.type(alpha / size) * win) ** dt.type(beta)
    return [y.astype(x.dtype)]


def _lp_norm(ctx, inputs, attrs):
    x = inputs[0]
    axis, p = attrs.get("axis", -1), attrs.get("p", 2)
    dt = _stat_dtype(x.dtype)
    xw = x.astype(dt, copy=False)
    if p == 1:
        norm = np.sum(np.abs(xw), axis=axis, keepdims=True)
    elif p == 2:
        norm = np.sqrt(np.sum(xw * xw, axis=axis, keepdims=True))
    else:
        raise KernelError(f"LpNormalization p must be 1 or 2, got {p}")
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(norm == 0, 0, xw / norm)
    return [y.astype(x.dtype)]


def _mvn(ctx, inputs, attrs):
    x = inputs[0]
    axes = tuple(attrs.get("axes", [0, 2, 3]))
    dt = _stat_dtype(x.dtype)
    xw = x.astype(dt, copy=False)
    mean = xw.mean(axis=axes, keepdims=True)
    var = np.mean(xw * xw, axis=axes, keepdims=True) - mean * mean
    # the ONNX function body divides by std + 1e-9, not sqrt(var + eps)
    y = (xw - mean) / (np.sqrt(np.maximum(var, 0)) + dt.type(1e-9))
    return [y.astype(x.dtype)]


KERNELS = {
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "RMSNormalization": _rms_norm,
    "LRN": _lrn,
    "LpNormalization": _lp_norm,
    "MeanVarianceNormalization": _mvn,
}
