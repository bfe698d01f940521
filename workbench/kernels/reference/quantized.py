"""Reference kernels of quantized layers: Conv, ConvTranspose, Gemm, MatMul, FusedConv and FusedGemm
at int8 or fp8, and the fused Attention at fp8 (``core.quant.attention_fp8``), computing exactly
what ``core/quant.py`` specifies (and the GPU tactics must match).

int8: the float32 activation is quantized with the layer's ``q_input_scale`` / zero point, the
product of ``q - zero_point`` with the stored int8 weights is taken in float64 (integers below
2**53: exact, whatever the summation order, equal to an int32 accumulator that does not overflow),
converted to float32 once, multiplied by ``alpha_c = scale_in * scale_w_c`` (float32), then bias,
residual and activation in float32 in the fused ops' order. fp8: the same with e4m3 operands
(as float32 values) and the product summed in float32.

The reference kernels of ``conv.py`` / ``linalg.py`` do the products (they keep float64 operands in
float64), so padding, groups, dilations and auto_pad mean exactly what they mean for float layers.
``cpu.numpy.int8`` / ``cpu.numpy.fp8`` offer these kernels as CPU tactics (``kernels/cpu`` lists
them after its fast quantized tactics).
"""

from __future__ import annotations

import numpy as np

from ...core import quant
from ...core.plan import Layer
from ._base import KernelContext, KernelError
from .conv import _conv_transpose, conv_nd
from .fused import activate

F32 = quant.F32
kind_of = quant.kind_of


def check_layer(layer: Layer, precision: str, constants=None) -> str | None:
    """None if ``layer`` is a quantized layer these kernels run at ``precision``, else why not."""
    if precision not in quant.FORMATS:
        return "runs int8 / fp8 layers only"
    if kind_of(layer) is None:
        return f"does not run {layer.op}"
    a = layer.attrs
    if a.get("q_format") != precision:
        return f"layer carries no {precision} quantization parameters"
    missing = [k for k in ("q_input_scale", "q_weight_scale") if k not in a]
    if missing:
        return f"missing {missing[0]}"
    if int(a.get("q_weight_const", 1)) and constants is not None:
        w = constants.get(layer.inputs[1]) if len(layer.inputs) > 1 else None
        if w is None:
            return "quantized weight is not a constant of the plan"
        if w.dtype != np.dtype(quant.E4M3 if precision == "fp8" else np.int8):
            return f"weight is stored as {w.dtype}, not {quant.ELEMENT[precision]}"
    return None


class QuantizedLayer:
    """What a quantized layer's kernel derives from its attributes and constants once, at build:
    scales, the weight as exact multiplier values, alpha per output channel, bias."""

    def __init__(self, layer: Layer, constants: dict | None, fast: bool = False):
        a = layer.attrs
        constants = constants or {}
        self.layer = layer
        self.attrs = a
        self.kind = kind_of(layer)
        self.fmt = quant.check_format(str(a["q_format"]))
        self.s_in = F32.type(a["q_input_scale"])
        self.zp_in = int(a.get("q_input_zero_point", 0))
        self.s_w = np.asarray(a["q_weight_scale"], dtype=F32).reshape(-1)
        self.w_axis = int(a.get("q_weight_axis", 0))
        self.zp_w = int(a.get("q_weight_zero_point", 0))
        self.w_const = bool(int(a.get("q_weight_const", 1)))
        self.alpha = quant.output_scale(self.s_in, self.s_w)
        self.trans_a = bool(a.get("transA", 0)) and self.kind == "gemm" and layer.op != "MatMul"
        self.trans_b = bool(a.get("transB", 0)) and self.kind == "gemm" and layer.op != "MatMul"
        self.gemm_alpha = float(a.get("alpha", 1.0)) if layer.op in ("Gemm", "FusedGemm") else 1.0
        self.beta = float(a.get("beta", 1.0)) if layer.op in ("Gemm", "FusedGemm") else 1.0
        self.res_scale = a.get("q_residual_scale")
        self.res_zp = int(a.get("q_residual_zero_point", 0))
        self.code = np.dtype(quant.E4M3 if self.fmt == "fp8" else np.int8)  # element type of its codes
        self.fast = fast
        self.w_q = None
        if self.w_const:
            w = constants.get(layer.inputs[1])
            if w is None:
                raise KernelError(f"layer {layer.name!r}: quantized weight {layer.inputs[1]!r} is not a constant")
            self.w_q = np.asarray(w)
        self.a_max = quant.value_range(self.fmt, self.zp_in)
        self.b_max = (float(np.abs(self.w_q.astype(np.float64)).max()) if self.w_q is not None and self.w_q.size
                      else quant.value_range(self.fmt, self.zp_w))
        self.k = self._reduction()
        # int8 products summed in float32 are exact below 2**24; elsewhere float64 (always exact)
        exact32 = self.fmt == "fp8" or (fast and quant.float32_exact(self.k or 1 << 40, self.a_max, self.b_max))
        self.dtype = np.dtype(np.float32) if exact32 else np.dtype(np.float64)
        self.w_values = self._operand_const(self.w_q) if self.w_q is not None else None
        bias_pos = 2 if len(layer.inputs) > 2 and layer.inputs[2] else None
        self.bias_name = layer.inputs[bias_pos] if bias_pos else ""
        self.bias_const = None
        if self.bias_name and self.bias_name in constants:
            self.bias_const = np.asarray(constants[self.bias_name], dtype=F32)

    def _reduction(self) -> int | None:
        """K, the number of products per output (None where it depends on run-time shapes)."""
        w = self.w_q
        specs = self.layer.aligned_input_specs()
        if self.kind in ("conv", "conv_transpose") and w is not None:
            k = int(np.prod(w.shape[1:])) if self.kind == "conv" else int(w.shape[0] // max(int(self.attrs.get("group", 1)), 1)) * int(np.prod(w.shape[2:]))
            return k
        a = specs[0] if specs else None
        if a is not None and a.shape and isinstance(a.shape[-1 if not self.trans_a else -2], int):
            return int(a.shape[-2 if self.trans_a else -1])
        return None

    def _operand_const(self, q: np.ndarray) -> np.ndarray:
        v = q.astype(F32) if self.fmt == "fp8" else quant.int_values(q, 0, self.dtype)
        if self.trans_b:
            v = np.swapaxes(v, -1, -2)
        return np.ascontiguousarray(v)

    def operand(self, x: np.ndarray, scale, zp: int) -> np.ndarray:
        """An activation as the exact values the product multiplies (``q - zp``, or e4m3 values);
        an activation of codes (a GPU plan's quantized tensor between layers) is taken as it is."""
        x = np.asarray(x)
        q = x if x.dtype == self.code else quant.quantize(x, scale, zp, self.fmt)
        return q.astype(F32) if self.fmt == "fp8" else quant.int_values(q, zp, self.dtype)

    def operands(self, inputs: list) -> tuple[np.ndarray, np.ndarray]:
        a = self.operand(inputs[0], self.s_in, self.zp_in)
        if self.w_values is not None:
            b = self.w_values
        else:
            b = self.operand(inputs[1], self.s_w, self.zp_w)
            if self.trans_b:
                b = np.swapaxes(b, -1, -2)
        if self.trans_a:
            a = np.swapaxes(a, -1, -2)
        return a, b

    def product(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The accumulator: exact integers (int8) or float32 sums (fp8)."""
        if self.kind == "gemm":
            return np.matmul(a, b)
        if self.kind == "conv":
            return conv_nd(a, b, None, self.attrs)
        return _conv_transpose(KernelContext(), [a, b], self.attrs)[0]

    def epilogue(self, acc: np.ndarray, inputs: list) -> np.ndarray:
        """float32(acc) * alpha, then bias, residual and activation in float32."""
        y = acc.astype(F32)
        if self.alpha.size == 1:
            y *= self.alpha[0]
        elif self.kind == "gemm":
            y *= self.alpha  # output channels are the last axis
        else:
            y *= self.alpha.reshape((-1,) + (1,) * (y.ndim - 2))
        if self.gemm_alpha != 1.0:
            y *= F32.type(self.gemm_alpha)
        bias = self.bias_const
        if bias is None and self.bias_name and len(inputs) > 2 and inputs[2] is not None:
            bias = np.asarray(inputs[2], dtype=F32)
        if bias is not None:
            if self.kind == "gemm":
                c = bias * F32.type(self.beta) if self.beta != 1.0 else bias
                y = y + c if np.broadcast_shapes(y.shape, c.shape) != y.shape else np.add(y, c, out=y)
            else:
                y += bias.reshape((-1,) + (1,) * (y.ndim - 2))
        z = inputs[3] if self.kind == "conv" and len(inputs) > 3 else None
        if z is not None:
            if np.asarray(z).dtype == self.code:  # a residual of codes (a GPU plan's quantized tensor)
                z = quant.dequantize(z, self.res_scale, self.res_zp)
            elif self.res_scale is not None:
                z = quant.fake_quantize(z, self.res_scale, self.res_zp, self.fmt)
            y += np.asarray(z, dtype=F32)
        return np.asarray(activate(y, self.attrs), dtype=F32)

    def __call__(self, ctx, inputs, attrs):
        a, b = self.operands(inputs)
        y = self.epilogue(self.product(a, b), inputs)
        out_scale = self.attrs.get("q_output_scale")
        if out_scale is not None:  # the output as codes (``core/quant.py``, quantized tensors between layers)
            return [quant.quantize(y, out_scale, 0, self.fmt)]
        return [y]


def check_attention(layer: Layer, precision: str) -> str | None:
    """None if ``layer`` is an fp8 attention (``core.quant.attention_fp8``) these kernels run."""
    if precision != "fp8":
        return f"attention has no {precision} form"
    if not quant.is_attention(layer):
        return "layer carries no fp8 attention parameters"
    missing = [k for k in ("q_input_scale", "q_key_scale", "q_value_scale") if k not in layer.attrs]
    if missing:
        return f"missing {missing[0]}"
    if len(layer.inputs) > 3 and layer.inputs[3]:
        return "fp8 attention takes no mask"
    if int(layer.attrs.get("causal", 0)) and not quant.square_scores(layer):
        return "fp8 attention is causal only over as many queries as keys"
    return None


class QuantizedAttention:
    """An fp8 attention layer's kernel: ``core.quant.attention_fp8`` on the layer's layouts."""

    def __init__(self, layer: Layer):
        a = layer.attrs
        self.scales = tuple(float(np.float32(a[k])) for k in ("q_input_scale", "q_key_scale", "q_value_scale"))
        self.result = float(np.float32(a["q_result_scale"]))
        self.out_scale = a.get("q_output_scale")
        specs = layer.aligned_input_specs()
        # inputs held as codes (core/quant.py, "Quantized tensors between layers"): their values
        self.coded = [s.scale if quant.is_coded(s) else None for s in specs[:3]]

    def __call__(self, ctx, inputs, attrs):
        from .fused import attention_bhsd, attention_out  # noqa: PLC0415

        xs = [np.asarray(x, dtype=F32) if s is None else quant.dequantize(x, s) for x, s in zip(inputs[:3], self.coded)]
        q, k, v = attention_bhsd(xs, attrs)
        y = quant.attention_fp8(q, k, v, scale=float(attrs.get("scale", 1.0)), scales=self.scales,
                                result_scale=self.result, causal=bool(int(attrs.get("causal", 0))))
        y = attention_out(y, attrs)
        if self.out_scale is not None:
            return [quant.quantize(y, self.out_scale, 0, "fp8")]
        return [y]


class QuantizedReferenceTactic:
    """``cpu.numpy.int8`` / ``cpu.numpy.fp8``: the kernels above, float64 products for int8."""

    source = "reference"

    def __init__(self, name: str, fmt: str):
        self.name = name
        self.precision = fmt

    def supports(self, layer: Layer, precision: str, constants=None) -> str | None:
        if precision != self.precision:
            return f"runs {self.precision} layers only"
        if quant.fused_attention(layer):
            return check_attention(layer, precision)
        return check_layer(layer, precision, constants)

    def configs(self, layer: Layer, precision: str) -> list[dict]:
        return [{}]

    def build(self, layer: Layer, precision: str, config: dict, constants=None, reuse: bool = True):
        if quant.fused_attention(layer):
            return QuantizedAttention(layer)
        return QuantizedLayer(layer, constants, fast=False)

    def __repr__(self) -> str:
        return f"<CPU tactic {self.name}>"


TACTICS = [QuantizedReferenceTactic("cpu.numpy.int8", "int8"), QuantizedReferenceTactic("cpu.numpy.fp8", "fp8")]
