"""Tiny hand-made ONNX models shared by the refusal tests: one float input ``x`` of shape [3]."""

from __future__ import annotations

from onnx import TensorProto, helper

import workbench as wb


def one_input_model(nodes, opset=17, out_shape=(3,)) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def build_cpu(model_bytes, **cfg):
    return wb.build(wb.load_onnx(model_bytes), wb.BuilderConfig(device="cpu", **cfg))
