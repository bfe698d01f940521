"""NumPy reference kernels: the CPU backend, the constant folder and the numerical oracle.

The modules are listed here, not registered by import side effects: reading this list tells which
op families the CPU path runs. Each module exports ``KERNELS`` (op type -> kernel) and may set
``DOMAIN`` (default: the ONNX default domain, "").

``tactics.py`` offers these kernels as the CPU tactic source (``cpu.numpy`` and the emulated
half precisions): the CPU target selects through it and the CPU runtime binds layers by its names.

May import: ``core``, ``errors``, ``dtypes`` (and NumPy / ml_dtypes); nothing of the optimizer.
"""

from __future__ import annotations

from . import (
    activation,
    attention,
    cast,
    control,
    conv,
    elementwise,
    fused,
    image,
    indexing,
    linalg,
    ml,
    nn_misc,
    norm,
    pool,
    quant,
    random,
    reduce,
    reorder,
    rnn,
    sequence,
    signal,
    tensor,
    text,
    training,
)
from ._base import Kernel, KernelContext, KernelError

_MODULES = (
    elementwise, activation, reduce, linalg, conv, pool, norm, attention, rnn, signal, training,
    nn_misc, tensor, reorder, indexing, cast, image, quant, random, sequence, text, control, ml, fused,
)


def _collect() -> dict[tuple[str, str], Kernel]:
    table: dict[tuple[str, str], Kernel] = {}
    for module in _MODULES:
        domain = getattr(module, "DOMAIN", "")
        for op, fn in module.KERNELS.items():
            dom, _, name = op.rpartition("::") if "::" in op else (domain, "", op)
            key = (dom, name)
            if key in table:
                raise RuntimeError(f"two reference kernels for {key}")
            table[key] = fn
    return table


KERNELS: dict[tuple[str, str], Kernel] = _collect()


def get_kernel(domain: str, op: str) -> Kernel | None:
    """The reference kernel for ``domain``/``op`` ("ai.onnx" counts as the default domain)."""
    if domain == "ai.onnx":
        domain = ""
    return KERNELS.get((domain, op))


__all__ = ["KERNELS", "Kernel", "KernelContext", "KernelError", "get_kernel"]
