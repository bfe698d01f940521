"""Fast CPU convolution (Conv and FusedConv, float32, 1-3 spatial dims) on BLAS matmul.

Candidates (each timed at build by the CPU target):

* ``gemm``: im2col into a column buffer kept between runs (padding borders written once), then one
  BLAS matmul per image and group straight into the output; a 1x1 / stride-1 / unpadded
  convolution is a plain GEMM on the input, no copy. ``im2col`` picks how the columns are filled:
  ``copy`` (one strided copy of all receptive fields: best for few channels and large kernels),
  ``offsets`` (one copy per kernel offset: long contiguous rows, best for many channels) or, for
  2-D convolutions where the native kernels are built, ``native`` (one C pass, no padded copy).
* ``depthwise``: one multiply-add per kernel offset over all channels (group == channels, one
  output channel each), no column matrix. ``depthwise_nhwc`` does the same channels-last (the input
  copied into a channels-last padded buffer, the result copied back): its inner loops run over the
  channels, which wins when the images are small and the channels many.

Bias, residual and activation are applied in place in the output buffer, in the reference order
(bias, residual, activation), so results agree with the reference kernel to float32 round-off.
Weights are laid out (and rounded for emulated half precisions) once, at build.
"""

from __future__ import annotations

import numpy as np

from ...ops.geometry import conv_geometry, window_attrs
from ..reference import KernelError
from ..reference.conv import windows
from ._common import F32, Buffers, activate_inplace, is_f32

try:
    from . import _native
except ImportError:  # pragma: no cover - depends on the install
    _native = None


def geometry(x_shape, w_shape, attrs):
    nd = len(x_shape) - 2
    kernel = list(attrs.get("kernel_shape") or w_shape[2:])
    strides, dilations, pads = window_attrs(attrs, nd)
    begin, end, out = conv_geometry(x_shape[2:], kernel, strides, dilations, pads, attrs.get("auto_pad", "NOTSET"))
    return kernel, strides, dilations, begin, end, out


def supports(layer, constants) -> str | None:
    specs = layer.aligned_input_specs()
    if not all(is_f32(s) for s in specs[:2]) or not is_f32(layer.output_specs[0]):
        return "float32 tensors only"
    if not layer.inputs[1] or layer.inputs[1] not in constants:
        return "weights are not a constant"
    if specs[0] is None or specs[0].shape is None or len(specs[0].shape) not in (3, 4, 5):
        return "needs an input of known rank with 1-3 spatial dims"
    return None  # symbolic dims are fine: the kernel plans its buffers per input shape


class ConvKernel:
    """One layer's convolution; ``variant`` is "gemm", "depthwise" or "depthwise_nhwc"."""

    def __init__(self, layer, constants, config: dict, round_, reuse: bool):
        self.attrs = layer.attrs
        self.variant = config.get("variant", "gemm")
        self.by_offsets = config.get("im2col", "copy") == "offsets"
        self.by_native = config.get("im2col", "copy") == "native" and _native is not None
        variant = self.variant
        self.rounded = round_ is not None
        self.bufs = Buffers(reuse)
        w = np.asarray(constants[layer.inputs[1]], F32)
        self.group = int(layer.attrs.get("group", 1))
        self.m = w.shape[0]
        self.w_shape = w.shape
        b_name = layer.inputs[2] if len(layer.inputs) > 2 else ""
        self.bias_const = b_name in constants if b_name else False
        bias = np.asarray(constants[b_name], F32) if self.bias_const else None
        nd = w.ndim - 2
        if round_ is None:
            round_ = _identity
        self.round = round_
        if bias is not None:
            self.bias = round_(bias).reshape((self.m,) + (1,) * nd)
        else:
            self.bias = None
        wr = round_(w)
        if variant.startswith("depthwise"):
            k = int(np.prod(w.shape[2:]))
            # [kernel offset, channel, 1...]: one broadcast multiplier per offset (channels last: [offset, channel])
            wt = np.ascontiguousarray(wr.reshape(self.m, k).T)
            self.wk = wt if variant == "depthwise_nhwc" else wt.reshape((k, self.m) + (1,) * nd)
        else:
            g = self.group
            self.w3 = np.ascontiguousarray(wr.reshape(g, self.m // g, -1))
        self.has_bias_input = bool(b_name)
        self.shape = None

    def __call__(self, ctx, inputs, attrs):
        rnd = self.round
        x = rnd(inputs[0])
        if x.dtype != F32:
            x = x.astype(F32)
        if x.shape != self.shape or not self.bufs.reuse:
            self._plan(x.shape)
        bias = self.bias
        if bias is None and self.has_bias_input and inputs[2] is not None:
            bias = rnd(np.asarray(inputs[2], F32)).reshape((self.m,) + (1,) * (x.ndim - 2))
        z = inputs[3] if len(inputs) > 3 else None
        y = self.y
        if self.variant == "depthwise_nhwc":
            np.copyto(self.interior, x.transpose(self.to_last))
            acc, tmp = self.acc, self.tmp
            for i, (src, w) in enumerate(self.taps):
                if i == 0:
                    np.multiply(src, w, out=acc)
                else:
                    np.multiply(src, w, out=tmp)
                    acc += tmp
            np.copyto(y, acc.transpose(self.to_first))
        elif self.variant == "depthwise":
            np.copyto(self.interior, x)
            first = True
            for src, w in self.taps:
                if first:
                    np.multiply(src, w, out=y)
                    first = False
                else:
                    np.multiply(src, w, out=self.tmp)
                    y += self.tmp
        else:
            if self.native_args is not None:
                _native.im2col(np.ascontiguousarray(x), self.cols6, *self.native_args)
            if self.interior is not None:
                np.copyto(self.interior, x)
            for dst, src in self.copies:
                np.copyto(dst, src)
            # one call for every image and group (NumPy loops over them in C), as the reference does;
            # a 1x1 / stride-1 / unpadded convolution reads the input itself as the column matrix
            cols = x.reshape(self.plain) if self.plain else self.cols
            np.matmul(self.w3, cols, out=self.y4)
        if bias is not None:
            y += bias
        if z is not None:
            y += rnd(z)
        activate_inplace(y, self.attrs, self.bufs)
        return [rnd(y) if self.rounded else y]

    def _plan(self, x_shape):
        """Buffers and the views every run copies and multiplies through, made once per input shape
        (the padded input lives in a kept buffer, so its receptive-field views can be kept too)."""
        kernel, strides, dil, begin, end, out_sp = geometry(x_shape, self.w_shape, self.attrs)
        for i, o in enumerate(out_sp):
            if o <= 0:
                raise KernelError(f"convolution output dim {i} would be {o} (input {x_shape[2 + i]}, kernel {kernel[i]})")
        n, c = x_shape[:2]
        nd = len(kernel)
        self.y = self.bufs.get("y", (n, self.m) + tuple(out_sp))
        k = int(np.prod(kernel))
        p = int(np.prod(out_sp))
        padded = any(begin) or any(end)
        self.plain = None
        self.interior = None
        self.native_args = None
        self.copies, self.taps = [], []
        g = self.group
        mg, ck = self.m // g, (c // g) * k
        self.y4 = self.y.reshape(n, g, mg, p)
        if self.variant == "gemm" and k == 1 and all(s == 1 for s in strides) and not padded:
            self.plain = (n, g, ck, p)
            self.shape = tuple(x_shape)
            return
        if self.variant == "depthwise_nhwc":
            self.to_last = (0,) + tuple(range(2, 2 + nd)) + (1,)
            self.to_first = (0, nd + 1) + tuple(range(1, nd + 1))
            xl = self.bufs.get("xl", (n,) + tuple(s + b + e for s, b, e in zip(x_shape[2:], begin, end)) + (c,), zero=True)
            self.interior = xl[(slice(None),) + tuple(slice(b, b + s) for b, s in zip(begin, x_shape[2:]))]
            self.acc = self.bufs.get("acc", (n,) + tuple(out_sp) + (c,))
            self.tmp = self.bufs.get("tmp", self.acc.shape)
            self.taps = [(xl[(slice(None),) + tuple(
                slice(kk[i] * dil[i], kk[i] * dil[i] + (out_sp[i] - 1) * strides[i] + 1, strides[i]) for i in range(nd))],
                self.wk[j]) for j, kk in enumerate(np.ndindex(*kernel))]
            self.shape = tuple(x_shape)
            return
        if self.variant == "gemm" and self.by_native and nd == 2:
            self.cols6 = self.bufs.get("cols", (n, c) + tuple(kernel) + tuple(out_sp))
            self.native_args = (kernel[0], kernel[1], strides[0], strides[1], begin[0], begin[1], dil[0], dil[1])
            self.cols = self.cols6.reshape(n, g, ck, p)
            self.shape = tuple(x_shape)
            return
        xp = self.bufs.get("xp", (n, c) + tuple(s + b + e for s, b, e in zip(x_shape[2:], begin, end)), zero=True)
        self.interior = xp[(slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(begin, x_shape[2:]))]
        offsets = list(zip(np.ndindex(*kernel), self._offsets(kernel, strides, dil, out_sp)))
        if self.variant == "depthwise":
            self.tmp = self.bufs.get("tmp", self.y.shape)
            self.taps = [(xp[sl], self.wk[i]) for i, (_, sl) in enumerate(offsets)]
        else:
            cols6 = self.bufs.get("cols", (n, c) + tuple(kernel) + tuple(out_sp))
            if self.by_offsets:
                self.copies = [(cols6[(slice(None), slice(None)) + kk], xp[sl]) for kk, sl in offsets]
            else:
                v = windows(xp, kernel, strides, dil, out_sp)  # [N, C, *out, *kernel], no copy
                order = (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd))
                self.copies = [(cols6, v.transpose(order))]
            self.cols = cols6.reshape(n, g, ck, p)
        self.shape = tuple(x_shape)

    def _offsets(self, kernel, strides, dil, out_sp):
        nd = len(kernel)
        for kk in np.ndindex(*kernel):
            yield (slice(None), slice(None)) + tuple(
                slice(kk[i] * dil[i], kk[i] * dil[i] + (out_sp[i] - 1) * strides[i] + 1, strides[i]) for i in range(nd))


def _identity(x):
    return x
