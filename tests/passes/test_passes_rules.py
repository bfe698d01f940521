"""Before/Expected tests: one small graph per rule, the op types it must turn into, and the same
outputs as the unoptimized engine."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.rules import build_both, init, model
from workbench.errors import WorkbenchError

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def ops(engine):
    return [l.op for l in engine.layers]


def fired(engine, rule):
    return sum(1 for f in engine.reports["fusions"] if f["rule"] == rule and f["status"] == "fired")


def conv_net(act_nodes, extra_out=False):
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])] + act_nodes
    outs = ["y"] + (["c"] if extra_out else [])
    return model(nodes, [("x", [1, 3, 8, 8])], outs, [init("w", w), init("b", RNG.standard_normal(4))])


X = {"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}


def test_conv_relu_epilogue():
    e = build_both(conv_net([helper.make_node("Relu", ["c"], ["y"])]), X)
    assert ops(e) == ["FusedConv"] and e.layers[0].attrs["activation"] == "Relu"
    assert sorted(e.layers[0].onnx_ops) == ["Conv", "Relu"]


def test_conv_relu6_from_clip():
    lo, hi = init("lo", np.float32(0)), init("hi", np.float32(6))
    net = model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Clip", ["c", "lo", "hi"], ["y"])],
                [("x", [1, 3, 8, 8])], ["y"], [init("w", RNG.standard_normal((4, 3, 3, 3))), init("b", np.zeros(4)), lo, hi])
    e = build_both(net, X)
    a = e.layers[0].attrs
    assert ops(e) == ["FusedConv"] and a["activation"] == "Clip" and (a["act_min"], a["act_max"]) == (0.0, 6.0)


def test_conv_residual_and_silu():
    w = init("w", RNG.standard_normal((3, 3, 3, 3)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["g"]), helper.make_node("Mul", ["s", "g"], ["y"])]
    e = build_both(model(nodes, [("x", [1, 3, 8, 8])], ["y"], [w]), X)
    assert ops(e) == ["FusedConv"] and e.layers[0].attrs["residual"] == 1 and e.layers[0].attrs["activation"] == "Silu"


def test_declined_when_conv_output_has_two_consumers():
    e = build_both(conv_net([helper.make_node("Relu", ["c"], ["y"])], extra_out=True), X)
    assert "Conv" in ops(e)
    declined = [f for f in e.report()["fusions"].to_dict("records") if f["status"] == "declined"]
    assert any(f["rule"] == "conv_epilogue" and "consumers" in f["reason"] or "graph output" in f["reason"] for f in declined)
    desc = e.describe()
    assert any(f["status"] == "declined" and f["reason"] for f in desc["fusions"])


def test_batchnorm_folded_into_conv():
    c = 4
    bn = [init(n, v) for n, v in [("s", RNG.random(c) + 0.5), ("t", RNG.standard_normal(c)), ("m", RNG.standard_normal(c)), ("v", RNG.random(c) + 0.5)]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["y"])]
    net = model(nodes, [("x", [1, 3, 8, 8])], ["y"], [init("w", RNG.standard_normal((4, 3, 3, 3))), init("b", RNG.standard_normal(4)), *bn])
    e = build_both(net, X)
    assert ops(e) == ["Conv"] and fired(e, "fold_batchnorm") == 1


@pytest.mark.parametrize("scale_shape", [(4, 1, 1), (1, 4, 1, 1), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_channel_scale_and_shift_after_conv_become_its_weights_and_bias(scale_shape, bias):
    """Conv -> Mul(per-channel constant) -> Add(per-channel constant) -> Relu, as exporters write a
    batch norm's scale and shift: one FusedConv."""
    ins = ["x", "w"] + (["b"] if bias else [])
    nodes = [helper.make_node("Conv", ins, ["c"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["k", "c"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    inits = [init("w", RNG.standard_normal((4, 3, 3, 3))), init("k", RNG.random(scale_shape) + 0.5),
             init("t", RNG.standard_normal((4, 1, 1)))] + ([init("b", RNG.standard_normal(4))] if bias else [])
    e = build_both(model(nodes, [("x", [1, 3, 8, 8])], ["y"], inits), X)
    assert ops(e) == ["FusedConv"] and fired(e, "fold_channel_scale") == 1


def test_channel_scale_declined_when_it_is_not_per_channel_or_the_conv_is_read_twice():
    spatial = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["c", "k"], ["y"])]
    e = build_both(model(spatial, [("x", [1, 3, 8, 8])], ["y"],
                         [init("w", RNG.standard_normal((4, 3, 3, 3))), init("k", RNG.random((1, 8, 8)))]), X)
    assert fired(e, "fold_channel_scale") == 0 and "Conv" in ops(e)
    twice = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["c", "k"], ["y"]),
             helper.make_node("Relu", ["c"], ["z"])]
    e = build_both(model(twice, [("x", [1, 3, 8, 8])], ["y", "z"],
                         [init("w", RNG.standard_normal((4, 3, 3, 3))), init("k", RNG.random((4, 1, 1)))]), X)
    assert fired(e, "fold_channel_scale") == 0
    reasons = [f["reason"] for f in e.report()["fusions"].to_dict("records")
               if f["rule"] == "fold_channel_scale" and f["status"] == "declined"]
    assert reasons and "also read by" in reasons[0]


def test_sum_becomes_adds_and_fuses_as_a_residual():
    # ResNet's old form: Sum(conv, shortcut) -> Relu becomes one FusedConv with a residual
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Sum", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    e = build_both(model(nodes, [("x", [1, 3, 8, 8])], ["y"], [init("w", RNG.standard_normal((3, 3, 3, 3)))]), X)
    assert fired(e, "sum_as_add") == 1
    assert ops(e) == ["FusedConv"] and e.layers[0].attrs["residual"] == 1 and e.layers[0].attrs["activation"] == "Relu"


def test_sum_of_three_keeps_its_order_and_one_input_sum_stays():
    a = (RNG.standard_normal((2, 5)) * 1e8).astype(np.float32)
    xs = {"a": a, "b": -a, "c": RNG.standard_normal((2, 5)).astype(np.float32)}
    three = model([helper.make_node("Sum", ["a", "b", "c"], ["y"])], [(k, [2, 5]) for k in xs], ["y"], [])
    e = build_both(three, xs)
    assert fired(e, "sum_as_add") == 1 and "Sum" not in ops(e)
    # (a + b) + c is c exactly; a + (b + c) would lose c to rounding
    np.testing.assert_array_equal(e.create_context().run(xs)["y"], xs["c"])
    one = model([helper.make_node("Sum", ["a"], ["y"])], [("a", [2, 5])], ["y"], [])
    assert fired(build_both(one, {"a": a}), "sum_as_add") == 0


def test_pad_folded_into_conv():
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64), "p")
    nodes = [helper.make_node("Pad", ["x", "p"], ["xp"]), helper.make_node("Conv", ["xp", "w"], ["y"])]
    e = build_both(model(nodes, [("x", [1, 3, 8, 8])], ["y"], [pads, init("w", RNG.standard_normal((4, 3, 3, 3)))]), X)
    assert ops(e) == ["Conv"] and e.layers[0].attrs["pads"] == [1, 2, 1, 2]


def test_matmul_bias_gelu_erf_decomposed():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["bias", "m"], ["h"]),
             helper.make_node("Div", ["h", "sq2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["p"]),
             helper.make_node("Mul", ["p", "half"], ["y"])]
    inits = [init("w", RNG.standard_normal((8, 16))), init("bias", RNG.standard_normal(16)), init("sq2", np.float32(np.sqrt(2))),
             init("one", np.float32(1)), init("half", np.float32(0.5))]
    e = build_both(model(nodes, [("x", [2, 5, 8])], ["y"], inits), {"x": RNG.standard_normal((2, 5, 8)).astype(np.float32)})
    assert ops(e) == ["FusedGemm"] and e.layers[0].attrs["activation"] == "Gelu"


def test_gemm_tanh_gelu_tanh_form():
    nodes = [helper.make_node("Gemm", ["x", "w", "bias"], ["h"]), helper.make_node("Pow", ["h", "three"], ["p"]),
             helper.make_node("Mul", ["p", "k"], ["pk"]), helper.make_node("Add", ["h", "pk"], ["s"]),
             helper.make_node("Mul", ["s", "c"], ["sc"]), helper.make_node("Tanh", ["sc"], ["t"]),
             helper.make_node("Add", ["t", "one"], ["t1"]), helper.make_node("Mul", ["h", "half"], ["hh"]),
             helper.make_node("Mul", ["hh", "t1"], ["y"])]
    inits = [init("w", RNG.standard_normal((8, 16))), init("bias", RNG.standard_normal(16)), init("three", np.float32(3)),
             init("k", np.float32(0.044715)), init("c", np.float32(np.sqrt(2 / np.pi))), init("one", np.float32(1)), init("half", np.float32(0.5))]
    e = build_both(model(nodes, [("x", [4, 8])], ["y"], inits), {"x": RNG.standard_normal((4, 8)).astype(np.float32)})
    assert ops(e) == ["FusedGemm"] and e.layers[0].attrs["activation"] == "GeluTanh"


def _layernorm_nodes(x="x", out="y"):
    return [helper.make_node("ReduceMean", [x], ["mu"], axes=[-1]), helper.make_node("Sub", [x, "mu"], ["d"]),
            helper.make_node("Pow", ["d", "two"], ["d2"]), helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
            helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["d", "sd"], ["n"]), helper.make_node("Mul", ["n", "g"], ["ng"]),
            helper.make_node("Add", ["ng", "beta"], [out])]


LN_INITS = [init("two", np.float32(2)), init("eps", np.float32(1e-5)), init("g", RNG.random(16)), init("beta", RNG.standard_normal(16))]
H = {"x": RNG.standard_normal((2, 5, 16)).astype(np.float32), "r": RNG.standard_normal((2, 5, 16)).astype(np.float32)}


def test_decomposed_layernorm():
    e = build_both(model(_layernorm_nodes(), [("x", [2, 5, 16])], ["y"], LN_INITS), {"x": H["x"]})
    assert ops(e) == ["LayerNorm"]


def test_skip_layernorm():
    nodes = [helper.make_node("Add", ["x", "r"], ["s"])] + _layernorm_nodes("s")
    e = build_both(model(nodes, [("x", [2, 5, 16]), ("r", [2, 5, 16])], ["y", "s"], LN_INITS), H)
    assert ops(e) == ["SkipLayerNorm"]


def test_rmsnorm_llama_form():
    nodes = [helper.make_node("Pow", ["x", "two"], ["x2"]), helper.make_node("ReduceMean", ["x2"], ["ms"], axes=[-1]),
             helper.make_node("Add", ["ms", "eps"], ["me"]), helper.make_node("Sqrt", ["me"], ["rt"]),
             helper.make_node("Reciprocal", ["rt"], ["inv"]), helper.make_node("Mul", ["x", "inv"], ["n"]),
             helper.make_node("Mul", ["g", "n"], ["y"])]
    e = build_both(model(nodes, [("x", [2, 5, 16])], ["y"], LN_INITS[:3]), {"x": H["x"]})
    assert ops(e) == ["RMSNorm"]


def test_channels_first_layernorm_transposes_absorbed():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["t", "g", "beta"], ["l"], axis=-1, epsilon=1e-6),
             helper.make_node("Transpose", ["l"], ["y"], perm=[0, 3, 1, 2])]
    e = build_both(model(nodes, [("x", [2, 16, 4, 4])], ["y"], LN_INITS[2:]), {"x": RNG.standard_normal((2, 16, 4, 4)).astype(np.float32)})
    assert ops(e) == ["LayerNorm"] and e.layers[0].attrs["channels_first"] == 1


def _channels_first_decomposed(second_reader=False):
    """ConvNeXt at opset 14: Transpose -> decomposed LayerNorm (ReduceMean axes attr) -> Transpose."""
    nodes = ([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1])] + _layernorm_nodes("t", "l")
             + [helper.make_node("Transpose", ["l"], ["y"], perm=[0, 3, 1, 2])])
    outs = ["y"]
    if second_reader:  # the LayerNorm result is also read channels-last: the Transposes must stay
        nodes.append(helper.make_node("Relu", ["l"], ["z"]))
        outs.append("z")
    net = model(nodes, [("x", [2, 16, 4, 4])], outs, LN_INITS, opset=14)
    return net, {"x": RNG.standard_normal((2, 16, 4, 4)).astype(np.float32)}


def test_channels_first_decomposed_layernorm_opset14():
    net, feeds = _channels_first_decomposed()
    e = build_both(net, feeds)
    assert ops(e) == ["LayerNorm"] and e.layers[0].attrs["channels_first"] == 1 and e.layers[0].attrs["axis"] == 1
    fired = [r for r in e.reports["fusions"] if r["rule"] == "channels_first_layer_norm" and r["status"] == "fired"]
    assert len(fired) == 1
    off = wb.build(net, wb.BuilderConfig(device="cpu", disable=["channels_first_layer_norm"]))
    assert ops(off).count("Transpose") == 2


def test_channels_first_layernorm_declined_is_logged():
    net, feeds = _channels_first_decomposed(second_reader=True)
    e = build_both(net, feeds)
    assert ops(e).count("Transpose") == 2
    declined = [r for r in e.reports["fusions"] if r["rule"] == "channels_first_layer_norm" and r["status"] == "declined"]
    assert declined and "not only by Transpose" in declined[0]["reason"]


def _attention_nodes(gqa=False, mask_const=None):
    """BERT-style: [b, s, h*d] projections split into heads, scaled, masked, merged back
    (``mask_const``: the additive mask as a constant, not an input)."""
    kvh = 1 if gqa else 2
    nodes = [helper.make_node("Reshape", ["q3", "s4"], ["q4"]), helper.make_node("Transpose", ["q4"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["k3", "s4kv"], ["k4"]), helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["v3", "s4kv"], ["v4"]), helper.make_node("Transpose", ["v4"], ["v"], perm=[0, 2, 1, 3])]
    k_name, v_name = "kt", "v"
    if gqa:  # repeat_kv on K (before its transpose to Kᵀ would be unusual; Llama repeats K in bhsd)
        nodes = nodes[:2] + [helper.make_node("Reshape", ["k3", "s4kv"], ["k4"]), helper.make_node("Transpose", ["k4"], ["kb"], perm=[0, 2, 1, 3]),
                             helper.make_node("Unsqueeze", ["kb", "ax2"], ["ku"]), helper.make_node("Expand", ["ku", "e5"], ["ke"]),
                             helper.make_node("Reshape", ["ke", "s4h"], ["kr"]), helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 1, 3, 2]),
                             nodes[4], nodes[5], helper.make_node("Unsqueeze", ["v", "ax2"], ["vu"]),
                             helper.make_node("Expand", ["vu", "e5"], ["ve"]), helper.make_node("Reshape", ["ve", "s4h"], ["vr"])]
        v_name = "vr"
    nodes += [helper.make_node("MatMul", ["q", k_name], ["qk"]), helper.make_node("Mul", ["qk", "scale"], ["sc"]),
              helper.make_node("Add", ["sc", "mask"], ["sm"]), helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", v_name], ["o"]), helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "s3"], ["y"])]
    i64 = lambda n, v: numpy_helper.from_array(np.array(v, np.int64), n)  # noqa: E731
    inits = [i64("s4", [2, 6, 2, 4]), i64("s4kv", [2, 6, kvh, 4]), i64("s3", [2, 6, 8]), init("scale", np.float32(0.5)),
             i64("ax2", [2]), i64("e5", [2, 1, 2, 6, 4]), i64("s4h", [2, 2, 6, 4])]
    kv = 4 * kvh
    inputs = [("q3", [2, 6, 8]), ("k3", [2, 6, kv]), ("v3", [2, 6, kv])]
    feeds = {"q3": RNG.standard_normal((2, 6, 8)), "k3": RNG.standard_normal((2, 6, kv)), "v3": RNG.standard_normal((2, 6, kv))}
    if mask_const is None:
        inputs.append(("mask", [2, 1, 1, 6]))
        feeds["mask"] = np.where(RNG.random((2, 1, 1, 6)) < 0.3, -1e9, 0.0)
    else:
        inits.append(init("mask", mask_const))
    net = model(nodes, inputs, ["y"], inits)
    return net, {k: v.astype(np.float32) for k, v in feeds.items()}


def test_attention_with_additive_mask():
    net, feeds = _attention_nodes()
    e = build_both(net, feeds)
    assert ops(e) == ["Attention"]
    a = e.layers[0].attrs
    assert (a["q_layout"], a["k_layout"], a["out_layout"], a["mask_kind"], a["num_heads"]) == ("bsd", "bsd", "bsd", "additive", 2)


def test_attention_drops_a_constant_mask_of_zeros():
    """A constant additive mask of zeros (ViT's dynamo export) masks nothing: the Attention reads no
    mask. A constant mask that does mask stays."""
    net, feeds = _attention_nodes(mask_const=np.zeros((2, 1, 6, 6), np.float32))
    e = build_both(net, feeds)
    assert ops(e) == ["Attention"] and len(e.layers[0].inputs) == 3 and e.layers[0].attrs["mask_kind"] == ""
    masked = np.zeros((2, 1, 6, 6), np.float32)
    masked[..., 2] = -1e9
    net, feeds = _attention_nodes(mask_const=masked)
    e = build_both(net, feeds)
    assert ops(e) == ["Attention"] and len(e.layers[0].inputs) == 4 and e.layers[0].attrs["mask_kind"] == "additive"


def test_attention_gqa_repeat_absorbed():
    net, feeds = _attention_nodes(gqa=True)
    e = build_both(net, feeds)
    att = [l for l in e.layers if l.op == "Attention"]
    assert len(att) == 1 and att[0].attrs["kv_heads"] == 1
    assert not {"Expand", "Unsqueeze", "Softmax", "MatMul"} & set(ops(e))
    assert att[0].attrs["v_layout"] == "bsd" and "Transpose" not in ops(e)  # V's head split absorbed


def _parallel_gemms(acts=("", "", ""), transb=False):
    """Three projections of one input (Gemm with bias, MatMul + bias Add, MatMul), each read on."""
    w = [RNG.standard_normal((8, n)).astype(np.float32) for n in (6, 4, 4)]
    nodes, inits = [], []
    for i, (wi, act) in enumerate(zip(w, acts)):
        inits += [init(f"w{i}", wi.T if transb and i == 0 else wi), init(f"b{i}", RNG.standard_normal(wi.shape[1]))]
        if i == 0:
            nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]) if not transb else
                         helper.make_node("Gemm", ["x2", f"w{i}", f"b{i}"], [f"m{i}"], transB=1, beta=0.5))
        else:
            nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]))
        out = f"m{i}"
        if i < 2 and not (transb and i == 0):
            nodes.append(helper.make_node("Add", [out, f"b{i}"], [f"a{i}"]))
            out = f"a{i}"
        if act:
            nodes.append(helper.make_node(act, [out], [f"r{i}"]))
            out = f"r{i}"
        nodes.append(helper.make_node("Reshape", [out, "flat"], [f"y{i}"]))
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
    x_in = [("x2", [6, 8])] if transb else [("x", [2, 3, 8])]
    if transb:
        nodes = [helper.make_node("Identity", ["x2"], ["x"])] + nodes  # MatMuls read x, the Gemm x2
    net = model(nodes, x_in, ["y0", "y1", "y2"], inits)
    return net, {x_in[0][0]: RNG.standard_normal(x_in[0][1]).astype(np.float32)}


def test_parallel_gemms_merge_into_one_gemm_and_split():
    net, feeds = _parallel_gemms()
    e = build_both(net, feeds)
    assert ops(e).count("FusedGemm") == 1 and ops(e).count("Split") == 1 and "MatMul" not in ops(e)
    g = next(l for l in e.layers if l.op == "FusedGemm")
    assert g.input_specs[1].shape == [8, 14] and sorted(g.onnx_ops) == sorted(["MatMul", "Add", "MatMul", "Add", "MatMul"])
    fired = [r for r in e.reports["fusions"] if r["rule"] == "merge_parallel_gemms" and r["status"] == "fired"]
    assert len(fired) == 1
    off = wb.build(net, wb.BuilderConfig(device="cpu", disable=["merge_parallel_gemms"]))
    assert "Split" not in ops(off)


def test_parallel_gemms_with_different_activations_decline_with_a_reason():
    net, feeds = _parallel_gemms(acts=("Relu", "", ""))
    e = build_both(net, feeds)
    assert ops(e).count("Split") == 1 and ops(e).count("FusedGemm") == 2  # the two without activation merge
    declined = [r for r in e.reports["fusions"] if r["rule"] == "merge_parallel_gemms" and r["status"] == "declined"]
    assert declined and "differ" in declined[0]["reason"] and "Relu" in declined[0]["reason"]


def test_parallel_gemms_transposed_weight_and_scaled_bias():
    net, feeds = _parallel_gemms(transb=True)
    e = build_both(net, feeds)
    assert ops(e).count("FusedGemm") == 1 and ops(e).count("Split") == 1 and "Gemm" not in ops(e)


def test_pointwise_chain_becomes_one_node():
    nodes = [helper.make_node("Mul", ["x", "x"], ["a"]), helper.make_node("Tanh", ["a"], ["b"]),
             helper.make_node("Add", ["b", "x"], ["c"]), helper.make_node("Sqrt", ["c"], ["y"])]
    e = build_both(model(nodes, [("x", [3, 4])], ["y"]), {"x": RNG.random((3, 4)).astype(np.float32) + 2})
    assert ops(e) == ["Pointwise"] and e.layers[0].onnx_ops == ["Mul", "Tanh", "Add", "Sqrt"]


def test_pointwise_clip_with_attribute_bounds_before_opset_11():
    # Clip-6 keeps min/max in attributes; the Pointwise program is opset 21, so they become operands
    nodes = [helper.make_node("Mul", ["x", "x"], ["a"]), helper.make_node("Clip", ["a"], ["y"], min=0.5, max=2.0)]
    e = build_both(model(nodes, [("x", [3, 4])], ["y"], opset=10), {"x": RNG.standard_normal((3, 4)).astype(np.float32) * 3})
    assert ops(e) == ["Pointwise"]


def test_noop_cleanup_and_transpose_chain():
    nodes = [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0]),
             helper.make_node("Transpose", ["b"], ["c"], perm=[1, 0]), helper.make_node("Cast", ["c"], ["d"], to=F),
             helper.make_node("Relu", ["d"], ["y"])]
    e = build_both(model(nodes, [("x", [3, 4])], ["y"]), {"x": RNG.standard_normal((3, 4)).astype(np.float32)})
    assert ops(e) == ["Pointwise"]


def test_disable_rule_by_name():
    net = conv_net([helper.make_node("Relu", ["c"], ["y"])])
    e = build_both(net, X, disable=["conv_epilogue"])
    assert ops(e) == ["Conv", "Pointwise"] and fired(e, "conv_epilogue") == 0
    with pytest.raises(WorkbenchError):
        wb.BuilderConfig and wb.build(net, wb.BuilderConfig(device="cpu", disable=["no_such_rule"]))


def _identity_chain(n, head=None):
    """x -> [head] -> Identity x n -> y (and an Identity-fed second output from the middle)."""
    names = ["x"] + ([] if head is None else ["h"])
    nodes = [] if head is None else [helper.make_node(head, ["x"], ["h"])]
    for i in range(n):
        nodes.append(helper.make_node("Identity", [names[-1]], [f"t{i}"], name=f"id{i}"))
        names.append(f"t{i}")
    nodes.append(helper.make_node("Identity", [f"t{n // 2}"], ["mid"], name="to_mid"))
    nodes[-2].output[0] = "y"  # the chain ends in the graph output
    return model(nodes, [("x", [3, 4])], ["y", "mid"])


def test_identity_chain_goes_in_one_walk_and_logs_each_identity():
    n = 300
    e = build_both(_identity_chain(n, head="Relu"), {"x": RNG.standard_normal((3, 4)).astype(np.float32)})
    assert ops(e) == ["Pointwise"]  # the Relu, writing y; mid is y's value under its own name
    assert e.build_stats["passes"]["remove_identities"]["changed"]
    assert fired(e, "remove_noop") == n  # every Identity but the copy into the second output
    assert e.build_stats["passes"]["remove_identities"]["nodes_after"] <= 2


def test_identity_from_a_graph_input_to_a_graph_output_stays_with_the_reason():
    e = build_both(_identity_chain(50), {"x": RNG.standard_normal((3, 4)).astype(np.float32)})
    # y and mid are graph outputs fed (after bypassing) by the graph input x: each stays a copy
    assert ops(e) == ["Identity", "Identity"] and fired(e, "remove_noop") == 49
    declined = [f for f in e.reports["fusions"] if f["rule"] == "remove_noop" and f["status"] == "declined"]
    assert declined and all("graph output fed directly by x" in f["reason"] for f in declined)


def test_remove_identities_is_off_with_its_rule_or_its_name():
    x = {"x": RNG.standard_normal((3, 4)).astype(np.float32)}
    e = build_both(_identity_chain(20, head="Relu"), x, disable=["remove_noop"])
    assert not e.build_stats["passes"]["remove_identities"]["changed"] and fired(e, "remove_noop") == 0
    e = build_both(_identity_chain(20, head="Relu"), x, disable=["remove_identities"])
    assert "remove_identities" not in e.build_stats["passes"] and fired(e, "remove_noop") == 20  # the rule did it


def _split_attention(axis, sizes, x_shape, lay="bsd", opset=17):
    """Split(x) -> workbench.Attention(q, k, v) with bsd operands (sizes None: equal parts)."""
    ins = ["x", "sp"] if sizes is not None else ["x"]
    nodes = [helper.make_node("Split", ins, ["q", "k", "v"], axis=axis),
             helper.make_node("Attention", ["q", "k", "v"], ["y"], domain="workbench", num_heads=2, q_layout=lay,
                              k_layout=lay, v_layout=lay, out_layout=lay, scale=0.25)]
    inits = [helper.make_tensor("sp", TensorProto.INT64, [3], sizes)] if sizes is not None else []
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("workbench", 1)])
    return wb.load_onnx(m.SerializeToString())


@pytest.mark.parametrize("sizes", [[8, 8, 8], None])
def test_attention_reads_packed_qkv_in_place(sizes):
    net = _split_attention(-1, sizes, [2, 5, 24])
    e = build_both(net, {"x": RNG.standard_normal((2, 5, 24)).astype(np.float32)})
    assert ops(e) == ["Attention"]
    att = e.layers[0]
    assert att.inputs[:3] == ["x", "x", "x"] and list(att.attrs["qkv_columns"]) == [0, 8, 8, 16, 16, 24]


def test_attention_reads_packed_qkv_declines_with_a_reason():
    net = _split_attention(1, [2, 2, 2], [2, 6, 8])  # Q, K, V split along the sequence
    e = build_both(net, {"x": RNG.standard_normal((2, 6, 8)).astype(np.float32)})
    assert ops(e) == ["Split", "Attention"]
    declined = [r for r in e.reports["fusions"] if r["rule"] == "attention_reads_packed_qkv" and r["status"] == "declined"]
    assert declined and "not along its last axis" in declined[0]["reason"]


def _patch_net(kernel=4, stride=4, pads=(0, 0, 0, 0), shape=(2, 3, 16, 16), k=8, flat_to=None):
    """A ViT stem: Conv(kernel, stride) -> Reshape [N, K, L] -> Transpose(0, 2, 1)."""
    n, c, h, w = shape
    oh = (h + pads[0] + pads[2] - kernel) // stride + 1
    ow = (w + pads[1] + pads[3] - kernel) // stride + 1
    target = np.array(flat_to or [n, k, oh * ow], np.int64)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=list(pads)),
             helper.make_node("Reshape", ["c", "t"], ["f"]), helper.make_node("Transpose", ["f"], ["y"], perm=[0, 2, 1])]
    inits = [init("w", RNG.standard_normal((k, c, kernel, kernel))), init("b", RNG.standard_normal(k)),
             numpy_helper.from_array(target, "t")]
    return model(nodes, [("x", list(shape))], ["y"], inits)


def test_patch_embedding_conv_becomes_one_gemm_over_patches():
    """kernel == stride, no padding: the image is cut into patches (Reshape / Transpose / Reshape)
    and one FusedGemm with the bias writes the tokens; no Conv and no Transpose of its output."""
    x = {"x": RNG.standard_normal((2, 3, 16, 16)).astype(np.float32)}
    e = build_both(_patch_net(), x)
    assert fired(e, "patch_embedding") == 1
    assert ops(e) == ["Reshape", "Transpose", "Reshape", "FusedGemm"], ops(e)
    gemm = e.layers[-1]
    assert e.layers[1].attrs["perm"] == [0, 2, 4, 1, 3, 5] and gemm.output_specs[0].shape == [2, 16, 8]
    assert set(gemm.onnx_ops) == {"Conv", "Reshape", "Transpose"}  # provenance: the nodes it replaced


@pytest.mark.parametrize("case, reason", [
    (dict(kernel=4, stride=2), "are not the kernel size"),
    (dict(pads=(1, 1, 1, 1), shape=(2, 3, 14, 14)), "pads its input"),
    (dict(shape=(2, 3, 18, 18)), "not a whole number of 4x4 patches"),
    (dict(flat_to=[2, 4, 32]), "not the patches"),
])
def test_patch_embedding_declines_with_a_reason(case, reason):
    shape = case.get("shape", (2, 3, 16, 16))
    x = {"x": RNG.standard_normal(shape).astype(np.float32)}
    e = build_both(_patch_net(**case), x)
    logged = [f for f in e.reports["fusions"] if f["rule"] == "patch_embedding"]
    assert logged and logged[0]["status"] == "declined" and reason in logged[0]["reason"], logged
    assert "Conv" in ops(e) or "FusedConv" in ops(e)
