"""Native CPU tactics: whole layers in one C call (``_native.c``), for the layers whose NumPy
kernels are a dozen ufunc calls of fixed cost each.

* ``cpu.native.conv``: 2-D Conv / FusedConv (groups, strides, dilations, pads; bias, residual and
  ReLU / Clip epilogues) as a direct convolution, configs ``nchw``, ``c8`` (depthwise layers, in
  blocks of 8 channels) and ``blocked`` (stride 1 along W: 4 output channels x 8 columns accumulated in
  registers, no im2col matrix) and ``winograd`` (3x3, stride 1: Winograd F(2x2, 3x3), native
  transforms around one batched BLAS multiply, 2.25x fewer multiplications). It wins on depthwise and small convolutions, where im2col and a BLAS
  call cost more than the arithmetic; BLAS wins on large ones. The CPU target times both.
* ``cpu.native.rowwise``: LayerNorm / SkipLayerNorm over the last axis (LayerNorm also across
  channels), RMSNorm, LRN, Softmax over the last axis, Attention (any Q / K / V / output layout, additive or boolean mask, causal, grouped K/V).
* ``cpu.native.pool``: 2-D MaxPool (values) / AveragePool, GlobalAveragePool / GlobalMaxPool.

Like the fast NumPy tactics they write into buffers kept between runs and emulate fp16 / bf16 by
rounding inputs and outputs (weights at build). Where the extension was not built (no C compiler
at install), ``supports`` says so and the target picks another tactic; an engine that recorded a
native tactic still loads there, each layer bound to the NumPy kernel of the same op.
"""

from __future__ import annotations

import math

import numpy as np

from ...core.plan import Layer
from ...ops.geometry import window_attrs
from ..reference import KernelError
from ..reference.pool import _count, pool_geometry
from . import conv as np_conv
from . import pool as np_pool
from . import rowwise as np_rowwise
from ._common import F32, Buffers, is_f32

try:
    from . import _native
    MISSING: str | None = None
except ImportError as _exc:  # pragma: no cover - depends on the install
    _native = None
    MISSING = f"native CPU kernels are not built ({_exc}; reinstall with a C compiler)"

_ACTS = {"": 0, "Relu": 1, "Clip": 2}
_PRECISIONS = ("fp32", "fp16", "bf16")


def _conv_supports(layer: Layer, constants: dict) -> str | None:
    reason = np_conv.supports(layer, constants)
    if reason:
        return reason
    specs = layer.aligned_input_specs()
    if len(specs[0].shape) != 4:
        return "2-D convolutions only"
    if layer.attrs.get("activation", "") not in _ACTS:
        return f"epilogue {layer.attrs.get('activation')!r} is left to the BLAS tactic"
    if len(specs) > 3 and specs[3] is not None:
        out = layer.output_specs[0]
        if not is_f32(specs[3]) or specs[3].shape is None or out.shape is None or list(specs[3].shape) != list(out.shape):
            return "a residual that broadcasts is left to the BLAS tactic"
    if len(specs) > 2 and specs[2] is not None and not is_f32(specs[2]):
        return "float32 bias only"
    return None


def _rowwise_supports(layer: Layer, constants: dict) -> str | None:
    if layer.op == "LRN":
        x, y = layer.input_specs[0], layer.output_specs[0]
        if not (is_f32(x) and is_f32(y)):
            return "float32 tensors only"
        if x.shape is not None and len(x.shape) < 2:
            return "LRN needs batch and channel dims"
        if int(layer.attrs.get("size", 0) or 0) < 1:
            return "LRN without a positive size"
        return None
    if layer.op == "RMSNorm":
        specs = [x for x in layer.aligned_input_specs() if x is not None]
        if not all(is_f32(x) for x in specs + list(layer.output_specs)):
            return "float32 tensors only"
        return None
    reason = np_rowwise.supports(layer, constants, native=True)
    if reason:
        return reason
    if layer.op == "Softmax" and layer.attrs.get("axis", -1) not in (-1, len(layer.input_specs[0].shape or ()) - 1):
        return "softmax over the last axis only"
    if layer.op == "Attention" and len(layer.inputs) > 3 and layer.inputs[3]:
        mask = layer.aligned_input_specs()[3]
        kind = layer.attrs.get("mask_kind", "")
        if mask is None or (kind == "boolean" and mask.dtype != "bool") or (kind == "additive" and mask.dtype != "float32"):
            return "boolean masks of bool and additive masks of float32 only"
    return None


def _pool_supports(layer: Layer, constants: dict) -> str | None:
    reason = np_pool.supports(layer, constants)
    if reason:
        return reason
    if not layer.op.startswith("Global") and len(layer.aligned_input_specs()[0].shape) != 4:
        return "2-D pooling only"
    return None


# Winograd's transforms cost O(C * tiles) against the multiply's O(M * C * tiles): measured on 2
# cores, a 64-channel 224x224 layer lost to im2col + GEMM (53 vs 46 ms) and a 128-channel 112x112
# one won (29 vs 38 ms), so narrower layers are not offered it (their larger rounding differences
# buy nothing there either)
_WINOGRAD_MIN_CHANNELS = 128


def _winograd_ok(layer: Layer, w) -> bool:
    """A 3x3, stride-1, undilated, ungrouped 2-D convolution with explicit symmetric pads, at least
    ``_WINOGRAD_MIN_CHANNELS`` wide in input and output."""
    a = layer.attrs
    strides, dilations, pads = window_attrs(a, 2)
    return (w is not None and w.shape is not None and len(w.shape) == 4 and list(w.shape[2:]) == [3, 3]
            and min(w.shape[0], w.shape[1]) >= _WINOGRAD_MIN_CHANNELS
            and int(a.get("group", 1)) == 1 and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and list(strides) == [1, 1] and list(dilations) == [1, 1]
            and pads[0] == pads[2] and pads[1] == pads[3] and min(pads) >= 0)


class NativeTactic:
    source = "cpu"

    def __init__(self, name: str, ops: tuple, supports):
        self.name = name
        self.ops = ops
        self._supports = supports

    def supports(self, layer: Layer, precision: str, constants=None) -> str | None:
        if (layer.domain if layer.domain != "ai.onnx" else "", layer.op) not in self.ops:
            return f"does not run {layer.op}"
        if MISSING:
            return MISSING
        if precision not in _PRECISIONS:
            return f"runs {', '.join(_PRECISIONS)} layers only"
        return self._supports(layer, constants or {})

    def configs(self, layer: Layer, precision: str) -> list[dict]:
        if self.name != "cpu.native.conv":
            return [{}]
        w = layer.aligned_input_specs()[1]
        group = int(layer.attrs.get("group", 1))
        depthwise = w.shape is not None and group > 1 and w.shape[0] == group and w.shape[1] == 1
        strides = window_attrs(layer.attrs, 2)[0]
        return ([{"layout": "nchw"}] + ([{"layout": "c8"}] if depthwise else [])
                + ([{"layout": "blocked"}] if strides[1] == 1 and not depthwise else [])
                + ([{"layout": "winograd"}] if _winograd_ok(layer, w) else []))

    def build(self, layer: Layer, precision: str, config: dict, constants=None, reuse: bool = True):
        from . import _storage  # the package's rounding rule for emulated precisions
        from ._common import rounder

        constants = constants or {}
        rnd = rounder(_storage(precision))
        if self.name == "cpu.native.conv":
            if _native is None:
                return np_conv.ConvKernel(layer, constants, {"variant": "gemm", "im2col": "copy"}, rnd, reuse)
            if config.get("layout") == "winograd":
                return NativeWinograd(layer, constants, rnd, reuse)
            return NativeConv(layer, constants, rnd, reuse, config.get("layout", "nchw"))
        if self.name == "cpu.native.pool":
            return np_pool.PoolKernel(layer, rnd, reuse) if _native is None else NativePool(layer, rnd, reuse)
        if _native is None:
            if layer.op in ("RMSNorm", "LRN"):
                return _reference_kernel(layer, rnd)
            return np_rowwise.build(layer, rnd, reuse)
        return {"LayerNorm": _LayerNorm, "SkipLayerNorm": _SkipLayerNorm, "Softmax": _Softmax,
                "Attention": _Attention, "RMSNorm": _RMSNorm, "LRN": _LRN}[layer.op](layer, rnd, reuse)

    def __repr__(self) -> str:
        return f"<CPU tactic {self.name}>"


def _c32(x):
    """``x`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(x, dtype=F32)


class _ConvEpilogue:
    """What the native convolutions share: the constant bias, the epilogue's activation code and
    clamps, and the per-run operands (input, bias, residual) as C-contiguous float32."""

    def _setup(self, layer, constants, rnd, reuse: bool):
        self.attrs = layer.attrs
        self.round = rnd
        self.bufs = Buffers(reuse)
        b_name = layer.inputs[2] if len(layer.inputs) > 2 else ""
        self.bias = None
        if b_name and b_name in constants:
            b = np.asarray(constants[b_name], F32)
            self.bias = _c32(rnd(b) if rnd else b).reshape(-1)
        self.bias_input = bool(b_name) and self.bias is None
        self.act = _ACTS[layer.attrs.get("activation", "")]
        lo, hi = layer.attrs.get("act_min"), layer.attrs.get("act_max")
        self.lo = -np.inf if lo is None else float(lo)
        self.hi = np.inf if hi is None else float(hi)
        self.shape = None

    def _operands(self, inputs) -> tuple:
        """(x, bias, residual) for this run; plans the buffers when the input shape changes."""
        rnd = self.round
        x = _c32(rnd(inputs[0]) if rnd else inputs[0])
        if x.shape != self.shape or not self.bufs.reuse:
            self._plan(x.shape)
        bias = self.bias
        if self.bias_input and inputs[2] is not None:
            bias = _c32(rnd(inputs[2]) if rnd else inputs[2]).reshape(-1)
        z = inputs[3] if len(inputs) > 3 else None
        if z is not None:
            z = _c32(rnd(z) if rnd else z)
        return x, bias, z


class NativeConv(_ConvEpilogue):
    """``layout`` "nchw": ``conv2d``; "c8" (depthwise only): ``depthwise_c8``, weights [C/8, R, S, 8];
    "blocked" (stride 1 along W): ``conv2d_blocked``, weights [group, C/group, R, S, M/group]."""

    def __init__(self, layer, constants, rnd, reuse: bool, layout: str = "nchw"):
        self._setup(layer, constants, rnd, reuse)
        w = np.asarray(constants[layer.inputs[1]], F32)
        w = _c32(rnd(w) if rnd else w)
        self.w_shape = w.shape
        self.group = int(layer.attrs.get("group", 1))
        if layout == "c8":  # [C/8, R, S, 8], channels past C zero
            if w.shape[1] != 1 or w.shape[0] != self.group:
                raise KernelError("the 8-channel-block native convolution is for depthwise layers")
            c = w.shape[0]
            padded = np.zeros(((c + 7) // 8 * 8,) + w.shape[2:], F32)
            padded[:c] = w[:, 0]
            self.w = np.ascontiguousarray(padded.reshape((-1, 8) + w.shape[2:]).transpose(0, 2, 3, 1))
            self.call = _native.depthwise_c8
        elif layout == "blocked":  # [group, C/group, R, S, M/group]
            g = self.group
            self.w = np.ascontiguousarray(w.reshape((g, w.shape[0] // g) + w.shape[1:]).transpose(0, 2, 3, 4, 1))
            self.call = _native.conv2d_blocked
        else:
            self.w = w
            self.call = _native.conv2d

    def _plan(self, x_shape):
        kernel, strides, dil, begin, _end, out = np_conv.geometry(x_shape, self.w_shape, self.attrs)
        for i, o in enumerate(out):
            if o <= 0:
                raise KernelError(f"convolution output dim {i} would be {o} (input {x_shape[2 + i]}, kernel {kernel[i]})")
        self.y = self.bufs.get("y", (x_shape[0], self.w_shape[0]) + tuple(out))
        self.geo = (strides[0], strides[1], begin[0], begin[1], dil[0], dil[1], self.group, self.act, self.lo, self.hi)
        self.shape = tuple(x_shape)

    def __call__(self, ctx, inputs, attrs):
        x, bias, z = self._operands(inputs)
        self.call(x, self.w, bias, z, self.y, *self.geo)
        return [self.round(self.y) if self.round else self.y]


# F(2x2, 3x3)'s weight transform: U = G g G^T
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


class NativeWinograd(_ConvEpilogue):
    """A 3x3 stride-1 convolution as Winograd F(2x2, 3x3): native input / output transforms around
    one batched BLAS multiply of the 16 transformed weight matrices (made at build)."""

    def __init__(self, layer, constants, rnd, reuse: bool):
        self._setup(layer, constants, rnd, reuse)
        w = np.asarray(constants[layer.inputs[1]], F32)
        w = rnd(w) if rnd else w
        m, c = w.shape[:2]
        self.u = np.ascontiguousarray(np.einsum("ij,mcjk,lk->ilmc", _G, w.astype(np.float64), _G)
                                      .reshape(16, m, c).astype(F32))
        pads = window_attrs(layer.attrs, 2)[2]
        self.pt, self.pl = int(pads[0]), int(pads[1])

    def _plan(self, x_shape):
        n, c, h, w = x_shape
        oh, ow = h + 2 * self.pt - 2, w + 2 * self.pl - 2
        if oh <= 0 or ow <= 0:
            raise KernelError(f"convolution output would be {oh}x{ow} (input {h}x{w}, kernel 3x3)")
        tiles = n * ((oh + 1) // 2) * ((ow + 1) // 2)
        m = self.u.shape[1]
        self.v = self.bufs.get("v", (16, c, tiles))
        self.mm = self.bufs.get("m", (16, m, tiles))
        self.y = self.bufs.get("y", (n, m, oh, ow))
        self.shape = tuple(x_shape)

    def __call__(self, ctx, inputs, attrs):
        x, bias, z = self._operands(inputs)
        _native.winograd_in(x, self.v, self.pt, self.pl)
        np.matmul(self.u, self.v, out=self.mm)
        _native.winograd_out(self.mm, self.y, bias, z, self.act, self.lo, self.hi)
        return [self.round(self.y) if self.round else self.y]


class NativePool:
    def __init__(self, layer, rnd, reuse: bool):
        self.op = layer.op
        self.attrs = layer.attrs
        self.round = rnd
        self.bufs = Buffers(reuse)
        self.shape = None

    def _plan(self, shape):
        if self.op.startswith("Global"):
            self.y = self.bufs.get("y", shape[:2] + (1,) * (len(shape) - 2))
            self.args = (1 if self.op == "GlobalAveragePool" else 0,)
        else:
            geo = pool_geometry(np_pool._Shape(shape), self.attrs)
            kernel, strides, dil, begin, _end, _extra, out = geo
            if any(o <= 0 for o in out):
                raise KernelError(f"pooling output {list(out)} is empty (input {list(shape)})")
            self.y = self.bufs.get("y", tuple(shape[:2]) + tuple(out))
            count = None
            if self.op == "AveragePool":
                count = _c32(_count(np_pool._Shape(shape), self.attrs, geo, self.attrs.get("count_include_pad", 0)))
            self.args = (0 if self.op == "MaxPool" else 1, kernel[0], kernel[1], strides[0], strides[1],
                         begin[0], begin[1], dil[0], dil[1], count)
        self.shape = tuple(shape)

    def __call__(self, ctx, inputs, attrs):
        x = inputs[0]
        x = _c32(self.round(x) if self.round else x)
        if x.shape != self.shape or not self.bufs.reuse:
            self._plan(x.shape)
        if len(self.args) == 1:
            _native.global_pool(x, self.y, self.args[0])
        else:
            _native.pool2d(x, self.y, *self.args)
        return [self.round(self.y) if self.round else self.y]


class _Row:
    def __init__(self, layer, rnd, reuse):
        self.attrs = layer.attrs
        self.rnd = rnd
        self.bufs = Buffers(reuse)
        self.fallback = np_rowwise.build(layer, rnd, reuse)  # for shapes the C kernel does not take

    def _in(self, x):
        if x is None:
            return None
        return _c32(self.rnd(x) if self.rnd else x)

    def _in_strided(self, x):
        """As ``_in`` without the copy to contiguous memory (the C kernel reads any strides)."""
        x = self.rnd(x) if self.rnd else x
        return x if x.dtype == F32 else x.astype(F32)

    def _out(self, outs):
        return [self.rnd(o) for o in outs] if self.rnd else outs


def _vector(p, cols):
    """A scale / bias as a flat vector of ``cols`` values, or None if it is not one."""
    return p.reshape(-1) if p is not None and p.size == cols else None


class _LayerNorm(_Row):
    def __call__(self, ctx, inputs, attrs):
        if self.attrs.get("channels_first", 0):
            return self._channels_first(ctx, inputs, attrs)
        x = self._in(inputs[0])
        axis = self.attrs.get("axis", -1)
        axis = axis + x.ndim if axis < 0 else axis
        cols = math.prod(x.shape[axis:])
        scale = self._in(inputs[1])
        bias = self._in(inputs[2]) if len(inputs) > 2 else None
        sv, bv = _vector(scale, cols), _vector(bias, cols)
        if cols < 1 or (scale is not None and sv is None) or (bias is not None and bv is None):
            return self.fallback(ctx, inputs, attrs)
        y = self.bufs.get("y", x.shape)
        _native.layer_norm(x, y, sv, bv, float(self.attrs.get("epsilon", 1e-5)), None, None, None)
        return self._out([y])


    def _channels_first(self, ctx, inputs, attrs):
        x = self._in(inputs[0])
        scale = self._in(inputs[1])
        bias = self._in(inputs[2]) if len(inputs) > 2 else None
        c = x.shape[1] if x.ndim >= 2 else 0
        sv, bv = _vector(scale, c), _vector(bias, c)
        if c < 1 or (scale is not None and sv is None) or (bias is not None and bv is None):
            return self.fallback(ctx, inputs, attrs)
        y = self.bufs.get("y", x.shape)
        _native.layer_norm_cf(x, y, sv, bv, float(self.attrs.get("epsilon", 1e-5)))
        return self._out([y])


class _RMSNorm(_Row):
    def __init__(self, layer, rnd, reuse):
        self.attrs = layer.attrs
        self.rnd = rnd
        self.bufs = Buffers(reuse)
        self.fallback = _reference_kernel(layer, rnd)

    def __call__(self, ctx, inputs, attrs):
        x = self._in(inputs[0])
        axis = self.attrs.get("axis", -1)
        axis = axis + x.ndim if axis < 0 else axis
        cols = math.prod(x.shape[axis:])
        scale = self._in(inputs[1]) if len(inputs) > 1 else None
        sv = _vector(scale, cols)
        if cols < 1 or (scale is not None and sv is None):
            return self.fallback(ctx, inputs, attrs)
        y = self.bufs.get("y", x.shape)
        _native.rms_norm(x, y, sv, float(self.attrs.get("epsilon", 1e-6)), cols)
        return self._out([y])


class _LRN(_RMSNorm):
    """LRN across channels in one native call (``_native.lrn``)."""

    def __call__(self, ctx, inputs, attrs):
        x = self._in(inputs[0])
        if x.ndim < 2:
            return self.fallback(ctx, inputs, attrs)
        a = self.attrs
        y = self.bufs.get("y", x.shape)
        _native.lrn(x, y, int(a["size"]), float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0)))
        return self._out([y])


def _reference_kernel(layer, rnd):
    """The reference kernel of ``layer``, its float32 inputs and outputs rounded by ``rnd``."""
    from ..reference import get_kernel
    from . import _rounded

    return _rounded(get_kernel(layer.domain, layer.op), rnd)


class _SkipLayerNorm(_Row):
    def __call__(self, ctx, inputs, attrs):
        x, skip = self._in(inputs[0]), self._in(inputs[1])
        cols = x.shape[-1] if x.ndim else 1
        scale = self._in(inputs[2])
        bias = self._in(inputs[3]) if len(inputs) > 3 else None
        add_bias = self._in(inputs[4]) if len(inputs) > 4 else None
        sv, bv, av = _vector(scale, cols), _vector(bias, cols), _vector(add_bias, cols)
        if (skip.shape != x.shape or cols < 1 or sv is None or (bias is not None and bv is None)
                or (add_bias is not None and av is None)):
            return self.fallback(ctx, inputs, attrs)
        y, s = self.bufs.get("y", x.shape), self.bufs.get("s", x.shape)
        _native.layer_norm(x, y, sv, bv, float(self.attrs.get("epsilon", 1e-5)), skip, av, s)
        return self._out([y, s])


class _Softmax(_Row):
    def __call__(self, ctx, inputs, attrs):
        x = inputs[0]
        if x.ndim == 0 or x.shape[-1] == 0:
            return self.fallback(ctx, inputs, attrs)
        e = self.bufs.get("y", x.shape)
        np.copyto(e, self.rnd(x) if self.rnd else x)
        _native.softmax(e)
        return self._out([e])


class _Attention(_Row):
    def __call__(self, ctx, inputs, attrs):
        a = self.attrs
        q, k, v = np_rowwise.qkv_bhsd(a, inputs, self._in_strided)
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or k.shape[1] == 0 or q.shape[1] % k.shape[1]:
            return self.fallback(ctx, inputs, attrs)
        b, h, sq, d = q.shape
        sk = k.shape[2]
        kind = {"": 0, "additive": 1, "boolean": 2}[a.get("mask_kind", "")]
        mask = inputs[3] if len(inputs) > 3 else None
        if mask is None:
            kind = 0
        else:
            if kind == 1:
                mask = self._in_strided(mask)
            try:
                mask = np.broadcast_to(mask, (b, h, sq, sk))
            except ValueError:
                return self.fallback(ctx, inputs, attrs)
        layout = a.get("out_layout", "bhsd")
        if layout == "bhsd":
            o = self.bufs.get("o", (b, h, sq, d))
            view = o
        else:
            o = self.bufs.get("o", (b, sq, h, d))
            view = o.transpose(0, 2, 1, 3)
        fill = a.get("causal_fill")
        _native.attention(q, k, v, mask if kind else None, view, float(a.get("scale", 1.0)), kind,
                          int(bool(a.get("causal", 0))), int(bool(a.get("nan_to_zero", 0))),
                          -np.inf if fill is None else float(fill))
        if layout == "bsd":
            o = o.reshape(b, sq, h * d)
        return self._out([o])


TACTICS = [
    NativeTactic("cpu.native.conv", (("", "Conv"), ("workbench", "FusedConv")), _conv_supports),
    NativeTactic("cpu.native.rowwise", np_rowwise.OPS + (("workbench", "RMSNorm"), ("", "LRN")), _rowwise_supports),
    NativeTactic("cpu.native.pool", np_pool.OPS, _pool_supports),
]
