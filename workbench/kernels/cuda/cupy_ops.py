"""cupy.*: layout, pooling, reduction and small ops written with CuPy, writing into the layer's
preallocated outputs (``out=`` / ``copyto``) so they can be captured in a CUDA graph.

Parameters that the ONNX op takes as tensors (Slice starts, Reshape shape, reduction axes) must be
constants of the plan; every output shape is static (known at build), so reshape-like ops need no
shape input at all. bfloat16 tensors (stored as uint16) are only moved, never computed on, here.
"""

from __future__ import annotations

import math

import numpy as np

from ...core.plan import Layer
from .common import require_nchw
from .device import cupy
from .tactic import BuiltKernel, GpuInfo, TacticBase

MOVE_ONLY = {"GatherND", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Expand", "Transpose", "Concat",
             "Split", "Slice", "Gather", "Tile", "Shape", "Size", "ConstantOfShape"}


def _host(layer: Layer, weights: dict, i: int):
    if i >= len(layer.inputs) or not layer.inputs[i]:
        return None
    w = weights.get(layer.inputs[i])
    if w is None:
        raise ValueError(f"input {i} ({layer.inputs[i]!r}) must be a constant for this tactic")
    return w.get() if hasattr(w, "get") else np.asarray(w)


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _copy_reshaped(layer, w):
    def run(ins, outs):
        cupy().copyto(outs[0], ins[0].reshape(outs[0].shape))
    return run


def _expand(layer, w):
    def run(ins, outs):
        cp = cupy()
        x = ins[0].reshape((1,) * (outs[0].ndim - ins[0].ndim) + ins[0].shape)
        cp.copyto(outs[0], cp.broadcast_to(x, outs[0].shape))
    return run


def _transpose(layer, w):
    perm = layer.attrs.get("perm")
    def run(ins, outs):
        cupy().copyto(outs[0], ins[0].transpose(perm) if perm is not None else ins[0].T)
    return run


def _concat(layer, w):
    axis = layer.attrs.get("axis", 0)
    def run(ins, outs):
        xs = [x for x in ins if x is not None and x.size]
        cupy().concatenate(xs, axis=_axis(axis, outs[0].ndim), out=outs[0])
    return run


def _split(layer, w):
    axis = _axis(layer.attrs.get("axis", 0), len(layer.input_specs[0].shape))
    sizes = [s.shape[axis] for s in layer.output_specs]
    def run(ins, outs):
        start = 0
        for o, n in zip(outs, sizes):
            if o is not None:
                idx = [slice(None)] * ins[0].ndim
                idx[axis] = slice(start, start + n)
                cupy().copyto(o, ins[0][tuple(idx)])
            start += n
    return run


def _slice(layer, w):
    shape = layer.input_specs[0].shape
    if layer.opset < 10:
        starts, ends = layer.attrs["starts"], layer.attrs["ends"]
        axes, steps = layer.attrs.get("axes"), None
    else:
        starts, ends, axes, steps = (_host(layer, w, i) for i in (1, 2, 3, 4))
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.reshape(axes, -1)]
    steps = [1] * len(axes) if steps is None else [int(s) for s in np.reshape(steps, -1)]
    idx = [slice(None)] * len(shape)
    for a, s, e, st in zip(axes, np.reshape(starts, -1), np.reshape(ends, -1), steps):
        a = _axis(a, len(shape))
        idx[a] = slice(*slice(int(max(min(s, 2**62), -2**62)), int(max(min(e, 2**62), -2**62)), st).indices(shape[a]))
    idx = tuple(idx)
    def run(ins, outs):
        cupy().copyto(outs[0], ins[0][idx])
    return run


def _gather(layer, w):
    axis = _axis(layer.attrs.get("axis", 0), len(layer.input_specs[0].shape))
    n = layer.input_specs[0].shape[axis]
    const = layer.inputs[1] in w
    fixed = None
    if const:
        h = _host(layer, w, 1).astype(np.int64)
        fixed = cupy().asarray(np.where(h < 0, h + n, h))
    def run(ins, outs):
        cp = cupy()
        idx = fixed if fixed is not None else cp.where(ins[1] < 0, ins[1] + n, ins[1])
        cp.copyto(outs[0], cp.take(ins[0], idx, axis=axis).reshape(outs[0].shape))
    return run


def _gather_nd(layer, w):
    b = int(layer.attrs.get("batch_dims", 0))
    ds, ish = layer.input_specs[0].shape, layer.input_specs[1].shape
    k = ish[-1]
    nb = math.prod(ds[:b])
    def run(ins, outs):
        cp = cupy()
        data = ins[0].reshape((nb,) + tuple(ds[b:]))
        idx = ins[1].reshape((nb, -1, k))
        cols = tuple(cp.where(idx[..., j] < 0, idx[..., j] + ds[b + j], idx[..., j]) for j in range(k))
        r = data[(cp.arange(nb)[:, None],) + cols]
        cp.copyto(outs[0], r.reshape(outs[0].shape))
    return run


def _tile(layer, w):
    reps = [int(r) for r in _host(layer, w, 1).reshape(-1)]
    def run(ins, outs):
        cupy().copyto(outs[0], cupy().tile(ins[0], reps))
    return run


def _constant_out(value_fn):
    def make(layer, w):
        host = value_fn(layer, w)
        dev = cupy().asarray(host)
        def run(ins, outs):
            cupy().copyto(outs[0], dev.reshape(outs[0].shape).astype(outs[0].dtype, copy=False))
        return run
    return make


def _shape_value(layer, w):
    shape = list(layer.input_specs[0].shape)
    start, end = layer.attrs.get("start", 0), layer.attrs.get("end", len(shape))
    return np.asarray(shape[slice(start, end)], dtype=np.int64)


def _const_of_shape(layer, w):
    v = layer.attrs.get("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    return np.full(layer.output_specs[0].shape, v[0], dtype=v.dtype)


def _reduce(kind):
    def make(layer, w):
        rank = len(layer.input_specs[0].shape)
        axes = layer.attrs.get("axes")
        if axes is None and len(layer.inputs) > 1 and layer.inputs[1]:
            axes = [int(a) for a in _host(layer, w, 1).reshape(-1)]
        if not axes:
            if layer.attrs.get("noop_with_empty_axes", 0):
                return lambda ins, outs: cupy().copyto(outs[0], ins[0])
            axes = list(range(rank))
        axes = tuple(sorted(_axis(a, rank) for a in axes))
        def run(ins, outs):
            cp = cupy()
            x = ins[0]
            if kind in ("mean", "sum", "sumsq", "l2", "l1", "lse") and x.dtype == np.float16:
                x = x.astype(np.float32)  # fp32 accumulation for half inputs
            if kind == "sumsq" or kind == "l2":
                x = x * x
            elif kind == "l1":
                x = cp.abs(x)
            if kind == "lse":
                m = cp.max(x, axis=axes, keepdims=True)
                r = cp.log(cp.sum(cp.exp(x - m), axis=axes, keepdims=True)) + m
            else:
                fn = {"mean": cp.mean, "sum": cp.sum, "sumsq": cp.sum, "l1": cp.sum, "l2": cp.sum, "max": cp.max,
                      "min": cp.min, "prod": cp.prod}[kind]
                r = fn(x, axis=axes, keepdims=True)
                if kind == "l2":
                    r = cp.sqrt(r)
            cp.copyto(outs[0], r.reshape(outs[0].shape).astype(outs[0].dtype, copy=False))
        return run
    return make


def _argreduce(fn_name):
    def make(layer, w):
        axis = _axis(layer.attrs.get("axis", 0), len(layer.input_specs[0].shape))
        def run(ins, outs):
            cp = cupy()
            r = getattr(cp, fn_name)(ins[0], axis=axis)
            cp.copyto(outs[0], r.reshape(outs[0].shape).astype(np.int64))
        return run
    return make


def _batchnorm(layer, w):
    scale, bias, mean, var = (_host(layer, w, i).astype(np.float32) for i in (1, 2, 3, 4))
    a = scale / np.sqrt(var + np.float32(layer.attrs.get("epsilon", 1e-5)))
    b = bias - mean * a
    rank = len(layer.input_specs[0].shape)
    shape = (-1,) + (1,) * (rank - 2)
    dt = layer.output_specs[0].dtype
    a_d = cupy().asarray(a.reshape(shape).astype(dt))
    b_d = cupy().asarray(b.reshape(shape).astype(dt))
    def run(ins, outs):
        cp = cupy()
        cp.multiply(ins[0], a_d, out=outs[0])
        cp.add(outs[0], b_d, out=outs[0])
    return run


def _pool(kind):
    def make(layer, w):
        cp = cupy()
        a = layer.attrs
        xs, ys = layer.input_specs[0].shape, layer.output_specs[0].shape
        nd = len(xs) - 2
        k = list(a["kernel_shape"])
        st = list(a.get("strides") or [1] * nd)
        dil = list(a.get("dilations") or [1] * nd)
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise ValueError("auto_pad pooling is left to cupy.reference")
        pads = list(a.get("pads") or [0] * (2 * nd))
        if len(layer.outputs) > 1 and layer.outputs[1]:
            raise ValueError("MaxPool indices output is left to cupy.reference")
        # extra right padding so that ceil_mode windows exist in the padded view
        need = [(ys[2 + i] - 1) * st[i] + (k[i] - 1) * dil[i] + 1 for i in range(nd)]
        extra = [max(0, need[i] - (xs[2 + i] + pads[i] + pads[i + nd])) for i in range(nd)]
        padw = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd] + extra[i]) for i in range(nd)]
        fill = -np.inf if kind == "max" else 0.0
        div = None
        if kind == "avg":
            ones = np.pad(np.ones(xs[2:], np.float32), padw[2:], constant_values=0.0)
            if a.get("count_include_pad", 0):
                ones = np.pad(np.ones([xs[2 + i] + pads[i] + pads[i + nd] for i in range(nd)], np.float32),
                              [(0, e) for e in extra])
            cnt = _windows_host(ones, ys[2:], k, st, dil).sum(axis=tuple(range(nd, 2 * nd)))
            div = cp.asarray(np.maximum(cnt, 1).astype(np.float32))
        def run(ins, outs):
            x = ins[0]
            xp = cp.pad(x, padw, constant_values=fill) if any(p != (0, 0) for p in padw) else x
            sh = list(xp.shape[:2]) + list(ys[2:]) + k
            sd = list(xp.strides[:2]) + [xp.strides[2 + i] * st[i] for i in range(nd)] + \
                [xp.strides[2 + i] * dil[i] for i in range(nd)]
            win = cp.lib.stride_tricks.as_strided(xp, shape=sh, strides=sd)
            axes = tuple(range(2 + nd, 2 + 2 * nd))
            if kind == "max":
                cp.copyto(outs[0], cp.max(win, axis=axes))
            else:
                s = cp.sum(win.astype(np.float32), axis=axes) / div
                cp.copyto(outs[0], s.astype(outs[0].dtype))
        return run
    return make


def _windows_host(x, out_sp, k, st, dil):
    nd = len(k)
    sh = list(out_sp) + k
    sd = [x.strides[i] * st[i] for i in range(nd)] + [x.strides[i] * dil[i] for i in range(nd)]
    return np.lib.stride_tricks.as_strided(x, shape=sh, strides=sd)


def _global(kind):
    def make(layer, w):
        def run(ins, outs):
            cp = cupy()
            axes = tuple(range(2, ins[0].ndim))
            x = ins[0].astype(np.float32) if kind == "mean" else ins[0]
            r = cp.mean(x, axis=axes, keepdims=True) if kind == "mean" else cp.max(x, axis=axes, keepdims=True)
            cp.copyto(outs[0], r.astype(outs[0].dtype, copy=False))
        return run
    return make


def _lrn(layer, w):
    a = layer.attrs
    size = int(a["size"])
    alpha, beta, bias = float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    def run(ins, outs):
        cp = cupy()
        x = ins[0].astype(np.float32)
        padded = cp.pad(x * x, [(0, 0), (lo + 1, hi)] + [(0, 0)] * (x.ndim - 2))
        cs = cp.cumsum(padded, axis=1)
        c = x.shape[1]
        win = cs[:, size:size + c] - cs[:, :c]
        cp.copyto(outs[0], (x / (bias + (alpha / size) * win) ** beta).astype(outs[0].dtype))
    return run


OPS = {
    "LRN": _lrn,
    "Reshape": _copy_reshaped, "Flatten": _copy_reshaped, "Squeeze": _copy_reshaped, "Unsqueeze": _copy_reshaped,
    "Identity": _copy_reshaped, "Dropout": _copy_reshaped, "Expand": _expand, "Transpose": _transpose,
    "Concat": _concat, "GatherND": _gather_nd, "Split": _split, "Slice": _slice, "Gather": _gather, "Tile": _tile,
    "Shape": _constant_out(_shape_value), "Size": _constant_out(lambda l, w: np.asarray(math.prod(l.input_specs[0].shape), np.int64)),
    "ConstantOfShape": _constant_out(_const_of_shape),
    "ReduceMean": _reduce("mean"), "ReduceSum": _reduce("sum"), "ReduceMax": _reduce("max"), "ReduceMin": _reduce("min"),
    "ReduceProd": _reduce("prod"), "ReduceSumSquare": _reduce("sumsq"), "ReduceL2": _reduce("l2"),
    "ReduceL1": _reduce("l1"), "ReduceLogSumExp": _reduce("lse"),
    "ArgMax": _argreduce("argmax"), "ArgMin": _argreduce("argmin"),
    "BatchNormalization": _batchnorm, "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global("mean"), "GlobalMaxPool": _global("max"),
}


class CupyOpsTactic(TacticBase):
    name = "cupy.ops"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.domain or layer.op not in OPS:
            return f"no CuPy implementation of {layer.op}"
        why = require_nchw(layer, "CuPy views index NCHW")
        if why:
            return why
        specs = [s for s in list(layer.input_specs) + list(layer.output_specs) if s.name]
        if not all(s.is_static and s.dtype not in (None, "string") for s in specs):
            return "needs static numeric tensors"
        if layer.op not in MOVE_ONLY and any(s.dtype == "bfloat16" for s in specs):
            return "CuPy has no bfloat16 arithmetic"
        if layer.op == "Dropout" and len(layer.outputs) > 1 and layer.outputs[1]:
            return "Dropout mask output is left to cupy.reference"
        if layer.op == "BatchNormalization" and (layer.attrs.get("training_mode") or len([o for o in layer.outputs if o]) > 1):
            return "training-mode BatchNormalization"
        return None

    def configs(self, layer, precision, gpu):
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        fn = OPS[layer.op](layer, weights)
        return BuiltKernel(run=lambda ins, outs, ws, stream: fn(ins, outs))


TACTICS = [CupyOpsTactic()]
