"""Quantization numerics, one home: scales, quantize / dequantize, the integer-GEMM contract and
the ``q_`` attributes a quantized layer carries. The precision step (``precision/quantize.py``),
the Q/DQ import (``passes/qdq.py``) and the CPU tactics (``kernels/reference/quantized.py``,
``kernels/cpu/quantized.py``) all compute through these functions, and the GPU tactics must give
the same numbers: every choice below is the one cuBLASLt / cuDNN / NVRTC make.

Formats
-------
``int8``: symmetric, per-tensor activations with ``scale = amax / 127`` and values saturated to
[-128, 127]; weights per output channel with ``scale_c = amax_c / 127`` and values in [-127, 127]
(the narrow range TensorRT uses for weights, so a weight's negation is representable). An
activation may carry a zero point (asymmetric uint8 Q/DQ models: see below).

``fp8``: e4m3fn (``ml_dtypes.float8_e4m3fn``, 448 the largest finite value), per-tensor scales for
activations *and* weights (``amax / 448``), as cuBLASLt's FP8 GEMM takes them (scalar scale_a /
scale_b); an explicit Q/DQ model may give per-channel fp8 weight scales, which the tactics honour.

Quantize (``quantize``)
-----------------------
int8: ``q = saturate(rint(x / scale) + zero_point)``: the division in float32 (IEEE, correctly
rounded, as CUDA's ``/`` and ``__fdiv_rn``; never a multiplication by a rounded reciprocal),
round half to even (``np.rint``: the IEEE default mode, the ``cvt.rni`` / ``__float2int_rn`` of a
GPU kernel, MLAS's ``_mm_cvtps_epi32`` and ONNX QuantizeLinear), saturation to [-128, 127]. NaN
quantizes to the zero point (the value 0.0; a saturating PTX convert turns NaN into 0), ±inf
saturates. fp8: ``x / scale`` in float32, clipped to ±448, then rounded to nearest even by the
float32 -> e4m3fn conversion (``__nv_cvt_float_to_fp8(.., __NV_SATFINITE, __NV_E4M3)`` rounds and
saturates the same way); NaN stays NaN.

Dequantize: ``(q - zero_point) * scale`` in float32 (the difference is exact).

Integer GEMM / convolution (int8)
---------------------------------
``acc = sum_k (qa_k - za) * qw_k`` exactly, as int32 accumulation computes it (cuBLASLt
``COMPUTE_32I``, cuDNN int8 convolution with int32 compute). The CPU tactics compute it in float64
(every partial sum an integer below 2**53: exact whatever the order) or in float32 where
``k * max|qa - za| * max|qw| < 2**24`` (also exact). An int32 accumulator cannot overflow while
``k * max|qa - za| * max|qw| < 2**31``; the precision step keeps wider layers in float
(``int32_safe``). A zero point is the integer-domain correction ``sum_k qa_k qw_k - za sum_k
qw_k``; convolution padding is the zero point (the real value 0.0), i.e. 0 after the subtraction.
The result: ``y = float32(acc) * alpha_c`` with ``alpha_c = float32(scale_in) * float32(scale_w_c)``
rounded once to float32 at build (``output_scale``), then bias, residual and activation in float32
(``workbench.ops.fused`` order: bias, residual, activation).

fp8 GEMM / convolution: inputs rounded to e4m3 with their scales, products (exact in float32:
4-bit significands) summed in float32, then the same ``* alpha_c`` and float32 epilogue. Float32
sums depend on their order, so a GPU matches fp8 to float32 summation round-off, not bit for bit.

fp8 attention (``attention_fp8``; the fused ``Attention`` op at fp8, cuDNN's fp8 SDPA on the
GPU): Q, K and V rounded to e4m3 with their per-tensor scales (``q_input_scale``, ``q_key_scale``,
``q_value_scale``); scores ``S = (Q K^T) * scale`` in float32; an online softmax over blocks of
``ATTENTION_BLOCK`` keys in order: ``m`` the running row maximum, a block's ``p = exp(S - m)``
(float32) summed unrounded into the row sum ``l`` and rounded to e4m3 as ``p / P_SCALE`` (p <= 1:
codes up to 256); ``o = o * exp(m_old - m) + (p codes . V codes) * P_SCALE * q_value_scale``;
then ``O = o / l``, rounded to e4m3 with ``q_result_scale`` (cuDNN's fp8 SDPA writes e4m3 on
Hopper): the layer's float32 result is that code's value. The GPU's block order and float32 sums
may differ, so it matches to float32 round-off, and a code one step off where a value sits on a
rounding boundary.

Asymmetric activations (onnxruntime's default QUInt8 Q/DQ) are kept, not converted: a uint8 value
``u`` with zero point ``zu`` is the int8 value ``u - 128`` with zero point ``zu - 128`` (same
``q - zero_point``, same result), so every zero point here is in the int8 domain [-128, 127].

The ``q_`` layer attributes
---------------------------
A quantized layer has ``layer.precision`` "int8" or "fp8", reads its float32 activations, and
writes float32 outputs; its weights are plan constants of dtype int8 / float8e4m3fn.

* ``q_format``: "int8" | "fp8" (the layer's precision; ``STORAGE`` gives the element type).
* ``q_input_scale`` (float), ``q_input_zero_point`` (int, int8 domain; 0 when symmetric): how the
  first operand (Conv X, Gemm / MatMul A) is quantized.
* ``q_weight_scale``: float32 array, one scale per output channel, or one element (per tensor).
  The kernels multiply output channel ``c`` by ``alpha_c``; the scales never touch the weight.
* ``q_weight_axis``: the (non-negative) weight axis ``q_weight_scale`` runs along (``weight_axis``:
  Conv 0; ConvTranspose 1; MatMul / Gemm B's N axis), -1 when one scale covers the weight.
* ``q_weight_zero_point`` (int): nonzero only when the second operand is an activation (a MatMul
  of two activations in a Q/DQ model, quantized per tensor at run time); weights are symmetric.
* ``q_weight_const`` (int, 1 / 0): whether the second operand is a quantized plan constant.
* ``q_residual_scale`` / ``q_residual_zero_point``: the residual input of a FusedConv is
  quantized and dequantized (read as 8 bits) before it is added; absent: read in float32.
  Calibration sets them on int8 layers (TensorRT's int8 residual add); an fp8 layer adds its
  float residual unless a Q/DQ model quantizes it.
* ``q_output_scale`` (GPU plans only): the layer writes its output as codes, ``quantize(y,
  q_output_scale)`` of its float32 result (after bias, residual and activation), not as float
  values; see below. A float layer may carry it too (a normalization whose output only quantized
  layers read).
* ``q_copy_scale`` (GPU plans only: float layers, and fp8 convolutions): the layer writes its
  first output as it is and, as its last output, that output's codes with this scale; see below.
* ``q_key_scale``, ``q_value_scale``, ``q_result_scale`` (fp8 attention only): the scales of K
  and V (Q's is ``q_input_scale``) and of the result's rounding (``attention_fp8``).
* ``q_source``: where the activation scales came from ("calibration:<method>" or "qdq"), for
  people; never read to run.

Quantized tensors between layers
--------------------------------
On the GPU, an int8 / fp8 GEMM layer whose output is read only by layers of the same format, each
as a quantized operand with the same scale (zero point 0; ``operand_scale``: the first operand, or
an fp8 attention's Q, K and V), writes the codes themselves:
its ``q_output_scale`` is that scale, and the tensor's spec has the element type
(``ELEMENT``) and ``scale`` (``TensorSpec.scale``: values are ``code * scale``). The readers take
the codes as their operand without a quantize pass. The numbers are exactly those of the float32
path the CPU emulation takes: the reader would have quantized the same float32 result with the
same scale (``__fdiv_rn``, the same rounding and saturation); only the bytes between the layers
change, one per element instead of a float.

A float layer whose tactic writes codes (the row-wise normalizations) takes part the same way. Its
output read only by such readers is written as codes (``q_output_scale``: GPT-2's and ViT's
pre-norm LayerNorms feeding Q/K/V and FC1). Where float readers need it too (BERT's post-norm
SkipLayerNorm output is the next residual), the layer also writes a copy of codes as an extra,
last output (``q_copy_scale``; ``op_outputs`` gives the outputs without it) and the quantized
readers read the copy. A quantized producer does the same where its tactic writes both
(``cudnn.conv_fp8``: a ResNet block's output, read as codes by the next block's convolutions
and as floats by its residual add). Either way the codes are those of the float32 result, as the reader's
quantize of the float32 tensor of the CPU emulation gives them.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("int8", "fp8")
# largest magnitude of each format: activations map amax onto it
QMAX = {"int8": 127.0, "fp8": 448.0}
INT8_MIN, INT8_MAX = -128, 127
WEIGHT_INT8_MAX = 127  # weights use the narrow, symmetric range [-127, 127]
ELEMENT = {"int8": "int8", "fp8": "float8e4m3fn"}  # element type of quantized values
F32 = np.dtype(np.float32)
# exact-accumulation bounds: float32 holds every integer below 2**24; an int32 accumulator 2**31
FLOAT32_EXACT = 2**24
INT32_LIMIT = 2**31

try:
    import ml_dtypes

    E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
except ImportError:  # pragma: no cover - ml_dtypes is a hard dependency
    E4M3 = None

# the ops a layer may be quantized at, (domain, op) -> what it multiplies
QUANT_OPS = {("", "Conv"): "conv", ("workbench", "FusedConv"): "conv", ("", "ConvTranspose"): "conv_transpose",
             ("", "Gemm"): "gemm", ("workbench", "FusedGemm"): "gemm", ("", "MatMul"): "gemm"}

ATTRS = ("q_format", "q_input_scale", "q_input_zero_point", "q_weight_scale", "q_weight_axis",
         "q_weight_zero_point", "q_weight_const", "q_residual_scale", "q_residual_zero_point", "q_output_scale",
         "q_copy_scale", "q_source", "q_key_scale", "q_value_scale", "q_result_scale")
# fp8 attention (``attention_fp8``): the value of one code of the softmax's unnormalized
# probabilities (p <= 1 is stored as p / P_SCALE <= 256, inside e4m3's 448), and the keys per
# block of the online softmax (cuDNN's fp8 SDPA reference computes in blocks of 128 keys)
P_SCALE = 1.0 / 256.0
ATTENTION_BLOCK = 128
ATTENTION_OPS = frozenset({("workbench", "Attention")})  # the fused op, not ONNX's own Attention


def kind_of(layer) -> str | None:
    """"conv", "conv_transpose" or "gemm" for a layer that may be quantized, else None."""
    return QUANT_OPS.get((layer.domain if layer.domain != "ai.onnx" else "", layer.op))


def operand_scale(layer, pos: int) -> float | None:
    """The scale with which a quantized layer rounds its input ``pos`` (no zero point), or None
    where that input is not a quantized operand: Conv X / Gemm A (input 0, ``q_input_scale``); an
    fp8 attention's Q, K and V (inputs 0 to 2)."""
    a = layer.attrs
    if layer.precision not in FORMATS or a.get("q_format") != layer.precision or int(a.get("q_input_zero_point", 0)):
        return None
    key = {0: "q_input_scale"}
    if is_attention(layer):
        key.update({1: "q_key_scale", 2: "q_value_scale"})
    s = a.get(key[pos]) if pos in key else None
    return None if s is None else float(np.float32(s))


def is_attention(layer) -> bool:
    """Whether ``layer`` is a quantized (fp8) fused attention (``attention_fp8``)."""
    return fused_attention(layer) and layer.attrs.get("q_format") == "fp8" and "q_result_scale" in layer.attrs


def square_scores(layer) -> bool:
    """Whether an attention layer's Q and K have one known sequence length (``attention_fp8``'s
    causal mask is top-left, which is the op's end-aligned one only then)."""
    seq = []
    for spec, n in zip(layer.aligned_input_specs()[:2], "qk"):
        shape = spec.shape if spec is not None else None
        pos = {"bhsd": 2, "bshd": 1, "bsd": 1, "bhds": 3}.get(str(layer.attrs.get(f"{n}_layout", "bhsd")))
        d = shape[pos] if shape is not None and pos is not None and len(shape) > pos else None
        seq.append(d if isinstance(d, int) else None)
    return None not in seq and seq[0] == seq[1]


def fused_attention(layer) -> bool:
    """Whether ``layer`` is the fused ``workbench`` Attention op (FUSED_OPS.md), the one fp8 runs."""
    return (layer.domain, layer.op) in ATTENTION_OPS


def attention_fp8(q, k, v, *, scale: float, scales: tuple, result_scale: float, causal: bool = False,
                  coded: tuple = (False, False, False)) -> np.ndarray:
    """fp8 attention (see the module doc) of ``q`` [B, H, Sq, D] and ``k`` / ``v`` [B, H, Skv, D]
    (key / value heads already repeated for grouped queries): float32 values (``coded``: that
    operand already holds its codes' values), ``scales`` those of Q, K and V. ``causal``: query i
    sees keys j <= i (Sq == Skv). Returns the float32 values of the e4m3 result [B, H, Sq, Dv]."""
    f32 = F32.type
    ops = []
    for x, s, done in zip((q, k, v), scales, coded):
        x = np.asarray(x, dtype=F32)
        ops.append(x if done else fake_quantize(x, s, 0, "fp8"))
    qv, kv, vv = ops
    vcodes = quantize(vv, scales[2], 0, "fp8").astype(F32)
    sq, skv = qv.shape[-2], kv.shape[-2]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        s_all = np.matmul(qv, np.swapaxes(kv, -1, -2)) * f32(scale)
        if causal:
            s_all = np.where(np.tril(np.ones((sq, skv), dtype=bool)), s_all, f32(-np.inf))
        shape = qv.shape[:-1]
        m = np.full(shape + (1,), -np.inf, F32)
        l = np.zeros(shape + (1,), F32)
        o = np.zeros(shape + (vv.shape[-1],), F32)
        pv_scale = f32(f32(P_SCALE) * f32(scales[2]))
        for b0 in range(0, skv, ATTENTION_BLOCK):
            blk = s_all[..., b0:b0 + ATTENTION_BLOCK]
            m_new = np.maximum(m, blk.max(axis=-1, keepdims=True))
            safe = np.where(np.isfinite(m_new), m_new, f32(0))  # a row with no visible key yet
            p = np.exp(blk - safe).astype(F32)
            corr = np.exp(np.where(np.isfinite(m), m - safe, -np.inf)).astype(F32)
            l = l * corr + p.sum(axis=-1, keepdims=True, dtype=F32)
            pc = quantize(p, P_SCALE, 0, "fp8").astype(F32)
            o = o * corr + np.matmul(pc, vcodes[..., b0:b0 + ATTENTION_BLOCK, :]) * pv_scale
            m = m_new
        out = (o / l).astype(F32)
    return fake_quantize(out, result_scale, 0, "fp8")


def weight_axis(layer, w_ndim: int) -> int | None:
    """The axis of a layer's weight that runs along its output channels (None: no such single
    axis, the weight gets one scale): Conv 0; ConvTranspose 1 (group 1 only); MatMul / Gemm the N
    axis of B."""
    kind = kind_of(layer)
    if kind == "conv":
        return 0
    if kind == "conv_transpose":
        return 1 if int(layer.attrs.get("group", 1)) == 1 else None
    if w_ndim < 2:
        return None
    trans_b = layer.op != "MatMul" and int(layer.attrs.get("transB", 0))
    return w_ndim - 2 if trans_b else w_ndim - 1


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantized format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def scale_from_amax(amax, fmt: str) -> np.ndarray:
    """``amax / QMAX[fmt]`` in float32 (an array for per-channel amax). A zero amax (a tensor or
    channel that is all zeros) gets scale 1, which represents 0 exactly; amax must be finite."""
    a = np.asarray(amax, dtype=np.float64).astype(F32)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"amax must be finite and non-negative, got {amax!r:.80}")
    s = a / F32.type(QMAX[check_format(fmt)])
    return np.where(s > 0, s, F32.type(1.0)).astype(F32)


def _broadcast(p, x: np.ndarray, axis: int | None) -> np.ndarray:
    """A scale / zero point as something that broadcasts against ``x`` along ``axis``."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    if axis is None:
        raise ValueError(f"{p.size} scales need an axis")
    shape = [1] * x.ndim
    shape[axis] = p.size
    return p.reshape(shape)


def quantize(x, scale, zero_point=0, fmt: str = "int8", axis: int | None = None,
             lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """``x`` quantized to ``fmt``: an int8 array, or a float8_e4m3fn array (see the module doc).
    ``scale`` / ``zero_point``: scalars, or arrays along ``axis``; ``lo``/``hi``: the int8 range
    (weights pass -127)."""
    x = np.asarray(x, dtype=F32)
    s = _broadcast(np.asarray(scale, dtype=F32), x, axis)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = x / s
    if check_format(fmt) == "fp8":
        if np.any(np.asarray(zero_point) != 0):
            raise ValueError("fp8 quantization has no zero point")
        np.clip(v, -QMAX["fp8"], QMAX["fp8"], out=v)
        return v.astype(E4M3)
    zp = _broadcast(np.asarray(zero_point, dtype=F32), x, axis)
    np.rint(v, out=v)
    v += zp
    nan = np.isnan(v)
    if nan.any():
        v[nan] = np.broadcast_to(zp, v.shape)[nan]
    np.clip(v, lo, hi, out=v)
    return v.astype(np.int8)


def dequantize(q, scale, zero_point=0, axis: int | None = None) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32."""
    q = np.asarray(q)
    v = q.astype(F32)
    if np.any(np.asarray(zero_point) != 0):
        v = v - _broadcast(np.asarray(zero_point, dtype=F32), v, axis)
    return (v * _broadcast(np.asarray(scale, dtype=F32), v, axis)).astype(F32, copy=False)


def fake_quantize(x, scale, zero_point=0, fmt: str = "int8", axis: int | None = None) -> np.ndarray:
    """``dequantize(quantize(x))``: ``x`` rounded onto the format's grid, as float32."""
    return dequantize(quantize(x, scale, zero_point, fmt, axis), scale, zero_point, axis)


def int_values(q: np.ndarray, zero_point: int = 0, dtype=np.float64) -> np.ndarray:
    """``q - zero_point`` as exact integers in a float array (what the integer GEMM multiplies)."""
    v = q.astype(dtype)
    if zero_point:
        v -= zero_point
    return v


def channel_amax(w: np.ndarray, axis: int | None) -> np.ndarray:
    """max |w| per slice of ``axis`` (a 1-element array when ``axis`` is None), in float64."""
    a = np.abs(np.asarray(w, dtype=np.float64))
    if axis is None or a.ndim == 0:
        return np.array([a.max() if a.size else 0.0])
    axis = axis % a.ndim
    return a.max(axis=tuple(i for i in range(a.ndim) if i != axis)) if a.size else np.zeros(a.shape[axis])


def quantize_weight(w: np.ndarray, fmt: str, axis: int | None, scale=None) -> tuple[np.ndarray, np.ndarray]:
    """(quantized weight, float32 scales) of a float weight: per output channel along ``axis``
    (None: per tensor) with ``scale = amax / QMAX`` unless ``scale`` is given (a Q/DQ model's own
    scales; its int8 values may then use -128, as the model stored them)."""
    w = np.asarray(w, dtype=F32)
    given = scale is not None
    s = np.asarray(scale, dtype=F32).reshape(-1) if given else scale_from_amax(channel_amax(w, axis), fmt)
    ax = None if s.size == 1 else axis
    if fmt == "fp8":
        return quantize(w, s, 0, "fp8", ax), s
    lo = INT8_MIN if given else -WEIGHT_INT8_MAX
    return quantize(w, s, 0, "int8", ax, lo=lo, hi=INT8_MAX), s


def output_scale(input_scale, weight_scale) -> np.ndarray:
    """``alpha_c = float32(input_scale) * float32(weight_scale_c)``, rounded once to float32: what
    the int32 / fp32 accumulator is multiplied by (cuBLASLt's alpha vector, cuDNN's scale)."""
    return (F32.type(input_scale) * np.asarray(weight_scale, dtype=F32)).astype(F32)


def value_range(fmt: str, zero_point: int = 0) -> float:
    """The largest ``|q - zero_point|`` of the format (int8) or value (fp8)."""
    if fmt == "fp8":
        return QMAX["fp8"]
    return float(max(INT8_MAX - zero_point, zero_point - INT8_MIN))


def float32_exact(k: int, a_max: float, b_max: float) -> bool:
    """Whether a float32 sum of ``k`` integer products bounded by ``a_max * b_max`` is exact."""
    return k * a_max * b_max < FLOAT32_EXACT


def int32_safe(k: int, a_max: float, b_max: float) -> bool:
    """Whether an int32 accumulator of ``k`` such products can never overflow."""
    return k * a_max * b_max < INT32_LIMIT


def float_weight(layer_attrs: dict, q: np.ndarray) -> np.ndarray:
    """The float32 weight a quantized layer's stored weight stands for (``dequantize`` along
    ``q_weight_axis``): what an fp32 reference of the same layer multiplies by."""
    s = np.asarray(layer_attrs["q_weight_scale"], dtype=F32)
    axis = int(layer_attrs.get("q_weight_axis", 0)) % q.ndim if s.size > 1 else None
    return dequantize(q, s, 0, axis)


def is_coded(spec) -> bool:
    """Whether a tensor spec holds quantization codes (``code * spec.scale`` are its values)."""
    return spec is not None and getattr(spec, "scale", None) is not None and spec.dtype in ELEMENT.values()


def format_of_element(dtype: str) -> str:
    """The format ("int8" / "fp8") whose codes have element type ``dtype``."""
    return next(f for f, e in ELEMENT.items() if e == dtype)


def decode(q, spec) -> np.ndarray:
    """The float32 values of a coded tensor (``is_coded(spec)``)."""
    return dequantize(q, spec.scale)


def encode(x, spec) -> np.ndarray:
    """Float values as the codes of a coded tensor (``is_coded(spec)``): ``quantize`` with its scale."""
    return quantize(x, spec.scale, 0, format_of_element(spec.dtype))


def op_outputs(layer) -> list[str]:
    """The outputs the layer's op defines: ``layer.outputs`` without the copy of codes a
    ``q_copy_scale`` layer writes last."""
    return layer.outputs[:-1] if layer.attrs.get("q_copy_scale") is not None else layer.outputs


def coded_outputs(layer) -> dict | str:
    """How a layer writes codes: {"output": its first output's format or None (``q_output_scale``),
    "copy": the format of the copy it writes last or None (``q_copy_scale``), "scale"}; or why its
    attributes and output specs disagree."""
    a, specs = layer.attrs, layer.output_specs
    out, cp = a.get("q_output_scale"), a.get("q_copy_scale")
    if out is not None and cp is not None:
        return "q_output_scale and q_copy_scale together"
    found = {"output": None, "copy": None, "scale": None}
    coded_at = [i for i, s in enumerate(specs) if is_coded(s)]
    for key, scale, pos in (("output", out, 0), ("copy", cp, len(specs) - 1)):
        if scale is None:
            continue
        if key == "copy" and len(specs) < 2:
            return "q_copy_scale on a layer with one output"
        spec = specs[pos] if specs else None
        if not is_coded(spec) or np.float32(spec.scale) != np.float32(scale):
            return (f"{key} scale {scale} without a tensor of codes of that scale "
                    f"({spec.dtype if spec else None}, scale {spec.scale if spec else None})")
        if key == "copy" and spec.shape != specs[0].shape:
            return f"the copy of codes has shape {spec.shape}, the output {specs[0].shape}"
        found[key], found["scale"] = format_of_element(spec.dtype), float(scale)
        coded_at.remove(pos)
    if coded_at:
        return f"output {coded_at[0]} holds codes without q_output_scale / q_copy_scale"
    return found


def strip_attrs(attrs: dict) -> dict:
    """A layer's attributes without the quantization keys (``ATTRS``; an attention's ``q_layout``
    is not one of them)."""
    return {k: v for k, v in attrs.items() if k not in ATTRS}
