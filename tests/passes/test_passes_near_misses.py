"""Near misses: structures that look like a rule's pattern but differ in rank, constness, operand
shape or dtype. Each must build (fused correctly, or left alone), never crash, never change results."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.core.numerics import rel_err
from workbench.frontends.onnx.loader import network_from_proto

F, H = TensorProto.FLOAT, TensorProto.FLOAT16
RNG = np.random.default_rng(11)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def net_of(nodes, inputs, inits=(), opset=17, elem=F):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info("y", elem, None)], list(inits))
    return network_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


def both(net, feeds, tol=1e-5):
    ref = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False))
    opt = wb.build(net, wb.BuilderConfig(device="cpu"))
    want, got = ref.create_context().run(feeds)["y"], opt.create_context().run(feeds)["y"]
    err = rel_err(got, want)
    assert err < tol, err
    return [l.op for l in opt.layers]


def x(*shape, dt=np.float32):
    return RNG.standard_normal(shape).astype(dt)


def test_batchnorm_on_rank3_without_a_conv():
    c = 4
    p = [init(n, (RNG.random(c) + 0.5).astype(np.float32)) for n in "smtv"]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("BatchNormalization", ["r", "s", "t", "m", "v"], ["y"])]
    ops = both(net_of(nodes, [("x", F, [2, c, 5])], p), {"x": x(2, c, 5)})
    assert "BatchNormalization" not in ops


def test_layernorm_with_a_runtime_scale():
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), helper.make_node("Sub", ["x", "mu"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["d2"]), helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"]), helper.make_node("Mul", ["n", "g"], ["y"])]
    inits = [init("two", np.float32(2)), init("eps", np.float32(1e-5))]
    ops = both(net_of(nodes, [("x", F, [2, 3, 8]), ("g", F, [8])], inits), {"x": x(2, 3, 8), "g": x(8)})
    assert "LayerNorm" in ops and "Pow" not in ops  # normalized, then the runtime scale applied


def test_rmsnorm_over_rank5():
    nodes = [helper.make_node("Pow", ["x", "two"], ["x2"]), helper.make_node("ReduceMean", ["x2"], ["ms"], axes=[-2, -1]),
             helper.make_node("Add", ["ms", "eps"], ["me"]), helper.make_node("Sqrt", ["me"], ["rt"]),
             helper.make_node("Reciprocal", ["rt"], ["inv"]), helper.make_node("Mul", ["x", "inv"], ["y"])]
    inits = [init("two", np.float32(2)), init("eps", np.float32(1e-6))]
    ops = both(net_of(nodes, [("x", F, [2, 1, 3, 4, 5])], inits), {"x": x(2, 1, 3, 4, 5)})
    assert ops == ["RMSNorm"]


def test_matmul_with_a_vector_operand_is_not_a_gemm():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    ops = both(net_of(nodes, [("x", F, [3, 4])], [init("w", x(4))]), {"x": x(3, 4)})
    assert "FusedGemm" not in ops


def test_opset10_pad_with_a_nonzero_value_stays():
    nodes = [helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=2.0),
             helper.make_node("Conv", ["p", "w"], ["y"])]
    ops = both(net_of(nodes, [("x", F, [1, 2, 5, 5])], [init("w", x(3, 2, 3, 3))], opset=10), {"x": x(1, 2, 5, 5)})
    assert "Pad" in ops


def test_gemm_over_flattened_with_a_per_row_bias():
    nodes = [helper.make_node("Reshape", ["x", "s2"], ["f"]), helper.make_node("Gemm", ["f", "w", "c"], ["g"]),
             helper.make_node("Reshape", ["g", "s3"], ["y"])]
    inits = [init("s2", np.array([6, 4], np.int64)), init("w", x(4, 5)), init("c", x(6, 5)), init("s3", np.array([2, 3, 5], np.int64))]
    both(net_of(nodes, [("x", F, [2, 3, 4])], inits), {"x": x(2, 3, 4)})


def test_float16_causal_attention_keeps_its_dtype():
    s = 5
    tri = np.tril(np.ones((1, 1, s, s), bool))
    nodes = [helper.make_node("And", ["tri", "pad"], ["keep"]), helper.make_node("Where", ["keep", "zero", "low"], ["m"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), helper.make_node("MatMul", ["q", "kt"], ["qk"]),
             helper.make_node("Add", ["qk", "m"], ["sm"]), helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    inits = [init("tri", tri), init("zero", np.float16(0)), init("low", np.finfo(np.float16).min)]
    ins = [(n, H, [1, 2, s, 4]) for n in "qkv"] + [("pad", TensorProto.BOOL, [1, 1, 1, s])]
    feeds = {n: x(1, 2, s, 4, dt=np.float16) for n in "qkv"}
    feeds["pad"] = np.array([0, 0, 1, 1, 1], bool).reshape(1, 1, 1, s)
    net = net_of(nodes, ins, inits, elem=H)
    assert "Attention" in both(net, feeds, tol=1e-3)
    att = next(l for l in wb.build(net, wb.BuilderConfig(device="cpu")).layers if l.op == "Attention")
    assert att.attrs["causal"] == 1 and att.attrs["causal_fill"] == float(np.finfo(np.float16).min)


def test_pointwise_chain_read_inside_a_subgraph():
    """A pointwise value that an If branch reads stays a graph value (regression: the pointwise
    rule looked up subgraph readers in the outer graph's node order)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    import workbench as wb

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    branch_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])
    then_g = helper.make_graph([helper.make_node("Neg", ["m"], ["b"])], "then", [], [branch_out])
    else_g = helper.make_graph([helper.make_node("Abs", ["m"], ["b"])], "else", [], [branch_out])
    nodes = [helper.make_node("Add", ["x", "x"], ["a"]), helper.make_node("Mul", ["a", "x"], ["m"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, c], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    engine = wb.build(wb.load_onnx(model.SerializeToString()), wb.BuilderConfig(device="cpu"))
    xv = np.array([1.0, -2.0, 3.0], np.float32)
    for cond, expect in ((True, -(2 * xv * xv)), (False, np.abs(2 * xv * xv))):
        got = engine.create_context().run({"x": xv, "c": np.array(cond)})["y"]
        np.testing.assert_allclose(got, expect, rtol=1e-6)
