"""Reference kernels: AveragePool, MaxPool, LpPool, their Global forms, MaxUnpool.

Windows come from ``sliding_window_view`` over a padded input, reduced over the window axes.
Padding semantics follow the ONNX spec: explicit/auto pads count towards an average only with
count_include_pad=1; the extra tail that ceil_mode adds never counts; max pooling ignores pads.
"""

from __future__ import annotations

import numpy as np

from ...ops.geometry import conv_geometry, window_attrs
from ._base import KernelError
from .conv import windows


def _wide(x):
    if np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize >= 4:
        return x
    if np.issubdtype(x.dtype, np.integer):
        return x
    return x.astype(np.float32)


def pool_geometry(x, attrs):
    """(kernel, strides, dilations, begin, end, extra_tail, out_shape) for a pooling node."""
    nd = x.ndim - 2
    kernel = list(attrs.get("kernel_shape") or [])
    if len(kernel) != nd:
        raise KernelError(f"pool kernel_shape {kernel} does not match input rank {x.ndim}")
    strides, dil, pads = window_attrs(attrs, nd)
    begin, end, out = conv_geometry(x.shape[2:], kernel, strides, dil, pads, attrs.get("auto_pad", "NOTSET"),
                                    attrs.get("ceil_mode", 0))
    extra = []
    for i in range(nd):
        if out[i] <= 0:
            raise KernelError(f"pool output dim {i} would be {out[i]}")
        k_eff = dil[i] * (kernel[i] - 1) + 1
        extra.append(max(0, (out[i] - 1) * strides[i] + k_eff - (x.shape[2 + i] + begin[i] + end[i])))
    return kernel, strides, dil, begin, end, extra, out


def _padded(x, begin, end, extra, value):
    widths = [(0, 0), (0, 0)] + [(b, e + t) for b, e, t in zip(begin, end, extra)]
    if not any(b or e for b, e in widths):
        return x
    return np.pad(x, widths, constant_values=value)


def _reduce_windows(xp, kernel, strides, dil, out, op):
    """Reduce every pooling window with ``op`` (np.maximum / np.add) by looping over the kernel
    offsets: k*k whole-tensor strided ops are far faster than reducing the window axes of a
    sliding_window_view, whose inner axes are not contiguous."""
    acc = None
    for offs in np.ndindex(*kernel):
        index = (slice(None), slice(None)) + tuple(
            slice(o * d, o * d + (n - 1) * st + 1, st) for o, d, n, st in zip(offs, dil, out, strides))
        part = xp[index]
        acc = part.copy() if acc is None else op(acc, part, out=acc)
    return acc


def _window_axes(nd):
    return tuple(range(2 + nd, 2 + 2 * nd))


def _count(x, attrs, geo, include_pad):
    """How many elements each window averages over: [*out] (broadcasts over N, C)."""
    kernel, strides, dil, begin, end, extra, out = geo
    nd = len(kernel)
    mask = np.ones(x.shape[2:], dtype=np.float64)
    if include_pad:
        mask = np.pad(mask, list(zip(begin, end)), constant_values=1.0)
        mask = np.pad(mask, [(0, t) for t in extra], constant_values=0.0)
    else:
        mask = np.pad(mask, [(b, e + t) for b, e, t in zip(begin, end, extra)], constant_values=0.0)
    v = windows(mask[None, None], kernel, strides, dil, out)
    return v.sum(axis=_window_axes(nd))[0, 0]


def _average_pool(ctx, inputs, attrs):
    x = inputs[0]
    geo = pool_geometry(x, attrs)
    kernel, strides, dil, begin, end, extra, out = geo
    xw = _wide(x)
    total = _reduce_windows(_padded(xw, begin, end, extra, 0), kernel, strides, dil, out, np.add)
    cnt = _count(x, attrs, geo, attrs.get("count_include_pad", 0))
    return [(total / cnt.astype(total.dtype)).astype(x.dtype)]


def _lp_pool(ctx, inputs, attrs):
    x = inputs[0]
    p = attrs.get("p", 2)
    kernel, strides, dil, begin, end, extra, out = pool_geometry(x, attrs)
    xw = _wide(x)
    v = windows(_padded(np.abs(xw) ** p, begin, end, extra, 0), kernel, strides, dil, out)
    y = v.sum(axis=_window_axes(len(kernel))) ** (1.0 / p)
    return [np.asarray(y).astype(x.dtype)]


def _max_pool(ctx, inputs, attrs):
    x = inputs[0]
    kernel, strides, dil, begin, end, extra, out = pool_geometry(x, attrs)
    xw = _wide(x)
    low = np.iinfo(xw.dtype).min if np.issubdtype(xw.dtype, np.integer) else -np.inf
    xp = _padded(xw, begin, end, extra, low)
    y = _reduce_windows(xp, kernel, strides, dil, out, np.maximum)
    result = [y.astype(x.dtype)]
    if ctx.n_outputs > 1:
        v = windows(xp, kernel, strides, dil, out)
        result.append(_max_indices(x, v, kernel, strides, dil, begin, out,
                                   attrs.get("storage_order", 0)))
    return result


def _max_indices(x, v, kernel, strides, dil, begin, out, storage_order):
    """Flat input index of each window's (first) maximum, row- or column-major over space."""
    nd = len(kernel)
    n, c = x.shape[:2]
    flat = v.reshape(v.shape[:2 + nd] + (-1,))
    arg = np.argmax(flat, axis=-1)
    k_idx = np.unravel_index(arg, kernel)
    spatial = x.shape[2:]
    coords = []
    for i in range(nd):
        o = np.arange(out[i]).reshape((1, 1) + tuple(out[i] if j == i else 1 for j in range(nd)))
        coords.append(o * strides[i] - begin[i] + k_idx[i] * dil[i])
    if storage_order:
        pos, mult = 0, 1
        for i in range(nd):
            pos = pos + coords[i] * mult
            mult *= spatial[i]
    else:
        pos = np.ravel_multi_index(tuple(coords), spatial, mode="wrap") if nd else 0
    base = (np.arange(n * c).reshape(n, c) * int(np.prod(spatial))).reshape((n, c) + (1,) * nd)
    return np.asarray(base + pos, dtype=np.int64)


def _global(reduce_fn):
    def kernel(ctx, inputs, attrs):
        x = inputs[0]
        axes = tuple(range(2, x.ndim))
        return [np.asarray(reduce_fn(_wide(x), axes, attrs)).astype(x.dtype)]
    return kernel


def _global_lp(x, axes, attrs):
    p = attrs.get("p", 2)
    return np.sum(np.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p)


def _max_unpool(ctx, inputs, attrs):
    x, idx = inputs[0], inputs[1]
    out_shape = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    nd = x.ndim - 2
    kernel = list(attrs.get("kernel_shape"))
    strides = list(attrs.get("strides") or [1] * nd)
    pads = list(attrs.get("pads") or [0] * (2 * nd))
    # indices address the unpooled tensor of the default shape; an explicit output_shape only
    # pads that tensor with zeros at the end (the node tests and onnxruntime agree on this)
    spatial = [(x.shape[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[i + nd]
               for i in range(nd)]
    shape = list(x.shape[:2]) + spatial
    y = np.zeros(int(np.prod(shape)), dtype=x.dtype)
    flat_idx = idx.reshape(-1).astype(np.int64)
    if flat_idx.size and (flat_idx.min() < 0 or flat_idx.max() >= y.size):
        raise KernelError(f"MaxUnpool index out of range for output shape {shape}")
    y[flat_idx] = x.reshape(-1)
    y = y.reshape(shape)
    if out_shape is not None:
        target = [int(d) for d in np.asarray(out_shape).reshape(-1)]
        if len(target) != len(shape) or any(t < s for t, s in zip(target, shape)):
            raise KernelError(f"MaxUnpool output_shape {target} smaller than {shape}")
        y = np.pad(y, [(0, t - s) for t, s in zip(target, shape)])
    return [y]


KERNELS = {
    "AveragePool": _average_pool,
    "MaxPool": _max_pool,
    "LpPool": _lp_pool,
    "GlobalAveragePool": _global(lambda x, a, at: np.mean(x, axis=a, keepdims=True)),
    "GlobalMaxPool": _global(lambda x, a, at: np.max(x, axis=a, keepdims=True)),
    "GlobalLpPool": _global(_global_lp),
    "MaxUnpool": _max_unpool,
}
