"""The one precision vocabulary: what a layer's precision may be, what each precision stores its
tensors in, and what each target offers. Every list of precisions in the package (BuilderConfig,
the CLI, the notebook's dropdowns, precision assignment, the targets) reads it from here."""

from __future__ import annotations

# per-layer precisions, in the order a user reads them
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
# what a build (or a per-layer override) may ask for: "best" lets the target choose per layer
REQUESTABLE = PRECISIONS + ("best",)
DEVICES = ("auto", "cpu", "gpu")

# element type a layer at this precision stores its float tensors in (tf32 changes math, not storage)
STORAGE = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16",
           "int8": "int8", "fp8": "float8e4m3fn"}
HALF = ("fp16", "bf16")

# what each target can run a layer at (the notebook's per-layer dropdowns list these)
TARGET_PRECISIONS = {
    # fp16 / bf16 emulated: storage rounded, math in fp32; int8 / fp8 with the GPU's numerics
    # (core/quant.py: exact int32-equivalent products, fp8 e4m3 operands summed in fp32)
    "cpu": ("fp32", "fp16", "bf16", "int8", "fp8"),
    # int8 / fp8 on the GPU: quantized Gemm / MatMul layers (kernels/cuda/cublaslt_quant.py); other
    # layers of such a build fall back to fp16 with the reason in the precision table
    "gpu": ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"),
}


def supported_precisions(device: str) -> list[str]:
    """Precisions a target offers per layer ("cpu" or "gpu")."""
    try:
        return list(TARGET_PRECISIONS[device])
    except KeyError:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(TARGET_PRECISIONS)}") from None
