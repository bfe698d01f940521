"""The rewrite engine on small onnx-ir graphs: escaping_use, replace_values, Emitter, apply, fixed_point."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

from tests.support.irgraph import ir_model, node_named, output_names, structure
from workbench.ir.provenance import provenance
from workbench.ir.values import producer
from workbench.passes.context import PassContext
from workbench.rewrite.engine import Emitter, Match, Rule, apply, escaping_use, fixed_point, replace_values


def relu_neg(*extra_nodes, outputs=("y",)):
    """x -> Relu "r" -> t -> Neg "n" -> y, plus ``extra_nodes``."""
    nodes = [helper.make_node("Relu", ["x"], ["t"], name="r"), helper.make_node("Neg", ["t"], ["y"], name="n"),
             *extra_nodes]
    return ir_model(nodes, [("x", [2, 3])], list(outputs))


def neg_chain(n):
    """x -> Neg "n1" -> ... -> Neg "n<n>" -> y."""
    names = ["x"] + [f"v{i}" for i in range(1, n)] + ["y"]
    return ir_model([helper.make_node("Neg", [names[i]], [names[i + 1]], name=f"n{i + 1}") for i in range(n)],
                    [("x", [2, 3])], ["y"])


# --------------------------------------------------------------------------- escaping_use


def test_escaping_use_is_empty_when_intermediates_stay_inside():
    g = relu_neg().graph
    assert escaping_use(Match(node_named(g, "n"), [node_named(g, "r"), node_named(g, "n")])) == ""


def test_escaping_use_names_an_outside_reader():
    g = relu_neg(helper.make_node("Exp", ["t"], ["z"], name="e"), outputs=("y", "z")).graph
    reason = escaping_use(Match(node_named(g, "n"), [node_named(g, "r"), node_named(g, "n")]))
    assert reason == "t (from r) is also read by e (Exp), so it must stay"


def test_escaping_use_names_a_graph_output():
    g = relu_neg(outputs=("y", "t")).graph
    reason = escaping_use(Match(node_named(g, "n"), [node_named(g, "r"), node_named(g, "n")]))
    assert reason == "t (from r) is a graph output, so it must stay"


def test_escaping_use_ignores_the_values_being_replaced():
    g = relu_neg(helper.make_node("Exp", ["t"], ["z"], name="e"), outputs=("y", "z")).graph
    r = node_named(g, "r")
    # t is read outside (by e) but it is the value the match replaces: the replacement takes its readers
    assert escaping_use(Match(r, [r], outputs=[r.outputs[0]])) == ""


# --------------------------------------------------------------------------- replace_values


def test_a_created_value_takes_the_old_name_and_the_graph_output_slot():
    g = relu_neg().graph
    n = node_named(g, "n")
    old = n.outputs[0]
    new = ir.Node("", "Abs", [g.inputs[0]], name="abs")
    g.insert_before(n, new)
    replace_values(g, [old], [new.outputs[0]], created=[new])
    assert new.outputs[0].name == "y" and old.name is None
    assert g.outputs[0] is new.outputs[0]


def test_an_existing_intermediate_that_becomes_a_graph_output_takes_its_name():
    g = relu_neg().graph
    t = node_named(g, "r").outputs[0]
    replace_values(g, [node_named(g, "n").outputs[0]], [t])
    assert g.outputs[0] is t and t.name == "y"


def test_an_existing_intermediate_keeps_its_name_when_no_output_is_involved():
    g = relu_neg(helper.make_node("Exp", ["y"], ["z"], name="e"), outputs=("z",)).graph
    t = node_named(g, "r").outputs[0]
    replace_values(g, [node_named(g, "n").outputs[0]], [t])
    assert t.name == "t" and node_named(g, "e").inputs[0] is t


def test_a_graph_input_is_never_renamed():
    g = relu_neg().graph
    x = g.inputs[0]
    replace_values(g, [node_named(g, "n").outputs[0]], [x])
    assert x.name == "x" and g.outputs[0] is x


def test_a_new_value_without_type_or_shape_takes_the_old_ones():
    g = relu_neg().graph
    n = node_named(g, "n")
    new = ir.Node("workbench", "Opaque", [g.inputs[0]], name="o")
    g.insert_before(n, new)
    assert new.outputs[0].type is None and new.outputs[0].shape is None
    replace_values(g, [n.outputs[0]], [new.outputs[0]], created=[new])
    assert new.outputs[0].type == ir.TensorType(ir.DataType.FLOAT)
    assert list(new.outputs[0].shape) == [2, 3]


def test_replacing_a_value_by_itself_changes_nothing():
    g = relu_neg().graph
    y = node_named(g, "n").outputs[0]
    replace_values(g, [y], [y])
    assert y.name == "y" and g.outputs[0] is y


# --------------------------------------------------------------------------- Emitter


def emitter_on_relu_neg():
    g = relu_neg().graph
    r, n = node_named(g, "r"), node_named(g, "n")
    return g, Emitter(g, Match(n, [r, n]), anchor=n)


def test_emitted_nodes_go_before_the_anchor_named_after_the_root():
    g, emit = emitter_on_relu_neg()
    a = emit.node("Abs", [g.inputs[0]], domain="")
    b = emit.node("Exp", [a.outputs[0]], domain="")
    assert [n.name for n in g] == ["r", "Abs:n", "Exp:n#2", "n"]
    assert emit.created == [a, b]


def test_emitted_nodes_carry_the_matched_onnx_nodes():
    g, emit = emitter_on_relu_neg()
    first = emit.node("Abs", [g.inputs[0]], domain="")
    assert provenance([first]) == (["r", "n"], ["Relu", "Neg"])
    # a node made from an already fused node expands to the ONNX nodes behind it
    again = Emitter(g, Match(first, [first]), anchor=first).node("Exp", [g.inputs[0]], domain="")
    assert provenance([again]) == (["r", "n"], ["Relu", "Neg"])


def test_emitted_outputs_are_typed_by_onnx_inference_or_explicit_specs():
    g, emit = emitter_on_relu_neg()
    y = emit.op("Transpose", [g.inputs[0]], {"perm": [1, 0]}, domain="")
    assert y.type == ir.TensorType(ir.DataType.FLOAT) and list(y.shape) == [3, 2]
    z = emit.op("Opaque", [g.inputs[0]], specs=[(ir.DataType.FLOAT16, (6,))])
    assert z.type == ir.TensorType(ir.DataType.FLOAT16) and list(z.shape) == [6]


def test_emitter_turns_arrays_into_initializers():
    g, emit = emitter_on_relu_neg()
    y = emit.op("Add", [g.inputs[0], np.ones(3, np.float32)], domain="")
    const = y.producer().inputs[1]
    assert const.name == "n/const1" and g.initializers["n/const1"] is const
    np.testing.assert_array_equal(const.const_value.numpy(), np.ones(3, np.float32))
    assert emit.value(None) is None and emit.value(g.inputs[0]) is g.inputs[0]


def test_emitter_skips_attributes_given_as_none():
    g, emit = emitter_on_relu_neg()
    node = emit.node("Softmax", [g.inputs[0]], {"axis": 1, "unused": None}, domain="")
    assert set(node.attributes) == {"axis"}


# --------------------------------------------------------------------------- apply


class DoubleNeg(Rule):
    """Neg(Neg(x)) -> Identity(x)."""

    name = "double_neg"
    ops = ("Neg",)

    def __init__(self, reason="", b=None):
        self.reason, self.extra = reason, b or {}

    def pattern(self, root):
        first = producer(root.inputs[0], "Neg")
        if first is None:
            return None
        return Match(root, [first, root], b={"x": first.inputs[0], **self.extra})

    def check(self, m):
        return self.reason

    def rewrite(self, m, emit):
        return [emit.op("Identity", [m.b["x"]], domain="")]


def test_apply_rewrites_and_logs_the_onnx_nodes():
    model, ctx = neg_chain(2), PassContext()
    assert apply(model, ctx, [DoubleNeg()]) is True
    assert structure(model.graph) == [("Identity", "", ["x"], ["y"])]
    assert provenance(list(model.graph)) == (["n1", "n2"], ["Neg", "Neg"])
    assert ctx.log == [{"rule": "double_neg", "status": "fired", "reason": "", "nodes": ["n1", "n2"], "root": "n2"}]
    assert ctx.counters["double_neg"] == 1


def test_apply_returns_false_and_logs_nothing_when_no_pattern_matches():
    model, ctx = neg_chain(1), PassContext()
    before = structure(model.graph)
    assert apply(model, ctx, [DoubleNeg()]) is False
    assert structure(model.graph) == before and ctx.log == []


def test_a_disabled_rule_is_not_tried():
    model, ctx = neg_chain(2), PassContext(disabled=frozenset({"double_neg"}))
    assert apply(model, ctx, [DoubleNeg()]) is False
    assert [n.op_type for n in model.graph] == ["Neg", "Neg"] and ctx.log == []


def test_a_check_reason_declines_and_leaves_the_graph():
    model, ctx = neg_chain(2), PassContext()
    before = structure(model.graph)
    assert apply(model, ctx, [DoubleNeg(reason="not today")]) is False
    assert structure(model.graph) == before
    assert ctx.log == [{"rule": "double_neg", "status": "declined", "reason": "not today", "nodes": ["n1", "n2"],
                        "root": "n2"}]


def test_an_escaping_intermediate_declines_before_the_rule_is_asked():
    nodes = [helper.make_node("Neg", ["x"], ["a"], name="n1"), helper.make_node("Neg", ["a"], ["y"], name="n2")]
    model = ir_model(nodes, [("x", [2])], ["y", "a"])
    ctx = PassContext()
    assert apply(model, ctx, [DoubleNeg(reason="the rule's own reason")]) is False
    assert [e["reason"] for e in ctx.log] == ["a (from n1) is a graph output, so it must stay"]
    assert output_names(model.graph) == ["y", "a"]


def test_rule_domain_filters_roots():
    class WorkbenchOnly(DoubleNeg):
        domain = "workbench"

    model, ctx = neg_chain(2), PassContext()
    assert apply(model, ctx, [WorkbenchOnly()]) is False and ctx.log == []


@pytest.mark.parametrize("reverse,roots", [(False, ["n2", "n4"]), (True, ["n4", "n2"])])
def test_one_sweep_visits_nodes_in_order_or_reversed(reverse, roots):
    model, ctx = neg_chain(4), PassContext()
    assert apply(model, ctx, [DoubleNeg()], reverse=reverse) is True
    assert [e["root"] for e in ctx.log] == roots
    assert [n.op_type for n in model.graph] == ["Identity", "Identity"]
    assert output_names(model.graph) == ["y"]


def test_notes_and_left_behind_parts_are_logged():
    model, ctx = neg_chain(2), PassContext()
    apply(model, ctx, [DoubleNeg(b={"note": "merged", "declined": [("Sign stays", ["s1"])]})])
    assert [(e["status"], e["reason"], e["nodes"]) for e in ctx.log] == [
        ("declined", "Sign stays", ["s1"]), ("fired", "merged", ["n1", "n2"])]


def test_the_anchor_may_be_named_by_the_rule():
    nodes = [helper.make_node("Neg", ["x"], ["a"], name="n1"), helper.make_node("Relu", ["x"], ["r"], name="other"),
             helper.make_node("Neg", ["a"], ["y"], name="n2")]
    model = ir_model(nodes, [("x", [2])], ["y", "r"])
    first = node_named(model.graph, "n1")

    class Early(DoubleNeg):
        def pattern(self, root):
            m = super().pattern(root)
            if m is not None:
                m.b["anchor"] = first
            return m

    apply(model, PassContext(), [Early()])
    assert [n.name for n in model.graph] == ["Identity:n2", "other"]


# --------------------------------------------------------------------------- fixed_point


def test_fixed_point_repeats_until_nothing_changes():
    results = iter([True, True, False, True])
    calls = []

    def step():
        calls.append(1)
        return next(results)

    assert fixed_point(step) is True and len(calls) == 3


def test_fixed_point_stops_after_max_rounds():
    calls = []
    assert fixed_point(lambda: calls.append(1) or True, max_rounds=4) is True and len(calls) == 4


def test_fixed_point_reports_no_change():
    assert fixed_point(lambda: False) is False
