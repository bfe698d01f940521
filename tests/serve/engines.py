"""Small CPU engines for the serving tests, built from hand-made ONNX graphs (seconds on 2 cores).

``dense``: y = relu(x @ W + b) * s, z = sum(x, axis 1) -- two inputs, two outputs, every dim 0 the
batch. ``mixing``: y = x - mean(x over the batch) -- dim 0 is shared but rows interact.
``whole``: z = sum of all of x -- an output without the batch dim. ``seq``: y = x * 2 + 1 with a
free sequence dim. ``ids``: integer and bool inputs.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import workbench as wb

WIDTH = 8


def _model(nodes, inputs, outputs, inits=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def dense_model() -> bytes:
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((WIDTH, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Mul", ["r", "s"], ["y"]),
             helper.make_node("ReduceSum", ["x", "axis1"], ["z"], keepdims=1)]
    F = TensorProto.FLOAT
    return _model(nodes, [_vi("x", F, ["N", WIDTH]), _vi("s", F, ["N", 1])],
                  [_vi("y", F, ["N", 4]), _vi("z", F, ["N", 1])], inits)


def mixing_model() -> bytes:
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[0], keepdims=1),
             helper.make_node("Sub", ["x", "mu"], ["y"])]
    F = TensorProto.FLOAT
    return _model(nodes, [_vi("x", F, ["N", WIDTH])], [_vi("y", F, ["N", WIDTH])])


def whole_model() -> bytes:
    nodes = [helper.make_node("ReduceSum", ["x"], ["z"], keepdims=1)]
    F = TensorProto.FLOAT
    return _model(nodes, [_vi("x", F, [2, WIDTH])], [_vi("z", F, [1, 1])])


def seq_model() -> bytes:
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])]
    F = TensorProto.FLOAT
    return _model(nodes, [_vi("x", F, ["N", "S"])], [_vi("y", F, ["N", "S"])], inits)


def ids_model() -> bytes:
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["flag"], ["g"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "g"], ["y"])]
    return _model(nodes, [_vi("ids", TensorProto.INT32, ["N", 4]), _vi("flag", TensorProto.BOOL, ["N", 4])],
                  [_vi("y", TensorProto.FLOAT, ["N", 4])])


def build(model: bytes, path=None, **cfg):
    """A CPU engine of ``model`` (saved to ``path`` if given)."""
    engine = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu", **cfg))
    if path is not None:
        engine.save(path)
    return engine


def dense_fixed(path=None, batch: int = 8):
    """``dense`` built for a fixed batch."""
    return build(dense_model(), path, shapes={"x": (batch, WIDTH), "s": (batch, 1)})


def dense_feeds(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((rows, WIDTH)).astype(np.float32),
            "s": rng.standard_normal((rows, 1)).astype(np.float32)}


def row_by_row(ctx, feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The reference for a fixed-batch engine: every row alone, run as a batch of copies of itself."""
    rows = len(next(iter(feeds.values())))
    outs = [ctx.run({k: np.repeat(v[i: i + 1], batch, axis=0) for k, v in feeds.items()}) for i in range(rows)]
    return {k: np.concatenate([o[k][:1] for o in outs]) for k in outs[0]}
