"""Before/Expected graphs: one rule run as its pass runs it (rule_pass: dead-code removal, one sweep,
toposort, to a fixed point) on a small onnx-ir graph, then the node structure it must leave and the
log entry it must write. test_passes_rules.py checks the same rules end to end through whole engines."""

from __future__ import annotations

import numpy as np
from onnx import helper

from tests.support.irgraph import ir_model, structure
from workbench.ir.attrs import node_attrs
from workbench.ir.values import const
from workbench.passes.context import PassContext
from workbench.passes.epilogues import ConvEpilogue, FoldBatchNorm
from workbench.passes.norms import DecomposedNorm, LayerNormOp
from workbench.passes.pipeline import rule_pass
from workbench.passes.simplify import MergeTransposes

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)


def run(model, rule) -> PassContext:
    ctx = PassContext()
    rule_pass([rule])(model, ctx)
    return ctx


def conv(out="c"):
    return helper.make_node("Conv", ["x", "w", "b"], [out], name="conv", pads=[1, 1, 1, 1])


def test_fold_batchnorm():
    p = {"b": RNG.standard_normal(4), "s": RNG.random(4) + 0.5, "beta": RNG.standard_normal(4),
         "mean": RNG.standard_normal(4), "var": RNG.random(4) + 0.5}
    p = {k: v.astype(np.float32) for k, v in p.items()}
    bn = helper.make_node("BatchNormalization", ["c", "s", "beta", "mean", "var"], ["y"], name="bn")
    model = ir_model([conv(), bn], [("x", [1, 3, 8, 8])], ["y"], {"w": W, **p})
    ctx = run(model, FoldBatchNorm())
    assert structure(model.graph) == [("Conv", "", ["x", "bn/const1", "bn/const2"], ["y"])]
    (node,) = model.graph
    assert node.name == "conv" and node_attrs(node)["pads"] == [1, 1, 1, 1]
    scale = p["s"] / np.sqrt(p["var"] + 1e-5)
    np.testing.assert_allclose(const(node.inputs[1]), W * scale[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(const(node.inputs[2]), (p["b"] - p["mean"]) * scale + p["beta"], rtol=1e-5, atol=1e-6)
    assert ctx.log == [{"rule": "fold_batchnorm", "status": "fired", "reason": "", "nodes": ["conv", "bn"],
                        "root": "bn"}]


def test_conv_residual_relu_epilogue():
    model = ir_model([conv(), helper.make_node("Add", ["c", "r"], ["s"], name="add"),
                      helper.make_node("Relu", ["s"], ["y"], name="relu")],
                     [("x", [1, 3, 8, 8]), ("r", [1, 4, 8, 8])], ["y"], {"w": W, "b": np.zeros(4, np.float32)})
    ctx = run(model, ConvEpilogue())
    assert structure(model.graph) == [("FusedConv", "workbench", ["x", "w", "conv/const1", "r"], ["y"])]
    assert node_attrs(next(iter(model.graph))) == {
        "kernel_shape": [3, 3], "strides": [1, 1], "dilations": [1, 1], "pads": [1, 1, 1, 1], "group": 1,
        "activation": "Relu", "residual": 1}
    assert [(e["status"], e["nodes"]) for e in ctx.log] == [("fired", ["conv", "add", "relu"])]


def test_conv_epilogue_declined_when_the_conv_result_is_also_an_output():
    model = ir_model([conv(), helper.make_node("Relu", ["c"], ["y"], name="relu")],
                     [("x", [1, 3, 8, 8])], ["y", "c"], {"w": W, "b": np.zeros(4, np.float32)})
    before = structure(model.graph)
    ctx = run(model, ConvEpilogue())
    assert structure(model.graph) == before
    (entry,) = ctx.log
    assert entry["status"] == "declined" and entry["nodes"] == ["conv"]
    assert "2 consumers" in entry["reason"] and "graph output" in entry["reason"]


def test_merge_transposes():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="t1", perm=[1, 0, 2]),
             helper.make_node("Transpose", ["t"], ["y"], name="t2", perm=[0, 2, 1])]
    model = ir_model(nodes, [("x", [2, 3, 4])], ["y"])
    run(model, MergeTransposes())
    assert structure(model.graph) == [("Transpose", "", ["x"], ["y"])]
    assert node_attrs(next(iter(model.graph)))["perm"] == [1, 2, 0]


def test_layer_normalization_op_becomes_layer_norm():
    model = ir_model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", epsilon=1e-5)],
                     [("x", [2, 5, 16])], ["y"], {"g": np.ones(16, np.float32), "b": np.zeros(16, np.float32)})
    run(model, LayerNormOp())
    assert structure(model.graph) == [("LayerNorm", "workbench", ["x", "g", "b"], ["y"])]
    attrs = node_attrs(next(iter(model.graph)))
    assert attrs["axis"] == -1 and attrs["channels_first"] == 0 and np.isclose(attrs["epsilon"], 1e-5)


def test_decomposed_layer_norm_becomes_layer_norm():
    mk = helper.make_node
    nodes = [mk("ReduceMean", ["x"], ["mu"], axes=[-1], name="mean"), mk("Sub", ["x", "mu"], ["d"], name="sub"),
             mk("Pow", ["d", "two"], ["d2"], name="pow"), mk("ReduceMean", ["d2"], ["var"], axes=[-1], name="var"),
             mk("Add", ["var", "eps"], ["ve"], name="add_eps"), mk("Sqrt", ["ve"], ["sd"], name="sqrt"),
             mk("Div", ["d", "sd"], ["n"], name="div"), mk("Mul", ["n", "g"], ["ng"], name="mul"),
             mk("Add", ["ng", "beta"], ["y"], name="add_beta")]
    inits = {"two": np.float32(2), "eps": np.float32(1e-5), "g": RNG.random(16).astype(np.float32),
             "beta": RNG.standard_normal(16).astype(np.float32)}
    model = ir_model(nodes, [("x", [2, 5, 16])], ["y"], inits)
    ctx = run(model, DecomposedNorm())
    ((op, domain, ins, outs),) = structure(model.graph)
    assert (op, domain, ins[0], outs) == ("LayerNorm", "workbench", "x", ["y"])
    (fired,) = [e for e in ctx.log if e["status"] == "fired"]
    assert sorted(fired["nodes"]) == sorted(n.name for n in nodes)
