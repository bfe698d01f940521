"""Shared text of generated CUDA C++: storage types and load/store conversions per dtype.

Half types are raw 16-bit words converted with inline PTX, so no CUDA header is needed.
Arithmetic on fp16/bf16/fp32 tensors is always done in fp32.
"""

from __future__ import annotations

PRELUDE = r"""
typedef unsigned short wb_half;
typedef unsigned short wb_bf16;
__device__ __forceinline__ float wb_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short wb_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float wb_b2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short wb_f2b(float f) { unsigned short h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float wb_sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ float wb_softplus(float x) { return x > 20.0f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ float wb_gelu_tanh(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }
__device__ __forceinline__ float wb_fmax(float a, float b) { return (a != a || a > b) ? a : b; }
__device__ __forceinline__ float wb_fmin(float a, float b) { return (a != a || a < b) ? a : b; }
"""

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
