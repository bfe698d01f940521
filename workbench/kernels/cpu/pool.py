"""Fast CPU pooling (float32): MaxPool (values only), AveragePool and GlobalAveragePool / GlobalMaxPool.

The padded input lives in a buffer kept between runs (its borders filled once: -inf for max, 0 for
average), so each run is one copy of the input plus one in-place ufunc per kernel offset into the
output buffer; the window views and the averaging counts are made once per input shape.
"""

from __future__ import annotations

import numpy as np

from ..reference.pool import _count, pool_geometry
from ._common import F32, Buffers, is_f32

OPS = (("", "MaxPool"), ("", "AveragePool"), ("", "GlobalAveragePool"), ("", "GlobalMaxPool"))


def supports(layer, constants) -> str | None:
    specs = layer.aligned_input_specs()
    if not is_f32(specs[0]) or not is_f32(layer.output_specs[0]):
        return "float32 tensors only"
    if layer.op == "MaxPool" and len([o for o in layer.outputs if o]) > 1:
        return "MaxPool indices are left to the reference kernel"
    if specs[0].shape is None or len(specs[0].shape) < 3:
        return "needs a known rank >= 3"
    return None


class _Shape:
    """What ``pool_geometry`` reads of an input: its shape and rank."""

    def __init__(self, shape):
        self.shape, self.ndim = tuple(shape), len(shape)


class PoolKernel:
    def __init__(self, layer, round_, reuse: bool):
        self.op = layer.op
        self.attrs = layer.attrs
        self.round = round_
        self.bufs = Buffers(reuse)
        self.shape = None

    def __call__(self, ctx, inputs, attrs):
        x = inputs[0]
        if self.round:
            x = self.round(x)
        if self.op.startswith("Global"):
            y = self.bufs.get("y", x.shape[:2] + (1,) * (x.ndim - 2))
            axes = tuple(range(2, x.ndim))
            (np.mean if self.op == "GlobalAveragePool" else np.max)(x, axis=axes, keepdims=True, out=y)
            return [self.round(y) if self.round else y]
        if x.shape != self.shape or not self.bufs.reuse:
            self._plan(x.shape)
        np.copyto(self.interior, x)
        y = self.y
        op = np.maximum if self.op == "MaxPool" else np.add
        first = True
        for part in self.parts:
            if first:
                np.copyto(y, part)
                first = False
            else:
                op(y, part, out=y)
        if self.count is not None:
            y /= self.count
        return [self.round(y) if self.round else y]

    def _plan(self, shape):
        kernel, strides, dil, begin, end, extra, out = geo = pool_geometry(_Shape(shape), self.attrs)
        n, c = shape[:2]
        fill = -np.inf if self.op == "MaxPool" else 0.0
        padded = (n, c) + tuple(s + b + e + t for s, b, e, t in zip(shape[2:], begin, end, extra))
        key = "xp" + str(padded)
        xp = self.bufs.get(key, padded)
        xp.fill(fill)
        self.interior = xp[(slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(begin, shape[2:]))]
        self.y = self.bufs.get("y", (n, c) + tuple(out))
        self.parts = [xp[(slice(None), slice(None)) + tuple(
            slice(o * d, o * d + (m - 1) * st + 1, st) for o, d, m, st in zip(offs, dil, out, strides))]
            for offs in np.ndindex(*kernel)]
        self.count = None
        if self.op == "AveragePool":
            cnt = _count(_Shape(shape), self.attrs, geo, self.attrs.get("count_include_pad", 0))
            self.count = np.asarray(cnt, F32)
        self.shape = tuple(shape)
