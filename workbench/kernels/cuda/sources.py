"""The GPU tactic sources, in the order their candidates are considered. Reading this list tells
which kernel libraries a GPU engine can use, and which tactics each source provides.

Each source is a module of this package that exports ``TACTICS``: a list of objects implementing
``tactic.Tactic``, whose ``source`` is the module's name. A source whose library is missing (no
nvmath-python, no cudnn-frontend) is dropped with the reason recorded in the engine's target,
never silently. FALLBACK sources are tried only for layers no primary source can run.
``PROVIDES`` declares the tactic names of each source, so that an engine naming a tactic of an
unavailable source is told which source and why, without importing it or reading names.
"""

from __future__ import annotations

import importlib

from . import cublaslt, cublaslt_conv, cudnn_conv, cudnn_sdpa, nvrtc

PRIMARY = [
    "cublaslt",         # cuBLASLt through nvmath-python: GEMM + bias/activation epilogues, and GEMM +
                        # an NVRTC activation kernel for activations it has no epilogue for
    "cublaslt_quant",   # cuBLASLt int8 / fp8 GEMM between NVRTC quantize and dequantize-epilogue kernels
    "cudnn_conv",       # cuDNN graph API through cudnn-frontend: conv + bias/act/residual (fp16/bf16/fp32, fp8)
    "cublaslt_conv",    # cuBLASLt: 1x1 channels-last convolutions as GEMMs, the residual as C (fp16/bf16, fp8)
    "cudnn_sdpa",       # cuDNN SDPA flash attention (fp16/bf16), and fp8 (sdpa_fp8, e4m3 Q/K/V/softmax/O)
    "cublas",           # cuBLAS through CuPy: plain and batched GEMM, im2col convolution
    "nvrtc_attention",  # NVRTC flash-style attention (every precision, layout, mask; capturable)
    "cupy_attention",   # CuPy batched-GEMM attention (eager)
    "pointwise",        # NVRTC: fused pointwise programs and every elementwise op
    "rowwise",          # NVRTC: LayerNorm / SkipLayerNorm / RMSNorm / Softmax
    "pool",             # NVRTC: Max/Average pooling and global pooling, NCHW and channels-last
    "gather",           # NVRTC: Gather / embedding lookup and Split as vectorized row copies
    "cupy_ops",         # CuPy: layout, pooling, reductions, small ops
]
FALLBACK = [
    "cupy_reference",   # the NumPy reference kernel run on CuPy arrays, validated at build
]
# source -> the names of its tactics, in its TACTICS order (checked when the source loads)
PROVIDES = {
    "cublaslt": ("cublaslt.gemm", "cublaslt.gemm_act"),
    "cublaslt_quant": ("cublaslt_quant.int8", "cublaslt_quant.fp8"),
    "cudnn_conv": ("cudnn.conv", "cudnn.conv_fp8"),
    "cublaslt_conv": ("cublaslt.conv1x1", "cublaslt.conv1x1_fp8"),
    "cudnn_sdpa": ("cudnn.sdpa", "cudnn.sdpa_fp8"),
    "cublas": ("cublas.gemm", "cublas.im2col_conv"),
    "nvrtc_attention": ("nvrtc.attention",),
    "cupy_attention": ("cupy.attention",),
    "pointwise": ("nvrtc.pointwise",),
    "rowwise": ("nvrtc.rowwise",),
    "pool": ("nvrtc.pool",),
    "gather": ("nvrtc.gather", "nvrtc.split"),
    "cupy_ops": ("cupy.ops",),
    "cupy_reference": ("cupy.reference",),
}


def source_of(tactic: str) -> str | None:
    """The source that provides the tactic named ``tactic`` (None: no source of this workbench)."""
    return next((src for src, names in PROVIDES.items() if tactic in names), None)


def _load(name: str) -> list:
    return list(importlib.import_module(f"{__package__}.{name}").TACTICS)


def _check(name: str, tactics: list) -> None:
    """A source's tactics must be the ones PROVIDES declares, each naming the source."""
    got = tuple(t.name for t in tactics)
    if got != PROVIDES[name] or any(t.source != name for t in tactics):
        raise RuntimeError(f"tactic source {name} provides {got} with sources {[t.source for t in tactics]}; "
                           f"sources.PROVIDES declares {PROVIDES[name]}")


def load_sources() -> tuple[list, list, dict[str, str]]:
    """(primary tactics, fallback tactics, {source: why it is unavailable})."""
    unavailable: dict[str, str] = {}
    groups = []
    for names in (PRIMARY, FALLBACK):
        tactics = []
        for name in names:
            try:
                loaded = _load(name)
            except Exception as exc:  # a missing library removes its source, with the reason kept
                unavailable[name] = f"{type(exc).__name__}: {exc}"
                continue
            _check(name, loaded)
            tactics.extend(loaded)
        groups.append(tactics)
    return groups[0], groups[1], unavailable


def clear_caches() -> None:
    """Forget what earlier builds in this process planned or compiled (cuDNN graphs, cuBLASLt
    heuristics, NVRTC cubins), so that a build costs what it would in a new process (the
    benchmark's cold / warm timing-cache comparison)."""
    for cache in (cudnn_conv._GRAPHS, cudnn_sdpa._GRAPHS, cublaslt._NALGOS, cublaslt_conv._ALGOS, nvrtc._CUBINS):
        cache.clear()
