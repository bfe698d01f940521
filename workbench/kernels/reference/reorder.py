"""Reference kernels: ops that move elements between positions or axes without arithmetic on
values: DepthToSpace, SpaceToDepth, CenterCropPad, ReverseSequence."""

from __future__ import annotations

import numpy as np

from ._base import KernelError
from .limits import check_elements
from .tensor import int_values, norm_axis


def depth_to_space(ctx, inputs, attrs):
    x, bs = inputs[0], int(attrs["blocksize"])
    b, c, h, w = x.shape
    if c % (bs * bs):
        raise KernelError(f"DepthToSpace: channels {c} not divisible by blocksize^2 {bs * bs}")
    if attrs.get("mode", "DCR") == "DCR":
        t = x.reshape(b, bs, bs, c // bs // bs, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(b, c // bs // bs, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [t.reshape(b, c // bs // bs, h * bs, w * bs)]


def space_to_depth(ctx, inputs, attrs):
    x, bs = inputs[0], int(attrs["blocksize"])
    b, c, h, w = x.shape
    if h % bs or w % bs:
        raise KernelError(f"SpaceToDepth: spatial dims {h}x{w} not divisible by blocksize {bs}")
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    # DCR puts the block offset before the channel, CRD after it (inverse of DepthToSpace)
    t = t.transpose(0, 3, 5, 1, 2, 4) if attrs.get("mode", "DCR") == "DCR" else t.transpose(0, 1, 3, 5, 2, 4)
    return [t.reshape(b, c * bs * bs, h // bs, w // bs)]


def center_crop_pad(ctx, inputs, attrs):
    x, target = inputs[0], int_values(inputs[1])
    axes = attrs.get("axes")
    axes = list(range(x.ndim)) if axes is None else [norm_axis(a, x.ndim, "CenterCropPad") for a in axes]
    if len(axes) != len(target):
        raise KernelError(f"CenterCropPad: {len(target)} sizes for {len(axes)} axes")
    out_shape = list(x.shape)
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    for a, t in zip(axes, target):
        dim = x.shape[a]
        out_shape[a] = t
        if t < dim:  # crop: the extra element of an odd difference comes off the end
            off = (dim - t) // 2
            src[a] = slice(off, off + t)
        elif t > dim:
            off = (t - dim) // 2
            dst[a] = slice(off, off + dim)
    check_elements(out_shape, "CenterCropPad")
    out = np.zeros(out_shape, dtype=x.dtype)
    out[tuple(dst)] = x[tuple(src)]
    return [out]


def reverse_sequence(ctx, inputs, attrs):
    x, lens = inputs[0], int_values(inputs[1])
    batch_axis = int(attrs.get("batch_axis", 1))
    time_axis = int(attrs.get("time_axis", 0))
    out = x.copy()
    if len(lens) != x.shape[batch_axis]:
        raise KernelError(f"ReverseSequence: {len(lens)} lengths for batch of {x.shape[batch_axis]}")
    for b, n in enumerate(lens):
        if not 0 <= n <= x.shape[time_axis]:
            raise KernelError(f"ReverseSequence: length {n} out of range")
        idx = [slice(None)] * x.ndim
        idx[batch_axis] = b
        idx[time_axis] = slice(0, n)
        src = list(idx)
        src[time_axis] = slice(n - 1, None, -1) if n else slice(0, 0)
        out[tuple(idx)] = x[tuple(src)]
    return [out]


KERNELS = {
    "DepthToSpace": depth_to_space,
    "SpaceToDepth": space_to_depth,
    "CenterCropPad": center_crop_pad,
    "ReverseSequence": reverse_sequence,
}
