"""Small ONNX graphs for rule tests, and a build of each graph with and without optimization whose
outputs must agree."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.core.numerics import rel_err
from workbench.frontends.onnx.loader import network_from_proto

F = TensorProto.FLOAT


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32) if np.asarray(arr).dtype.kind == "f" else np.asarray(arr), name)


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, F, None) for n in outputs], list(inits))
    return network_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


def build_both(net, feeds, **cfg):
    ref = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False))
    opt = wb.build(net, wb.BuilderConfig(device="cpu", **cfg))
    want, got = ref.create_context().run(feeds), opt.create_context().run(feeds)
    for k in want:
        err = rel_err(got[k], want[k])
        assert err < 1e-5, f"{k}: relative error {err:.2e}"
    return opt
