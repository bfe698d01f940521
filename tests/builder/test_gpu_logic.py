"""CPU-side logic of the GPU target: precision assignment and casts, pointwise code generation,
the timing cache file, and engine compatibility checks. Runs without a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.paths import MODELS
import workbench as wb
from workbench.builder.timing_cache import TimingCache, layer_signature
from workbench.core.plan import Layer, Plan, TensorSpec
from workbench.errors import EngineCompatibilityError
from workbench.kernels.cuda import pointwise
from workbench.kernels.cuda.compat import check_target
from workbench.kernels.cuda.cuda_prelude import act_expr
from workbench.precision import assign_precisions


def _plan():
    x = TensorSpec("x", "float32", [2, 8])
    mm = Layer("mm", "MatMul", inputs=["x", "w"], outputs=["h"], onnx_nodes=["mm"], onnx_ops=["MatMul"],
               input_specs=[x, TensorSpec("w", "float32", [8, 8])], output_specs=[TensorSpec("h", "float32", [2, 8])])
    relu = Layer("relu", "Relu", inputs=["h"], outputs=["r"], onnx_nodes=["relu"], onnx_ops=["Relu"],
                 input_specs=[TensorSpec("h", "float32", [2, 8])], output_specs=[TensorSpec("r", "float32", [2, 8])])
    cum = Layer("cum", "CumSum", inputs=["r", "ax"], outputs=["y"], onnx_nodes=["cum"], onnx_ops=["CumSum"],
                input_specs=[TensorSpec("r", "float32", [2, 8]), TensorSpec("ax", "int64", [])],
                output_specs=[TensorSpec("y", "float32", [2, 8])])
    plan = Plan(inputs=[x], outputs=[TensorSpec("y", "float32", [2, 8]), TensorSpec("r", "float32", [2, 8])],
                layers=[mm, relu, cum], constants={"w": np.ones((8, 8), np.float32), "ax": np.array(1)})
    plan.tensors = {s.name: s for l in plan.layers for s in l.output_specs}
    return plan


def test_fp16_assignment_inserts_casts_and_keeps_graph_dtypes():
    plan = _plan()
    rows = assign_precisions(plan, wb.BuilderConfig(device="cpu", precision="fp16"), "gpu", lambda l, p: True)
    by = {r["layer"]: r for r in rows}
    assert by["mm"]["precision"] == "fp16" and by["relu"]["precision"] == "fp16"
    assert by["cum"]["precision"] == "fp32"
    ops = [l.op for l in plan.layers]
    assert ops.count("Cast") == 2  # x -> fp16, r(fp16) -> graph output r fp32 (reused by CumSum)
    produced = {o: l for l in plan.layers for o in l.outputs}
    assert produced["r"].op == "Cast" and produced["r"].output_specs[0].dtype == "float32"
    assert plan.tensors["h"].dtype == "float16"
    cum = plan.layer("cum")
    assert cum.inputs[0] == "r"  # the fp32 consumer reads the cast, not the fp16 tensor
    # every consumer reads a tensor of the dtype it expects
    home = {s.name: s.dtype for s in plan.inputs} | {s.name: s.dtype for l in plan.layers for s in l.output_specs}
    for l in plan.layers:
        for n, s in zip([n for n in l.inputs if n], l.input_specs):
            if n in home:
                assert home[n] == s.dtype, (l.name, n)


def test_override_and_unsupported_fall_back_to_fp32():
    plan = _plan()
    cfg = wb.BuilderConfig(device="cpu", precision="fp16", layer_precisions={"relu": "fp32"})
    rows = assign_precisions(plan, cfg, "gpu", lambda l, p: l.op != "MatMul")
    by = {r["layer"]: r for r in rows}
    assert by["mm"]["precision"] == "fp32" and "no GPU tactic" in by["mm"]["reason"]
    assert by["relu"]["precision"] == "fp32" and "override" in by["relu"]["reason"]
    assert not any(l.op == "Cast" for l in plan.layers)


def test_pointwise_codegen_text():
    layer = Layer("a", "Add", inputs=["x", "b"], outputs=["y"],
                  input_specs=[TensorSpec("x", "float16", [4, 8]), TensorSpec("b", "float16", [8])],
                  output_specs=[TensorSpec("y", "float16", [4, 8])])
    t = pointwise.PointwiseTactic()
    assert t.supports(layer, "fp16", None) is None
    src, meta = t._source(layer, "k")
    assert "wb_h2f(x0[i])" in src and "x1[o1]" in src and "wb_f2h(" in src
    assert meta == [4, 8, 0, 1]
    prog = json.dumps([{"op": "Mul", "args": ["in0", "c:0.5"], "out": "t0", "dtype": "float32"},
                       {"op": "Gelu", "args": ["t0"], "attrs": {"approximate": "tanh"}, "out": "t1", "dtype": "float32"}])
    fused = Layer("p", "Pointwise", domain="workbench", inputs=["x"], outputs=["y"],
                  attrs={"program": prog, "outputs": ["t1"]},
                  input_specs=[TensorSpec("x", "bfloat16", [3])], output_specs=[TensorSpec("y", "bfloat16", [3])])
    src, _ = t._source(fused, "k")
    # GELU (tanh) spelled as the fused epilogues spell it: the one activation table
    assert "0.5f" in src and act_expr("GeluTanh", {}, "t0") in src and "wb_b2f(x0[i])" in src


def test_timing_cache_roundtrip_and_env_mismatch(tmp_path):
    path = tmp_path / "tc.json"
    env = {"gpu": "H100", "arch": "sm_90", "libraries": {"cudnn": "9.19.0"}}
    layer = _plan().layers[0]
    key = layer_signature(layer, {"w": np.ones((8, 8), np.float32)})
    c = TimingCache(path, env)
    c.put(key, "cublas.gemm", {"algo": 1}, [{"tactic": "cublas.gemm", "config": {"algo": 1}, "ms": 0.01}])
    c.kernels["abc"] = b"\x7fELF..."
    c.save()
    c2 = TimingCache(path, env)
    assert c2.get(key)["tactic"] == "cublas.gemm" and c2.kernels["abc"] == b"\x7fELF..."
    c3 = TimingCache(path, {**env, "arch": "sm_80"})
    assert c3.get(key) is None and c3.stale
    layer.precision = "fp16"
    assert layer_signature(layer, {"w": np.ones((8, 8), np.float32)}) != key
    path.write_text("{not json")
    assert TimingCache(path, env).stale


def test_engine_compatibility_message():
    built = {"arch": "sm_90", "libraries": {"cuda": "13.0", "cudnn": "9.19.0", "cublas": "13.1.0"}}
    check_target(built, "sm_90", {"cuda": "13.0", "cudnn": "9.19.1", "cublas": "13.1.0"})
    with pytest.raises(EngineCompatibilityError, match=r"built for sm_90 / cuda 13.0 / cudnn 9.19.0.*sm_80.*rebuild"):
        check_target(built, "sm_80", {"cuda": "13.0", "cudnn": "9.19.0", "cublas": "13.1.0"})
    with pytest.raises(EngineCompatibilityError, match="cudnn 9.10"):
        check_target(built, "sm_90", {"cuda": "13.0", "cudnn": "9.10.0", "cublas": "13.1.0"})


def _lowered(path, shapes):
    import onnx_ir as ir

    from workbench.builder.lower import lower_model
    from workbench.builder.shapes import apply_input_shapes
    from workbench.passes.context import PassContext
    from workbench.passes.pipeline import run_pipeline

    net = wb.load_onnx(path)
    model = ir.from_proto(ir.to_proto(net.model))
    apply_input_shapes(model, shapes)
    run_pipeline(model, PassContext(disabled=frozenset(), device="gpu"), optimize=True)
    return lower_model(model)


class _FakeConv:
    name = "cudnn.conv"

    def supports(self, layer, precision, gpu):
        return None


def test_layout_assignment_stores_conv_activations_channels_last():
    import os

    from workbench.kernels.cuda import pool
    from workbench.builder.layout import assign_layouts

    path = os.path.join(MODELS, "resnet_legacy.onnx")
    data = np.load(path[:-5] + ".npz")
    feeds = {k: data[k] for k in data.files if not k.startswith("output:")}
    plan = _lowered(path, {k: v.shape for k, v in feeds.items()})
    assign_precisions(plan, wb.BuilderConfig(device="cpu", precision="fp16"), "gpu", lambda l, p: True)
    by_name = {"cudnn.conv": _FakeConv(), "nvrtc.pool": pool.PoolTactic(), "nvrtc.pointwise": pointwise.PointwiseTactic()}
    rows = assign_layouts(plan, by_name, None)
    assert rows, "no layer was stored channels-last"
    graph_io = {s.name for s in plan.inputs} | {s.name for s in plan.outputs}
    nhwc = set()
    for layer in plan.layers:
        if layer.attrs.get("channels_last"):
            assert layer.key in {("workbench", "FusedConv"), ("", "Conv"), ("", "MaxPool"), ("", "AveragePool"),
                                 ("", "GlobalAveragePool"), ("", "GlobalMaxPool")} or \
                pointwise.PointwiseTactic().supports(layer, layer.precision, None) is None, layer.op
            nhwc |= {n for n, l in zip(layer.inputs, layer.attrs["in_layouts"]) if l == "nhwc"}
            nhwc |= {s.name for s, l in zip(layer.output_specs, layer.attrs["out_layouts"]) if l == "nhwc"}
    assert not nhwc & graph_io and not nhwc & set(plan.constants)
    # every reader and writer of an NHWC tensor knows it is NHWC
    for layer in plan.layers:
        ins = layer.attrs.get("in_layouts") or [""] * len(layer.inputs)
        outs = layer.attrs.get("out_layouts") or [""] * len(layer.outputs)
        for n, l in zip(layer.inputs, ins):
            assert (n in nhwc) == (l == "nhwc"), (layer.name, n)
        for s, l in zip(layer.output_specs, outs):
            assert (s.name in nhwc) == (l == "nhwc"), (layer.name, s.name)
    # fp32 engines stay NCHW
    plan32 = _lowered(path, {k: v.shape for k, v in feeds.items()})
    assign_precisions(plan32, wb.BuilderConfig(device="cpu", precision="fp32"), "gpu", lambda l, p: True)
    assert assign_layouts(plan32, by_name, None) == []


def test_supported_precisions_without_a_gpu():
    """The notebook's precision dropdowns ask the public API what each target offers; asking about
    the GPU target must work on a machine without one."""
    assert wb.supported_precisions("cpu") == ["fp32", "fp16", "bf16", "int8", "fp8"]
    assert wb.supported_precisions("gpu") == ["fp32", "tf32", "fp16", "bf16", "int8", "fp8"]


def test_fused_and_unfused_activations_share_one_spelling():
    """An ONNX activation op run by nvrtc.pointwise and the same activation fused into a GEMM or
    conv epilogue compute it with the same C expression (cuda_prelude.act_expr)."""
    from workbench.ops.fused import ACTIVATIONS

    for op, attrs in (("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("Softplus", {}),
                      ("LeakyRelu", {"alpha": 0.2}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4})):
        assert op in ACTIVATIONS
        layer = Layer("a", op, inputs=["x"], outputs=["y"], attrs=attrs,
                      input_specs=[TensorSpec("x", "float32", [4])], output_specs=[TensorSpec("y", "float32", [4])])
        src, _ = pointwise.PointwiseTactic()._source(layer, "k")
        params = {"act_" + k: v for k, v in attrs.items()}
        assert act_expr(op, params, "v0") in src, op


def test_tactic_sources_declare_their_tactics():
    """sources.PROVIDES names every source's tactics; each tactic knows its source (no source is
    told from a tactic's name by its prefix). Every source module imports without its library."""
    from workbench.kernels.cuda import sources

    primary, fallback, unavailable = sources.load_sources()
    assert unavailable == {}
    assert set(sources.PROVIDES) == set(sources.PRIMARY + sources.FALLBACK)
    for t in primary + fallback:
        assert sources.source_of(t.name) == t.source and t.supports_cost in (0, 1)
    assert sources.source_of("cudnn.conv") == "cudnn_conv" and sources.source_of("nvrtc.nothing") is None


def test_only_the_quantized_tactics_take_int8_and_fp8_layers():
    """A quantized layer's float32 operands and int8 / e4m3 weight mean something else to a float
    tactic: every other tactic is refused by its declared formats before its supports() is asked."""
    from workbench.kernels.cuda import sources
    from workbench.kernels.cuda.tactic import format_refusal

    primary, fallback, _ = sources.load_sources()
    for t in primary + fallback:
        for fmt in ("int8", "fp8"):
            refused = format_refusal(t, fmt)
            takes = {f"cublaslt_quant.{fmt}"} | ({"cudnn.conv_fp8", "cublaslt.conv1x1_fp8", "cudnn.sdpa_fp8"}
                                                if fmt == "fp8" else set())
            assert (refused is None) == (t.name in takes), (t.name, fmt, refused)
        assert format_refusal(t, "fp16") is None


def _quant_gemm(fmt, x_shape, w_shape, trans_b=0, bias=None, zp=0, op="MatMul", **attrs):
    n = w_shape[0] if trans_b else w_shape[1]
    a = {"q_format": fmt, "q_input_scale": 0.05, "q_input_zero_point": zp, "q_weight_scale": np.ones(1, np.float32),
         "q_weight_axis": -1, "q_weight_zero_point": 0, "q_weight_const": 1, **attrs}
    if op != "MatMul":
        a["transB"] = trans_b
    specs = [TensorSpec("x", "float32", list(x_shape)), TensorSpec("w", "int8" if fmt == "int8" else "float8e4m3fn",
                                                                    list(w_shape))]
    names = ["x", "w"]
    if bias is not None:
        specs.append(TensorSpec("b", "float32", list(bias)))
        names.append("b")
    return Layer("q", op, domain="workbench" if op == "FusedGemm" else "", inputs=names, outputs=["y"], attrs=a,
                 input_specs=specs, output_specs=[TensorSpec("y", "float32", list(x_shape[:-1]) + [n])])


def test_quantized_gemm_problem_and_refusals():
    """What cublaslt_quant reads of a layer, decided without a GPU: the TN problem and its reasons."""
    from workbench.kernels.cuda.cublaslt_quant import _problem

    p = _problem(_quant_gemm("int8", (2, 8, 64), (64, 32)), "int8")
    assert (p["m"], p["n"], p["k"], p["trans_b"], p["bias"]) == (16, 32, 64, False, False)
    p = _quant_gemm("fp8", (32, 64), (48, 64), trans_b=1, bias=(48,), op="FusedGemm", activation="Relu")
    assert _problem(p, "fp8")["trans_b"] and _problem(p, "fp8")["bias_n"] == 48
    assert "multiples of 16 (M=3)" in _problem(_quant_gemm("fp8", (3, 64), (64, 32)), "fp8")
    assert "multiples of 4 (K=42)" in _problem(_quant_gemm("int8", (3, 42), (42, 32)), "int8")
    assert _problem(_quant_gemm("fp8", (16, 64), (64, 32), zp=3), "fp8") == "fp8 has no zero point"
    assert "transA" == _problem(_quant_gemm("int8", (64, 16), (64, 32), op="Gemm", transA=1), "int8")
    assert "bias of shape" in _problem(_quant_gemm("int8", (16, 64), (64, 32), bias=(16, 32)), "int8")
    assert "carries no int8" in _problem(_quant_gemm("fp8", (16, 64), (64, 32)), "int8")
    conv = Layer("c", "Conv", inputs=["x", "w"], outputs=["y"], attrs={"q_format": "int8"},
                 input_specs=[TensorSpec("x", "float32", [1, 3, 8, 8]), TensorSpec("w", "int8", [4, 3, 3, 3])],
                 output_specs=[TensorSpec("y", "float32", [1, 4, 6, 6])])
    assert "quantized Gemm / FusedGemm / MatMul only" in _problem(conv, "int8")


def _conv1x1(prec="fp16", k=1, stride=1, pads=0, group=1, act="Relu", residual=True, layouts="nhwc", c=64, m=256,
             hw=8, n=2, **q):
    dt = "float16"
    specs = [TensorSpec("x", dt, [n, c, hw, hw]), TensorSpec("w", "float8e4m3fn" if prec == "fp8" else dt,
                                                               [m, c // group, k, k]), TensorSpec("b", "float32", [m])]
    out = (hw + 2 * pads - k) // stride + 1
    names = ["x", "w", "b"]
    if residual:
        specs.append(TensorSpec("z", dt, [n, m, out, out]))
        names.append("z")
    a = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [pads] * 4, "dilations": [1, 1], "group": group,
         "activation": act, "residual": int(residual)}
    if layouts:
        a.update({"in_layouts": [layouts, "", "", layouts][:len(names)], "out_layouts": [layouts]})
    if prec == "fp8":
        a.update({"q_format": "fp8", "q_input_scale": 0.05, "q_input_zero_point": 0,
                  "q_weight_scale": np.array([0.01], np.float32), "q_weight_axis": -1, "q_weight_zero_point": 0,
                  "q_weight_const": 1})
    a.update(q)
    lay = Layer("conv", "FusedConv", domain="workbench", inputs=names, outputs=["y"], attrs=a, input_specs=specs,
                output_specs=[TensorSpec("y", dt, [n, m, out, out])])
    lay.precision = prec
    return lay


def test_conv1x1_gemm_problem_and_refusals():
    """What cublaslt_conv reads of a convolution, decided without a GPU: 1x1 / stride 1 / no pad /
    one group on channels-last tensors is a GEMM over the pixels, the residual its C."""
    from workbench.kernels.cuda.cublaslt_conv import CublasLtConv1x1, _fp8_problem, _geometry

    g = _geometry(_conv1x1())
    assert (g["m"], g["n"], g["k"], g["epilogue"], g["residual"]) == (128, 256, 64, "RELU_BIAS", True)
    assert _geometry(_conv1x1(act="", residual=False))["epilogue"] == "BIAS"
    assert _geometry(_conv1x1(layouts=None))["m"] == 128  # before the layout pass: taken channels-last
    assert "1x1 kernels with stride 1 and no padding" in _geometry(_conv1x1(k=3, pads=1))
    assert "1x1 kernels with stride 1" in _geometry(_conv1x1(stride=2))
    assert "grouped" in _geometry(_conv1x1(group=2))
    assert "channels-last tensors only (X nchw" in _geometry(_conv1x1(layouts="nchw"))
    assert "no cuBLASLt epilogue for activation 'LeakyRelu'" in _geometry(_conv1x1(act="LeakyRelu"))
    assert "runs fp16 / bf16 layers only" in CublasLtConv1x1()._problem(_conv1x1(), "fp32")
    p = _fp8_problem(_conv1x1("fp8"))
    assert not p["x_coded"] and not p["y_coded"] and not p["copy"] and p["x_dt"] == "float16"
    assert "one weight scale" in _fp8_problem(_conv1x1("fp8", q_weight_scale=np.ones(256, np.float32)))
    assert "q_residual_scale" in _fp8_problem(_conv1x1("fp8", q_residual_scale=0.1))
    assert "multiples of 16 (K=8)" in _fp8_problem(_conv1x1("fp8", c=8))
    assert _fp8_problem(_conv1x1("fp8", q_input_zero_point=2)) == "fp8 has no zero point"
    assert "carries no fp8" in _fp8_problem(_conv1x1("fp16"))


def test_quantized_gemm_kernels_round_as_the_cpu_does():
    """The generated quantize / epilogue sources: correctly rounded division, round-half-even,
    NaN to the zero point, saturation; no FMA contraction in the epilogue."""
    from workbench.kernels.cuda.cublaslt_quant import _epilogue_source, quantize_source

    q8 = quantize_source("int8", "float32", "q")
    assert "__fdiv_rn" in q8 and "rintf" in q8 and "v != v ? (float)zp" in q8 and "-128.0f), 127.0f" in q8
    assert "const float* __restrict__ x" in q8
    q8f = quantize_source("fp8", "float16", "q")
    assert "cvt.rn.satfinite.e4m3x2.f32" in q8f and "448.0f" in q8f and "wb_h2f(x[4 * i + j])" in q8f
    wide = quantize_source("fp8", "float16", "q", wide=True)  # eight per thread, one 16-byte load
    assert "uint4 raw[1]" in wide and "wb_h2f(v[4 + j])" in wide and "q[i] = make_uint2(w0, w1)" in wide
    assert wide.count("wb_code_fp8(xv, scale, zp)") == 2 and "uint4 raw[2]" in quantize_source("int8", "float32", "q", True)
    epi = _epilogue_source("int8", "float32", "Relu", {}, 0.75, 1.5, "e")
    assert "__fmul_rn(v, 0.75f)" in epi and "__fmul_rn(c, 1.5f)" in epi and "__fadd_rn(v, c)" in epi
    assert "corr[col]" in epi and "const int4*" in epi and "y[4 * i + j] = v;" in epi
    fp8 = _epilogue_source("fp8", "float16", "", {}, 1.0, 1.0, "e")
    assert "const float4* __restrict__ acc" in fp8 and "y[4 * i + j] = wb_f2h(v);" in fp8


def test_attention_operands_and_mask_broadcast():
    """The attention tactics read Q/K/V/O through one [B, H, S, D] view and one mask-broadcast check."""
    from workbench.kernels.cuda.layer_io import attention_operands, mask_view
    from workbench.kernels.cuda.nvrtc_attention import NvrtcAttention

    def layer(mask_shape):
        specs = [TensorSpec("q", "float32", [1, 5, 8]), TensorSpec("k", "float32", [1, 7, 8]),
                 TensorSpec("v", "float32", [1, 7, 8]), TensorSpec("m", "float32", list(mask_shape))]
        attrs = {"num_heads": 2, "q_layout": "bsd", "k_layout": "bsd", "v_layout": "bsd", "out_layout": "bsd",
                 "scale": 0.5, "mask_kind": "additive"}
        return Layer("a", "Attention", domain="workbench", inputs=["q", "k", "v", "m"], outputs=["y"], attrs=attrs,
                     input_specs=specs, output_specs=[TensorSpec("y", "float32", [1, 5, 8])])

    ops = attention_operands(layer([1, 1, 1, 7]))
    assert ops["heads"] == ops["kv"] == 2 and ops["views"]["q"] == ([1, 2, 5, 4], [40, 4, 8, 1])
    assert ops["offsets"] == dict.fromkeys("qkvo", 0)
    assert mask_view((1, 1, 7), (1, 2, 5, 7)) == ((1, 1, 1, 7), [7, 0, 0, 1])
    assert NvrtcAttention().supports(layer([1, 1, 1, 7]), "fp32", None) is None
    assert "does not broadcast" in NvrtcAttention().supports(layer([1, 1, 3, 7]), "fp32", None)


def test_packed_qkv_operands_are_strided_views_of_one_tensor():
    """Attention reading the merged Q/K/V projection in place: each operand is a column range of the
    one [B, S, 3*H*D] tensor (row stride the packed width, offset its first column)."""
    from workbench.kernels.cuda.layer_io import attention_operands
    from workbench.kernels.cuda.nvrtc_attention import NvrtcAttention

    def layer(cols, lay="bsd"):
        qkv = TensorSpec("qkv", "float32", [2, 5, 24])
        attrs = {"num_heads": 2, "q_layout": lay, "k_layout": lay, "v_layout": lay, "out_layout": "bsd",
                 "qkv_columns": cols}
        return Layer("a", "Attention", domain="workbench", inputs=["qkv"] * 3, outputs=["y"], attrs=attrs,
                     input_specs=[qkv] * 3, output_specs=[TensorSpec("y", "float32", [2, 5, 8])])

    ops = attention_operands(layer([0, 8, 8, 16, 16, 24]))
    assert ops["views"]["q"] == ([2, 2, 5, 4], [120, 4, 24, 1]) and ops["views"]["v"][1] == [120, 4, 24, 1]
    assert ops["views"]["o"] == ([2, 2, 5, 4], [40, 4, 8, 1])
    assert ops["offsets"] == {"q": 0, "k": 8, "v": 16, "o": 0}
    assert NvrtcAttention().supports(layer([0, 8, 8, 16, 16, 24]), "fp32", None) is None
    assert "do not fit" in attention_operands(layer([0, 8, 8, 16, 20, 28]))
    assert "start < stop" in attention_operands(layer([0, 8, 8, 8, 16, 24]))
    assert "bsd layout" in attention_operands(layer([0, 8, 8, 16, 16, 24], lay="bhsd"))


def test_quantized_layers_store_activations_as_their_neighbours():
    """On the GPU an int8 layer's input and output are float16 (the fallback's storage) when its
    tactic takes them: no Casts between it and fp16 neighbours; weight and bias keep their types."""
    from workbench.precision.assign import _quantized_io

    lay = _quant_gemm("int8", (16, 64), (64, 32), bias=(32,), op="FusedGemm")
    _quantized_io(lay, "int8", "fp16", lambda l, p: l.input_specs[0].dtype == "float16")
    assert [s.dtype for s in lay.input_specs] == ["float16", "int8", "float32"]
    assert lay.output_specs[0].dtype == "float16"
    kept = _quant_gemm("int8", (16, 64), (64, 32))
    _quantized_io(kept, "int8", "fp16", lambda l, p: False)  # no tactic reads float16: float32 stays
    assert kept.input_specs[0].dtype == kept.output_specs[0].dtype == "float32"
    _quantized_io(kept, "int8", "fp32", lambda l, p: True)  # the CPU's fallback is fp32
    assert kept.input_specs[0].dtype == "float32"


def test_direct_fp8_form_applies_where_cublaslt_can_write_float16():
    """The fp8 GEMM that writes float16 with cuBLASLt's own epilogue: per-tensor scales, a float16
    output and an activation cuBLASLt has; int8 never (its GEMM has no float output)."""
    from workbench.kernels.cuda.cublaslt_quant import _direct_epilogue, _problem

    def case(fmt, out="float16", **kw):
        lay = _quant_gemm(fmt, (16, 64), (64, 32), op="FusedGemm", **kw)
        lay.input_specs[0].dtype = lay.output_specs[0].dtype = out
        return _direct_epilogue(lay, fmt, _problem(lay, fmt))

    assert case("fp8") == "DEFAULT" and case("fp8", bias=(32,)) == "BIAS"
    assert case("fp8", bias=(32,), activation="Relu") == "RELU_BIAS"
    assert case("fp8", activation="Gelu") == "GELU"
    assert case("fp8", activation="Sigmoid") is None
    assert case("fp8", out="float32") is None
    assert case("int8") is None
    assert case("fp8", q_weight_scale=np.ones(32, np.float32), q_weight_axis=1) is None


def _quant_chain(fmt, scales=(0.05,), reader_zp=0):
    """x -> [q1: quantized GEMM] -> h -> one quantized reader per scale -> y0, y1, ... (graph outputs)."""
    first = _quant_gemm(fmt, (16, 64), (64, 64), op="FusedGemm", activation="Relu")
    first.name, first.outputs, first.output_specs[0].name = "q1", ["h"], "h"
    readers = []
    for i, s in enumerate(scales):
        r = _quant_gemm(fmt, (16, 64), (64, 32), zp=reader_zp, op="FusedGemm")
        r.name, r.inputs, r.outputs = f"r{i}", ["h", f"w{i}"], [f"y{i}"]
        r.input_specs[0].name, r.input_specs[1].name, r.output_specs[0].name = "h", f"w{i}", f"y{i}"
        r.attrs["q_input_scale"] = s
        readers.append(r)
    layers = [first, *readers]
    for layer in layers:
        layer.precision = fmt
        for spec in [layer.input_specs[0], layer.output_specs[0]]:
            spec.dtype = "float16"
    code = "int8" if fmt == "int8" else "float8e4m3fn"
    consts = {n: np.ones((64, 64 if n == "w" else 32), np.int8 if fmt == "int8" else np.float32)
              for n in ["w"] + [f"w{i}" for i in range(len(scales))]}
    plan = Plan(inputs=[TensorSpec("x", "float16", [16, 64])],
                outputs=[TensorSpec(f"y{i}", "float16", [16, 32]) for i in range(len(scales))],
                layers=layers, constants=consts)
    return plan, code


def _cublaslt_quant_supports(layer, precision):
    from workbench.kernels.cuda.cublaslt_quant import CublasLtQuantGemm, _problem
    from workbench.kernels.cuda.tactic import contract_refusal

    # as the GPU target asks: the tactic's declared codes first (it writes no copy), then its checks
    return contract_refusal(CublasLtQuantGemm(precision), layer, precision) is None and \
        isinstance(_problem(layer, precision), dict)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_quantized_boundary_writes_codes_between_quantized_layers(fmt):
    """A quantized GEMM read only by quantized GEMMs of its format with one input scale writes the
    codes: q_output_scale on the producer, the element type and scale on both sides' specs."""
    from workbench.precision.assign import quantized_boundaries

    plan, code = _quant_chain(fmt, scales=(0.07, 0.07))
    rows = quantized_boundaries(plan, _cublaslt_quant_supports)
    q1, r0, r1 = plan.layers
    assert q1.attrs["q_output_scale"] == pytest.approx(0.07)
    assert (q1.output_specs[0].dtype, r0.input_specs[0].dtype, r1.input_specs[0].dtype) == (code,) * 3
    assert q1.output_specs[0].scale == r0.input_specs[0].scale == pytest.approx(0.07)
    assert len(rows) == 1 and rows[0][0] == "q1" and "r0, r1" in rows[0][1] and code in rows[0][1]
    assert "q_output_scale" not in r0.attrs and r0.output_specs[0].dtype == "float16"  # graph outputs stay float
    # the tactic runs both sides so: no quantize pass on the reader, codes out of the producer
    from workbench.kernels.cuda.cublaslt_quant import _problem

    assert _problem(q1, fmt)["out_coded"] and _problem(r0, fmt)["in_coded"] and not _problem(q1, fmt)["in_coded"]


@pytest.mark.parametrize("case", ["two_scales", "float_reader", "graph_output", "zero_point", "no_tactic"])
def test_quantized_boundary_declines(case):
    from workbench.precision.assign import quantized_boundaries

    plan, _ = _quant_chain("int8", scales=(0.07, 0.08) if case == "two_scales" else (0.07,),
                           reader_zp=3 if case == "zero_point" else 0)
    if case == "float_reader":
        plan.layers.append(Layer("relu", "Relu", inputs=["h"], outputs=["z"], precision="fp16",
                                 input_specs=[TensorSpec("h", "float16", [16, 64])],
                                 output_specs=[TensorSpec("z", "float16", [16, 64])]))
    if case == "graph_output":
        plan.outputs.append(TensorSpec("h", "float16", [16, 64]))
    supports = (lambda l, p: False) if case == "no_tactic" else _cublaslt_quant_supports
    assert quantized_boundaries(plan, supports) == []
    assert "q_output_scale" not in plan.layers[0].attrs
    assert plan.layers[0].output_specs[0].dtype == "float16" and plan.layers[0].output_specs[0].scale is None


def test_coded_io_refusals_name_the_reason():
    """cublaslt_quant reads codes only with its own input scale and writes them only with
    q_output_scale on a coded output."""
    from workbench.kernels.cuda.cublaslt_quant import _problem

    lay = _quant_gemm("fp8", (16, 64), (64, 32))
    lay.input_specs[0].dtype, lay.input_specs[0].scale = "float8e4m3fn", 0.5
    assert "not the layer's input scale" in _problem(lay, "fp8")
    lay.input_specs[0].scale = 0.05
    assert _problem(lay, "fp8")["in_coded"]
    lay.attrs["q_output_scale"] = 0.1
    assert "q_output_scale on a float32 output" in _problem(lay, "fp8")
    lay.output_specs[0].dtype, lay.output_specs[0].scale = "float8e4m3fn", 0.2
    assert "is not the layer's q_output_scale" in _problem(lay, "fp8")
    lay.output_specs[0].scale = 0.1
    assert _problem(lay, "fp8")["out_coded"]
    lay.input_specs[0].dtype = "int8"
    assert "int8" in _problem(lay, "fp8")  # another format's codes


def test_coded_epilogue_and_direct_sources():
    """The epilogue of a coded output packs four codes per thread; the fp8 direct form applies."""
    from workbench.kernels.cuda.cublaslt_quant import _direct_epilogue, _epilogue_source, _problem

    for fmt, code in (("int8", "int8"), ("fp8", "float8e4m3fn")):
        src = _epilogue_source(fmt, code, "Relu", {}, 1.0, 1.0, "k")
        assert "unsigned int* __restrict__ y" in src and "y[i] = word;" in src and f"wb_code_{fmt}(v, oscale, 0)" in src
        assert "__fdiv_rn(x, scale)" in src  # the prelude's code function: correctly rounded division
        assert ("cvt.rn.satfinite.e4m3x2" in src) == (fmt == "fp8") and ("rintf" in src) == (fmt == "int8")
    lay = _quant_gemm("fp8", (16, 64), (64, 32), op="FusedGemm", activation="Relu", q_output_scale=0.1)
    lay.output_specs[0].dtype, lay.output_specs[0].scale = "float8e4m3fn", 0.1
    assert _direct_epilogue(lay, "fp8", _problem(lay, "fp8")) == "RELU"


def _norm_then_gemm(fmt, skip, float_reader):
    """x [-> SkipLayerNorm(x, s) | LayerNorm(x)] -> h -> quantized GEMM r0 -> y0; ``float_reader``:
    a float16 Relu reads h too (a residual's role)."""
    ins = ["x", "s", "g", "b"] if skip else ["x", "g", "b"]
    specs = [TensorSpec(n, "float16", [16, 64]) for n in ins[: 2 if skip else 1]]
    specs += [TensorSpec("g", "float16", [64]), TensorSpec("b", "float16", [64])]
    norm = Layer("ln", "SkipLayerNorm" if skip else "LayerNorm", domain="workbench", inputs=ins, outputs=["h"],
                 precision="fp16", attrs={"epsilon": 1e-5}, input_specs=specs,
                 output_specs=[TensorSpec("h", "float16", [16, 64])])
    r = _quant_gemm(fmt, (16, 64), (64, 32), op="FusedGemm")
    r.name, r.inputs, r.outputs, r.precision = "r0", ["h", "w0"], ["y0"], fmt
    r.input_specs[0].name, r.input_specs[1].name, r.output_specs[0].name = "h", "w0", "y0"
    r.input_specs[0].dtype = r.output_specs[0].dtype = "float16"
    r.attrs["q_input_scale"] = 0.07
    layers, outputs = [norm, r], [TensorSpec("y0", "float16", [16, 32])]
    if float_reader:
        layers.append(Layer("relu", "Relu", inputs=["h"], outputs=["z"], precision="fp16",
                            input_specs=[TensorSpec("h", "float16", [16, 64])],
                            output_specs=[TensorSpec("z", "float16", [16, 64])]))
        outputs.append(TensorSpec("z", "float16", [16, 64]))
    consts = {"w0": np.ones((64, 32), np.int8 if fmt == "int8" else np.float32)}
    plan = Plan(inputs=[TensorSpec(n, "float16", [16, 64]) for n in ins[: 2 if skip else 1]], outputs=outputs,
                layers=layers, constants=consts)
    return plan, quant_element(fmt)


def quant_element(fmt):
    from workbench.core.quant import ELEMENT

    return ELEMENT[fmt]


def _gpu_supports(layer, precision):
    """The GPU target's question for the two tactics involved, with ``contract_refusal`` first."""
    from workbench.kernels.cuda.cublaslt_quant import CublasLtQuantGemm
    from workbench.kernels.cuda.rowwise import RowwiseTactic
    from workbench.kernels.cuda.tactic import GpuInfo, contract_refusal

    gpu = GpuInfo("H100", "sm_90", 132)
    for t in (RowwiseTactic(), CublasLtQuantGemm("int8"), CublasLtQuantGemm("fp8")):
        if contract_refusal(t, layer, precision) is None:
            why = _cublaslt_quant_supports(layer, precision) if t.formats else t.supports(layer, precision, gpu)
            if why is True or why is None:
                return True
    return False


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
@pytest.mark.parametrize("skip", [False, True])
def test_a_normalization_read_only_by_a_quantized_layer_writes_codes(fmt, skip):
    """GPT-2 / ViT's pre-norm LayerNorm -> Q/K/V: the norm's output is written as codes."""
    from workbench.precision.assign import quantized_boundaries

    plan, code = _norm_then_gemm(fmt, skip, float_reader=False)
    rows = quantized_boundaries(plan, _gpu_supports)
    ln, r0 = plan.layers
    assert ln.attrs["q_output_scale"] == pytest.approx(0.07) and "q_copy_scale" not in ln.attrs
    assert ln.outputs == ["h"] and (ln.output_specs[0].dtype, r0.input_specs[0].dtype) == (code, code)
    assert rows == [("ln", f"writes h as {code} codes (scale 0.07) for r0: no quantize pass between them")]


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_a_normalization_with_float_readers_writes_a_copy_of_codes(fmt):
    """BERT's post-norm SkipLayerNorm: its output is the next residual (float) and the next GEMM's
    input; the norm writes both, and the GEMM reads the copy."""
    from workbench.core import quant
    from workbench.kernels.cuda.rowwise import _has_sum
    from workbench.precision.assign import quantized_boundaries

    plan, code = _norm_then_gemm(fmt, True, float_reader=True)
    rows = quantized_boundaries(plan, _gpu_supports)
    ln, r0, relu = plan.layers
    copy = f"h/{code}"
    assert ln.attrs["q_copy_scale"] == pytest.approx(0.07) and ln.outputs == ["h", copy]
    assert [(s.name, s.dtype, s.scale) for s in ln.output_specs] == [("h", "float16", None), (copy, code, pytest.approx(0.07))]
    assert r0.inputs[0] == copy and (r0.input_specs[0].name, r0.input_specs[0].dtype) == (copy, code)
    assert relu.inputs == ["h"] and relu.input_specs[0].dtype == "float16"
    assert quant.op_outputs(ln) == ["h"] and not _has_sum(ln)  # the copy is not SkipLayerNorm's sum
    assert quant.coded_outputs(ln) == {"output": None, "copy": fmt, "scale": pytest.approx(0.07)}
    assert "also writes h" in rows[0][1]
    # a graph output is a float reader too
    plan, _ = _norm_then_gemm(fmt, False, float_reader=False)
    plan.outputs.append(TensorSpec("h", "float16", [16, 64]))
    quantized_boundaries(plan, _gpu_supports)
    assert plan.layers[0].attrs["q_copy_scale"] == pytest.approx(0.07)


def test_codes_from_layers_without_a_tactic_that_writes_them_are_declined():
    """A producer no tactic writes codes for (a Relu: nvrtc.pointwise declares none) keeps its
    float output, and every tactic that does not declare codes refuses a layer that asks."""
    from workbench.kernels.cuda.pointwise import PointwiseTactic
    from workbench.kernels.cuda.rowwise import RowwiseTactic
    from workbench.kernels.cuda.tactic import contract_refusal
    from workbench.precision.assign import quantized_boundaries

    plan, _ = _norm_then_gemm("fp8", False, float_reader=False)
    relu = Layer("relu", "Relu", inputs=["x"], outputs=["h"], precision="fp16",
                 input_specs=[TensorSpec("x", "float16", [16, 64])], output_specs=[TensorSpec("h", "float16", [16, 64])])
    plan.layers[0] = relu
    assert quantized_boundaries(plan, _gpu_supports) == []
    assert "q_output_scale" not in relu.attrs and relu.output_specs[0].dtype == "float16"
    relu.attrs["q_output_scale"] = 0.07
    assert "writes no output of codes" in contract_refusal(PointwiseTactic(), relu, "fp16")
    relu.attrs = {"q_copy_scale": 0.07}
    assert "writes no copy of codes" in contract_refusal(RowwiseTactic.__mro__[1](), relu, "fp16")
    assert contract_refusal(RowwiseTactic(), relu, "fp16") is None


def test_rowwise_codes_sources_and_refusals():
    """The norm kernel writes Y as codes or Y and a copy; the codes are of the float32 result."""
    from workbench.kernels.cuda.rowwise import RowwiseTactic, _norm_source
    from workbench.kernels.cuda.tactic import GpuInfo
    from workbench.precision.assign import quantized_boundaries

    gpu = GpuInfo("H100", "sm_90", 132)
    plan, _ = _norm_then_gemm("fp8", True, float_reader=True)
    quantized_boundaries(plan, _gpu_supports)
    ln = plan.layers[0]
    dt = {"y": "float16", "x": "float16", "skip": "float16", "scale": "float16", "bias": "float16"}
    src = _norm_source(ln, dt, "k", 1, {"output": None, "copy": "fp8"})
    assert "unsigned char* __restrict__ yq" in src and "yq[r * cols + c] = wb_code_fp8(o, oscale, 0)" in src
    assert "y[r * cols + c] = wb_f2h(o)" in src and "cvt.rn.satfinite.e4m3x2" in src
    whole = _norm_source(ln, dt, "k", 0, {"output": "int8", "copy": None})
    assert "unsigned char* __restrict__ y," in whole and "y[r * cols + c] = wb_code_int8((v - mean)" in whole
    assert "e4m3" not in whole
    assert RowwiseTactic().supports(ln, "fp16", gpu) is None
    assert "sm_89" in RowwiseTactic().supports(ln, "fp16", GpuInfo("A100", "sm_80", 108))
    ln.output_specs[-1].scale = 0.5
    assert "without a tensor of codes of that scale" in RowwiseTactic().supports(ln, "fp16", gpu)
    ln.output_specs[-1].scale, ln.output_specs[-1].shape = 0.07, [16, 32]
    assert "has shape" in RowwiseTactic().supports(ln, "fp16", gpu)


def test_the_cpu_runtime_writes_the_copy_of_codes():
    """A plan layer with q_copy_scale run by the CPU executor (the accuracy report's reference
    side): the op's outputs, then the copy, as codes where its spec holds codes."""
    from workbench.core import quant
    from workbench.runtime.cpu import PlanExecutor

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    g, b = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    for coded in (True, False):
        spec = TensorSpec("hq", "float8e4m3fn" if coded else "float32", [4, 8], 0.01 if coded else None)
        ln = Layer("ln", "SkipLayerNorm", domain="workbench", opset=1, inputs=["x", "s", "g", "b"], outputs=["h", "hq"],
                   attrs={"epsilon": 1e-5, "q_copy_scale": 0.01}, tactic="cpu.numpy",
                   input_specs=[TensorSpec(n, "float32", s) for n, s in (("x", [4, 8]), ("s", [4, 8]), ("g", [8]), ("b", [8]))],
                   output_specs=[TensorSpec("h", "float32", [4, 8]), spec])
        plan = Plan(inputs=[TensorSpec("x", "float32", [4, 8]), TensorSpec("s", "float32", [4, 8])],
                    outputs=[TensorSpec("h", "float32", [4, 8]), TensorSpec("hq", spec.dtype, [4, 8])],
                    layers=[ln], constants={"g": g, "b": b})
        h, hq = PlanExecutor(plan).run({"x": x, "s": x[::-1].copy()})
        ref = x + x[::-1]
        ref = (ref - ref.mean(-1, keepdims=True)) / np.sqrt(ref.var(-1, keepdims=True) + 1e-5) * g + b
        np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-5)
        if coded:
            assert hq.dtype == quant.E4M3 and np.array_equal(hq.view(np.uint8), quant.encode(h, spec).view(np.uint8))
        else:
            np.testing.assert_array_equal(hq, h)


def _fp8_conv(x="float16", y="float16", z=None, **attrs):
    a = {"q_format": "fp8", "q_input_scale": 0.05, "q_input_zero_point": 0, "q_weight_scale": np.ones(1, np.float32),
         "q_weight_axis": -1, "q_weight_zero_point": 0, "q_weight_const": 1, "kernel_shape": [3, 3],
         "pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1], "group": 1, "activation": "Relu", **attrs}
    specs = [TensorSpec("x", x, [2, 32, 8, 8], 0.05 if x == "float8e4m3fn" else None),
             TensorSpec("w", "float8e4m3fn", [64, 32, 3, 3]), TensorSpec("b", "float32", [64])]
    names = ["x", "w", "b"]
    if z is not None:
        specs.append(TensorSpec("z", z, [2, 64, 8, 8], a.get("q_residual_scale") if z == "float8e4m3fn" else None))
        names.append("z")
    out = TensorSpec("y", y, [2, 64, 8, 8], a.get("q_output_scale") if y == "float8e4m3fn" else None)
    layer = Layer("c", "FusedConv", domain="workbench", inputs=names, outputs=["y"], attrs=a, input_specs=specs,
                  output_specs=[out])
    layer.precision = "fp8"
    return layer


def test_fp8_conv_problem_and_refusals():
    """What cudnn.conv_fp8 reads of a layer, decided without a GPU: how X and the residual are read
    (quantized first, codes, or floats), the output's type, the layouts, and the reasons."""
    from workbench.kernels.cuda.cudnn_conv import _fp8_problem

    p = _fp8_problem(_fp8_conv())
    assert (p["x"], p["z"], p["y"], p["bias"]) == (("quantize", "float16"), None, "float16", True)
    assert p["layouts"] == ("nhwc", "nhwc", "nhwc")  # before the layout pass: checked channels-last
    p = _fp8_problem(_fp8_conv(x="float8e4m3fn", y="float8e4m3fn", q_output_scale=0.1))
    assert (p["x"], p["y"]) == (("codes", "float8e4m3fn"), "float8e4m3fn")
    assert _fp8_problem(_fp8_conv(z="float16"))["z"] == ("float", "float16")
    assert _fp8_problem(_fp8_conv(z="float32", q_residual_scale=0.2))["z"] == ("quantize", "float32")
    assert _fp8_problem(_fp8_conv(z="float8e4m3fn", q_residual_scale=0.2))["z"] == ("codes", "float8e4m3fn")
    laid = _fp8_conv(in_layouts=["nchw", "", ""], out_layouts=["nhwc"])
    assert _fp8_problem(laid)["layouts"] == ("nchw", "nchw", "nhwc")
    wrong = _fp8_conv(x="float8e4m3fn")
    wrong.input_specs[0].scale = 0.07
    assert "not the layer's input scale" in _fp8_problem(wrong)
    assert "not the layer's residual scale" in _fp8_problem(_fp8_conv(z="float8e4m3fn"))
    assert _fp8_problem(_fp8_conv(y="float16", q_output_scale=0.1)) == "q_output_scale on a float16 output"
    assert "not the layer's q_output_scale" in _fp8_problem(_fp8_conv(y="float8e4m3fn"))
    assert _fp8_problem(_fp8_conv(q_input_zero_point=2)) == "fp8 has no zero point"
    assert "read float16 or float32" in _fp8_problem(_fp8_conv(x="bfloat16"))
    assert "carries no fp8" in _fp8_problem(_fp8_conv(q_format="int8"))
    gemm = _quant_gemm("fp8", (16, 64), (64, 32))
    assert "is not a convolution" in _fp8_problem(gemm)
    stem = _fp8_conv()  # a 3-channel stem stays at fp16: cuDNN's fp8 plans for it are slow
    stem.input_specs[0].shape[1], stem.input_specs[1].shape[1] = 3, 3
    assert "3 input channels per group, not a multiple of 16" in _fp8_problem(stem)


def test_fp8_convolutions_join_the_channels_last_layout():
    """The layout pass asks an fp8 convolution's own tactic (cudnn.conv_fp8) about channels-last
    tensors; fp32 convolutions stay out of it."""
    from workbench.builder.layout import _conv_tactic, _kind

    class Fake:
        def __init__(self, name):
            self.name = name

        def supports(self, layer, precision, gpu):
            return None

    by_name = {"cudnn.conv": Fake("cudnn.conv"), "cudnn.conv_fp8": Fake("cudnn.conv_fp8")}
    conv = _fp8_conv()
    assert _conv_tactic(conv, by_name).name == "cudnn.conv_fp8" and _kind(conv, by_name, None) == "conv"
    conv.precision = "fp16"
    assert _conv_tactic(conv, by_name).name == "cudnn.conv" and _kind(conv, by_name, None) == "conv"
    conv.precision = "fp32"
    assert _kind(conv, by_name, None) is None


def _bottleneck():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = lambda ks: numpy_helper.from_array((rng.standard_normal((16, 16, ks, ks)) / 12).astype(np.float32))  # noqa: E731
    inits = []
    for name, ks in (("w1", 1), ("w2", 3), ("w3", 1)):
        t = w(ks)
        t.name = name
        inits.append(t)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"]), helper.make_node("Add", ["c3", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_calibration_quantizes_the_residual_of_int8_convolutions_only(fmt):
    """TensorRT's int8 residual add reads the residual as 8 bits; a calibrated fp8 convolution adds
    its float residual (cuDNN's fp8 graph reads it as it is). Both match their emulation."""
    from workbench.precision.calibration import Calibration

    rng = np.random.default_rng(6)
    data = [{"x": rng.standard_normal((2, 16, 8, 8)).astype(np.float32)} for _ in range(3)]
    engine = wb.build(wb.load_onnx(_bottleneck().SerializeToString()),
                      wb.BuilderConfig(device="cpu", precision=fmt, calibration=Calibration(data)))
    convs = [l for l in engine.layers if "Conv" in l.op]
    assert len(convs) == 3 and all(l.precision == fmt for l in convs)
    last = next(l for l in convs if len(l.inputs) > 3 and l.inputs[3])
    assert ("q_residual_scale" in last.attrs) == (fmt == "int8"), last.attrs


def test_fp8_bottlenecks_plan_codes_copies_and_channels_last(tmp_path):
    """The GPU target's plan logic for two calibrated fp8 ResNet bottlenecks, without a GPU (the
    tactics' own checks stand in for cuDNN): the convolutions inside a block hand codes on, the
    first block's output is written as floats and as a copy of codes, and every conv tensor --
    the copy included -- is stored channels-last."""
    import onnx

    from workbench.builder.layout import assign_layouts
    from workbench.kernels.cuda.cudnn_conv import _fp8_problem
    from workbench.kernels.cuda.pool import PoolTactic
    from workbench.kernels.cuda.tactic import contract_refusal
    from workbench.kernels.cuda.cudnn_conv import CudnnConvFp8
    from workbench.precision.calibration import Calibration
    from workbench.precision.quantize import prepare_quantization

    model = _bottleneck()
    # a second block on the first one's output
    graph = model.graph
    for node in list(graph.node):
        clone = onnx.helper.make_node(node.op_type, [("o" if n == "x" else n + "_b") if n not in ("w1", "w2", "w3") else n
                                                     for n in node.input], [o + "_b" for o in node.output],
                                      **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
        graph.node.append(clone)
    graph.node[6].output[0] = "o"  # the first block's Relu writes o, the second block's input
    graph.node[13].output[0] = "o_b"
    graph.node.append(onnx.helper.make_node("GlobalAveragePool", ["o_b"], ["y"]))  # as ResNet's head reads it
    graph.output[0].type.tensor_type.shape.dim[2].dim_value = 1
    graph.output[0].type.tensor_type.shape.dim[3].dim_value = 1
    path = tmp_path / "blocks.onnx"
    onnx.save(model, path)
    plan = _lowered(str(path), {"x": (2, 16, 8, 8)})
    rng = np.random.default_rng(7)
    cfg = wb.BuilderConfig(device="gpu", precision="fp8", calibration=Calibration(
        [{"x": rng.standard_normal((2, 16, 8, 8)).astype(np.float32)} for _ in range(3)]))

    def supports(layer, precision):
        if layer.key in {("workbench", "FusedConv"), ("", "Conv")} and precision == "fp8":
            # as if cuDNN planned float16 activations only: placement asks with float32 ones first
            floats = [s for s in layer.input_specs + layer.output_specs if s is not None and s.dtype == "float32"]
            return contract_refusal(CudnnConvFp8(), layer, precision) is None and \
                isinstance(_fp8_problem(layer), dict) and floats == [layer.aligned_input_specs()[2]]
        return precision != "fp8" and not any(layer.attrs.get(k) is not None for k in ("q_output_scale", "q_copy_scale"))

    assign_precisions(plan, cfg, "gpu", supports, quant=prepare_quantization(plan, cfg, "gpu"))
    convs = [l for l in plan.layers if "Conv" in l.op]
    assert [l.precision for l in convs] == ["fp8"] * 6
    assert [i for i, l in enumerate(convs) if l.attrs.get("q_output_scale") is not None] == [0, 1, 3, 4]
    copy = convs[2]
    assert copy.attrs.get("q_copy_scale") is not None and len(copy.outputs) == 2
    assert convs[3].inputs[0] == copy.outputs[1] and convs[5].inputs[3] == copy.outputs[0]
    assert all(isinstance(_fp8_problem(l), dict) for l in convs)
    assert all(s.dtype != "float32" for l in convs for s in [l.input_specs[0], l.output_specs[0]])

    class Fake:
        def __init__(self, name):
            self.name = name

        def supports(self, layer, precision, gpu):
            return None

    by_name = {"cudnn.conv": Fake("cudnn.conv"), "cudnn.conv_fp8": Fake("cudnn.conv_fp8"), "nvrtc.pool": PoolTactic(),
               "nvrtc.pointwise": pointwise.PointwiseTactic()}
    assign_layouts(plan, by_name, None)
    for layer in convs:
        assert layer.attrs["in_layouts"][0] == "nhwc", (layer.name, layer.attrs["in_layouts"])
        assert set(layer.attrs["out_layouts"]) == {"nhwc"}, (layer.name, layer.attrs["out_layouts"])


def test_the_reference_of_a_quantized_layer_writes_its_copy_of_codes():
    """engine.accuracy on a GPU plan: the reference of an fp8 convolution that writes a copy of
    codes (a block output) writes that copy as float32 values, so the next block's reference layer
    finds its input."""
    from workbench.core import quant
    from workbench.runtime.accuracy_sides import reference_plan

    conv = _fp8_conv()
    conv.attrs["q_copy_scale"] = 0.1
    conv.outputs = ["y", "y/float8e4m3fn"]
    conv.output_specs.append(TensorSpec("y/float8e4m3fn", "float8e4m3fn", [2, 64, 8, 8], 0.1))
    plan = Plan(inputs=[conv.input_specs[0]], outputs=[conv.output_specs[0]], layers=[conv],
                constants={"w": np.zeros((64, 32, 3, 3), quant.E4M3), "b": np.zeros(64, np.float32)})
    (ref,) = reference_plan(plan).layers
    assert ref.outputs == ["y", "y/float8e4m3fn"] and ref.attrs["q_copy_scale"] == 0.1
    assert ref.output_specs[1].dtype == "float32" and ref.precision == "fp32"
    assert not any(k.startswith("q_") and k != "q_copy_scale" for k in ref.attrs)
    plain = _fp8_conv()
    (ref,) = reference_plan(Plan(inputs=[plain.input_specs[0]], outputs=[plain.output_specs[0]], layers=[plain],
                                 constants=plan.constants)).layers
    assert ref.outputs == ["y"] and "q_copy_scale" not in ref.attrs


def test_an_fp8_convolution_refused_in_its_layouts_is_planned_again_at_fp16(tmp_path):
    """cuDNN plans an fp8 convolution only with a channels-last output and residual (probed on an
    H100). A bottleneck whose output is the graph output keeps its last convolution's Y and Z NCHW,
    so that convolution is planned again at fp16, with the reason in the precision table; the
    others stay fp8 and every fp8 convolution is one its tactic runs."""
    import onnx

    from workbench.builder.layout import layout_refusals
    from workbench.builder.targets.gpu import assign_with_layouts
    from workbench.kernels.cuda.cudnn_conv import CudnnConvFp8, _fp8_problem
    from workbench.kernels.cuda.pool import PoolTactic
    from workbench.kernels.cuda.tactic import contract_refusal
    from workbench.precision.calibration import Calibration
    from workbench.precision.quantize import prepare_quantization

    path = tmp_path / "block.onnx"
    onnx.save(_bottleneck(), path)
    plan = _lowered(str(path), {"x": (2, 16, 8, 8)})
    rng = np.random.default_rng(8)
    cfg = wb.BuilderConfig(device="gpu", precision="fp8", calibration=Calibration(
        [{"x": rng.standard_normal((2, 16, 8, 8)).astype(np.float32)} for _ in range(3)]))

    def cudnn_fp8(layer):  # what cuDNN 9.19 answered: X in either layout, Z and Y channels-last only
        p = _fp8_problem(layer)
        if isinstance(p, str):
            return p
        x_l, z_l, y_l = p["layouts"]
        return "No valid engine configs" if y_l != "nhwc" or (p["z"] is not None and z_l != "nhwc") else None

    class Fp8:
        name = "cudnn.conv_fp8"

        def supports(self, layer, precision, gpu):
            return cudnn_fp8(layer)

    class Any:
        def __init__(self, name):
            self.name = name

        def supports(self, layer, precision, gpu):
            return None

    def supports(layer, precision):
        if layer.key in {("workbench", "FusedConv"), ("", "Conv")} and precision == "fp8":
            return contract_refusal(CudnnConvFp8(), layer, precision) is None and cudnn_fp8(layer) is None
        return precision != "fp8" and not any(layer.attrs.get(k) is not None for k in ("q_output_scale", "q_copy_scale"))

    by_name = {"cudnn.conv": Any("cudnn.conv"), "cudnn.conv_fp8": Fp8(), "nvrtc.pool": PoolTactic(),
               "nvrtc.pointwise": pointwise.PointwiseTactic()}
    rows, _ = assign_with_layouts(plan, cfg, supports, by_name, None, prepare_quantization(plan, cfg, "gpu"))
    convs = [l for l in plan.layers if "Conv" in l.op]
    assert [l.precision for l in convs] == ["fp8", "fp8", "fp16"], [(l.name, l.precision) for l in convs]
    row = next(r for r in rows if r["layer"] == convs[2].name)
    assert row["requested"] == "fp8" and "fp8 refused in its layouts: No valid engine configs" in row["reason"]
    assert layout_refusals(plan, by_name, None) == {}
    assert sum(l.op == "Cast" for l in plan.layers) == 2  # the graph input's and output's, no others
    # nothing asks for fp8: one round, nothing re-planned
    plan16 = _lowered(str(path), {"x": (2, 16, 8, 8)})
    rows16, _ = assign_with_layouts(plan16, wb.BuilderConfig(device="gpu", precision="fp16"), supports, by_name, None)
    assert all("refused" not in r["reason"] for r in rows16)


def _attention_chain():
    """x -> [qkv: fp8 GEMM] -> packed Q/K/V -> [att: fp8 attention] -> o -> [proj: fp8 GEMM] -> y."""
    qkv = _quant_gemm("fp8", (2, 64, 128), (128, 3 * 128), op="FusedGemm")
    qkv.name, qkv.outputs, qkv.output_specs[0].name = "qkv", ["h"], "h"
    a = {"scale": 0.125, "num_heads": 2, "kv_heads": 2, "q_layout": "bsd", "k_layout": "bsd", "v_layout": "bsd",
         "out_layout": "bsd", "causal": 0, "qkv_columns": [0, 128, 128, 256, 256, 384], "q_format": "fp8",
         "q_input_scale": 0.07, "q_input_zero_point": 0, "q_key_scale": 0.07, "q_value_scale": 0.07,
         "q_result_scale": 0.03}
    att = Layer("att", "Attention", domain="workbench", inputs=["h"] * 3, outputs=["o"], attrs=a,
                input_specs=[TensorSpec("h", "float16", [2, 64, 384]) for _ in range(3)],
                output_specs=[TensorSpec("o", "float16", [2, 64, 128])])
    proj = _quant_gemm("fp8", (2, 64, 128), (128, 128), op="FusedGemm")
    proj.name, proj.inputs, proj.input_specs[0].name, proj.input_specs[1].name = "proj", ["o", "w2"], "o", "w2"
    proj.attrs["q_input_scale"] = 0.03
    for layer in (qkv, att, proj):
        layer.precision = "fp8"
    for spec in (qkv.input_specs[0], qkv.output_specs[0], proj.input_specs[0], proj.output_specs[0]):
        spec.dtype = "float16"
    consts = {"w": np.ones((128, 384), np.float32), "w2": np.ones((128, 128), np.float32)}
    return Plan(inputs=[TensorSpec("x", "float16", [2, 64, 128])], outputs=[TensorSpec("y", "float16", [2, 64, 128])],
                layers=[qkv, att, proj], constants=consts)


def _attention_supports(layer, precision):
    from workbench.kernels.cuda.cudnn_sdpa import CudnnSdpaFp8, _fp8_problem
    from workbench.kernels.cuda.tactic import contract_refusal

    if layer.op == "Attention":
        return contract_refusal(CudnnSdpaFp8(), layer, precision) is None and isinstance(_fp8_problem(layer), dict)
    return _cublaslt_quant_supports(layer, precision)


def test_fp8_attention_reads_and_writes_codes():
    """The Q/K/V GEMM writes its packed output as codes for the fp8 attention, which reads them at
    all three positions; the attention writes O as codes for the out-projection (its result scale
    is the projection's input scale): no quantize pass on either side."""
    from workbench.kernels.cuda.cudnn_sdpa import _fp8_problem
    from workbench.precision.assign import quantized_boundaries

    plan = _attention_chain()
    rows = quantized_boundaries(plan, _attention_supports)
    qkv, att, proj = plan.layers
    code = "float8e4m3fn"
    assert qkv.attrs["q_output_scale"] == pytest.approx(0.07) and att.attrs["q_output_scale"] == pytest.approx(0.03)
    assert att.inputs == ["h"] * 3 and all(s.dtype == code and s.scale == pytest.approx(0.07) for s in att.input_specs)
    assert proj.input_specs[0].dtype == code and proj.input_specs[0].scale == pytest.approx(0.03)
    assert [r[0] for r in rows] == ["qkv", "att"]
    p = _fp8_problem(att)
    assert p["reads"] == ("codes",) * 3 and p["out"] == "codes" and p["off"] == (0, 128, 256)


def test_fp8_attention_declines_codes_of_another_scale():
    """An out-projection that quantizes with another scale than the attention's result: the
    attention writes float16 (dequantized) and the projection quantizes it itself."""
    from workbench.kernels.cuda.cudnn_sdpa import _fp8_problem
    from workbench.precision.assign import quantized_boundaries

    plan = _attention_chain()
    plan.layers[2].attrs["q_input_scale"] = 0.05
    quantized_boundaries(plan, _attention_supports)
    att = plan.layers[1]
    assert "q_output_scale" not in att.attrs and _fp8_problem(att)["out"] == "float16"


def test_fp8_attention_refusals_name_the_reason():
    from workbench.kernels.cuda.cudnn_sdpa import _fp8_problem

    att = _attention_chain().layers[1]
    att.attrs["q_output_scale"] = 0.5
    assert "q_output_scale on a float16 output" in _fp8_problem(att)
    del att.attrs["q_output_scale"]
    att.input_specs[0] = TensorSpec("h", "float8e4m3fn", [2, 64, 384], 3.0)
    assert "not the layer's" in _fp8_problem(att)
    att = _attention_chain().layers[1]
    att.inputs, att.input_specs = att.inputs + ["m"], att.input_specs + [TensorSpec("m", "float16", [2, 1, 1, 64])]
    assert "mask" in str(_fp8_problem(att))
    att = _attention_chain().layers[1]
    att.attrs["qkv_columns"] = [0, 128, 136, 264, 264, 392]
    att.input_specs = [TensorSpec("h", "float16", [2, 64, 392]) for _ in range(3)]
    assert "16-byte aligned" in str(_fp8_problem(att))
