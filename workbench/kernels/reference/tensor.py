"""Reference kernels: shape and layout ops (no arithmetic on values).

Each kernel follows every opset form of its op: operands that moved from attributes to inputs
(Reshape 5, Slice 10, Pad 11, Split/Squeeze/Unsqueeze 13) are read from wherever that opset puts
them. Sizes that come from tensor values are checked against ``limits.MAX_ELEMENTS`` first.
"""

from __future__ import annotations

import numpy as np

from workbench.dtypes import from_onnx_code, to_numpy

from ._base import KernelError
from .limits import check_elements


def norm_axis(axis: int, rank: int, what: str) -> int:
    """``axis`` in [-rank, rank) made non-negative, or a KernelError naming the op."""
    axis = int(axis)
    if not -rank <= axis < rank:
        raise KernelError(f"{what}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def int_values(v) -> list[int]:
    return [int(x) for x in np.asarray(v).reshape(-1)]


def constant(ctx, inputs, attrs):
    if "value" in attrs or "sparse_value" in attrs:
        v = attrs.get("value", attrs.get("sparse_value"))
        return [np.array(v)]
    if "value_float" in attrs:
        return [np.array(attrs["value_float"], np.float32)]
    if "value_floats" in attrs:
        return [np.array(attrs["value_floats"], np.float32).reshape(-1)]
    if "value_int" in attrs:
        return [np.array(attrs["value_int"], np.int64)]
    if "value_ints" in attrs:
        return [np.array(attrs["value_ints"], np.int64).reshape(-1)]
    if "value_string" in attrs:
        return [np.array(attrs["value_string"], dtype=object)]
    if "value_strings" in attrs:
        out = np.empty(len(attrs["value_strings"]), dtype=object)
        out[:] = list(attrs["value_strings"])
        return [out]
    raise KernelError("Constant: none of the value attributes is set")


def constant_of_shape(ctx, inputs, attrs):
    shape = int_values(inputs[0])
    check_elements(shape, "ConstantOfShape")
    value = attrs.get("value")
    if value is None:
        value = np.zeros(1, np.float32)
    value = np.asarray(value).reshape(-1)
    if value.size != 1:
        raise KernelError(f"ConstantOfShape: value must have one element, got {value.size}")
    return [np.full(shape, value[0], dtype=value.dtype)]


def identity(ctx, inputs, attrs):
    return [inputs[0]]


def shape(ctx, inputs, attrs):
    dims = list(np.shape(inputs[0]))
    rank = len(dims)
    start = int(attrs.get("start", 0))
    end = attrs.get("end")
    # Shape-15 start/end clamp like Python slicing instead of failing
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else int(end)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [np.array(dims[start:end], dtype=np.int64)]


def size(ctx, inputs, attrs):
    return [np.array(np.size(inputs[0]), dtype=np.int64)]


def reshape(ctx, inputs, attrs):
    x = inputs[0]
    target = int_values(inputs[1]) if ctx.opset >= 5 or len(inputs) > 1 else int_values(attrs.get("shape", []))
    allowzero = int(attrs.get("allowzero", 0))
    out, infer = [], None
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= x.ndim:
                raise KernelError(f"Reshape: 0 at position {i} copies a dim the rank-{x.ndim} input lacks")
            d = x.shape[i]
        elif d == -1:
            if infer is not None:
                raise KernelError(f"Reshape: more than one -1 in shape {target}")
            infer = i
        elif d < -1:
            raise KernelError(f"Reshape: invalid dim {d} in shape {target}")
        out.append(d)
    if infer is not None:
        known = int(np.prod([d for j, d in enumerate(out) if j != infer], dtype=np.int64))
        if known == 0 or x.size % known:
            raise KernelError(f"Reshape: cannot infer -1 reshaping {list(x.shape)} to {target}")
        out[infer] = x.size // known
    check_elements(out, "Reshape")
    if int(np.prod(out, dtype=np.int64)) != x.size:
        raise KernelError(f"Reshape: cannot reshape {list(x.shape)} ({x.size} elements) to {out}")
    return [x.reshape(out)]


def flatten(ctx, inputs, attrs):
    x = inputs[0]
    axis = int(attrs.get("axis", 1))
    if not -x.ndim <= axis <= x.ndim:
        raise KernelError(f"Flatten: axis {axis} out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(outer, int(np.prod(x.shape[axis:], dtype=np.int64)))]


def _axes_operand(ctx, inputs, attrs, since: int):
    """Axes given as an attribute before opset ``since``, as an optional input from it on."""
    if ctx.opset >= since or (len(inputs) > 1 and inputs[1] is not None):
        return None if len(inputs) < 2 or inputs[1] is None else int_values(inputs[1])
    return None if attrs.get("axes") is None else [int(a) for a in attrs["axes"]]


def squeeze(ctx, inputs, attrs):
    x = inputs[0]
    axes = _axes_operand(ctx, inputs, attrs, 13)
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    axes = sorted({norm_axis(a, x.ndim, "Squeeze") for a in axes})
    for a in axes:
        if x.shape[a] != 1:
            raise KernelError(f"Squeeze: dim {a} of shape {list(x.shape)} is not 1")
    return [np.squeeze(x, axis=tuple(axes))]


def unsqueeze(ctx, inputs, attrs):
    x = inputs[0]
    axes = _axes_operand(ctx, inputs, attrs, 13)
    if axes is None:
        raise KernelError("Unsqueeze: axes are required")
    rank = x.ndim + len(axes)
    norm = sorted(norm_axis(a, rank, "Unsqueeze") for a in axes)
    if len(set(norm)) != len(norm):
        raise KernelError(f"Unsqueeze: repeated axes {axes}")
    out = list(x.shape)
    for a in norm:
        out.insert(a, 1)
    return [x.reshape(out)]


def transpose(ctx, inputs, attrs):
    x = inputs[0]
    perm = attrs.get("perm")
    perm = list(range(x.ndim))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(perm) != list(range(x.ndim)):
        raise KernelError(f"Transpose: perm {perm} is not a permutation of rank {x.ndim}")
    return [np.ascontiguousarray(np.transpose(x, perm))]


def concat(ctx, inputs, attrs):
    xs = [x for x in inputs if x is not None]
    if not xs:
        raise KernelError("Concat: no inputs")
    axis = attrs.get("axis")
    if axis is None:  # Concat-1 defaulted to axis 1; from opset 4 the attribute is required
        if ctx.opset >= 4:
            raise KernelError("Concat: required attribute 'axis' is missing")
        axis = 1
    axis = norm_axis(axis, xs[0].ndim, "Concat")
    if any(x.dtype != xs[0].dtype for x in xs):
        raise KernelError(f"Concat: mixed dtypes {[str(x.dtype) for x in xs]}")
    try:
        return [np.concatenate(xs, axis=axis)]
    except ValueError as e:
        raise KernelError(f"Concat: {e}") from None


def split(ctx, inputs, attrs):
    x = inputs[0]
    axis = norm_axis(attrs.get("axis", 0), x.ndim, "Split")
    dim = x.shape[axis]
    n = ctx.n_outputs
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = int_values(inputs[1])
    elif attrs.get("split") is not None:
        sizes = [int(s) for s in attrs["split"]]
    elif "num_outputs" in attrs:
        n = int(attrs["num_outputs"])
        chunk = -(-dim // n)  # Split-18: ceil-sized chunks, the last one smaller
        sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
    else:
        if dim % n:
            raise KernelError(f"Split: dim {dim} does not divide into {n} equal outputs")
        sizes = [dim // n] * n
    if sum(sizes) != dim or any(s < 0 for s in sizes):
        raise KernelError(f"Split: sizes {sizes} do not sum to dim {dim}")
    bounds = np.cumsum([0] + sizes)
    idx = [slice(None)] * x.ndim
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx[axis] = slice(int(a), int(b))
        outs.append(x[tuple(idx)].copy())
    return outs


def slice_(ctx, inputs, attrs):
    x = inputs[0]
    if ctx.opset < 10 and len(inputs) == 1:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = int_values(inputs[1]), int_values(inputs[2])
        axes = int_values(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        steps = int_values(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise KernelError("Slice: starts, ends, axes and steps differ in length")
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(a, x.ndim, "Slice")
        dim = x.shape[a]
        if st == 0:
            raise KernelError("Slice: step 0")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
        idx[a] = slice(s, None if e < 0 else e, st)
    return [x[tuple(idx)].copy()]


def pad(ctx, inputs, attrs):
    x = inputs[0]
    mode = attrs.get("mode", "constant")
    if ctx.opset < 11:
        pads = [int(p) for p in attrs.get("pads", attrs.get("paddings", []))]
        value, axes = attrs.get("value", 0.0), None
    else:
        pads = int_values(inputs[1])
        value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        value = 0 if value is None or np.size(value) == 0 else np.asarray(value).reshape(-1)[0]
        axes = int_values(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    axes = list(range(x.ndim)) if axes is None else [norm_axis(a, x.ndim, "Pad") for a in axes]
    if len(pads) != 2 * len(axes):
        raise KernelError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    width = [[0, 0] for _ in range(x.ndim)]
    for i, a in enumerate(axes):
        width[a] = [pads[i], pads[i + len(axes)]]
    # negative pads crop; do that first so the padding below only grows
    crop = tuple(slice(max(-b, 0), x.shape[k] - max(-e, 0)) for k, (b, e) in enumerate(width))
    x = x[crop]
    grow = [(max(b, 0), max(e, 0)) for b, e in width]
    check_elements([d + b + e for d, (b, e) in zip(x.shape, grow)], "Pad")
    if mode == "constant":
        return [np.pad(x, grow, mode="constant", constant_values=np.array(value).astype(x.dtype))]
    if mode not in ("reflect", "edge", "wrap"):
        raise KernelError(f"Pad: unknown mode {mode!r}")
    if x.size == 0 and any(b or e for b, e in grow):
        raise KernelError(f"Pad: mode {mode!r} cannot pad an empty tensor")
    return [np.pad(x, grow, mode=mode)]


def expand(ctx, inputs, attrs):
    x, target = inputs[0], int_values(inputs[1])
    try:
        out_shape = np.broadcast_shapes(x.shape, tuple(target))
    except ValueError:
        raise KernelError(f"Expand: shape {list(x.shape)} does not broadcast with {target}") from None
    check_elements(out_shape, "Expand")
    return [np.array(np.broadcast_to(x, out_shape))]


def tile(ctx, inputs, attrs):
    x, reps = inputs[0], int_values(inputs[1])
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise KernelError(f"Tile: repeats {reps} invalid for rank {x.ndim}")
    check_elements([d * r for d, r in zip(x.shape, reps)], "Tile")
    return [np.tile(x, reps)]


def eye_like(ctx, inputs, attrs):
    x = inputs[0]
    if x.ndim != 2:
        raise KernelError(f"EyeLike: input must be 2-D, got rank {x.ndim}")
    dt = to_numpy(from_onnx_code(attrs["dtype"])) if "dtype" in attrs else x.dtype
    return [np.eye(x.shape[0], x.shape[1], k=int(attrs.get("k", 0)), dtype=dt)]


def trilu(ctx, inputs, attrs):
    x = inputs[0]
    k = int(np.asarray(inputs[1]).reshape(-1)[0]) if len(inputs) > 1 and inputs[1] is not None else 0
    if x.ndim < 2:
        raise KernelError(f"Trilu: input must have rank >= 2, got {x.ndim}")
    return [np.triu(x, k) if int(attrs.get("upper", 1)) else np.tril(x, k)]


def range_(ctx, inputs, attrs):
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs[:3])
    if delta == 0:
        raise KernelError("Range: delta is 0")
    dt = start.dtype
    if dt.kind in "iu":
        s, l, d = int(start), int(limit), int(delta)
        n = max(-(-(l - s) // d), 0)  # exact ceil on integers, no float rounding
    else:
        n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    check_elements([n], "Range")
    return [(start + np.arange(n, dtype=dt) * delta).astype(dt)]


KERNELS = {
    "Constant": constant,
    "ConstantOfShape": constant_of_shape,
    "Identity": identity,
    "Shape": shape,
    "Size": size,
    "Reshape": reshape,
    "Flatten": flatten,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Transpose": transpose,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Pad": pad,
    "Expand": expand,
    "Tile": tile,
    "EyeLike": eye_like,
    "Trilu": trilu,
    "Range": range_,
}
