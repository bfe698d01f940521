"""The int8 / fp8 numerics (workbench/core/quant.py) and the quantized CPU kernels against NumPy
float64 formulas: rounding, saturation, e4m3 rounding against ml_dtypes, exact integer products,
and the fast tactics equal to the reference kernels bit for bit."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from workbench.core import quant
from workbench.core.numerics import rel_err
from workbench.core.plan import Layer, TensorSpec
from workbench.kernels import cpu as cpu_tactics
from workbench.kernels.reference import KernelContext
from workbench.kernels.reference.conv import _conv_transpose, conv_nd
from workbench.kernels.reference.quant import quantize_linear

E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
REF = {"int8": cpu_tactics.BY_NAME["cpu.numpy.int8"], "fp8": cpu_tactics.BY_NAME["cpu.numpy.fp8"]}


# ----------------------------------------------------------------------------- quantize / scales


def test_int8_rounds_half_to_even_and_saturates():
    s = np.float32(0.25)
    x = s * np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 200, -200, np.inf, -np.inf], np.float32)
    got = quant.quantize(x, s, 0, "int8")
    assert got.dtype == np.int8
    assert got.tolist() == [0, 2, 2, 0, -2, -2, 126, 127, -128, 127, -128]
    # NaN is the zero point (the value 0.0), as a saturating GPU convert gives 0
    assert quant.quantize(np.array([np.nan], np.float32), s, 5, "int8").tolist() == [5]


@pytest.mark.parametrize("zero_type", ["int8", "uint8"])
def test_int8_equals_onnx_quantize_linear(zero_type):
    """Our quantize with the zero point in the int8 domain (uint8: zp - 128) is ONNX QuantizeLinear."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(5000) * 4).astype(np.float32)
    s = np.float32(0.0371)
    zp = np.array(17 if zero_type == "int8" else 140, dtype=zero_type)
    onnx_q = quantize_linear(KernelContext(), [x, np.array(s), zp], {})[0]
    shift = -128 if zero_type == "uint8" else 0
    ours = quant.quantize(x, s, int(zp) + shift, "int8")
    np.testing.assert_array_equal(ours.astype(np.int32), onnx_q.astype(np.int32) + shift)
    # and dequantizing gives the same float32 values bit for bit
    want = ((onnx_q.astype(np.float64) - int(zp)).astype(np.float32) * s).astype(np.float32)
    np.testing.assert_array_equal(quant.dequantize(ours, s, int(zp) + shift), want)


def _e4m3_values() -> np.ndarray:
    bits = np.arange(256, dtype=np.uint8).view(E4M3)
    vals = bits.astype(np.float32)
    return np.unique(vals[np.isfinite(vals)])


def test_fp8_rounds_to_nearest_even_and_saturates():
    vals = _e4m3_values()
    assert vals.max() == 448.0 and vals.min() == -448.0
    # every value is kept; every midpoint between neighbours goes to the one with an even significand
    np.testing.assert_array_equal(quant.quantize(vals, 1.0, 0, "fp8").astype(np.float32), vals)
    lo, hi = vals[:-1], vals[1:]
    mid = ((lo.astype(np.float64) + hi) / 2).astype(np.float32)
    assert np.all((mid > lo) & (mid < hi))  # midpoints are exact in float32
    got = quant.quantize(mid, 1.0, 0, "fp8")
    even = np.where(lo.astype(E4M3).view(np.uint8) % 2 == 0, lo, hi)
    np.testing.assert_array_equal(got.astype(np.float32), even)
    # the same as ml_dtypes' own conversion, and saturating where that would overflow to NaN
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(4000) * 300).astype(np.float32)
    s = np.float32(0.5)
    np.testing.assert_array_equal(quant.quantize(x, s, 0, "fp8").view(np.uint8),
                                  np.clip(x / s, -448, 448).astype(E4M3).view(np.uint8))
    assert quant.quantize(np.array([1e9, -1e9, np.inf], np.float32), 1.0, 0, "fp8").astype(np.float32).tolist() \
        == [448.0, -448.0, 448.0]
    assert np.isnan(quant.quantize(np.array([np.nan], np.float32), 1.0, 0, "fp8").astype(np.float32)[0])
    with pytest.raises(ValueError, match="zero point"):
        quant.quantize(x, s, 3, "fp8")


def test_scales_from_amax():
    assert quant.scale_from_amax(12.7, "int8") == np.float32(np.float32(12.7) / np.float32(127))
    assert quant.scale_from_amax(4.48, "fp8") == np.float32(np.float32(4.48) / np.float32(448))
    assert quant.scale_from_amax(0.0, "int8") == 1.0  # an all-zero tensor: any scale represents it
    np.testing.assert_array_equal(quant.scale_from_amax([127.0, 0.0], "int8"), [1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        quant.scale_from_amax(np.inf, "int8")


def test_weights_per_output_channel():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((16, 8, 3, 3)) * np.logspace(-3, 1, 16).reshape(-1, 1, 1, 1)).astype(np.float32)
    q, s = quant.quantize_weight(w, "int8", 0)
    assert q.dtype == np.int8 and s.shape == (16,)
    assert np.all(np.abs(q.astype(np.int32)).reshape(16, -1).max(axis=1) == 127)  # each channel uses the range
    assert q.min() >= -127
    err = np.abs(quant.dequantize(q, s, 0, 0).astype(np.float64) - w)
    assert np.all(err <= s.reshape(-1, 1, 1, 1) * (0.5 + 1e-6))
    # a model's own scales give its int8 values back from the dequantized float weight, exactly
    q2, s2 = quant.quantize_weight(quant.dequantize(q, s, 0, 0), "int8", 0, scale=s)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(s2, s)
    f8, s8 = quant.quantize_weight(w, "fp8", None)
    assert f8.dtype == E4M3 and s8.shape == (1,) and s8[0] == np.float32(np.abs(w).max()) / np.float32(448)


def test_accumulator_bounds():
    assert quant.float32_exact(500, 255, 127) and not quant.float32_exact(600, 255, 127)
    assert quant.int32_safe(66_000, 255, 127) and not quant.int32_safe(67_000, 255, 127)


# ----------------------------------------------------------------------------- kernels


def _layer(op, domain, x_shape, w, attrs, fmt, *, x_scale, x_zp=0, w_scale=None, w_axis=0, bias=None,
           residual=None, out_shape=None):
    """A quantized layer reading input "x" (float32) and constant "w" (quantized), like the placement
    step leaves it; returns (layer, constants)."""
    inputs = ["x", "w"]
    specs = [TensorSpec("x", "float32", list(x_shape)), TensorSpec("w", quant.ELEMENT[fmt], list(w.shape))]
    consts = {"w": w}
    if bias is not None:
        inputs.append("b")
        specs.append(TensorSpec("b", "float32", list(bias.shape)))
        consts["b"] = bias
    if residual is not None:
        inputs.append("z")
        specs.append(TensorSpec("z", "float32", list(residual)))
    a = dict(attrs)
    a.update({"q_format": fmt, "q_input_scale": float(x_scale), "q_input_zero_point": x_zp,
              "q_weight_scale": np.asarray(w_scale, np.float32), "q_weight_axis": w_axis, "q_weight_const": 1})
    layer = Layer(name="q", op=op, domain=domain, opset=17, inputs=inputs, outputs=["y"], attrs=a,
                  input_specs=specs, output_specs=[TensorSpec("y", "float32", out_shape)], precision=fmt)
    return layer, consts


def _run(tactic, layer, consts, inputs, config=None):
    kernel = tactic.build(layer, layer.precision, config or {}, consts)
    return kernel(KernelContext(), inputs, layer.attrs)[0]


def _candidates(layer, consts):
    out = []
    for tactic, reason in cpu_tactics.candidates(layer, layer.precision, consts):
        if reason is None:
            out += [(tactic, c) for c in tactic.configs(layer, layer.precision)]
    return out


def test_int8_matmul_is_exact_integer_math():
    """K = 6000 with an asymmetric input: float32 sums would round, the kernel's are exact; the
    result is float32(acc) * alpha exactly, and the float64 formula of the dequantized operands."""
    rng = np.random.default_rng(3)
    k, n = 6000, 24
    x = (rng.random((2, 5, k)) * 3 + 2).astype(np.float32)
    sx, zx = np.float32(6 / 255), -94
    w_float = np.abs(rng.standard_normal((k, n))).astype(np.float32)
    wq, sw = quant.quantize_weight(w_float, "int8", 1)
    layer, consts = _layer("MatMul", "", x.shape, wq, {}, "int8", x_scale=sx, x_zp=zx, w_scale=sw, w_axis=1)
    xq = quant.quantize(x, sx, zx, "int8")
    acc = (xq.astype(np.int64) - zx) @ wq.astype(np.int64)
    assert np.abs(acc).max() > 2**24  # beyond float32's exact integers
    want = acc.astype(np.float32) * quant.output_scale(sx, sw)
    f64 = quant.dequantize(xq, sx, zx).astype(np.float64) @ quant.dequantize(wq, sw, 0, 1).astype(np.float64)
    cands = _candidates(layer, consts)
    assert {t.name for t, _ in cands} == {"cpu.quant.gemm", "cpu.numpy.int8"}
    for tactic, config in cands:
        got = _run(tactic, layer, consts, [x, wq], config)
        np.testing.assert_array_equal(got, want)
        assert rel_err(got, f64) < 1e-6


@pytest.mark.parametrize("case", [
    {"x": (2, 8, 11, 9), "w": (16, 8, 3, 3), "attrs": {"pads": [1, 1, 1, 1]}},
    {"x": (1, 6, 12, 12), "w": (6, 2, 3, 3), "attrs": {"group": 3, "strides": [2, 2], "pads": [0, 1, 2, 1]}},
    {"x": (2, 12, 9, 10), "w": (12, 1, 3, 3), "attrs": {"group": 12, "pads": [1, 1, 1, 1], "dilations": [2, 1]}},
    {"x": (2, 5, 7, 7), "w": (9, 5, 1, 1), "attrs": {}},
    {"x": (2, 4, 20), "w": (6, 4, 5), "attrs": {"pads": [2, 2], "strides": [3]}},
])
@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_conv_matches_float64_of_quantized_values(case, fmt):
    """FusedConv (bias, residual quantized, ReLU): every CPU candidate equals the reference kernel;
    the reference equals the float64 convolution of the quantized operands, then the epilogue."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(case["x"]) * 2).astype(np.float32)
    w = rng.standard_normal(case["w"]).astype(np.float32)
    attrs = {"kernel_shape": list(case["w"][2:]), "group": 1, **case["attrs"], "activation": "Relu", "residual": 1}
    axis = 0 if fmt == "int8" else None
    wq, sw = quant.quantize_weight(w, fmt, axis)
    b = rng.standard_normal(case["w"][0]).astype(np.float32)
    acc64 = conv_nd(x.astype(np.float64), w.astype(np.float64), None, attrs)  # for the output shape
    z = rng.standard_normal(acc64.shape).astype(np.float32)
    sx = quant.scale_from_amax(np.abs(x).max() * 0.8, fmt)  # some values saturate
    zx = 3 if fmt == "int8" else 0
    sz = quant.scale_from_amax(np.abs(z).max(), fmt)
    layer, consts = _layer("FusedConv", "workbench", x.shape, wq, attrs, fmt, x_scale=sx, x_zp=zx, w_scale=sw,
                           bias=b, residual=z.shape, out_shape=list(acc64.shape))
    layer.attrs.update({"q_residual_scale": float(sz), "q_residual_zero_point": 0})
    # float64 formula: products of the quantized operands (exact), then the float32 epilogue
    xv = quant.quantize(x, sx, zx, fmt)
    xv = xv.astype(np.float64) - zx if fmt == "int8" else xv.astype(np.float32).astype(np.float64)
    wv = wq.astype(np.float32).astype(np.float64)
    acc = conv_nd(xv, wv, None, attrs)
    alpha = quant.output_scale(sx, sw)
    want = acc.astype(np.float32) * (alpha.reshape(-1, *([1] * (acc.ndim - 2))) if alpha.size > 1 else alpha[0])
    want = want + b.reshape(-1, *([1] * (acc.ndim - 2))) + quant.fake_quantize(z, sz, 0, fmt)
    want = np.maximum(want, 0)
    ref = _run(REF[fmt], layer, consts, [x, wq, b, z])
    # int8: exact products, so only float32 epilogue round-off; fp8: float32 sums (order-dependent)
    assert rel_err(ref, want) < (1e-6 if fmt == "int8" else 1e-5)
    cands = _candidates(layer, consts)
    assert len(cands) >= 2
    for tactic, config in cands:
        got = _run(tactic, layer, consts, [x, wq, b, z], config)
        if fmt == "int8":
            np.testing.assert_array_equal(got, ref, err_msg=f"{tactic.name} {config}")
        else:
            assert rel_err(got, ref) < 1e-5, (tactic.name, config)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_gemm_transposes_alpha_beta_and_bias(fmt):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((7, 12)).astype(np.float32)  # transA: A is [K, M]
    w = rng.standard_normal((5, 7)).astype(np.float32)  # transB: B is [N, K]
    c = rng.standard_normal((5,)).astype(np.float32)
    attrs = {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0, "activation": ""}
    axis = 0 if fmt == "int8" else None
    wq, sw = quant.quantize_weight(w, fmt, axis)
    sa = quant.scale_from_amax(np.abs(a).max(), fmt)
    layer, consts = _layer("FusedGemm", "workbench", a.shape, wq, attrs, fmt, x_scale=sa, w_scale=sw,
                           w_axis=0, bias=c, out_shape=[12, 5])
    av = quant.dequantize(quant.quantize(a, sa, 0, fmt), sa).astype(np.float64)
    wv = quant.dequantize(wq, sw, 0, axis if sw.size > 1 else None).astype(np.float64)
    want = 0.5 * (av.T @ wv.T) + 2.0 * c
    for tactic, config in _candidates(layer, consts):
        assert rel_err(_run(tactic, layer, consts, [a, wq, c], config), want) < 1e-5, tactic.name


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_codes_between_layers_are_the_float32_path(fmt):
    """A GPU plan's quantized tensor between two layers (core/quant.py): the producer's codes
    (q_output_scale) read by the consumer as its operand give exactly the float32 path's result."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 16)).astype(np.float32)
    w1 = rng.standard_normal((16, 24)).astype(np.float32)
    w2 = rng.standard_normal((24, 8)).astype(np.float32)
    s_x = quant.scale_from_amax(np.abs(x).max(), fmt)
    q1, s1 = quant.quantize_weight(w1, fmt, 1 if fmt == "int8" else None)
    q2, s2 = quant.quantize_weight(w2, fmt, 1 if fmt == "int8" else None)
    relu = {"activation": "Relu"}
    l1, c1 = _layer("FusedGemm", "workbench", x.shape, q1, relu, fmt, x_scale=s_x, w_scale=s1, w_axis=1,
                    out_shape=[6, 24])
    h = _run(REF[fmt], l1, c1, [x, q1])
    s_h = float(quant.scale_from_amax(np.abs(h).max() * 0.7, fmt))  # some codes saturate
    l2, c2 = _layer("MatMul", "", h.shape, q2, {}, fmt, x_scale=s_h, w_scale=s2, w_axis=1, out_shape=[6, 8])
    want = _run(REF[fmt], l2, c2, [h, q2])
    l1.attrs["q_output_scale"] = s_h
    codes = _run(REF[fmt], l1, c1, [x, q1])
    assert codes.dtype == (np.int8 if fmt == "int8" else E4M3)
    np.testing.assert_array_equal(codes.view(np.uint8), quant.quantize(h, s_h, 0, fmt).view(np.uint8))
    spec = TensorSpec("h", quant.ELEMENT[fmt], list(h.shape), s_h)
    assert quant.is_coded(spec) and not quant.is_coded(TensorSpec("h", "float32", [6, 24]))
    np.testing.assert_array_equal(quant.encode(h, spec).view(np.uint8), codes.view(np.uint8))
    np.testing.assert_array_equal(quant.decode(codes, spec), quant.fake_quantize(h, s_h, 0, fmt))
    np.testing.assert_array_equal(_run(REF[fmt], l2, c2, [codes, q2]), want)


def test_matmul_of_two_activations_int8():
    """A Q/DQ model may quantize both MatMul operands: the second is quantized per tensor at run time."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((2, 3, 4, 16)).astype(np.float32)
    b = rng.standard_normal((2, 3, 16, 5)).astype(np.float32)
    sa, sb = np.float32(0.03), np.float32(0.025)
    layer = Layer(name="mm", op="MatMul", inputs=["a", "b"], outputs=["y"], precision="int8",
                  attrs={"q_format": "int8", "q_input_scale": float(sa), "q_input_zero_point": 0,
                         "q_weight_scale": np.array([sb], np.float32), "q_weight_axis": -1,
                         "q_weight_zero_point": -7, "q_weight_const": 0},
                  input_specs=[TensorSpec("a", "float32", list(a.shape)), TensorSpec("b", "float32", list(b.shape))],
                  output_specs=[TensorSpec("y", "float32", [2, 3, 4, 5])])
    want = quant.fake_quantize(a, sa).astype(np.float64) @ quant.fake_quantize(b, sb, -7).astype(np.float64)
    for tactic, config in _candidates(layer, {}):
        assert rel_err(_run(tactic, layer, {}, [a, b], config), want) < 1e-6, tactic.name


def test_int8_conv_transpose():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 0, 1, 1]}
    wq, sw = quant.quantize_weight(w, "int8", 1)  # ConvTranspose's output channels are W's axis 1
    sx = quant.scale_from_amax(np.abs(x).max(), "int8")
    layer, consts = _layer("ConvTranspose", "", x.shape, wq, attrs, "int8", x_scale=sx, w_scale=sw, w_axis=1)
    xv = quant.dequantize(quant.quantize(x, sx, 0, "int8"), sx).astype(np.float64)
    wv = quant.dequantize(wq, sw, 0, 1).astype(np.float64)
    want = _conv_transpose(KernelContext(), [xv, wv], attrs)[0]
    got = _run(REF["int8"], layer, consts, [x, wq])
    assert got.shape == want.shape and rel_err(got, want) < 1e-6


def test_tactics_refuse_layers_without_quantization():
    layer, consts = _layer("MatMul", "", (2, 4), np.zeros((4, 3), np.int8), {}, "int8", x_scale=0.1,
                           w_scale=np.ones(3), w_axis=1)
    del layer.attrs["q_format"]
    reasons = {t.name: r for t, r in cpu_tactics.candidates(layer, "int8", consts)}
    assert "quantization parameters" in reasons["cpu.quant.gemm"]
    assert "runs fp32" in reasons["cpu.numpy"]
    layer.attrs["q_format"] = "int8"
    consts["w"] = np.zeros((4, 3), np.float32)
    assert "stored as float32" in REF["int8"].supports(layer, "int8", consts)
