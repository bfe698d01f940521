"""Reference kernels: reductions, ArgMax/ArgMin and cumulative sums/products.

The axes moved from an attribute to an optional second input (ReduceSum at opset 13, the others at
18); both forms are accepted whatever the opset, the input winning when present. Reducing over an
empty set gives the reduction's identity (0 for sums, 1 for products, -inf/+inf for max/min).
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError


def _axes(inputs, attrs):
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
    ax = attrs.get("axes")
    return None if ax is None else [int(a) for a in ax]


def _wide(x):
    if x.dtype.itemsize < 4 and np.issubdtype(x.dtype, np.floating) or x.dtype.kind == "V":
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32)  # ml_dtypes bfloat16 / float8
    return x


def _reduce(fn, identity=None):
    """``fn(x, axis_tuple, keepdims)``; ``identity(dtype)`` fills reductions over empty sets."""
    def kernel(ctx, inputs, attrs):
        x = inputs[0]
        keep = bool(attrs.get("keepdims", 1))
        axes = _axes(inputs, attrs)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x.copy()]
            axes = list(range(x.ndim))
        try:
            axes_t = tuple(sorted({a + x.ndim if a < 0 else a for a in axes}))
        except TypeError as exc:
            raise KernelError(f"bad axes {axes}") from exc
        if any(a < 0 or a >= max(x.ndim, 1) for a in axes_t):
            raise KernelError(f"axes {axes} out of range for rank {x.ndim}")
        xw = _wide(x)
        if x.ndim == 0:
            axes_t = None
        empty = x.size == 0
        with np.errstate(all="ignore"):
            if empty and identity is not None:
                shape = tuple(1 if (axes_t is None or i in axes_t) else d for i, d in enumerate(x.shape))
                if not keep:
                    shape = tuple(d for i, d in enumerate(x.shape) if axes_t is not None and i not in axes_t)
                out = np.full(shape, identity(x.dtype))
            else:
                out = fn(xw, axes_t, keep)
        return [np.asarray(out).astype(x.dtype, copy=False)]
    return kernel


def _max_identity(dt):
    if dt == np.bool_:
        return False
    return -np.inf if not np.issubdtype(dt, np.integer) else np.iinfo(dt).min


def _min_identity(dt):
    if dt == np.bool_:
        return True
    return np.inf if not np.issubdtype(dt, np.integer) else np.iinfo(dt).max


def _log_sum_exp(x, axis, keep):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keep else np.squeeze(s, axis=axis)


def _arg(fn):
    def kernel(ctx, inputs, attrs):
        x = _wide(inputs[0])
        axis = attrs.get("axis", 0)
        axis = axis + x.ndim if axis < 0 else axis
        keep = bool(attrs.get("keepdims", 1))
        if attrs.get("select_last_index", 0):
            flipped = np.flip(x, axis=axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            idx = fn(x, axis=axis)
        if keep:
            idx = np.expand_dims(idx, axis)
        return [np.asarray(idx, dtype=np.int64)]
    return kernel


def _cumulative(fn, identity):
    def kernel(ctx, inputs, attrs):
        x, axis = inputs[0], int(np.asarray(inputs[1]).reshape(-1)[0])
        axis = axis + x.ndim if axis < 0 else axis
        xw = _wide(x)
        if attrs.get("reverse", 0):
            xw = np.flip(xw, axis)
        out = fn(xw, axis=axis, dtype=xw.dtype)
        if attrs.get("exclusive", 0):
            # shift by one along the axis, filling the first slot with the identity
            pad = np.full_like(np.take(out, [0], axis=axis), identity)
            out = np.concatenate([pad, np.take(out, np.arange(x.shape[axis] - 1), axis=axis)], axis=axis)
        if attrs.get("reverse", 0):
            out = np.flip(out, axis)
        return [np.ascontiguousarray(out).astype(x.dtype, copy=False)]
    return kernel


KERNELS = {
    "ReduceSum": _reduce(lambda x, a, k: np.sum(x, axis=a, keepdims=k), lambda dt: 0),
    "ReduceMean": _reduce(lambda x, a, k: np.mean(x, axis=a, keepdims=k), lambda dt: np.nan),
    "ReduceMax": _reduce(lambda x, a, k: np.max(x, axis=a, keepdims=k), _max_identity),
    "ReduceMin": _reduce(lambda x, a, k: np.min(x, axis=a, keepdims=k), _min_identity),
    "ReduceProd": _reduce(lambda x, a, k: np.prod(x, axis=a, keepdims=k), lambda dt: 1),
    "ReduceL1": _reduce(lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k), lambda dt: 0),
    "ReduceL2": _reduce(lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)),
                        lambda dt: 0),
    "ReduceSumSquare": _reduce(lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k),
                               lambda dt: 0),
    "ReduceLogSum": _reduce(lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
                            lambda dt: -np.inf),
    "ReduceLogSumExp": _reduce(_log_sum_exp, lambda dt: -np.inf),
    "ArgMax": _arg(np.argmax),
    "ArgMin": _arg(np.argmin),
    "CumSum": _cumulative(np.cumsum, 0),
    "CumProd": _cumulative(np.cumprod, 1),
}
