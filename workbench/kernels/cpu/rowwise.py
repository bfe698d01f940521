"""Fast CPU row-wise layers (float32): LayerNorm, SkipLayerNorm, Softmax (opset >= 13) and
Attention, each writing into buffers kept between runs with every step in place.

They compute the reference formulas step for step (mean, centred values, variance of the centred
values, division by the root; softmax's max shift, exp, division by the sum) so they agree with
the reference kernels to float32 round-off.
"""

from __future__ import annotations

import numpy as np

from ...ops.fused import qkv_operands
from ..reference.fused import to_bhsd
from ._common import F32, Buffers

OPS = (("workbench", "LayerNorm"), ("workbench", "SkipLayerNorm"), ("", "Softmax"), ("workbench", "Attention"))


def supports(layer, constants, native: bool = False) -> str | None:
    """None if these kernels run ``layer``, else the reason (``native``: for the native kernels,
    which also take a finite causal fill and channels-first LayerNorm)."""
    specs = [s for s in layer.aligned_input_specs() if s is not None]
    if layer.op == "Attention":
        mask = layer.aligned_input_specs()[3] if len(layer.inputs) > 3 else None
        specs = [s for s in specs if s is not mask]
        if layer.attrs.get("mask_kind", "") not in ("", "additive", "boolean"):
            return "unknown mask kind"
        fill = layer.attrs.get("causal_fill")
        if layer.attrs.get("causal", 0) and fill is not None and np.isfinite(fill) and not native:
            return "a finite causal fill is left to the reference kernel"
    if not all(s.dtype == "float32" for s in specs) or not all(s.dtype == "float32" for s in layer.output_specs):
        return "float32 tensors only"
    if layer.op == "LayerNorm" and layer.attrs.get("channels_first", 0) and not native:
        return "channels-first LayerNorm is left to the reference kernel"
    if layer.op == "Softmax" and layer.opset < 13:
        return "opset < 13 Softmax (2-D coercion) is left to the reference kernel"
    return None


def build(layer, rnd, reuse: bool):
    return {"LayerNorm": _LayerNorm, "SkipLayerNorm": _SkipLayerNorm, "Softmax": _Softmax,
            "Attention": _Attention}[layer.op](layer, rnd, reuse)


def _layer_norm_into(x, y, sq, axes, eps, scale, bias):
    """The reference layer_norm of ``x`` written into ``y`` (``sq``: a scratch buffer like ``x``)."""
    count = F32.type(np.prod([x.shape[a] for a in axes]))
    mean = np.add.reduce(x, axis=axes, keepdims=True)  # x.mean without its Python wrapper
    mean /= count
    np.subtract(x, mean, out=y)
    np.multiply(y, y, out=sq)
    var = np.add.reduce(sq, axis=axes, keepdims=True)
    var /= count
    var += F32.type(eps)
    np.sqrt(var, out=var)
    y /= var
    if scale is not None:
        y *= scale
    if bias is not None:
        y += bias


class _Row:
    def __init__(self, layer, rnd, reuse):
        self.attrs = layer.attrs
        self.rnd = rnd
        self.bufs = Buffers(reuse)

    def _in(self, x):
        if x is None:
            return None
        return self.rnd(x) if self.rnd else x

    def _out(self, outs):
        return [self.rnd(o) for o in outs] if self.rnd else outs


class _LayerNorm(_Row):
    def __call__(self, ctx, inputs, attrs):
        x, scale = self._in(inputs[0]), self._in(inputs[1])
        bias = self._in(inputs[2]) if len(inputs) > 2 else None
        axis = self.attrs.get("axis", -1)
        axis = axis + x.ndim if axis < 0 else axis
        y, sq = self.bufs.get("y", x.shape), self.bufs.get("sq", x.shape)
        _layer_norm_into(x, y, sq, tuple(range(axis, x.ndim)), self.attrs.get("epsilon", 1e-5), scale, bias)
        return self._out([y])


class _SkipLayerNorm(_Row):
    def __call__(self, ctx, inputs, attrs):
        x, skip, scale = self._in(inputs[0]), self._in(inputs[1]), self._in(inputs[2])
        bias = self._in(inputs[3]) if len(inputs) > 3 else None
        add_bias = self._in(inputs[4]) if len(inputs) > 4 else None
        shape = np.broadcast_shapes(x.shape, skip.shape)
        s = self.bufs.get("s", shape)
        np.add(x, skip, out=s)
        if add_bias is not None:
            s += add_bias
        y, sq = self.bufs.get("y", shape), self.bufs.get("sq", shape)
        _layer_norm_into(s, y, sq, (len(shape) - 1,), self.attrs.get("epsilon", 1e-5), scale, bias)
        return self._out([y, s])


def _softmax_inplace(e):
    m = np.max(e, axis=-1, keepdims=True)
    m[~np.isfinite(m)] = 0
    e -= m
    np.exp(e, out=e)
    e /= np.sum(e, axis=-1, keepdims=True)


class _Softmax(_Row):
    def __call__(self, ctx, inputs, attrs):
        x = self._in(inputs[0])
        axis = self.attrs.get("axis", -1)
        axis = axis + x.ndim if axis < 0 else axis
        e = self.bufs.get("y", x.shape)
        if axis == x.ndim - 1:
            np.copyto(e, x)
            with np.errstate(all="ignore"):
                _softmax_inplace(e)
            return self._out([e])
        t = np.ascontiguousarray(np.moveaxis(x, axis, -1))
        with np.errstate(all="ignore"):
            _softmax_inplace(t)
        np.copyto(e, np.moveaxis(t, -1, axis))
        return self._out([e])


def qkv_bhsd(attrs: dict, inputs, prepare) -> tuple:
    """Q, K, V as [batch, heads, seq, head_dim] views from the layouts the fusion left them in
    (``prepare``: what to do to each input first)."""
    heads = attrs.get("num_heads", 0)
    kv_heads = attrs.get("kv_heads", 0) or heads
    q, k, v = qkv_operands(inputs, attrs)
    return (to_bhsd(prepare(q), attrs.get("q_layout", "bhsd"), heads),
            to_bhsd(prepare(k), attrs.get("k_layout", "bhsd"), kv_heads),
            to_bhsd(prepare(v), attrs.get("v_layout", "bhsd"), kv_heads))


class _Attention(_Row):
    def __call__(self, ctx, inputs, attrs):
        a = self.attrs
        q, k, v = qkv_bhsd(a, inputs, self._in)
        mask = self._in(inputs[3]) if len(inputs) > 3 else None
        if k.shape[1] != q.shape[1]:  # GQA: each K/V head serves a block of consecutive query heads
            rep = q.shape[1] // k.shape[1]
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        sq = q.shape[2]
        sk = k.shape[2]
        s = self.bufs.get("scores", np.broadcast_shapes(q.shape[:2], k.shape[:2]) + (sq, sk))
        np.matmul(q, np.swapaxes(k, -1, -2), out=s)
        scale = a.get("scale", 1.0)
        if scale != 1.0:
            s *= F32.type(scale)
        kind = a.get("mask_kind", "")
        with np.errstate(all="ignore"):
            if mask is not None and kind == "additive":
                s += mask
            elif mask is not None and kind == "boolean":
                np.copyto(s, F32.type(-np.inf), where=~np.broadcast_to(mask, s.shape))
            if a.get("causal", 0):
                np.copyto(s, F32.type(-np.inf), where=~np.tril(np.ones((sq, sk), dtype=bool), sk - sq))
            _softmax_inplace(s)
        if a.get("nan_to_zero", 0):
            s[np.isnan(s)] = 0
        layout = a.get("out_layout", "bhsd")
        d = v.shape[-1]
        if layout == "bhsd":
            o = self.bufs.get("o", s.shape[:2] + (sq, d))
            np.matmul(s, v, out=o)
            return self._out([o])
        o = self.bufs.get("o", (s.shape[0], sq, s.shape[1], d))
        np.matmul(s, v, out=o.transpose(0, 2, 1, 3))
        if layout == "bsd":
            o = o.reshape(o.shape[0], sq, -1)
        return self._out([o])
