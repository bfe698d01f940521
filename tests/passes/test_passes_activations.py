"""The activation recogniser (passes/activations.py): every exporter spelling of each fused
activation becomes that epilogue with the constants' own bounds, and whatever only resembles one
stays unfused. MatMul outputs span about ±60, beyond any small sampling range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from tests.support.rules import build_both, init, model

N = helper.make_node
RNG = np.random.default_rng(1)
W = RNG.standard_normal((8, 8)) * 10
FEEDS = {"x": RNG.standard_normal((4, 8)).astype(np.float32)}
S2, K = 1.4142135, math.sqrt(2 / math.pi)


def _gelu_tanh(cube):
    return cube + [N("Mul", ["x3", "c"], ["cx3"]), N("Add", ["m", "cx3"], ["in"]), N("Mul", ["in", "k"], ["ik"]),
                   N("Tanh", ["ik"], ["t"]), N("Add", ["t", "one"], ["tp"]), N("Mul", ["m", "half"], ["hm"]),
                   N("Mul", ["hm", "tp"], ["y"])]


# name: (nodes from "m" to "y", constants, expected activation attrs)
RECOGNISED = {
    "relu": ([N("Relu", ["m"], ["y"])], {}, {"activation": "Relu"}),
    "max_zero": ([N("Max", ["z", "m"], ["y"])], {"z": 0.0}, {"activation": "Relu"}),
    "clip_0_6": ([N("Clip", ["m", "a", "b"], ["y"])], {"a": 0.0, "b": 6.0}, {"activation": "Clip", "act_min": 0.0, "act_max": 6.0}),
    "clip_0_30": ([N("Clip", ["m", "a", "b"], ["y"])], {"a": 0.0, "b": 30.0}, {"activation": "Clip", "act_min": 0.0, "act_max": 30.0}),
    "clip_min_only": ([N("Clip", ["m", "a"], ["y"])], {"a": 0.25}, {"activation": "Clip", "act_min": 0.25}),
    "clip_max_only": ([N("Clip", ["m", "", "b"], ["y"])], {"b": 0.5}, {"activation": "Clip", "act_max": 0.5}),
    "min_relu_25": ([N("Relu", ["m"], ["r"]), N("Min", ["r", "a"], ["y"])], {"a": 25.0},
                    {"activation": "Clip", "act_min": 0.0, "act_max": 25.0}),
    "max_min_nested": ([N("Max", ["m", "a"], ["r"]), N("Min", ["b", "r"], ["y"])], {"a": -25.0, "b": 40.0},
                       {"activation": "Clip", "act_min": -25.0, "act_max": 40.0}),
    "neg_relu_neg": ([N("Neg", ["m"], ["n"]), N("Relu", ["n"], ["r"]), N("Neg", ["r"], ["y"])], {},
                     {"activation": "Clip", "act_max": 0.0}),
    "leaky_relu": ([N("LeakyRelu", ["m"], ["y"], alpha=0.2)], {}, {"activation": "LeakyRelu", "act_alpha": 0.2}),
    "silu": ([N("Sigmoid", ["m"], ["s"]), N("Mul", ["s", "m"], ["y"])], {}, {"activation": "Silu"}),
    "hardswish_hsig": ([N("HardSigmoid", ["m"], ["s"], alpha=1 / 6), N("Mul", ["m", "s"], ["y"])], {},
                       {"activation": "HardSwish"}),
    "hardswish_relu6": ([N("Add", ["m", "three"], ["p"]), N("Clip", ["p", "z", "six"], ["r"]),
                         N("Mul", ["m", "r"], ["mr"]), N("Div", ["mr", "six"], ["y"])],
                        {"three": 3.0, "z": 0.0, "six": 6.0}, {"activation": "HardSwish"}),
    "gelu_erf_div": ([N("Div", ["m", "s2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"]),
                      N("Mul", ["m", "a"], ["ma"]), N("Mul", ["ma", "half"], ["y"])],
                     {"s2": S2, "one": 1.0, "half": 0.5}, {"activation": "Gelu"}),
    "gelu_erf_mul_half_first": ([N("Mul", ["r2", "m"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["one", "e"], ["a"]),
                                 N("Mul", ["half", "m"], ["hm"]), N("Mul", ["hm", "a"], ["y"])],
                                {"r2": 0.70710677, "one": 1.0, "half": 0.5}, {"activation": "Gelu"}),
    "gelu_tanh_pow": (_gelu_tanh([N("Pow", ["m", "three"], ["x3"])]),
                      {"three": 3.0, "c": 0.044715, "k": K, "one": 1.0, "half": 0.5}, {"activation": "GeluTanh"}),
    "gelu_tanh_mul": (_gelu_tanh([N("Mul", ["m", "m"], ["x2"]), N("Mul", ["x2", "m"], ["x3"])]),
                      {"c": 0.044715, "k": K, "one": 1.0, "half": 0.5}, {"activation": "GeluTanh"}),
}

# spellings that resemble an activation but are none: no activation on the FusedGemm (or a
# smaller one), and the same outputs
NOT_RECOGNISED = {
    "gelu_wrong_half": ([N("Div", ["m", "s2"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"]),
                         N("Mul", ["m", "a"], ["ma"]), N("Mul", ["ma", "half"], ["y"])],
                        {"s2": S2, "one": 1.0, "half": 0.6}, ""),
    "quick_gelu": ([N("Mul", ["m", "k"], ["mk"]), N("Sigmoid", ["mk"], ["s"]), N("Mul", ["m", "s"], ["y"])],
                   {"k": 1.702}, ""),
    "leaky_relu_then_min": ([N("LeakyRelu", ["m"], ["r"]), N("Min", ["r", "a"], ["y"])], {"a": 21.0}, "LeakyRelu"),
    "relu_plus_const": ([N("Relu", ["m"], ["r"]), N("Add", ["r", "a"], ["y"])], {"a": 0.25}, "Relu"),
    "disjoint_clamps": ([N("Min", ["m", "a"], ["r"]), N("Max", ["r", "b"], ["y"])], {"a": -5.0, "b": 5.0}, "Clip"),
    "x_squared": ([N("Mul", ["m", "m"], ["y"])], {}, ""),
}


def _net(nodes, consts):
    inits = [init("w", W)] + [init(k, np.float32(v)) for k, v in consts.items()]
    return model([N("MatMul", ["x", "w"], ["m"])] + nodes, [("x", [4, 8])], ["y"], inits, opset=21)


@pytest.mark.parametrize("name", sorted(RECOGNISED))
def test_recognised(name):
    nodes, consts, want = RECOGNISED[name]
    e = build_both(_net(nodes, consts), FEEDS)
    assert [l.op for l in e.layers] == ["FusedGemm"]
    got = {k: v for k, v in e.layers[0].attrs.items() if k.startswith("act")}
    assert got == {k: v if isinstance(v, str) else float(np.float32(v)) for k, v in want.items()}


@pytest.mark.parametrize("name", sorted(NOT_RECOGNISED))
def test_not_recognised(name):
    nodes, consts, want = NOT_RECOGNISED[name]
    e = build_both(_net(nodes, consts), FEEDS)
    acts = [l.attrs.get("activation", "") for l in e.layers if l.op == "FusedGemm"]
    assert acts == ([want] if want else [])
    assert len(e.layers) == 2  # the rest is one pointwise kernel


def test_clip_bounds_from_attributes_before_opset_11():
    net = model([N("MatMul", ["x", "w"], ["m"]), N("Clip", ["m"], ["y"], min=-30.0)], [("x", [4, 8])], ["y"],
                [init("w", W)], opset=10)
    e = build_both(net, FEEDS)
    assert [l.op for l in e.layers] == ["FusedGemm"]
    assert {k: v for k, v in e.layers[0].attrs.items() if k.startswith("act")} == {"activation": "Clip", "act_min": -30.0}
