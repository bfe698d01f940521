"""Fast CPU tactics of quantized layers (int8 / fp8 Conv, FusedConv, Gemm, FusedGemm, MatMul): the same
numbers as the reference kernels of ``kernels/reference/quantized.py`` (exact integer products, the
float32 epilogue of ``core/quant.py``), faster:

* an int8 product is summed in float32 BLAS (sgemm) wherever ``K * max|q_in - zp| * max|q_w| < 2**24``
  (every partial sum an integer float32 holds exactly: the same result as float64 or int32), in
  float64 elsewhere; the weight's multiplier values are laid out once at build;
* a depthwise convolution (one input and one output channel per group) is one multiply-add per
  kernel offset over all channels instead of a batched matmul of 1-row matrices.

``cpu.quant.gemm`` and ``cpu.quant.conv`` (``kernels/cpu/__init__.py`` lists them).
"""

from __future__ import annotations

import numpy as np

from ...ops.geometry import conv_geometry, window_attrs
from ..reference.quantized import QuantizedLayer, check_layer, kind_of


def _depthwise(layer, w) -> bool:
    group = int(layer.attrs.get("group", 1))
    return w is not None and w.ndim >= 3 and group > 1 and w.shape[0] == group and w.shape[1] == 1


class FastQuantizedLayer(QuantizedLayer):
    """``QuantizedLayer`` with float32 products where exact and a depthwise path."""

    def __init__(self, layer, constants, variant: str):
        super().__init__(layer, constants, fast=True)
        self.variant = variant
        if variant == "depthwise":
            m = self.w_values.shape[0]
            k = int(np.prod(self.w_values.shape[2:]))
            # [kernel offset, channel, 1...]: one broadcast multiplier per offset
            self.taps_w = np.ascontiguousarray(self.w_values.reshape(m, k).T).reshape(
                (k, m) + (1,) * (self.w_values.ndim - 2))

    def product(self, a, b):
        if self.variant != "depthwise":
            return super().product(a, b)
        nd = a.ndim - 2
        kernel = list(self.attrs.get("kernel_shape") or self.w_values.shape[2:])
        strides, dil, pads = window_attrs(self.attrs, nd)
        begin, end, out = conv_geometry(a.shape[2:], kernel, strides, dil, pads, self.attrs.get("auto_pad", "NOTSET"))
        if any(o <= 0 for o in out):
            return super().product(a, b)  # the reference kernel names the bad geometry
        if any(begin) or any(end):
            xp = np.zeros(a.shape[:2] + tuple(s + p + q for s, p, q in zip(a.shape[2:], begin, end)), a.dtype)
            xp[(slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(begin, a.shape[2:]))] = a
        else:
            xp = a
        acc = np.zeros(a.shape[:2] + tuple(out), a.dtype)
        tmp = np.empty_like(acc)
        for j, kk in enumerate(np.ndindex(*kernel)):
            src = xp[(slice(None), slice(None)) + tuple(
                slice(kk[i] * dil[i], kk[i] * dil[i] + (out[i] - 1) * strides[i] + 1, strides[i]) for i in range(nd))]
            np.multiply(src, self.taps_w[j], out=tmp)
            acc += tmp
        return acc


class FastQuantizedTactic:
    source = "cpu"

    def __init__(self, name: str, kinds: tuple[str, ...]):
        self.name = name
        self.kinds = kinds

    def supports(self, layer, precision: str, constants=None) -> str | None:
        if kind_of(layer) not in self.kinds:
            return f"does not run {layer.op}"
        return check_layer(layer, precision, constants)

    def configs(self, layer, precision: str) -> list[dict]:
        if self.name == "cpu.quant.conv":
            w = layer.aligned_input_specs()[1]
            group = int(layer.attrs.get("group", 1))
            if w is not None and w.shape and group > 1 and w.shape[0] == group and w.shape[1] == 1:
                return [{"variant": "gemm"}, {"variant": "depthwise"}]
        return [{"variant": "gemm"}]

    def build(self, layer, precision: str, config: dict, constants=None, reuse: bool = True):
        variant = config.get("variant", "gemm")
        if variant == "depthwise" and not _depthwise(layer, (constants or {}).get(layer.inputs[1])):
            variant = "gemm"
        return FastQuantizedLayer(layer, constants, variant)

    def __repr__(self) -> str:
        return f"<CPU tactic {self.name}>"


TACTICS = [FastQuantizedTactic("cpu.quant.conv", ("conv",)), FastQuantizedTactic("cpu.quant.gemm", ("gemm",))]
