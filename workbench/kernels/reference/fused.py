"""Reference kernels: fused ops of the workbench domain (see passes/FUSED_OPS.md).

Each kernel computes what the ONNX subgraph it replaced computed, in the same order of operations
where rounding could tell them apart (bias, then residual, then activation), so optimized and
unoptimized CPU engines agree to float32 round-off.
"""

from __future__ import annotations

import json

import numpy as np

from ._base import KernelContext, KernelError
from .activation import KERNELS as _ACT
from .activation import softmax
from .conv import conv_nd
from .elementwise import KERNELS as _ELEMENTWISE
from .linalg import acc_dtype, matmul
from .norm import _stat_dtype
from ...ops.fused import qkv_operands

DOMAIN = "workbench"


def activate(y: np.ndarray, attrs: dict) -> np.ndarray:
    """The epilogue activation named by ``attrs["activation"]`` (the vocabulary: ``ops.fused.ACTIVATIONS``)."""
    act = attrs.get("activation", "")
    if not act:
        return y
    if act == "Clip":
        lo, hi = attrs.get("act_min"), attrs.get("act_max")
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        return np.clip(y, np.asarray(lo, y.dtype), np.asarray(hi, y.dtype))
    if act == "Silu":
        return y * _ACT["Sigmoid"](KernelContext(), [y], {})[0]
    if act == "GeluTanh":
        return _ACT["Gelu"](KernelContext(), [y], {"approximate": "tanh"})[0]
    kernel = _ACT.get(act) or _ELEMENTWISE.get(act)
    if kernel is None:
        raise KernelError(f"unknown fused activation {act!r}")
    a = {}
    if "act_alpha" in attrs:
        a["alpha"] = attrs["act_alpha"]
    if "act_beta" in attrs:
        a["beta"] = attrs["act_beta"]
    return kernel(KernelContext(), [y], a)[0]


def _fused_conv(ctx, inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    z = inputs[3] if len(inputs) > 3 else None
    acc = acc_dtype(x.dtype)
    y = conv_nd(x.astype(acc, copy=False), w.astype(acc, copy=False), b, attrs).astype(x.dtype, copy=False)
    if z is not None:
        y = y + z
    return [np.asarray(activate(y, attrs), dtype=x.dtype)]


def _fused_gemm(ctx, inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = np.swapaxes(a, -1, -2)
    if attrs.get("transB", 0):
        b = np.swapaxes(b, -1, -2)
    y = matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if c is not None:
        y = y + (c * np.asarray(beta, c.dtype) if beta != 1.0 else c)
    return [np.asarray(activate(y, attrs), dtype=inputs[0].dtype)]


def _norm_axes(x, axis, channels_first):
    if channels_first:
        return (1,)
    axis = axis + x.ndim if axis < 0 else axis
    return tuple(range(axis, x.ndim))


def _affine(y, scale, bias, x, channels_first):
    shape = (1, -1) + (1,) * (x.ndim - 2) if channels_first else None
    if scale is not None:
        y = y * (scale.reshape(shape) if shape else scale)
    if bias is not None:
        y = y + (bias.reshape(shape) if shape else bias)
    return y


def layer_norm(x, scale, bias, axis=-1, epsilon=1e-5, channels_first=0):
    dt = _stat_dtype(x.dtype)
    xw = x.astype(dt, copy=False)
    axes = _norm_axes(x, axis, channels_first)
    mean = xw.mean(axis=axes, keepdims=True)
    d = xw - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    y = (d / np.sqrt(var + dt.type(epsilon))).astype(x.dtype)
    return _affine(y, scale, bias, x, channels_first).astype(x.dtype, copy=False)


def _layer_norm(ctx, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    return [layer_norm(x, scale, bias, attrs.get("axis", -1), attrs.get("epsilon", 1e-5), attrs.get("channels_first", 0))]


def _skip_layer_norm(ctx, inputs, attrs):
    x, skip, scale = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 else None
    add_bias = inputs[4] if len(inputs) > 4 else None
    s = x + skip
    if add_bias is not None:
        s = s + add_bias
    return [layer_norm(s, scale, bias, -1, attrs.get("epsilon", 1e-5)), s]


def _rms_norm(ctx, inputs, attrs):
    x = inputs[0]
    scale = inputs[1] if len(inputs) > 1 else None
    dt = _stat_dtype(x.dtype)
    xw = x.astype(dt, copy=False)
    axis = attrs.get("axis", -1)
    axes = tuple(range(axis + x.ndim if axis < 0 else axis, x.ndim))
    ms = (xw * xw).mean(axis=axes, keepdims=True)
    y = (xw * (1 / np.sqrt(ms + dt.type(attrs.get("epsilon", 1e-6))))).astype(x.dtype)
    if scale is not None:
        y = y * scale
    return [y.astype(x.dtype, copy=False)]


def to_bhsd(t: np.ndarray, layout: str, heads: int) -> np.ndarray:
    """Q/K/V in [batch, heads, seq, head_dim] from the layout the fusion left them in."""
    if layout == "bhsd":
        return t
    if layout == "bshd":
        return t.transpose(0, 2, 1, 3)
    if layout == "bhds":
        return np.swapaxes(t, -1, -2)
    if layout == "bsd":
        b, s, hd = t.shape
        return t.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)
    raise KernelError(f"unknown attention layout {layout!r}")


def attention_bhsd(inputs, attrs):
    """Q, K, V of an Attention layer as [B, H, S, D] arrays, K / V heads repeated for grouped
    queries (each K/V head serves a block of consecutive query heads)."""
    heads = attrs.get("num_heads", 0)
    kv_heads = attrs.get("kv_heads", 0) or heads
    qi, ki, vi = qkv_operands(inputs, attrs)
    q = to_bhsd(qi, attrs.get("q_layout", "bhsd"), heads)
    k = to_bhsd(ki, attrs.get("k_layout", "bhsd"), kv_heads)
    v = to_bhsd(vi, attrs.get("v_layout", "bhsd"), kv_heads)
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    return q, k, v


def attention_out(out, attrs):
    """An attention result [B, H, Sq, Dv] in the layer's ``out_layout``."""
    layout = attrs.get("out_layout", "bhsd")
    if layout in ("bshd", "bsd"):
        out = out.transpose(0, 2, 1, 3)
    if layout == "bsd":
        out = out.reshape(out.shape[0], out.shape[1], -1)
    return np.ascontiguousarray(out)


def _attention(ctx, inputs, attrs):
    q, k, v = attention_bhsd(inputs, attrs)
    mask = inputs[3] if len(inputs) > 3 else None
    raw = matmul(q, np.swapaxes(k, -1, -2))
    scale = attrs.get("scale", 1.0)
    if scale != 1.0:
        raw = raw * np.asarray(scale, raw.dtype)
    scores = raw
    kind = attrs.get("mask_kind", "")
    if mask is not None and kind == "additive":
        scores = scores + mask
    elif mask is not None and kind == "boolean":
        scores = np.where(mask, scores, np.asarray(-np.inf, scores.dtype))
    if attrs.get("causal", 0):
        sq, sk = scores.shape[-2:]
        keep = np.tril(np.ones((sq, sk), dtype=bool), sk - sq)
        fill = attrs.get("causal_fill", -np.inf)
        # a finite fill is added to the unmasked score, as the exporters' finfo.min masks did
        outside = raw + np.asarray(fill, raw.dtype) if np.isfinite(fill) else np.asarray(-np.inf, scores.dtype)
        scores = np.where(keep, scores, outside)
    p = softmax(scores, -1).astype(scores.dtype, copy=False)
    if attrs.get("nan_to_zero", 0):
        p = np.where(np.isnan(p), np.asarray(0, p.dtype), p)
    return [attention_out(matmul(p, v), attrs)]


def _pointwise(ctx, inputs, attrs):
    """Interpret the program with the ONNX reference kernels, one instruction at a time."""
    from . import get_kernel
    from ...dtypes import ONNX_CODES

    env = {f"in{i}": x for i, x in enumerate(inputs)}
    for ins in json.loads(attrs["program"]):
        args = []
        for a in ins["args"]:
            if a.startswith("c:"):
                args.append(np.asarray(float(a[2:]), dtype=np.float32))  # inlined constants are fp32 scalars
            elif a == "":
                args.append(None)
            else:
                args.append(env[a])
        a = dict(ins.get("attrs", {}))
        if ins["op"] == "Cast" and isinstance(a.get("to"), str):
            a["to"] = ONNX_CODES[a["to"]]
        kernel = get_kernel("", ins["op"])
        sub = KernelContext(opset=ins.get("opset", 21), n_outputs=1, name=ctx.name)
        env[ins["out"]] = np.asarray(kernel(sub, args, a)[0])
    return [env[o] for o in attrs["outputs"]]


KERNELS = {
    "FusedConv": _fused_conv,
    "FusedGemm": _fused_gemm,
    "LayerNorm": _layer_norm,
    "SkipLayerNorm": _skip_layer_norm,
    "RMSNorm": _rms_norm,
    "Attention": _attention,
    "Pointwise": _pointwise,
}
