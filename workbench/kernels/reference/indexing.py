"""Reference kernels: gather / scatter, selection and sorting ops.

Indices may be negative (counted from the end) wherever the spec allows it; an index out of range
is a KernelError naming the op, never a silent wrap or a NumPy IndexError.
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError
from .limits import check_elements
from .tensor import norm_axis


def _norm_indices(idx, dim: int, what: str) -> np.ndarray:
    idx = np.asarray(idx).astype(np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        bad = idx[(idx < -dim) | (idx >= dim)].reshape(-1)[0]
        raise KernelError(f"{what}: index {int(bad)} out of range for dim of size {dim}")
    return np.where(idx < 0, idx + dim, idx)


def gather(ctx, inputs, attrs):
    x, idx = inputs[0], inputs[1]
    axis = norm_axis(attrs.get("axis", 0), x.ndim, "Gather")
    return [np.take(x, _norm_indices(idx, x.shape[axis], "Gather"), axis=axis)]


def gather_elements(ctx, inputs, attrs):
    x, idx = inputs[0], inputs[1]
    axis = norm_axis(attrs.get("axis", 0), x.ndim, "GatherElements")
    if idx.ndim != x.ndim:
        raise KernelError(f"GatherElements: indices rank {idx.ndim} != data rank {x.ndim}")
    return [np.take_along_axis(x, _norm_indices(idx, x.shape[axis], "GatherElements"), axis=axis)]


def gather_nd(ctx, inputs, attrs):
    x, idx = inputs[0], np.asarray(inputs[1]).astype(np.int64)
    b = int(attrs.get("batch_dims", 0))
    k = idx.shape[-1]
    if x.shape[:b] != idx.shape[:b] or b + k > x.ndim:
        raise KernelError(f"GatherND: indices {list(idx.shape)} incompatible with data {list(x.shape)}"
                          f" and batch_dims {b}")
    nb = int(np.prod(x.shape[:b], dtype=np.int64))
    xb = x.reshape((nb,) + x.shape[b:])
    ib = idx.reshape((nb, -1, k))
    out = []
    for i in range(nb):
        cols = tuple(_norm_indices(ib[i][:, j], x.shape[b + j], "GatherND") for j in range(k))
        out.append(xb[i][cols])
    out_shape = idx.shape[:-1] + x.shape[b + k:]
    return [np.stack(out).reshape(out_shape) if out else np.zeros(out_shape, x.dtype)]


_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_at(out, where, updates, reduction: str, what: str):
    if reduction == "none":
        out[where] = updates
    elif reduction in _REDUCE:
        _REDUCE[reduction].at(out, where, updates)
    else:
        raise KernelError(f"{what}: unknown reduction {reduction!r}")


def scatter_elements(ctx, inputs, attrs):
    x, idx, upd = inputs
    axis = norm_axis(attrs.get("axis", 0), x.ndim, "ScatterElements")
    if idx.shape != upd.shape or idx.ndim != x.ndim:
        raise KernelError(f"ScatterElements: indices {list(idx.shape)} and updates {list(upd.shape)}"
                          f" must match and have the data rank {x.ndim}")
    idx = _norm_indices(idx, x.shape[axis], "ScatterElements")
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    out = x.copy()
    _scatter_at(out, tuple(where), upd, attrs.get("reduction", "none"), "ScatterElements")
    return [out]


def scatter_nd(ctx, inputs, attrs):
    x, idx, upd = inputs
    k = idx.shape[-1]
    if k > x.ndim or upd.shape != idx.shape[:-1] + x.shape[k:]:
        raise KernelError(f"ScatterND: updates {list(upd.shape)} do not fit indices {list(idx.shape)}"
                          f" into data {list(x.shape)}")
    flat = idx.reshape(-1, k)
    where = tuple(_norm_indices(flat[:, j], x.shape[j], "ScatterND") for j in range(k))
    out = x.copy()
    _scatter_at(out, where, upd.reshape((-1,) + x.shape[k:]), attrs.get("reduction", "none"), "ScatterND")
    return [out]


def tensor_scatter(ctx, inputs, attrs):
    past, upd = inputs[0], inputs[1]
    write = inputs[2] if len(inputs) > 2 else None
    axis = norm_axis(attrs.get("axis", -2), past.ndim, "TensorScatter")
    if axis == 0:
        raise KernelError("TensorScatter: axis cannot be the batch dimension")
    max_len, seq_len = past.shape[axis], upd.shape[axis]
    circular = attrs.get("mode", "linear") == "circular"
    out = past.copy()
    starts = np.zeros(past.shape[0], np.int64) if write is None else np.asarray(write).astype(np.int64)
    for b in range(past.shape[0]):
        pos = int(starts[b]) + np.arange(seq_len)
        if circular:
            pos = pos % max_len
        elif seq_len and (pos[0] < 0 or pos[-1] >= max_len):
            raise KernelError(f"TensorScatter: write index {int(starts[b])} + {seq_len} exceeds {max_len}")
        # a view with the sequence axis first keeps NumPy from reordering advanced-index dims
        np.moveaxis(out[b], axis - 1, 0)[pos] = np.moveaxis(upd[b], axis - 1, 0)
    return [out]


def compress(ctx, inputs, attrs):
    x, cond = inputs[0], np.asarray(inputs[1]).astype(bool).reshape(-1)
    axis = attrs.get("axis")
    if axis is None:
        x, axis = x.reshape(-1), 0
    axis = norm_axis(axis, x.ndim, "Compress")
    if cond.size > x.shape[axis]:
        raise KernelError(f"Compress: condition of length {cond.size} longer than dim {x.shape[axis]}")
    return [np.compress(cond, x, axis=axis)]


def non_zero(ctx, inputs, attrs):
    x = inputs[0]
    return [np.array(np.nonzero(np.atleast_1d(x)), dtype=np.int64).reshape(max(x.ndim, 1), -1)]


def one_hot(ctx, inputs, attrs):
    idx, depth, values = inputs
    depth = np.asarray(depth).reshape(-1)[0]
    depth = int(depth)
    if depth < 1:
        raise KernelError(f"OneHot: depth must be positive, got {depth}")
    values = np.asarray(values).reshape(-1)
    idx = np.asarray(idx).astype(np.int64)
    rank = idx.ndim + 1
    axis = norm_axis(attrs.get("axis", -1), rank, "OneHot")
    check_elements(list(idx.shape) + [depth], "OneHot")
    idx = np.where(idx < 0, idx + depth, idx)  # negatives count back from depth; others stay all-off
    hot = idx[..., None] == np.arange(depth)
    out = np.where(hot, values[1], values[0]).astype(values.dtype)
    return [np.moveaxis(out, -1, axis)]


def top_k(ctx, inputs, attrs):
    x = inputs[0]
    k = int(attrs["k"]) if ctx.opset < 10 else int(np.asarray(inputs[1]).reshape(-1)[0])
    axis = norm_axis(attrs.get("axis", -1), x.ndim, "TopK")
    if not 0 <= k <= x.shape[axis]:
        raise KernelError(f"TopK: k={k} out of range for dim {x.shape[axis]}")
    if int(attrs.get("largest", 1)):
        # reverse the order without losing stability: ties keep the lower index first
        key = ~x if x.dtype.kind in "iu" else -x.astype(np.float64)
    else:
        key = x
    order = np.argsort(key, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


def unique(ctx, inputs, attrs):
    x = inputs[0]
    axis = attrs.get("axis")
    if axis is not None:
        axis = norm_axis(axis, x.ndim, "Unique")
        y, first, inv, counts = np.unique(x, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    else:
        y, first, inv, counts = np.unique(x.reshape(-1), return_index=True, return_inverse=True,
                                          return_counts=True)
    inv = inv.reshape(-1)
    if not int(attrs.get("sorted", 1)):
        # order by first occurrence, and remap the inverse indices to that order
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        y = np.take(y, order, axis=0 if axis is None else axis)
        first, counts, inv = first[order], counts[order], rank[inv]
    i64 = np.int64
    return [y, first.astype(i64), inv.astype(i64), counts.astype(i64)]


KERNELS = {
    "Gather": gather,
    "GatherElements": gather_elements,
    "GatherND": gather_nd,
    "Scatter": scatter_elements,
    "ScatterElements": scatter_elements,
    "ScatterND": scatter_nd,
    "TensorScatter": tensor_scatter,
    "Compress": compress,
    "NonZero": non_zero,
    "OneHot": one_hot,
    "TopK": top_k,
    "Unique": unique,
}
