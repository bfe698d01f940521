"""RegexFullMatch runs on RE2: a pattern that backtracks catastrophically in Python's ``re`` matches
in linear time, and what RE2 refuses (backreferences, lookaround) is refused with one line, at build
(folding) and at run time alike."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.kernels.reference import KernelError
from workbench.kernels.reference.text import compile_regex


def _regex_model(pattern: str, const_input: list[str] | None = None):
    nodes, inputs = [], [helper.make_tensor_value_info("x", TensorProto.STRING, [None])]
    if const_input is not None:  # a constant input: the build folds the match
        t = helper.make_tensor("k", TensorProto.STRING, [len(const_input)], [s.encode() for s in const_input])
        nodes.append(helper.make_node("Constant", [], ["x"], value=t))
        inputs = []
    nodes.append(helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=pattern, name="re0"))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.BOOL, [None])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


EVIL = "(a+)+$"
TEXT = "a" * 50_000 + "b"  # Python's re would take longer than the universe on this


def test_backtracking_pattern_matches_in_linear_time_at_run():
    engine = wb.build(wb.load_onnx(_regex_model(EVIL)), wb.BuilderConfig(device="cpu"))
    x = np.array([TEXT, "aaa", "ab"], dtype=object)
    np.testing.assert_array_equal(engine.create_context().run({"x": x})["y"], [False, True, False])


def test_backtracking_pattern_folds_at_build():
    engine = wb.build(wb.load_onnx(_regex_model(EVIL, [TEXT, "aa"])), wb.BuilderConfig(device="cpu"))
    assert "RegexFullMatch" not in {layer["op"] for layer in engine.describe()["layers"]}
    np.testing.assert_array_equal(engine.create_context().run({})["y"], [False, True])


@pytest.mark.parametrize("pattern, reason", [(r"(a)\1", "invalid escape"), ("(?=a)a", "invalid perl operator"),
                                             ("(?<!a)b", "invalid perl operator"), ("[", "missing ]")])
def test_patterns_re2_refuses_are_refused_with_one_line(pattern, reason):
    with pytest.raises(KernelError, match=f"not valid RE2: {reason}") as e:
        compile_regex(pattern)
    assert "\n" not in str(e.value)
    engine = wb.build(wb.load_onnx(_regex_model(pattern)), wb.BuilderConfig(device="cpu"))
    with pytest.raises(WorkbenchError, match="not valid RE2") as e:
        engine.create_context().run({"x": np.array(["a"], dtype=object)})
    assert "\n" not in str(e.value)


def test_re2_semantics_not_python_re():
    # \Z is Python-only; RE2 spells the end of text \z, which Python's re refuses
    assert compile_regex(r"ab\z").fullmatch("ab") is not None
    with pytest.raises(KernelError, match="not valid RE2"):
        compile_regex(r"ab\Z")
