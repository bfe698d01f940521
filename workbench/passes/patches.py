"""Patch embeddings as a GEMM: a vision transformer's stem is a Conv whose kernel equals its stride
(16x16 / 16 in ViT-B/16), whose output is flattened and transposed into tokens. Such a Conv reads
every input pixel once, so it is a matrix product of the image cut into patches:

    Conv(X [N, C, H, W], W [K, C, s, s], B) -> Reshape [N, K, L] -> Transpose(0, 2, 1)   (L = H/s * W/s)
    ==  Reshape(X, [N, C, H/s, s, W/s, s]) -> Transpose(0, 2, 4, 1, 3, 5) -> Reshape [N, L, C*s*s]
        -> MatMul(W as [C*s*s, K]) + B                                        -> [N, L, K]

The GEMM's output already is the tokens' layout: the Conv's NCHW result and the Transpose that
undid it are gone, and the one copy left is the patch gather of the input image. GPU convolution
libraries run these convs poorly (three input channels, no reuse between windows: cuDNN took
0.29 ms for ViT-B/16's stem at batch 32 on an H100 where the GEMM takes a few tens of us). The
MatMul and Add then take the bias epilogue like any other projection.

The sum over (c, i, j) is the same products in another order: the values agree to float32 rounding,
not bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..ir.symdims import equal, sdims
from ..ir.values import attr, const, producer
from ..rewrite.engine import Match, Rule


class PatchEmbedding(Rule):
    """Conv(kernel == stride, no padding) -> Reshape to [N, K, L] -> Transpose(0, 2, 1)."""

    name = "patch_embedding"
    ops = ("Transpose",)

    def pattern(self, root):
        if attr(root, "perm") != [0, 2, 1]:
            return None
        flat = producer(root.inputs[0], "Reshape")
        conv = producer(flat.inputs[0], "Conv") if flat is not None else None
        if conv is None:
            return None
        return Match(root, [conv, flat, root], b={"conv": conv, "flat": flat})

    def check(self, m):
        conv, flat = m.b["conv"], m.b["flat"]
        w = const(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if w is None or w.ndim != 4:
            return "the weight is not a constant 4-D tensor"
        k, c, r, s = w.shape
        if r != s:
            return f"kernel {r}x{s} is not square"
        if (attr(conv, "strides") or [1, 1]) != [s, s]:
            return f"strides {attr(conv, 'strides')} are not the kernel size {s}"
        if any(attr(conv, "pads") or [0]) or (attr(conv, "auto_pad", "NOTSET") or "NOTSET") not in ("NOTSET", b"NOTSET"):
            return "the Conv pads its input"
        if any(d != 1 for d in (attr(conv, "dilations") or [1, 1])) or int(attr(conv, "group", 1) or 1) != 1:
            return "dilated or grouped Conv"
        if len(conv.inputs) > 2 and conv.inputs[2] is not None and const(conv.inputs[2]) is None:
            return "the bias is not a constant"
        xs = sdims(conv.inputs[0])
        if xs is None or len(xs) != 4 or not all(isinstance(d, int) for d in xs[1:]):
            return f"input dims {xs}: channels, height and width must be static"
        if xs[1] != c or xs[2] % s or xs[3] % s:
            return f"{xs[2]}x{xs[3]} is not a whole number of {s}x{s} patches"
        ys, want = sdims(flat.outputs[0]), (xs[0], k, (xs[2] // s) * (xs[3] // s))
        if ys is None or len(ys) != 3 or not all(equal(a, b) for a, b in zip(ys, want)):
            return f"the Reshape gives {ys}, not the patches [N, {k}, {want[2]}]"
        m.b.update(w=w, dims=(c, xs[2] // s, xs[3] // s, s))
        return ""

    def rewrite(self, m, emit):
        conv = m.b["conv"]
        c, oh, ow, s = m.b["dims"]
        w = m.b["w"]
        x = emit.op("Reshape", [conv.inputs[0], np.array([0, c, oh, s, ow, s], np.int64)], domain="")
        x = emit.op("Transpose", [x], {"perm": [0, 2, 4, 1, 3, 5]}, domain="")
        x = emit.op("Reshape", [x, np.array([0, oh * ow, c * s * s], np.int64)], domain="")
        y = emit.op("MatMul", [x, np.ascontiguousarray(w.reshape(w.shape[0], -1).T)], domain="")
        if len(conv.inputs) > 2 and conv.inputs[2] is not None:
            y = emit.op("Add", [y, conv.inputs[2]], domain="")
        return [y]


PATCH_RULES = [PatchEmbedding()]
