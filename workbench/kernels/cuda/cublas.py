"""cuBLAS through CuPy: the always-available fallback for GEMMs and convolutions.

* ``cublas.gemm``: FusedGemm / Gemm / MatMul as ``cupy.matmul(..., out=)`` followed, when needed,
  by one generated elementwise step ``y = act(alpha * y + beta * C)`` in place. It runs every
  activation of FUSED_OPS.md, any rank and broadcast; it is the tactic of last resort, so it is
  written for coverage, not speed.
* ``cublas.im2col_conv``: FusedConv / Conv (1-D/2-D/3-D, grouped) as im2col into the workspace plus
  one batched cuBLAS GEMM per image, and the same elementwise epilogue (bias, residual, activation).

This module also holds the small helpers the other library tactics share (dtypes per precision,
device pointers, the elementwise epilogue), so that they depend on nothing the GPU target owns.
CuPy is imported inside functions: importing this module on a CPU-only machine costs nothing.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import numpy as np

from ...core.plan import Layer
from .tactic import BuiltKernel, GpuInfo

# the element type of activations at each precision (weights are cast to it at build)
IO_DTYPE = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}
GEMM_OPS = {("workbench", "FusedGemm"), ("", "Gemm"), ("", "MatMul")}
CONV_OPS = {("workbench", "FusedConv"), ("", "Conv")}
ACTIVATIONS = ("", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Silu",
               "Gelu", "GeluTanh")


# ----------------------------------------------------------------------------- shared helpers
def cupy_or_reason():
    try:
        import cupy  # noqa: PLC0415

        return cupy, None
    except Exception as e:  # pragma: no cover - CPU machines
        return None, f"CuPy is not available ({type(e).__name__}: {e})"


def np_dtype(name: str):
    """The dtype a tensor of canonical type ``name`` has on the device (bfloat16: uint16 bits,
    since CuPy has no bfloat16; see device.py)."""
    from .device import storage_dtype  # noqa: PLC0415

    return storage_dtype(name)


def check_io(layer: Layer, precision: str, inputs=None, outputs=True) -> str | None:
    """None if the activations named by ``inputs`` (indices; default all) and the outputs have the
    element type of ``precision``; weights are not checked (they are cast at build)."""
    want = IO_DTYPE.get(precision)
    if want is None:
        return f"precision {precision} is not run by this tactic (fp32, tf32, fp16, bf16 are)"
    aligned = in_specs(layer)
    idx = range(len(aligned)) if inputs is None else inputs
    specs = [aligned[i] for i in idx if i < len(aligned) and aligned[i] is not None]
    if outputs:
        specs += layer.output_specs
    for s in specs:
        if s.dtype is not None and s.dtype != want:
            return f"tensor {s.name!r} is {s.dtype}, precision {precision} wants {want}"
    return None


def in_specs(layer: Layer) -> list:
    """Input specs aligned with ``layer.inputs`` (None for absent optional inputs)."""
    from .layer_io import aligned_inputs  # noqa: PLC0415

    return aligned_inputs(layer)


def static_shape(layer: Layer, i: int, out: bool = False):
    specs = layer.output_specs if out else in_specs(layer)
    if i >= len(specs) or specs[i] is None or not specs[i].is_static:
        return None
    return tuple(specs[i].shape)


def has_input(layer: Layer, i: int) -> bool:
    return i < len(layer.inputs) and bool(layer.inputs[i])


def ptr(a) -> int:
    """Device pointer of a CuPy array (None -> 0, an int passes through)."""
    if a is None:
        return 0
    if isinstance(a, int):
        return a
    return a.data.ptr


def nbytes(a) -> int:
    if a is None or isinstance(a, int):
        return 0
    return a.nbytes


def as_device(w, dtype_name: str):
    """A constant as a new contiguous CuPy array of the given element type (never a view of the
    caller's array: packing at build must not change the engine's weights). fp16/bf16 go through
    the host conversion of device.py, which saturates instead of overflowing to inf."""
    import cupy as cp  # noqa: PLC0415

    from .device import to_device_bits  # noqa: PLC0415

    if dtype_name in ("float16", "bfloat16"):
        if getattr(w, "dtype", None) == np_dtype(dtype_name):
            return cp.array(w, copy=True, order="C")
        host = w.get() if hasattr(w, "get") else np.asarray(w)
        return cp.asarray(np.ascontiguousarray(to_device_bits(host, dtype_name)))
    return cp.array(cp.asarray(w).astype(np_dtype(dtype_name)), copy=True, order="C")


def activation_of(layer: Layer) -> tuple[str, dict]:
    a = layer.attrs
    return str(a.get("activation", "") or ""), {k: a[k] for k in ("act_min", "act_max", "act_alpha", "act_beta")
                                                if k in a}


def act_expr(act: str, p: dict) -> str:
    """The activation as a C expression of the float ``v`` (ONNX semantics, float math)."""
    lo, hi = float(p.get("act_min", -3.4e38)), float(p.get("act_max", 3.4e38))
    if act == "HardSigmoid":
        alpha, beta = float(p.get("act_alpha", 0.2)), float(p.get("act_beta", 0.5))
    else:
        alpha = float(p.get("act_alpha", 0.01))
    exprs = {
        "": "v",
        "Relu": "(v > 0.f ? v : 0.f)",
        "Clip": f"fminf(fmaxf(v, {lo!r}f), {hi!r}f)",
        "LeakyRelu": f"(v >= 0.f ? v : {alpha!r}f * v)",
        "Sigmoid": "(1.f / (1.f + expf(-v)))",
        "Tanh": "tanhf(v)",
        "HardSigmoid": f"fminf(fmaxf({alpha!r}f * v + {beta!r}f, 0.f), 1.f)" if act == "HardSigmoid" else "",
        "HardSwish": "(v * fminf(fmaxf(v * (1.f / 6.f) + 0.5f, 0.f), 1.f))",
        "Silu": "(v / (1.f + expf(-v)))",
        "Gelu": "(0.5f * v * (1.f + erff(v * 0.70710678118654752f)))",
        "GeluTanh": "(0.5f * v * (1.f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v))))",
    }
    if act not in exprs:
        raise ValueError(f"unknown activation {act!r}")
    return exprs[act]


@lru_cache(maxsize=None)
def _epilogue_kernel(expr: str, n_extra: int, has_alpha: bool):
    import cupy as cp  # noqa: PLC0415

    params = ", ".join(f"T e{i}" for i in range(n_extra))
    acc = "(float)y" + (" * alpha" if has_alpha else "") + "".join(f" + (float)e{i}" for i in range(n_extra))
    in_params = ", ".join(p for p in (params, "float32 alpha" if has_alpha else "") if p)
    # y is the output and is read first: the epilogue runs in place on the GEMM / conv result
    return cp.ElementwiseKernel(in_params, "T y", f"float v = {acc}; y = (T)({expr});",
                                f"wb_epilogue_{n_extra}_{int(has_alpha)}_{abs(hash(expr)) % 10**8}")


def make_epilogue(act: str, p: dict, n_extra: int, alpha: float = 1.0):
    """``f(y, extras, stream)``: y = act(alpha * y + sum(extras)) in place, broadcasting the extras
    (bias views shaped to broadcast, residuals). Returns None when it would be the identity."""
    if not act and n_extra == 0 and alpha == 1.0:
        return None
    kern = _epilogue_kernel(act_expr(act, p), n_extra, alpha != 1.0)

    def apply(y, extras, stream):
        args = list(extras) + ([alpha] if alpha != 1.0 else [])
        with stream_ctx(stream):
            kern(*args, y)

    return apply


def stream_ctx(stream):
    import contextlib  # noqa: PLC0415

    return stream if stream is not None and hasattr(stream, "__enter__") else contextlib.nullcontext()


def stream_ptr(stream) -> int:
    import cupy as cp  # noqa: PLC0415

    if stream is None:
        return cp.cuda.get_current_stream().ptr
    return stream if isinstance(stream, int) else stream.ptr


# ----------------------------------------------------------------------------- cublas.gemm
def gemm_geometry(layer: Layer):
    """(a_shape, b_shape, transA, transB, alpha, beta) or a reason string."""
    a_shape, b_shape = static_shape(layer, 0), static_shape(layer, 1)
    if a_shape is None or b_shape is None or static_shape(layer, 0, out=True) is None:
        return "needs static shapes"
    at = layer.attrs
    ta, tb = int(at.get("transA", 0)), int(at.get("transB", 0))
    if layer.op == "MatMul":
        ta = tb = 0
    return a_shape, b_shape, ta, tb, float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))


class CublasGemm:
    name = "cublas.gemm"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.key not in GEMM_OPS:
            return f"{layer.op} is not a GEMM"
        cp, why = cupy_or_reason()
        if why:
            return why
        g = gemm_geometry(layer)
        if isinstance(g, str):
            return g
        a_shape, b_shape, ta, tb, _, _ = g
        if (ta and len(a_shape) != 2) or (tb and len(b_shape) != 2):
            return "transA/transB are defined for 2-D operands only"
        act, _ = activation_of(layer)
        if act not in ACTIVATIONS:
            return f"unknown activation {act!r}"
        if precision == "bf16":
            return "CuPy has no bfloat16 type (bf16 is stored as uint16 bits)"
        return check_io(layer, precision, inputs=[0])

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415

        _, b_shape, ta, tb, alpha, beta = gemm_geometry(layer)
        io = IO_DTYPE[precision]
        act, p = activation_of(layer)
        b_const = weights.get(layer.inputs[1]) if has_input(layer, 1) else None
        if b_const is not None:  # transposes are folded into the packed weight, once
            b_const = as_device(b_const, io)
            if tb:
                b_const = cp.ascontiguousarray(b_const.T)
        c_name = layer.inputs[2] if has_input(layer, 2) else ""
        c_const = weights.get(c_name) if c_name else None
        if c_const is not None:  # beta folded into the constant C
            c_const = as_device(c_const, io)
            if beta != 1.0:
                c_const *= beta
        n_extra = 1 if c_name else 0
        epi = make_epilogue(act, p, n_extra, alpha)

        def run(inputs, outputs, workspace, stream):
            a, y = inputs[0], outputs[0]
            b = b_const if b_const is not None else (inputs[1].T if tb else inputs[1])
            with stream_ctx(stream):
                cp.matmul(a.T if ta else a, b, out=y)
            if epi is not None:
                extras = []
                if c_name:
                    c = c_const if c_const is not None else inputs[2]
                    extras.append(c if (c_const is not None or beta == 1.0) else c * beta)
                epi(y, extras, stream)

        # CuPy refuses cuBLAS calls during stream capture ("calling cuBLAS API during stream capture
        # is currently unsupported", CuPy 14.2): this fallback always runs outside CUDA graphs
        return BuiltKernel(run=run, workspace_bytes=0, capturable=False)


# ----------------------------------------------------------------------------- im2col conv
def conv_geometry(layer: Layer):
    """dict(n, c, m, group, sp, k, strides, dilations, begin, end, out) or a reason string."""
    x, w, y = static_shape(layer, 0), static_shape(layer, 1), static_shape(layer, 0, out=True)
    if x is None or w is None or y is None:
        return "needs static shapes"
    if len(x) < 3 or len(w) != len(x):
        return f"X {x} / W {w}: wants rank >= 3 and equal ranks"
    nd = len(x) - 2
    at = layer.attrs
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "", None):
        return "auto_pad must be resolved to explicit pads by the optimizer"
    group = int(at.get("group", 1))
    pads = list(at.get("pads") or [0] * (2 * nd))
    g = dict(n=x[0], c=x[1], m=w[0], group=group, sp=list(x[2:]), k=list(w[2:]),
             strides=list(at.get("strides") or [1] * nd), dilations=list(at.get("dilations") or [1] * nd),
             begin=pads[:nd], end=pads[nd:], out=list(y[2:]))
    if x[1] != w[1] * group or w[0] % group:
        return f"channels: X {x}, W {w}, group {group}"
    return g


class Im2colConv:
    name = "cublas.im2col_conv"
    MAX_COLS_BYTES = 1 << 31  # beyond this the fallback's workspace is not worth it

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.key not in CONV_OPS:
            return f"{layer.op} is not a convolution"
        _, why = cupy_or_reason()
        if why:
            return why
        g = conv_geometry(layer)
        if isinstance(g, str):
            return g
        if activation_of(layer)[0] not in ACTIVATIONS:
            return f"unknown activation {activation_of(layer)[0]!r}"
        if layer.attrs.get("channels_last"):
            return "channels-last (NHWC) tensors: im2col indexes NCHW"
        if precision == "bf16":
            return "CuPy has no bfloat16 type (bf16 is stored as uint16 bits)"
        if self._ws(g, 4)[2] > self.MAX_COLS_BYTES:
            return "im2col matrix would exceed 2 GiB"
        return check_io(layer, precision, inputs=[0, 3])

    @staticmethod
    def _ws(g, itemsize):
        """(padded-input bytes, cols bytes, total) of the workspace, 256-byte aligned regions."""
        padded = any(g["begin"]) or any(g["end"])
        psz = g["n"] * g["c"] * prod(s + b + e for s, b, e in zip(g["sp"], g["begin"], g["end"])) * itemsize
        csz = g["n"] * g["c"] * prod(g["k"]) * prod(g["out"]) * itemsize
        psz = -(-psz // 256) * 256 if padded else 0
        return psz, csz, psz + csz

    def configs(self, layer, precision, gpu) -> list[dict]:
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415
        from cupy.lib.stride_tricks import as_strided  # noqa: PLC0415

        g = conv_geometry(layer)
        io = IO_DTYPE[precision]
        dt = np_dtype(io)
        n, c, m, grp, nd = g["n"], g["c"], g["m"], g["group"], len(g["k"])
        kk, outp = prod(g["k"]), prod(g["out"])
        cg, mg = c // grp, m // grp
        w3 = as_device(weights[layer.inputs[1]], io).reshape(grp, mg, cg * kk)
        psz, csz, total = self._ws(g, dt.itemsize)
        padded_shape = (n, c) + tuple(s + b + e for s, b, e in zip(g["sp"], g["begin"], g["end"]))
        bias = weights.get(layer.inputs[2]) if has_input(layer, 2) else None
        bias = None if bias is None else as_device(bias, io).reshape((1, m) + (1,) * nd)
        has_z = has_input(layer, 3)
        act, p = activation_of(layer)
        epi = make_epilogue(act, p, int(bias is not None) + int(has_z))

        def run(inputs, outputs, workspace, stream):
            x, y = inputs[0], outputs[0]
            base = workspace.data.ptr if hasattr(workspace, "data") else int(workspace)
            mem = cp.cuda.UnownedMemory(base, total, workspace)
            with stream_ctx(stream):
                if psz:
                    xp = cp.ndarray(padded_shape, dt, cp.cuda.MemoryPointer(mem, 0))
                    xp.fill(0)
                    inner = (slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(g["begin"], g["sp"]))
                    xp[inner] = x
                else:
                    xp = x
                cols = cp.ndarray((n, c) + tuple(g["k"]) + tuple(g["out"]), dt, cp.cuda.MemoryPointer(mem, psz))
                st = xp.strides
                view = as_strided(xp, cols.shape, st[:2]
                                  + tuple(st[2 + i] * g["dilations"][i] for i in range(nd))
                                  + tuple(st[2 + i] * g["strides"][i] for i in range(nd)))
                cp.copyto(cols, view)
                cols4 = cols.reshape(n, grp, cg * kk, outp)
                y4 = y.reshape(n, grp, mg, outp)
                for i in range(n):  # one batched (over groups) GEMM per image: no broadcast copies
                    cp.matmul(w3, cols4[i], out=y4[i])
            if epi is not None:
                epi(y, ([bias] if bias is not None else []) + ([inputs[3]] if has_z else []), stream)

        return BuiltKernel(run=run, workspace_bytes=total, capturable=False)  # CuPy cuBLAS: no capture


TACTICS = [CublasGemm(), Im2colConv()]
