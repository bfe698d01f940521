"""Fast CPU GEMM: FusedGemm, Gemm and MatMul (float32) as one BLAS call into an output buffer.

A constant B is transposed to the layout the call wants (and rounded for emulated half
precisions) once, at build; a constant C is scaled by beta at build. Alpha, C and the activation are
applied in place in the output, in the reference order. An activation operand of rank > 2 times a
2-D B is flattened to one (rows, K) x (K, N) call instead of a loop over the leading dims.
"""

from __future__ import annotations

import numpy as np

from ._common import F32, Buffers, activate_inplace, is_f32


def supports(layer, constants) -> str | None:
    specs = layer.aligned_input_specs()
    if not all(is_f32(s) for s in specs if s is not None) or not is_f32(layer.output_specs[0]):
        return "float32 tensors only"
    a, b = specs[0], specs[1]
    if a.shape is None or b.shape is None or len(a.shape) < 1 or len(b.shape) < 1:
        return "needs known ranks"
    if layer.op == "MatMul" and (len(a.shape) < 2 or len(b.shape) < 2):
        return "1-D MatMul operands are left to the reference kernel"
    return None


def _identity(x):
    return x


class GemmKernel:
    def __init__(self, layer, constants, config: dict, round_, reuse: bool):
        attrs = layer.attrs
        self.attrs = attrs
        self.rounded = round_ is not None
        self.round = round_ or _identity
        self.bufs = Buffers(reuse)
        fused = layer.op != "MatMul"
        self.trans_a = bool(attrs.get("transA", 0)) and fused
        self.trans_b = bool(attrs.get("transB", 0)) and fused
        self.alpha = float(attrs.get("alpha", 1.0)) if fused else 1.0
        self.beta = float(attrs.get("beta", 1.0)) if fused else 1.0
        names = layer.inputs
        self.b_const = None
        if names[1] in constants:
            b = self.round(np.asarray(constants[names[1]], F32))
            self.b_const = np.ascontiguousarray(np.swapaxes(b, -1, -2) if self.trans_b else b)
        self.act = bool(attrs.get("activation", ""))
        self.key = None
        self.c_name = names[2] if fused and len(names) > 2 and names[2] else ""
        self.c_const = None
        if self.c_name and self.c_name in constants:
            c = self.round(np.asarray(constants[self.c_name], F32))
            self.c_const = c * F32.type(self.beta) if self.beta != 1.0 else c

    def __call__(self, ctx, inputs, attrs):
        rnd = self.round
        a = rnd(inputs[0])
        if self.trans_a:
            a = np.swapaxes(a, -1, -2)
        b = self.b_const
        if b is None:
            b = rnd(inputs[1])
            if self.trans_b:
                b = np.swapaxes(b, -1, -2)
        key = (a.shape, b.shape)
        if key != self.key or not self.bufs.reuse:
            self._plan(a, b)
        if self.flat is not None and a.flags.c_contiguous:
            np.matmul(a.reshape(self.flat), b, out=self.y2)
        else:
            np.matmul(a, b, out=self.y)
        y = self.y
        if self.alpha != 1.0:
            y *= F32.type(self.alpha)
        if self.c_name:
            c = self.c_const
            if c is None:
                c = rnd(inputs[2])
                if self.beta != 1.0:
                    c = c * F32.type(self.beta)
            if (self.c_fits and c.shape == self.c_shape) or np.broadcast_shapes(y.shape, c.shape) == y.shape:
                y += c
            else:
                y = y + c  # C broadcasts the result to a larger shape (rare)
        if self.act:
            activate_inplace(y, self.attrs, self.bufs)
        return [rnd(y) if self.rounded else y]

    def _plan(self, a, b):
        """The output buffer and the flattened (rows, K) x (K, N) view, made once per shape."""
        if b.ndim == 2 and a.ndim > 2:
            self.flat = (-1, a.shape[-1])
            self.y = self.bufs.get("y", a.shape[:-1] + (b.shape[1],))
            self.y2 = self.y.reshape(-1, b.shape[1])
        else:
            self.flat = None
            shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
            self.y = self.bufs.get("y", shape)
        c = self.c_const
        self.c_shape = c.shape if c is not None else None
        # a constant C is checked here once; a C fed at run time is checked per run
        self.c_fits = c is not None and np.broadcast_shapes(self.y.shape, c.shape) == self.y.shape
        self.key = (a.shape, b.shape)
