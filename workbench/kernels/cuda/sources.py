"""The GPU tactic sources, in the order their candidates are considered. Reading this list tells
which kernel libraries a GPU engine can use.

Each entry names a module of this package that exports ``TACTICS`` (a list of objects implementing
``tactic.Tactic``) or a ``tactics()`` function returning one. A source whose library is missing
(no nvmath-python, no cudnn-frontend) is dropped with the reason recorded in the engine's target,
never silently. FALLBACK sources are tried only for layers no primary source can run.
"""

from __future__ import annotations

import importlib

PRIMARY = [
    "cublaslt",      # cuBLASLt through nvmath-python: GEMM + bias/activation epilogues, and GEMM +
                     # an NVRTC activation kernel for activations it has no epilogue for
    "cudnn_conv",    # cuDNN graph API through cudnn-frontend: conv + bias/act/residual
    "cudnn_sdpa",    # cuDNN SDPA flash attention (fp16/bf16)
    "cublas",        # cuBLAS through CuPy: plain and batched GEMM
    "attention",     # NVRTC flash-style attention (every precision, layout, mask; capturable) and the
                     # CuPy batched-GEMM fallback (eager)
    "pointwise",     # NVRTC: fused pointwise programs and every elementwise op
    "rowwise",       # NVRTC: LayerNorm / SkipLayerNorm / RMSNorm / Softmax
    "pool",          # NVRTC: Max/Average pooling and global pooling, NCHW and channels-last
    "gather",        # NVRTC: Gather / embedding lookup as a vectorized row copy
    "cupy_ops",      # CuPy: layout, pooling, reductions, small ops
]
FALLBACK = [
    "generic",       # the NumPy reference kernel run on CuPy arrays, validated at build
]


def _load(name: str):
    module = importlib.import_module(f"{__package__}.{name}")
    tactics = getattr(module, "TACTICS", None)
    if tactics is None and hasattr(module, "tactics"):
        tactics = module.tactics()
    if not tactics:
        raise ImportError(f"module {name} exports no TACTICS")
    return list(tactics)


def load_sources() -> tuple[list, list, dict[str, str]]:
    """(primary tactics, fallback tactics, {source: why it is unavailable})."""
    unavailable: dict[str, str] = {}
    groups = []
    for names in (PRIMARY, FALLBACK):
        tactics = []
        for name in names:
            try:
                tactics.extend(_load(name))
            except Exception as exc:  # a missing library removes its source, with the reason kept
                unavailable[name] = f"{type(exc).__name__}: {exc}"
        groups.append(tactics)
    return groups[0], groups[1], unavailable
