"""Shared text of generated CUDA C++: storage types and load/store conversions per dtype, float
literals, and the one table of activation expressions.

Half types are raw 16-bit words converted with inline PTX, so no CUDA header is needed.
Arithmetic on fp16/bf16/fp32 tensors is always done in fp32.

Activations (``act_expr``): every generated kernel that applies one takes its C expression from
``_ACTIVATIONS`` — the fused epilogues (``common.make_epilogue``, a CuPy elementwise kernel;
``cublaslt.gemm_act``, NVRTC) and the unfused ops of ``nvrtc.pointwise`` — so a fused and an
unfused Sigmoid are written alike. The expressions use only CUDA's built-in math functions (no
helper of ``PRELUDE``), since a CuPy elementwise kernel does not include it, and the accurate
spelling (``expf``, not ``__expf``): what differs is the compiler's flags, not the source. NVRTC
kernels are compiled with ``--use_fast_math`` (``nvrtc.options_for``), under which ``expf``
compiles to the ``__expf`` intrinsic; the CuPy epilogue is compiled without it and keeps the
accurate ``expf``. Relu and Clip propagate NaN, as the reference kernels'
``np.maximum`` / ``np.clip`` do.
"""

from __future__ import annotations

import math

from ...ops.fused import ACTIVATIONS

PRELUDE = r"""
typedef unsigned short wb_half;
typedef unsigned short wb_bf16;
__device__ __forceinline__ float wb_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short wb_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float wb_b2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short wb_f2b(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float wb_fmax(float a, float b) { return (a != a || a > b) ? a : b; }
__device__ __forceinline__ float wb_fmin(float a, float b) { return (a != a || a < b) ? a : b; }
"""

# the one byte code of a float under ``core/quant.py``'s quantize: the division correctly rounded
# (never a multiplication by a rounded reciprocal), then int8: round half to even, the zero point,
# saturation to [-128, 127], NaN to the zero point; fp8: clipped to +-448 and rounded to nearest
# even by the saturating e4m3 convert (NaN stays NaN). Separate texts, since the e4m3 convert
# exists on sm_89+ only.
_CODES = {
    "int8": r"""
__device__ __forceinline__ unsigned char wb_code_int8(float x, float scale, int zp) {
  float v = __fdiv_rn(x, scale);
  float t = v != v ? (float)zp : fminf(fmaxf(rintf(v) + (float)zp, -128.0f), 127.0f);
  return (unsigned char)(signed char)(int)t;
}
""",
    "fp8": r"""
__device__ __forceinline__ unsigned char wb_code_fp8(float x, float scale, int zp) {
  float v = __fdiv_rn(x, scale);
  if (v == v) v = fminf(fmaxf(v, -448.0f), 448.0f);
  unsigned short pair;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.0f), "f"(v));
  return (unsigned char)(pair & 0xff);
}
""",
}


def codes(fmt: str) -> str:
    """The device function ``encode`` calls for the int8 / fp8 format ``fmt`` (after ``PRELUDE``)."""
    return _CODES[fmt]


def encode(fmt: str, x: str, scale: str, zp: str = "0") -> str:
    """C expression: the code (an unsigned char holding the int8 / e4m3 bits) of the float ``x``."""
    return f"wb_code_{fmt}({x}, {scale}, {zp})"


# canonical dtype -> (storage C type, compute C type, load expr template, store expr template)
TYPES: dict[str, tuple[str, str, str, str]] = {
    "float32": ("float", "float", "{}", "{}"),
    "float16": ("wb_half", "float", "wb_h2f({})", "wb_f2h({})"),
    "bfloat16": ("wb_bf16", "float", "wb_b2f({})", "wb_f2b({})"),
    "float64": ("double", "double", "{}", "{}"),
    "int64": ("long long", "long long", "{}", "{}"),
    "int32": ("int", "int", "{}", "{}"),
    "int16": ("short", "int", "{}", "(short)({})"),
    "int8": ("signed char", "int", "{}", "(signed char)({})"),
    "uint8": ("unsigned char", "int", "{}", "(unsigned char)({})"),
    "uint16": ("unsigned short", "unsigned int", "{}", "(unsigned short)({})"),
    "uint32": ("unsigned int", "unsigned int", "{}", "{}"),
    "uint64": ("unsigned long long", "unsigned long long", "{}", "{}"),
    "bool": ("unsigned char", "bool", "({} != 0)", "(unsigned char)(({}) ? 1 : 0)"),
}

FLOATISH = ("float32", "float16", "bfloat16", "float64")


def supported(dtype: str | None) -> bool:
    return dtype in TYPES


def storage(dtype: str) -> str:
    return TYPES[dtype][0]


def compute(dtype: str) -> str:
    return TYPES[dtype][1]


def load(dtype: str, expr: str) -> str:
    return TYPES[dtype][2].format(expr)


def store(dtype: str, expr: str) -> str:
    return TYPES[dtype][3].format(expr)


def round_to(dtype: str, expr: str) -> str:
    """The value of ``expr`` after a round trip through ``dtype`` storage (a Cast inside a program)."""
    if dtype == "float16":
        return f"wb_h2f(wb_f2h({expr}))"
    if dtype == "bfloat16":
        return f"wb_b2f(wb_f2b({expr}))"
    return f"(({compute(dtype)})({expr}))"


def literal(x: float) -> str:
    """A float32 C literal of ``x`` (NaN and infinities as bit patterns: no header defines them)."""
    x = float(x)
    if math.isnan(x):
        return "__int_as_float(0x7fc00000)"
    if math.isinf(x):
        return "__int_as_float(0x7f800000)" if x > 0 else "__int_as_float(0xff800000)"
    return f"{x!r}f"


# activation -> C expression of the float operand {x}; {alpha} and {beta} are float literals of its
# act_alpha / act_beta attributes. Clip is written by act_expr (either bound may be absent).
_ACTIVATIONS = {
    "": "{x}",
    "Relu": "({x} <= 0.f ? 0.f : {x})",
    "LeakyRelu": "({x} < 0.f ? {alpha} * {x} : {x})",
    "Sigmoid": "(1.f / (1.f + expf(-{x})))",
    "Tanh": "tanhf({x})",
    "HardSigmoid": "fminf(fmaxf({alpha} * {x} + {beta}, 0.f), 1.f)",
    "HardSwish": "({x} * fminf(fmaxf({x} * (1.f / 6.f) + 0.5f, 0.f), 1.f))",
    "Silu": "({x} / (1.f + expf(-{x})))",
    "Gelu": "(0.5f * {x} * (1.f + erff({x} * 0.70710678118654752f)))",
    "GeluTanh": "(0.5f * {x} * (1.f + tanhf(0.79788456080286536f * ({x} + 0.044715f * {x} * {x} * {x}))))",
    "Softplus": "({x} > 20.f ? {x} : log1pf(expf({x})))",
}


def act_expr(act: str, params: dict, x: str = "v") -> str:
    """The activation ``act`` of the float expression ``x`` as a C expression (ONNX semantics,
    float math). ``params``: its act_* attributes (absent ones take the defaults of
    ``ops.fused.ACTIVATIONS``); an absent Clip bound leaves that side unclamped."""
    x = x if x.isidentifier() else f"({x})"
    if act == "Clip":
        lo, hi = params.get("act_min"), params.get("act_max")
        expr = x if lo is None else f"({x} < {literal(lo)} ? {literal(lo)} : {x})"
        return expr if hi is None else f"({expr} > {literal(hi)} ? {literal(hi)} : {expr})"
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}")
    p = {k: v for k, v in ACTIVATIONS[act].attrs.items() if v is not None} | dict(params)
    return _ACTIVATIONS[act].format(x=x, **{k[4:]: literal(v) for k, v in p.items()})
