"""Models that are refused, naming what is wrong: unknown op, cycle, undefined input, an operator newer
than the model's opset."""

from __future__ import annotations

import pytest
from onnx import helper

import workbench as wb
from tests.support.models import build_cpu, one_input_model
from workbench.errors import WorkbenchError


def test_unknown_op_in_the_default_domain_names_node_and_op():
    with pytest.raises(WorkbenchError, match=r"'n_frob'.*FrobnicateOp"):
        build_cpu(one_input_model([helper.make_node("FrobnicateOp", ["x"], ["y"], name="n_frob")]))


def test_graph_cycle_refused_naming_a_node():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n_a"),
             helper.make_node("Relu", ["a"], ["b"], name="n_b"),
             helper.make_node("Identity", ["a"], ["y"], name="n_y")]
    with pytest.raises(WorkbenchError, match="cycle.*'n_(a|b)'|'n_(a|b)'.*cycle"):
        wb.load_onnx(one_input_model(nodes))  # load or build: either may refuse it
        build_cpu(one_input_model(nodes))


def test_undefined_input_refused_before_an_engine_is_made():
    model = one_input_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="n_add")])
    with pytest.raises(WorkbenchError, match="'ghost'"):
        build_cpu(model)


def test_operator_newer_than_the_models_opset_refused():
    with pytest.raises(WorkbenchError, match="Gelu"):
        build_cpu(one_input_model([helper.make_node("Gelu", ["x"], ["y"], name="n_gelu")], opset=17))
