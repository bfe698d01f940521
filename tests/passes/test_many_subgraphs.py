"""Past ``cleanup.SEPARATE_ABOVE`` control-flow nodes, ONNX shape inference sees each one in a model of
its own (ONNX copies every outer value type into each subgraph it visits, quadratic in their number):
the build infers the same types and shapes as the whole-model inference and gives the right answers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import workbench as wb
from workbench.core.numerics import rel_err
from workbench.passes import cleanup
from workbench.precision.assign import all_layers

F = TensorProto.FLOAT


def sibling_ifs(n: int):
    """y = sum_i If(c, then: xr * w_i (an initializer of the branch) + b (an outer initializer),
    else: Neg(x) in a nested If on c), xr = Relu(x) outside, x: [N, 4] with N symbolic, no types on the
    If outputs; the first If's output is a graph output too."""
    def branch(name, nodes, inits=()):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"o_{name}", F, None)], list(inits))

    nodes = [helper.make_node("Relu", ["x"], ["xr"])]  # an outer value the build types only by inference
    for i in range(n):
        w = onnx.numpy_helper.from_array(np.float32([i + 1]), f"w{i}")
        then = branch(f"then{i}", [helper.make_node("Identity", ["xr"], [f"r{i}"]), helper.make_node("Mul", [f"r{i}", f"w{i}"], [f"m{i}"]),
                                   helper.make_node("Add", [f"m{i}", "b"], [f"o_then{i}"])], [w])
        inner = helper.make_node("If", ["c"], [f"o_else{i}"], then_branch=branch(f"in_t{i}", [helper.make_node("Neg", ["x"], [f"o_in_t{i}"])]),
                                 else_branch=branch(f"in_e{i}", [helper.make_node("Neg", ["x"], [f"o_in_e{i}"])]))
        nodes.append(helper.make_node("If", ["c"], [f"y{i}"], then_branch=then, else_branch=branch(f"else{i}", [inner]), name=f"if{i}"))
    # one more If whose branches read the first If's output: it sees the type found for y0 just before
    reads_y0 = helper.make_node("If", ["c"], ["z"], then_branch=branch("z_t", [helper.make_node("Identity", ["y0"], ["o_z_t"])]),
                                else_branch=branch("z_e", [helper.make_node("Neg", ["y0"], ["o_z_e"])]), name="if_z")
    nodes += [reads_y0, helper.make_node("Sum", [f"y{i}" for i in range(n)] + ["z"], ["y"])]
    b = onnx.numpy_helper.from_array(np.float32([0.5, -0.5, 1.0, 2.0]), "b")
    g = helper.make_graph(nodes, "ifs", [helper.make_tensor_value_info("x", F, ["N", 4]),
                                         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("y0", F, None)], [b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _specs(engine):
    """Every layer's output types and shapes, the layers inside the If branches included."""
    return {(layer.name, s.name): (s.dtype, None if s.shape is None else list(s.shape))
            for layer in all_layers(engine.plan.layers) for s in layer.output_specs}


def test_many_ifs_are_inferred_alone_with_the_same_shapes_and_answers(tmp_path, monkeypatch):
    n = 6
    path = tmp_path / "ifs.onnx"
    onnx.save(sibling_ifs(n), path)
    net = wb.load_onnx(str(path))
    cfg = wb.BuilderConfig(device="cpu", shapes={"x": (3, 4)})
    whole = wb.build(net, cfg)
    monkeypatch.setattr(cleanup, "SEPARATE_ABOVE", 3)
    alone_calls = []
    original = cleanup._alone_model
    monkeypatch.setattr(cleanup, "_alone_model", lambda *a: alone_calls.append(1) or original(*a))
    alone = wb.build(net, cfg)
    assert len(alone_calls) >= n  # every If, in each inference of the build
    specs = _specs(alone)
    assert specs == _specs(whole) and len(specs) > 5 * n  # the branches' layers too
    ifs = [s for (layer, _), s in _specs(alone).items() if layer.startswith("if")]
    assert len(ifs) == n + 1 and all(s == ("float32", [3, 4]) for s in ifs)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    b = np.float32([0.5, -0.5, 1.0, 2.0])
    for c in (True, False):
        first = (np.maximum(x, 0) + b) if c else -x  # the first If's output, a graph output too
        want = (np.maximum(x, 0) * sum(range(1, n + 1)) + n * b) if c else -x * n
        want = want + (first if c else -first)  # z
        for engine in (whole, alone):
            out = engine.create_context().run({"x": x, "c": np.array(c)})
            assert out["y"].shape == (3, 4) and rel_err(out["y"], want.astype(np.float32)) < 1e-6
            assert rel_err(out["y0"], first) < 1e-6
