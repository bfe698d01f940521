"""What the library tactics share: element types per precision, layer-shape helpers, device
pointers and streams, the GEMM / convolution problems two sources each read, the CuPy elementwise
epilogue, and the ``require_*`` checks that open every ``supports()``.

A ``require_*`` check returns None when the layer passes it and the reason it does not otherwise,
so a preamble chains them with ``or`` (``require_op(...) or require_cupy() or ...``): the first
reason wins.
CuPy is imported inside functions: importing this module on a CPU-only machine costs nothing.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np

from ...core.plan import Layer
from ...core.precisions import STORAGE, TARGET_PRECISIONS
from ...core.quant import FORMATS as QUANT_FORMATS
from ...ops.fused import ACTIVATIONS, activation_params
from ...ops.geometry import window_attrs
from .cuda_prelude import act_expr
from .device import storage_dtype, to_device_bits

# the element type of activations at each float precision the GPU runs (weights are cast to it at
# build); int8 / fp8 layers read and write float32 and are run only by the quantized tactics
# (``cublaslt_quant``), whose ``formats`` name them
IO_DTYPE = {p: STORAGE[p] for p in TARGET_PRECISIONS["gpu"] if p not in QUANT_FORMATS}
GEMM_OPS = {("workbench", "FusedGemm"), ("", "Gemm"), ("", "MatMul")}
CONV_OPS = {("workbench", "FusedConv"), ("", "Conv")}
ATTENTION_OPS = {("workbench", "Attention")}


# ----------------------------------------------------------------------------- supports() checks
def require_op(layer: Layer, keys, what: str) -> str | None:
    """The layer's (domain, op) is one of ``keys``; ``what`` names them in the reason."""
    return None if layer.key in keys else f"{layer.op} is not {what}"


def require_cupy() -> str | None:
    """None if CuPy imports, else why not."""
    try:
        import cupy  # noqa: F401, PLC0415

        return None
    except Exception as e:  # CPU machines
        return f"CuPy is not available ({type(e).__name__}: {e})"


def require_activation(layer: Layer) -> str | None:
    """The layer's epilogue activation is one of the vocabulary (``ops.fused.ACTIVATIONS``)."""
    act = activation_of(layer)[0]
    return None if act in ACTIVATIONS else f"unknown activation {act!r}"


def require_cupy_dtype(precision: str) -> str | None:
    """CuPy computes on the precision's storage type (it has no bfloat16)."""
    return "CuPy has no bfloat16 type (bf16 is stored as uint16 bits)" if precision == "bf16" else None


def require_nchw(layer: Layer, why: str = "") -> str | None:
    """The layer's tensors are not stored channels-last (``why``: what indexes NCHW)."""
    if layer.attrs.get("channels_last"):
        return "channels-last (NHWC) tensors" + (f": {why}" if why else "")
    return None


def require_static(specs, what: str = "needs static shapes") -> str | None:
    """Every spec is present and has a static shape."""
    return None if all(s is not None and s.is_static for s in specs) else what


def check_io(layer: Layer, precision: str, inputs=None, outputs=True) -> str | None:
    """None if the activations named by ``inputs`` (indices; default all) and the outputs have the
    element type of ``precision``; weights are not checked (they are cast at build)."""
    want = IO_DTYPE.get(precision)
    if want is None:
        return f"precision {precision} is not run by this tactic (fp32, tf32, fp16, bf16 are)"
    aligned = layer.aligned_input_specs()
    idx = range(len(aligned)) if inputs is None else inputs
    specs = [aligned[i] for i in idx if i < len(aligned) and aligned[i] is not None]
    if outputs:
        specs += layer.output_specs
    for s in specs:
        if s.dtype is not None and s.dtype != want:
            return f"tensor {s.name!r} is {s.dtype}, precision {precision} wants {want}"
    return None


# ----------------------------------------------------------------------------- layer shapes
def static_shape(layer: Layer, i: int, out: bool = False):
    specs = layer.output_specs if out else layer.aligned_input_specs()
    if i >= len(specs) or specs[i] is None or not specs[i].is_static:
        return None
    return tuple(specs[i].shape)


def has_input(layer: Layer, i: int) -> bool:
    return i < len(layer.inputs) and bool(layer.inputs[i])


def activation_of(layer: Layer) -> tuple[str, dict]:
    """(epilogue activation, its parameters with defaults) of a FusedConv / FusedGemm layer."""
    return activation_params(layer.attrs)


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
    strides, dilations, pads = window_attrs(at, nd)
    g = dict(n=x[0], c=x[1], m=w[0], group=group, sp=list(x[2:]), k=list(w[2:]), strides=strides,
             dilations=dilations, begin=pads[:nd], end=pads[nd:], out=list(y[2:]))
    if x[1] != w[1] * group or w[0] % group:
        return f"channels: X {x}, W {w}, group {group}"
    return g


# ----------------------------------------------------------------------------- device arrays
def np_dtype(name: str):
    """The dtype a tensor of canonical type ``name`` has on the device (bfloat16: uint16 bits,
    since CuPy has no bfloat16; see device.py)."""
    return storage_dtype(name)


def ptr(a) -> int:
    """Device pointer of a CuPy array (None -> 0, an int passes through)."""
    if a is None:
        return 0
    if isinstance(a, int):
        return a
    return a.data.ptr


def nbytes(a) -> int:
    return 0 if a is None or isinstance(a, int) else int(a.nbytes)


def as_device(w, dtype_name: str):
    """A constant as a new contiguous CuPy array of the given element type (never a view of the
    caller's array: packing at build must not change the engine's weights). fp16/bf16 go through
    the host conversion of device.py, which saturates instead of overflowing to inf."""
    import cupy as cp  # noqa: PLC0415

    if dtype_name in ("float16", "bfloat16"):
        if getattr(w, "dtype", None) == np_dtype(dtype_name):
            return cp.array(w, copy=True, order="C")
        host = w.get() if hasattr(w, "get") else np.asarray(w)
        return cp.asarray(np.ascontiguousarray(to_device_bits(host, dtype_name)))
    return cp.array(cp.asarray(w).astype(np_dtype(dtype_name)), copy=True, order="C")


def stream_ctx(stream):
    return stream if stream is not None and hasattr(stream, "__enter__") else contextlib.nullcontext()


def stream_ptr(stream) -> int:
    import cupy as cp  # noqa: PLC0415

    if stream is None:
        return cp.cuda.get_current_stream().ptr
    return stream if isinstance(stream, int) else stream.ptr


# ----------------------------------------------------------------------------- CuPy epilogue
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
