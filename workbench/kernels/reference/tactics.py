"""The reference CPU tactics: the NumPy reference kernels, offered through the same tactic shape as
the GPU sources (``workbench.kernels.cuda.tactic``). ``workbench.kernels.cpu`` lists them after its
fast tactics; the CPU target times them like the others and the CPU runtime binds each layer's kernel
by the tactic name the engine records, never by op name. They run every layer the fast tactics do not.

Tactics:

* ``cpu.numpy``: the reference kernel, fp32 (also every non-float layer).
* ``cpu.numpy.fp16-emulated`` / ``cpu.numpy.bf16-emulated``: the reference kernel on inputs rounded
  to fp16 / bf16, math in fp32, float32 outputs rounded again. That is what storage in a half type
  with fp32 accumulation costs in accuracy, so precision choices can be studied without a GPU.

A CPU tactic has ``name``, ``source`` ("reference"), ``supports(layer, precision, constants=None) ->
None | reason``, ``configs(layer, precision) -> list[dict]`` and ``build(layer, precision, config,
constants=None, reuse=True)`` returning a reference-kernel-shaped callable ``(ctx: KernelContext,
inputs, attrs) -> outputs``. The fast tactics of ``kernels/cpu`` keep the same shape; that package's
registry lists these tactics after its own and is what the CPU target and runtime use.
"""

from __future__ import annotations

import numpy as np

from ...core.plan import Layer
from ...core.precisions import STORAGE
from ...dtypes import to_numpy
from . import get_kernel
from ._base import Kernel, KernelError


class NumpyTactic:
    """A reference kernel run at one precision (``storage``: the type float32 tensors are rounded
    to around the kernel, or None for plain fp32)."""

    source = "reference"

    def __init__(self, name: str, precision: str, storage: str | None = None):
        self.name = name
        self.precision = precision
        self.storage = storage

    def supports(self, layer: Layer, precision: str, constants=None) -> str | None:
        if precision != self.precision:
            return f"runs {self.precision} layers only"
        if get_kernel(layer.domain, layer.op) is None:
            return f"no reference kernel for {_op_name(layer)}"
        return None

    def configs(self, layer: Layer, precision: str) -> list[dict]:
        return [{}]

    def build(self, layer: Layer, precision: str, config: dict, constants=None, reuse: bool = True) -> Kernel:
        # the reference kernels keep nothing between runs: constants and reuse change nothing here
        fn = get_kernel(layer.domain, layer.op)
        if fn is None:
            raise KernelError(f"no kernel for {_op_name(layer)} (layer {layer.name!r})")
        if self.storage is None:
            return fn
        return _emulated(fn, to_numpy(self.storage))

    def __repr__(self) -> str:
        return f"<CPU tactic {self.name}>"


def _op_name(layer: Layer) -> str:
    return f"{layer.domain}.{layer.op}" if layer.domain else layer.op


def _emulated(fn: Kernel, storage) -> Kernel:
    """``fn`` in fp32 on inputs rounded to ``storage``, its float32 outputs rounded too."""

    def _round(x):
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            return x.astype(storage).astype(np.float32)
        return x

    def kernel(ctx, inputs, attrs):
        return [_round(o) for o in fn(ctx, [_round(x) for x in inputs], attrs)]

    return kernel


TACTICS: list[NumpyTactic] = [
    NumpyTactic("cpu.numpy", "fp32"),
    NumpyTactic("cpu.numpy.fp16-emulated", "fp16", STORAGE["fp16"]),
    NumpyTactic("cpu.numpy.bf16-emulated", "bf16", STORAGE["bf16"]),
]
BY_NAME: dict[str, NumpyTactic] = {t.name: t for t in TACTICS}


def candidates(layer: Layer, precision: str) -> list[tuple[NumpyTactic, str | None]]:
    """Every CPU tactic with None if it can run ``layer`` at ``precision``, else the reason it cannot."""
    return [(t, t.supports(layer, precision)) for t in TACTICS]
