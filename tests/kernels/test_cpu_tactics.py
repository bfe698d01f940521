"""Every fast CPU tactic (``workbench.kernels.cpu``) and every config of it against the reference
kernel on random data: relative error <= 1e-5 in fp32 (fp16 / bf16 emulation against the emulated
reference), reference results never all zeros, and kept output buffers poisoned with NaN between two
runs, so an element a tactic forgets to write shows up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.core.numerics import random_array, rel_err
from workbench.core.plan import Layer, TensorSpec
from workbench.kernels import cpu
from workbench.kernels.reference import KernelContext
from workbench.kernels.reference.tactics import BY_NAME as REFERENCE

_REF_NAME = {"fp32": "cpu.numpy", "fp16": "cpu.numpy.fp16-emulated", "bf16": "cpu.numpy.bf16-emulated"}
_TOL = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.5e-2}


def layer(op, ins, outs, attrs=None, domain="", opset=21):
    """ins / outs: [(name, dtype, shape)]; an empty name is an absent optional input."""
    return Layer(f"l_{op}", op, domain=domain, opset=opset, inputs=[n for n, _, _ in ins],
                 outputs=[n for n, _, _ in outs], attrs=dict(attrs or {}),
                 input_specs=[TensorSpec(n, d, list(s)) for n, d, s in ins if n],
                 output_specs=[TensorSpec(n, d, list(s)) for n, d, s in outs])


def f32(name, *shape):
    return (name, "float32", shape)


def check(lay, const_names=(), precision="fp32", feeds=None, expect=None):
    rng = np.random.default_rng(7)
    values = []
    for name, spec in zip(lay.inputs, lay.aligned_input_specs()):
        if not name:
            values.append(None)
        elif feeds and name in feeds:
            values.append(feeds[name])
        else:
            values.append(random_array(spec.dtype, spec.shape, rng))
    constants = {n: v for n, v in zip(lay.inputs, values) if n in const_names}
    ctx = KernelContext(opset=lay.opset, n_outputs=len(lay.outputs), name=lay.name)
    want = REFERENCE[_REF_NAME[precision]].build(lay, precision, {})(ctx, values, lay.attrs)
    for w in want:
        assert np.any(w != 0), "the reference result is all zeros: the case tests nothing"
    ran = []
    for tactic, reason in cpu.candidates(lay, precision, constants):
        if tactic.source != "cpu" or reason is not None:
            continue
        for config in tactic.configs(lay, precision):
            kernel = tactic.build(lay, precision, config, constants)
            first = kernel(ctx, values, lay.attrs)
            for o in first:
                if isinstance(o, np.ndarray) and o.flags.writeable:
                    o[...] = np.nan  # poison whatever the kernel keeps for the next run
            got = kernel(ctx, values, lay.attrs)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape, (tactic.name, config)
                err = rel_err(g, w)
                assert err <= _TOL[precision], f"{tactic.name} {config}: relative error {err:.2e}"
            ran.append((tactic.name, config.get("variant")))
    assert ran, "no fast tactic ran this layer"
    if expect:
        assert set(expect) <= set(ran), ran
    return ran


CONVS = [  # (x shape, w shape, attrs)
    ((1, 8, 9, 9), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 6, 11, 10), (4, 6, 3, 2), {"strides": [2, 1], "pads": [0, 1, 2, 0]}),
    ((1, 8, 7, 7), (12, 8, 1, 1), {}),
    ((1, 8, 8, 8), (12, 8, 1, 1), {"strides": [2, 2]}),
    ((1, 8, 9, 9), (6, 4, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    ((2, 12, 5, 5), (6, 4, 1, 1), {"group": 3}),
    ((2, 8, 9, 9), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 4, 12, 12), (5, 4, 3, 3), {"dilations": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 3, 20), (4, 3, 5), {"pads": [2, 2]}),
    ((1, 2, 5, 6, 6), (3, 2, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),
]


@pytest.mark.parametrize("x,w,attrs", CONVS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv(x, w, attrs, bias):
    from workbench.kernels.cpu.conv import geometry

    out = (x[0], w[0]) + tuple(geometry(x, w, attrs)[-1])
    ins = [f32("x", *x), f32("w", *w)] + ([f32("b", w[0])] if bias else [])
    depthwise = attrs.get("group", 1) == x[1] == w[0]
    check(layer("Conv", ins, [f32("y", *out)], attrs), {"w", "b"},
          expect=[("cpu.blas.conv", "gemm")] + ([("cpu.blas.conv", "depthwise"), ("cpu.blas.conv", "depthwise_nhwc")]
                                                if depthwise else []))


@pytest.mark.parametrize("act", [{}, {"activation": "Relu"}, {"activation": "Clip", "act_min": 0.0, "act_max": 6.0},
                                 {"activation": "LeakyRelu", "act_alpha": 0.1}, {"activation": "Sigmoid"},
                                 {"activation": "Clip", "act_max": 0.5}, {"activation": "Silu"}, {"activation": "Tanh"},
                                 {"activation": "Gelu"}, {"activation": "HardSwish"}])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_fused_conv_with_residual(act, precision):
    attrs = {"pads": [1, 1, 1, 1], "residual": 1, **act}
    ins = [f32("x", 1, 8, 6, 6), f32("w", 8, 8, 3, 3), f32("b", 8), f32("z", 1, 8, 6, 6)]
    check(layer("FusedConv", ins, [f32("y", 1, 8, 6, 6)], attrs, domain="workbench"), {"w", "b"}, precision)
    dw = dict(attrs, group=8)
    ins[1] = f32("w", 8, 1, 3, 3)
    check(layer("FusedConv", ins, [f32("y", 1, 8, 6, 6)], dw, domain="workbench"), {"w", "b"}, precision,
          expect=[("cpu.blas.conv", "depthwise"), ("cpu.blas.conv", "depthwise_nhwc")])


GEMMS = [  # (a, b, c or None, attrs, out)
    ((4, 16), (16, 8), (8,), {}, (4, 8)),
    ((4, 16), (8, 16), (4, 8), {"transB": 1, "alpha": 0.5, "beta": 2.0}, (4, 8)),
    ((16, 4), (16, 8), None, {"transA": 1, "activation": "Gelu"}, (4, 8)),
    ((2, 5, 16), (16, 8), (8,), {"activation": "Relu"}, (2, 5, 8)),
    ((2, 5, 16), (16, 8), (8,), {"activation": "GeluTanh", "alpha": 2.0}, (2, 5, 8)),
]


@pytest.mark.parametrize("a,b,c,attrs,out", GEMMS)
@pytest.mark.parametrize("const_b", [True, False])
def test_fused_gemm(a, b, c, attrs, out, const_b):
    ins = [f32("a", *a), f32("b", *b)] + ([f32("c", *c)] if c else [])
    check(layer("FusedGemm", ins, [f32("y", *out)], attrs, domain="workbench"), {"b", "c"} if const_b else set())


def test_gemm_in_emulated_half_precisions():
    ins = [f32("a", 4, 16), f32("b", 8, 16), f32("c", 8)]
    for p in ("fp16", "bf16"):
        check(layer("Gemm", ins, [f32("y", 4, 8)], {"transB": 1}), {"b", "c"}, p)


@pytest.mark.parametrize("a,b,out", [((3, 4, 5), (3, 5, 6), (3, 4, 6)), ((2, 3, 4, 5), (2, 3, 5, 4), (2, 3, 4, 4)),
                                     ((2, 4, 5), (5, 3), (2, 4, 3)), ((2, 1, 4, 5), (3, 5, 2), (2, 3, 4, 2))])
def test_matmul(a, b, out):
    check(layer("MatMul", [f32("a", *a), f32("b", *b)], [f32("y", *out)]))


def test_pointwise_chain_with_reference_steps():
    prog = [{"op": "Mul", "args": ["in0", "c:0.5"], "out": "t0"},
            {"op": "Add", "args": ["t0", "in1"], "out": "t1"},
            {"op": "Erf", "args": ["t1"], "out": "t2"},
            {"op": "Cos", "args": ["t2"], "out": "t2b"},  # no ufunc: the reference kernel runs it
            {"op": "Add", "args": ["t2", "t2b"], "out": "t2c"},
            {"op": "Relu", "args": ["t2c"], "out": "t3"},
            {"op": "Max", "args": ["t3", "in0"], "out": "t4"},
            {"op": "Tanh", "args": ["t4"], "out": "t5"},
            {"op": "Sigmoid", "args": ["t5"], "out": "t6"},
            {"op": "Mul", "args": ["t6", "t1"], "out": "t7"}]
    attrs = {"program": json.dumps(prog), "outputs": ["t7", "t1"]}
    lay = layer("Pointwise", [f32("x", 2, 3, 4), f32("y", 4)], [f32("o", 2, 3, 4), f32("s", 2, 3, 4)], attrs,
                domain="workbench")
    for p in ("fp32", "fp16"):
        check(lay, precision=p)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norms(bias):
    ins = [f32("x", 2, 5, 16), f32("g", 16)] + ([f32("b", 16)] if bias else [])
    check(layer("LayerNorm", ins, [f32("y", 2, 5, 16)], {"epsilon": 1e-5}, domain="workbench"))
    ins = [f32("x", 2, 5, 16), f32("s", 2, 5, 16), f32("g", 16)] + ([f32("b", 16), f32("ab", 16)] if bias else [])
    check(layer("SkipLayerNorm", ins, [f32("y", 2, 5, 16), f32("sum", 2, 5, 16)], {}, domain="workbench"))


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    check(layer("Softmax", [f32("x", 2, 3, 7)], [f32("y", 2, 3, 7)], {"axis": axis}))


ATTN = [  # (layouts, mask kind, causal, kv heads)
    ({"q_layout": "bhsd", "k_layout": "bhsd", "v_layout": "bhsd", "out_layout": "bhsd"}, "", 0, 2),
    ({"q_layout": "bshd", "k_layout": "bshd", "v_layout": "bshd", "out_layout": "bshd"}, "additive", 0, 2),
    ({"q_layout": "bsd", "k_layout": "bsd", "v_layout": "bsd", "out_layout": "bsd"}, "boolean", 0, 2),
    ({"q_layout": "bhsd", "k_layout": "bhds", "v_layout": "bhsd", "out_layout": "bsd"}, "", 1, 2),
    ({"q_layout": "bhsd", "k_layout": "bhsd", "v_layout": "bhsd", "out_layout": "bshd"}, "", 1, 1),
]


@pytest.mark.parametrize("layouts,mask,causal,kv", ATTN)
def test_attention(layouts, mask, causal, kv):
    b, h, s, d = 2, 2, 5, 4

    def shape(layout, heads):
        return {"bhsd": (b, heads, s, d), "bshd": (b, s, heads, d), "bhds": (b, heads, d, s), "bsd": (b, s, heads * d)}[layout]

    ins = [f32("q", *shape(layouts["q_layout"], h)), f32("k", *shape(layouts["k_layout"], kv)),
           f32("v", *shape(layouts["v_layout"], kv))]
    feeds = {}
    if mask == "additive":
        ins.append(f32("m", b, 1, 1, s))
    elif mask == "boolean":
        ins.append(("m", "bool", (b, 1, s, s)))
        keep = np.random.default_rng(3).random((b, 1, s, s)) < 0.7
        keep[..., 0] = True  # every row keeps one key: no all-masked rows
        feeds["m"] = keep
    attrs = dict(layouts, num_heads=h, kv_heads=kv, scale=0.5, mask_kind=mask, causal=causal)
    out = shape(layouts["out_layout"], h) if layouts["out_layout"] != "bhds" else None
    check(layer("Attention", ins, [f32("o", *out)], attrs, domain="workbench"), feeds=feeds)


def test_declines_say_why():
    conv = layer("Conv", [f32("x", 1, 2, 5, 5), f32("w", 3, 2, 3, 3)], [f32("y", 1, 3, 3, 3)])
    reasons = {t.name: r for t, r in cpu.candidates(conv, "fp32", {})}
    assert reasons["cpu.blas.conv"] == "weights are not a constant"
    assert reasons["cpu.numpy"] is None
    ints = layer("MatMul", [("a", "int32", (2, 2)), ("b", "int32", (2, 2))], [("y", "int32", (2, 2))])
    assert {t.name: r for t, r in cpu.candidates(ints, "fp32", {})}["cpu.blas.gemm"] == "float32 tensors only"


POOLS = [  # (op, x shape, attrs, out shape)
    ("MaxPool", (2, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 3, 5, 5)),
    ("MaxPool", (1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 4, 4)),
    ("MaxPool", (1, 2, 10), {"kernel_shape": [2], "dilations": [2]}, (1, 2, 8)),
    ("AveragePool", (2, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 3, 5, 5)),
    ("AveragePool", (1, 2, 7, 7), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, (1, 2, 7, 7)),
    ("GlobalAveragePool", (2, 5, 6, 7), {}, (2, 5, 1, 1)),
    ("GlobalMaxPool", (2, 5, 6, 7), {}, (2, 5, 1, 1)),
]


@pytest.mark.parametrize("op,x,attrs,out", POOLS)
def test_pool(op, x, attrs, out):
    for p in ("fp32", "bf16"):
        check(layer(op, [f32("x", *x)], [f32("y", *out)], attrs), precision=p)

