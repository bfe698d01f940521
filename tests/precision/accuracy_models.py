"""Small hand-made models for the accuracy report and the mixed-precision search tests, with a
NumPy float64 forward pass to check the report's numbers against.

``mlp``: x [B, 32] -> Gemm+Relu (64) -> Gemm+Relu (64) -> Gemm (8); the builder fuses each Gemm with
its Relu, so the plan has three layers. ``scale`` multiplies the first weight, which takes the
activations' range up (past fp16's with a large one)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

IN, HID, OUT = 32, 64, 8
NODES = ("fc1", "relu1", "fc2", "relu2", "fc3")


def mlp_weights(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": (rng.standard_normal((IN, HID)) * scale / np.sqrt(IN)).astype(np.float32),
        "b1": (rng.standard_normal(HID) * 0.1).astype(np.float32),
        "W2": (rng.standard_normal((HID, HID)) / np.sqrt(HID)).astype(np.float32),
        "b2": (rng.standard_normal(HID) * 0.1).astype(np.float32),
        "W3": (rng.standard_normal((HID, OUT)) / np.sqrt(HID)).astype(np.float32),
        "b3": (rng.standard_normal(OUT) * 0.1).astype(np.float32),
    }


def mlp(batch: int = 4, seed: int = 0, scale: float = 1.0) -> bytes:
    w = mlp_weights(seed, scale)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "W2", "b2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "W3", "b3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, OUT])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def feeds(n: int, batch: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((batch, IN)).astype(np.float32)} for _ in range(n)]


def forward(x: np.ndarray, w: dict, rnd=None, start: int = 0, carry: np.ndarray | None = None) -> list[np.ndarray]:
    """Each layer's output (fused Gemm+Relu, Gemm+Relu, Gemm) in float64. ``rnd`` rounds every
    float input and output of a layer (the CPU's emulation of a half type); ``start``/``carry``
    begin at layer ``start`` with ``carry`` as its input."""
    r = rnd or (lambda a: a)
    outs = []
    h = x if carry is None else carry
    for i, (wk, bk, relu) in enumerate((("W1", "b1", True), ("W2", "b2", True), ("W3", "b3", False))):
        if i < start:
            continue
        y = r(h).astype(np.float64) @ r(w[wk]).astype(np.float64) + r(w[bk]).astype(np.float64)
        y = r(np.maximum(y, 0) if relu else y)
        outs.append(y)
        h = y
    return outs


def half(dtype):
    """The emulation's rounding: through ``dtype`` (np.float16 or ml_dtypes.bfloat16) and back."""
    return lambda a: np.asarray(a, np.float32).astype(dtype).astype(np.float64)
