"""The fp8 convolution tactics (``cudnn.conv_fp8``; ``cublaslt.conv1x1_fp8``, a 1x1 convolution
as cuBLASLt's FP8 GEMM) against the CPU emulation of the same layer
(``kernels/reference/quantized.py``), every plan / algorithm offered, outputs poisoned before each
run; the float16 GEMM form (``cublaslt.conv1x1``) against NumPy float64; and an fp8 GPU engine of
a small calibrated residual block against the CPU engine built with the same calibration.

The GPU buffers are channels-last (the layout pass stores a convolution's tensors so); the
emulation runs NCHW, so inputs are transposed on the way in and outputs on the way out."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.core import quant
from workbench.core.numerics import rel_err
from workbench.core.plan import Layer, TensorSpec
from workbench.kernels.reference import KernelContext
from workbench.kernels.reference.quantized import QuantizedLayer

pytestmark = pytest.mark.gpu

RNG = np.random.default_rng(23)
CODE = quant.ELEMENT["fp8"]
# cuDNN's FP8 convolution sums products inside its MMAs with fewer bits than float32, and the
# float16 output is rounded once: the same budget as cuBLASLt's direct fp8 form
# (test_gpu_quant_gemm.DIRECT_TOL). Measured on an H100 over every plan: 2e-7 to 1.5e-4
FP16_TOL = 2e-3
# codes out: that summation order (and the multiplication by 1 / scale, one rounding more than the
# emulation's division) puts a code one e4m3 step (2**-3 relative) off where a value sits at a
# rounding boundary. Measured on an H100: up to 1.7e-3 with 0.14% of the codes off (codes out),
# 3.9e-3 with 0.16% off (the copy)
CODES_TOL, CODES_OFF = 2e-2, 0.05


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _conv(*, n=4, c=32, k=64, hw=14, ksize=3, stride=1, residual=None, coded_in=False, coded_out=False,
          copy=False, act="Relu"):
    """An fp8 FusedConv layer (channels-last tensors), its constants and NCHW inputs as the
    emulation takes them. ``residual``: None, "float16" (added as it is), "quantize" (float16 with
    ``q_residual_scale``) or "codes" (codes of ``q_residual_scale``). ``coded_out``: Y as codes;
    ``copy``: Y in float16 and its codes as a second output."""
    x = RNG.standard_normal((n, c, hw, hw)).astype(np.float16).astype(np.float32)
    w = (RNG.standard_normal((k, c, ksize, ksize)) / np.sqrt(c * ksize * ksize)).astype(np.float32)
    wq, s_w = quant.quantize_weight(w, "fp8", None)
    pad = ksize // 2
    out_hw = (hw + 2 * pad - ksize) // stride + 1
    a = {"q_format": "fp8", "q_input_scale": float(quant.scale_from_amax(np.abs(x).max() * 0.8, "fp8")),
         "q_input_zero_point": 0, "q_weight_scale": s_w, "q_weight_axis": -1, "q_weight_zero_point": 0,
         "q_weight_const": 1, "kernel_shape": [ksize, ksize], "pads": [pad] * 4, "strides": [stride, stride],
         "dilations": [1, 1], "group": 1, "channels_last": 1}
    if act:
        a["activation"] = act
    consts = {"w": wq, "b": RNG.standard_normal(k).astype(np.float32)}
    yshape = [n, k, out_hw, out_hw]
    ins = [TensorSpec("x", "float16", [n, c, hw, hw]), TensorSpec("w", CODE, list(w.shape)),
           TensorSpec("b", "float32", [k])]
    names = ["x", "w", "b"]
    feeds = {"x": x}
    if residual:
        z = RNG.standard_normal(yshape).astype(np.float16).astype(np.float32)
        feeds["z"] = z
        if residual != "float16":
            a["q_residual_scale"] = float(quant.scale_from_amax(np.abs(z).max() * 0.9, "fp8"))
            a["q_residual_zero_point"] = 0
        if residual == "codes":
            feeds["z"] = quant.quantize(z, a["q_residual_scale"], 0, "fp8")
            ins.append(TensorSpec("z", CODE, yshape, a["q_residual_scale"]))
        else:
            ins.append(TensorSpec("z", "float16", yshape))
        names.append("z")
        a["residual"] = 1
    if coded_in:
        feeds["x"] = quant.quantize(x, a["q_input_scale"], 0, "fp8")
        ins[0] = TensorSpec("x", CODE, ins[0].shape, a["q_input_scale"])
    layouts = ["nhwc", "", "", "nhwc"][:len(names)]
    a.update({"in_layouts": layouts, "out_layouts": ["nhwc"]})
    lay = Layer(name="conv_fp8", op="FusedConv", domain="workbench", inputs=names, outputs=["y"], attrs=a,
                input_specs=ins, output_specs=[TensorSpec("y", "float16", yshape)])
    lay.precision = "fp8"
    if coded_out or copy:
        y = QuantizedLayer(lay, consts)(KernelContext(), _host_inputs(lay, consts, feeds), lay.attrs)[0]
        scale = float(quant.scale_from_amax(np.abs(y).max() * 0.7, "fp8"))  # some saturate
        if coded_out:
            a["q_output_scale"] = scale
            lay.output_specs[0] = TensorSpec("y", CODE, yshape, scale)
        else:
            a["q_copy_scale"] = scale
            lay.outputs.append("y/" + CODE)
            lay.output_specs.append(TensorSpec("y/" + CODE, CODE, yshape, scale))
            a["out_layouts"] = ["nhwc", "nhwc"]
    return lay, consts, feeds


def _host_inputs(lay, consts, feeds):
    return [feeds["x"], consts["w"], consts["b"]] + ([feeds["z"]] if "z" in feeds else [])


def _device(a, spec):
    import cupy as cp

    from workbench.kernels.cuda.device import to_device_bits

    return cp.asarray(to_device_bits(_nhwc(a), spec.dtype))


@pytest.mark.parametrize("residual,coded_in,coded_out,copy,ksize,stride", [
    (None, False, False, False, 3, 1),
    (None, True, True, False, 3, 1),
    ("float16", False, False, False, 1, 1),
    ("quantize", False, True, False, 1, 1),
    ("codes", True, False, False, 3, 1),
    (None, False, False, False, 1, 2),
    ("float16", True, False, True, 1, 1),
])
def test_fp8_conv_matches_the_emulation(residual, coded_in, coded_out, copy, ksize, stride):
    import cupy as cp

    from workbench.kernels.cuda.cudnn_conv import CudnnConvFp8
    from workbench.kernels.cuda.device import gpu_info, to_device_bits

    lay, consts, feeds = _conv(residual=residual, coded_in=coded_in, coded_out=coded_out, copy=copy, ksize=ksize,
                               stride=stride)
    want = QuantizedLayer(lay, consts)(KernelContext(), _host_inputs(lay, consts, feeds), lay.attrs)[0]
    out_spec = lay.output_specs[0]
    want_v = quant.decode(want, out_spec) if coded_out else want.astype(np.float16).astype(np.float32)
    assert np.any(want_v != 0)
    gpu, tactic = gpu_info(), CudnnConvFp8()
    why = tactic.supports(lay, "fp8", gpu)
    assert why is None, why
    specs = {s.name: s for s in lay.input_specs}
    dw = {"w": cp.asarray(to_device_bits(consts["w"], CODE)), "b": cp.asarray(consts["b"])}
    ins = [_device(feeds["x"], specs["x"]), dw["w"], dw["b"]]
    if "z" in feeds:
        ins.append(_device(feeds["z"], specs["z"]))
    cfgs = tactic.configs(lay, "fp8", gpu)
    assert cfgs, "cuDNN offered no fp8 plan"
    n, k, h, w = out_spec.shape
    for cfg in cfgs:
        kern = tactic.build(lay, "fp8", cfg, dw, gpu)
        y = cp.full((n, h, w, k), 0x7F if coded_out else np.nan, np.uint8 if coded_out else np.float16)
        yc = cp.full((n, h, w, k), 0x7F, np.uint8)  # 0x7F: an e4m3 NaN
        ws = cp.empty(max(kern.workspace_bytes, 1), cp.uint8)
        stream = cp.cuda.Stream(non_blocking=True)
        kern.run(ins, [y, yc] if copy else [y], ws, stream)
        stream.synchronize()
        if copy:  # the codes of the float32 result the float16 output was rounded from
            spec = lay.output_specs[-1]
            codes = np.ascontiguousarray(cp.asnumpy(yc).transpose(0, 3, 1, 2)).view(quant.E4M3)
            want_c = quant.decode(quant.encode(want, spec), spec)
            got_c = quant.decode(codes, spec)
            err_c, off_c = rel_err(got_c, want_c), float(np.mean(got_c != want_c))
            print(f"copy of codes: {err_c:.2e}, {off_c:.4f} differ")
            assert err_c < CODES_TOL and off_c < CODES_OFF, (cfg, err_c, off_c)
        got = cp.asnumpy(y).transpose(0, 3, 1, 2)
        if coded_out:
            got = quant.decode(np.ascontiguousarray(got).view(quant.E4M3), out_spec)
        else:
            got = got.astype(np.float32)
        err = rel_err(got, want_v)
        off = float(np.mean(got != want_v))
        print(f"residual={residual} codes in={coded_in} out={coded_out} {ksize}x{ksize}/{stride} {cfg['plan']}: "
              f"{err:.2e}, {off:.4f} of the outputs differ")
        assert err < (CODES_TOL if coded_out else FP16_TOL), f"{cfg}: relative error {err:.2e}"
        if coded_out:
            assert off < CODES_OFF, cfg


@pytest.mark.parametrize("residual,coded_in,coded_out,copy", [
    (None, False, False, False),
    ("float16", False, False, False),
    (None, True, True, False),
    ("float16", True, True, False),
    ("float16", True, False, True),
])
def test_fp8_conv1x1_gemm_matches_the_emulation(residual, coded_in, coded_out, copy):
    """``cublaslt.conv1x1_fp8``: a 1x1 fp8 convolution as cuBLASLt's FP8 GEMM over the pixels
    (the residual as C), every algorithm and both accumulation modes, against the emulation."""
    import cupy as cp

    from workbench.kernels.cuda.cublaslt_conv import CublasLtConv1x1Fp8
    from workbench.kernels.cuda.device import gpu_info, to_device_bits

    lay, consts, feeds = _conv(residual=residual, coded_in=coded_in, coded_out=coded_out, copy=copy, ksize=1)
    want = QuantizedLayer(lay, consts)(KernelContext(), _host_inputs(lay, consts, feeds), lay.attrs)[0]
    out_spec = lay.output_specs[0]
    want_v = quant.decode(want, out_spec) if coded_out else want.astype(np.float16).astype(np.float32)
    gpu, tactic = gpu_info(), CublasLtConv1x1Fp8()
    why = tactic.supports(lay, "fp8", gpu)
    assert why is None, why
    specs = {s.name: s for s in lay.input_specs}
    dw = {"w": cp.asarray(to_device_bits(consts["w"], CODE)), "b": cp.asarray(consts["b"])}
    ins = [_device(feeds["x"], specs["x"]), dw["w"], dw["b"]] + ([_device(feeds["z"], specs["z"])] if residual else [])
    cfgs = tactic.configs(lay, "fp8", gpu)
    assert cfgs and any(c.get("fast_accum") for c in cfgs) and any(not c.get("fast_accum") for c in cfgs)
    n, k, h, w = out_spec.shape
    for cfg in cfgs:
        kern = tactic.build(lay, "fp8", cfg, dw, gpu)
        y = cp.full((n, h, w, k), 0x7F if coded_out else np.nan, np.uint8 if coded_out else np.float16)
        yc = cp.full((n, h, w, k), 0x7F, np.uint8)
        ws = cp.full(max(kern.workspace_bytes, 1), 0xFF, cp.uint8)
        stream = cp.cuda.Stream(non_blocking=True)
        kern.run(ins, [y, yc] if copy else [y], ws, stream)
        stream.synchronize()
        got = cp.asnumpy(y).transpose(0, 3, 1, 2)
        got = quant.decode(np.ascontiguousarray(got).view(quant.E4M3), out_spec) if coded_out else got.astype(np.float32)
        err, off = rel_err(got, want_v), float(np.mean(got != want_v))
        print(f"gemm residual={residual} codes in={coded_in} out={coded_out} copy={copy} {cfg['algo']}"
              f"{' fast' if cfg.get('fast_accum') else ''}: {err:.2e}, {off:.4f} differ")
        assert err < (CODES_TOL if coded_out else FP16_TOL), (cfg["algo"], err)
        if coded_out:
            assert off < CODES_OFF, cfg["algo"]
        if copy:  # codes of the float16 output: the emulation's codes of the float32 result, up to that rounding
            spec = lay.output_specs[-1]
            got_c = quant.decode(np.ascontiguousarray(cp.asnumpy(yc).transpose(0, 3, 1, 2)).view(quant.E4M3), spec)
            want_c = quant.decode(quant.encode(want, spec), spec)
            err_c, off_c = rel_err(got_c, want_c), float(np.mean(got_c != want_c))
            assert err_c < CODES_TOL and off_c < CODES_OFF, (cfg["algo"], err_c, off_c)


@pytest.mark.parametrize("residual,act", [(True, "Relu"), (False, ""), (True, "")])
def test_fp16_conv1x1_gemm_matches_numpy(residual, act):
    """``cublaslt.conv1x1``: a float16 1x1 convolution with bias, residual and ReLU as one cuBLASLt
    GEMM, every algorithm, against NumPy float64 on the same float16 values."""
    import cupy as cp

    from workbench.kernels.cuda.cublaslt_conv import CublasLtConv1x1
    from workbench.kernels.cuda.device import gpu_info

    n, c, k, hw = 4, 48, 80, 12
    x = RNG.standard_normal((n, hw, hw, c)).astype(np.float16)
    w = (RNG.standard_normal((k, c, 1, 1)) / np.sqrt(c)).astype(np.float16)
    b = RNG.standard_normal(k).astype(np.float16)
    z = RNG.standard_normal((n, hw, hw, k)).astype(np.float16)
    want = x.astype(np.float64).reshape(-1, c) @ w.astype(np.float64).reshape(k, c).T + b
    if residual:
        want = want + z.reshape(-1, k)
    if act:
        want = np.maximum(want, 0)
    names, specs = ["x", "w", "b"], [TensorSpec("x", "float16", [n, c, hw, hw]), TensorSpec("w", "float16", [k, c, 1, 1]),
                                      TensorSpec("b", "float16", [k])]
    if residual:
        names.append("z")
        specs.append(TensorSpec("z", "float16", [n, k, hw, hw]))
    a = {"kernel_shape": [1, 1], "pads": [0] * 4, "strides": [1, 1], "dilations": [1, 1], "group": 1,
         "in_layouts": ["nhwc", "", "", "nhwc"][:len(names)], "out_layouts": ["nhwc"]}
    if act:
        a["activation"] = act
    if residual:
        a["residual"] = 1
    lay = Layer(name="conv1x1", op="FusedConv", domain="workbench", inputs=names, outputs=["y"], attrs=a,
                input_specs=specs, output_specs=[TensorSpec("y", "float16", [n, k, hw, hw])])
    gpu, tactic = gpu_info(), CublasLtConv1x1()
    assert tactic.supports(lay, "fp16", gpu) is None
    weights = {"w": cp.asarray(w), "b": cp.asarray(b)}
    ins = [cp.asarray(x), weights["w"], weights["b"]] + ([cp.asarray(z)] if residual else [])
    cfgs = tactic.configs(lay, "fp16", gpu)
    assert cfgs
    for cfg in cfgs:
        kern = tactic.build(lay, "fp16", cfg, weights, gpu)
        y = cp.full((n, hw, hw, k), np.nan, np.float16)
        ws = cp.empty(max(kern.workspace_bytes, 1), cp.uint8)
        stream = cp.cuda.Stream(non_blocking=True)
        kern.run(ins, [y], ws, stream)
        stream.synchronize()
        err = rel_err(cp.asnumpy(y).reshape(-1, k).astype(np.float64), want)
        assert err < 2e-3, (cfg["algo"], err)


def test_fp8_conv_refusals_name_the_reason():
    from workbench.kernels.cuda.cudnn_conv import CudnnConv, CudnnConvFp8
    from workbench.kernels.cuda.device import gpu_info
    from workbench.kernels.cuda.tactic import contract_refusal

    gpu = gpu_info()
    lay, _, _ = _conv()
    assert CudnnConvFp8().supports(lay, "fp16", gpu) == "runs fp8 layers only"
    assert "runs no fp8" in contract_refusal(CudnnConv(), lay, "fp8")
    lay.attrs["q_input_zero_point"] = 3
    assert CudnnConvFp8().supports(lay, "fp8", gpu) == "fp8 has no zero point"


def _blocks(c=32, count=2):
    """``count`` ResNet bottlenecks at one width: x -> 1x1 conv + ReLU -> 3x3 conv + ReLU -> 1x1
    conv + x -> ReLU, then a global average pool."""
    def w(k, ks):
        return (RNG.standard_normal((k, c, ks, ks)) / np.sqrt(c * ks * ks)).astype(np.float32)

    inits, nodes, x = [], [], "x"
    for i in range(count):
        inits += [numpy_helper.from_array(w(c, 1), f"w1_{i}"), numpy_helper.from_array(w(c, 3), f"w2_{i}"),
                  numpy_helper.from_array(w(c, 1), f"w3_{i}")]
        inits += [numpy_helper.from_array(0.1 * RNG.standard_normal(c).astype(np.float32), f"b{j}_{i}") for j in (1, 2, 3)]
        nodes += [helper.make_node("Conv", [x, f"w1_{i}", f"b1_{i}"], [f"c1_{i}"]),
                  helper.make_node("Relu", [f"c1_{i}"], [f"r1_{i}"]),
                  helper.make_node("Conv", [f"r1_{i}", f"w2_{i}", f"b2_{i}"], [f"c2_{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c2_{i}"], [f"r2_{i}"]),
                  helper.make_node("Conv", [f"r2_{i}", f"w3_{i}", f"b3_{i}"], [f"c3_{i}"]),
                  helper.make_node("Add", [f"c3_{i}", x], [f"s_{i}"]), helper.make_node("Relu", [f"s_{i}"], [f"o_{i}"])]
        x = f"o_{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    g = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, c, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, c, 1, 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_fp8_conv_engine_matches_the_cpu_emulation(tmp_path):
    """Two calibrated fp8 bottlenecks: the six convolutions run ``cudnn.conv_fp8`` channels-last;
    inside a block each writes the next one's codes, and the first block's output is written both
    as floats (the second block's residual) and as a copy of codes (its first convolution). The
    engine agrees with the CPU emulation, reports per layer and survives a save / load."""
    from workbench.precision.calibration import Calibration
    from workbench.runtime.engine import Engine

    data = [{"x": RNG.standard_normal((4, 32, 16, 16)).astype(np.float32)} for _ in range(4)]
    feeds = {"x": RNG.standard_normal((4, 32, 16, 16)).astype(np.float16).astype(np.float32)}
    net = wb.load_onnx(_blocks().SerializeToString())
    cpu = wb.build(net, wb.BuilderConfig(device="cpu", precision="fp8", calibration=Calibration(data)))
    gpu = wb.build(net, wb.BuilderConfig(device="gpu", precision="fp8", calibration=Calibration(data),
                                         strict_precision=True))
    convs = [l for l in gpu.layers if "Conv" in l.op]
    # the 3x3 convolutions are cuDNN's; each 1x1 one is cuDNN's or a cuBLASLt GEMM, whichever ran faster
    gemm_ok = {"cudnn.conv_fp8", "cublaslt.conv1x1_fp8"}
    assert len(convs) == 6 and all(l.precision == "fp8" and l.tactic in gemm_ok for l in convs), gpu.layers
    assert all(convs[i].tactic == "cudnn.conv_fp8" for i in (1, 4)), [l.tactic for l in convs]
    for i in (0, 2, 3, 5):  # both sources timed
        timed = {r["tactic"] for r in convs[i].tactic_table if r.get("ms") is not None}
        assert timed == gemm_ok, (i, convs[i].tactic_table)
    assert all(l.attrs.get("in_layouts", [""])[0] == "nhwc" for l in convs), [l.attrs.get("in_layouts") for l in convs]
    coded = [i for i, l in enumerate(convs) if l.attrs.get("q_output_scale") is not None]
    assert coded == [0, 1, 3, 4], coded
    assert convs[2].attrs.get("q_copy_scale") is not None and convs[3].inputs[0] == convs[2].outputs[-1]
    assert not any("q_residual_scale" in l.attrs for l in convs)  # a calibrated fp8 layer adds a float residual
    assert any("codes" in r["reason"] for r in gpu.reports["precision"] if r["layer"] == convs[0].name)
    want = cpu.create_context().run(feeds)["y"]
    got = gpu.create_context().run(feeds)["y"]
    # codes one e4m3 step off at rounding boundaries (see CODES_TOL) through the coded tensors, then
    # the float16 storage of each block's output
    err = rel_err(got, want)
    print(f"fp8 bottlenecks engine against the CPU emulation: {err:.2e}")
    assert err < 2e-2
    report = gpu.accuracy(feeds, impact=False)
    rows = {r["layer"]: r for r in report.layers}
    assert all(rows[l.name]["rel_err"] < 0.2 for l in convs), [rows[l.name] for l in convs]
    path = tmp_path / "e.wbe"
    gpu.save(path)
    again = Engine.load(path).create_context().run(feeds)["y"]
    assert rel_err(again, got) < 1e-6
