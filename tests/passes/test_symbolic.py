"""Symbolic dims: the expression type, symbolic shape inference, the folding of shape arithmetic into
constant Reshape / Expand targets, the causal triangle read from position arithmetic, and the reasons
the fusion log gives where a dim blocks a rule. Engines are built with dims left symbolic and checked
against onnxruntime at several shapes (a rule that assumed a dim's value would fail at another)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.irgraph import ir_model
from workbench.core.numerics import rel_err, tolerance
from workbench.ir.symdims import (compare, div_exact, equal, min_args, min_dim, parse, product, sdims, sym,
                                  symbolic_mismatch)
from workbench.ir.symshapes import value_of
from workbench.passes.cleanup import infer_shapes
from workbench.passes.context import PassContext
from workbench.passes.fold_shapes import expand_target, fold_shapes, reshape_target
from workbench.passes.positions import is_causal_predicate

ort = pytest.importorskip("onnxruntime")
B, S = sym("batch"), sym("seq")
RNG = np.random.default_rng(0)


# ---- the expression type ------------------------------------------------------------------------
def test_expressions_are_canonical_polynomials():
    assert B * S == S * B and str(B * S) == "batch*seq"
    assert 2 * S == S + S and str(S + 1) == "seq + 1" and str(64 - S) == "-seq + 64"
    assert S - S == 0 and isinstance(S - S, int)  # nothing symbolic left: a plain int
    for text in ("batch*seq", "seq + 1", "2*batch*seq - 3", "-seq + 64", "seq**2"):
        assert str(parse(text)) == text and parse(str(parse(text))) == parse(text)
    assert parse("2*(batch + seq)") == 2 * B + 2 * S
    # what is not a polynomial stays one opaque name, never an error
    assert str(parse("Max(1, s0)")) == "Max(1, s0)" and str(parse("s0//2")) == "s0//2"


def test_division_and_comparison_only_when_they_hold_for_every_value():
    assert div_exact(32 * B * S, 32) == B * S and div_exact(B * S, S) == B
    assert div_exact(B * (S + 1), S + 1) == B
    assert div_exact(B * S, 2) is None and div_exact(S + 1, S) is None and div_exact(B, S) is None
    assert compare(S + 1, S) == 1 and compare(S, S) == 0 and compare(S, B) is None
    assert not equal(S, 16) and not equal(S, None) and equal(product([B, S, 2]), 2 * B * S)


def test_min_is_kept_as_a_name_with_its_arguments():
    m = min_dim(S, 64)
    assert str(m) == "Min(64, seq)" and min_args(m) == (64, S) and parse(str(m)) == m
    assert min_dim(S, S + 3) == S and min_dim(5, 7) == 5


def test_mismatch_names_the_symbolic_dim_but_not_a_broadcast():
    assert "dim 1: 'seq' vs 'tokens'" in symbolic_mismatch((B, S, 32), (B, sym("tokens"), 32))
    assert symbolic_mismatch((B, S, 32), (B, 1, 32)) == ""  # broadcasting, not a question of dims
    assert symbolic_mismatch((B, S, 32), (B, S, 32)) == ""


# ---- inference ------------------------------------------------------------------------------------
def _shape_chain_model():
    """x [batch, seq, 32] -> Reshape(x, [Shape(x)[0] * Shape(x)[1], -1]) -> y, via the exporters'
    Shape / Gather / Mul / Unsqueeze / Concat chain."""
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
             helper.make_node("Gather", ["shp", "zero"], ["b"], name="g0", axis=0),
             helper.make_node("Gather", ["shp", "one"], ["s"], name="g1", axis=0),
             helper.make_node("Mul", ["b", "s"], ["bs"], name="mul"),
             helper.make_node("Unsqueeze", ["bs", "axis0"], ["bs1"], name="unsq"),
             helper.make_node("Concat", ["bs1", "minus1"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
    return ir_model(nodes, [("x", ["batch", "seq", 32])], ["y"],
                    {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "axis0": i64(0), "minus1": i64(-1)})


def test_inference_follows_shape_arithmetic():
    model = _shape_chain_model()
    infer_shapes(model)
    values = {v.name: v for n in model.graph for v in n.outputs}
    assert list(value_of(values["target"])) == [B * S, -1]
    assert sdims(values["y"]) == (B * S, 32)
    assert str(values["y"].shape[0]) == "batch*seq"  # the text onnx-ir's SymbolicDim keeps


def test_fold_shapes_writes_constant_targets():
    model = _shape_chain_model()
    infer_shapes(model)
    assert fold_shapes(model, PassContext())
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    assert reshape.inputs[1].const_value is not None
    assert reshape.inputs[1].const_value.numpy().tolist() == [-1, 32]


def test_reshape_and_expand_targets():
    obj = lambda *v: np.array(list(v) + [None], dtype=object)[:-1]  # noqa: E731
    assert reshape_target((B, S, 32), obj(B, S, 2, 16), 0).tolist() == [0, 0, 2, 16]
    assert reshape_target((B * S, 96), obj(B, S, 96), 0) is None  # two dims no constant can name
    assert reshape_target((B, S, 32), obj(B, S, 2, 16), 1) is None  # allowzero: a 0 would be a zero
    assert reshape_target((B, S, 2, 16), obj(B, -1), 0).tolist() == [0, -1]
    assert expand_target((B, 1, S, S), obj(B, 1, S, S)).tolist() == [1, 1, 1, 1]
    assert expand_target((1, 1, S, 1), obj(B, 1, S, S)) is None  # the input lacks batch: stays computed


# ---- whole engines at several shapes against onnxruntime ----------------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          [numpy_helper.from_array(np.asarray(a), n) for n, a in dict(inits).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _check_shapes(proto, feeds_at, shapes, rules=None):
    """Build without shapes; every shape matches onnxruntime; returns the engine."""
    engine = wb.build(wb.load_onnx(proto), wb.BuilderConfig(device="cpu"))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ctx = engine.create_context()
    for shape in shapes:
        feeds = feeds_at(*shape)
        want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        got = ctx.run(feeds)
        for k in want:
            assert rel_err(got[k], want[k]) < tolerance("float32"), (k, shape)
    return engine


def _fired(engine, rule):
    return [f for f in engine.reports["fusions"] if f["rule"] == rule and f["status"] == "fired"]


def _declined(engine, rule):
    return [f for f in engine.reports["fusions"] if f["rule"] == rule and f["status"] == "declined"]


def _heads_model(hidden=32, heads=2, causal=None):
    """x [batch, seq, hidden] -> Q/K/V projections, head split with the shape read from x, softmax
    attention (optionally a causal mask built from Range over the sequence), head merge."""
    d = hidden // heads
    w = {f"w{k}": (RNG.standard_normal((hidden, hidden)) * 0.3).astype(np.float32) for k in "qkv"}
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Slice", ["shp", "i0", "i2"], ["bs"]),
             helper.make_node("Concat", ["bs", "split_dims"], ["split_shape"], axis=0),
             helper.make_node("Concat", ["bs", "merged"], ["merge_shape"], axis=0)]
    for k in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{k}"], [f"{k}p"]),
                  helper.make_node("Reshape", [f"{k}p", "split_shape"], [f"{k}4"]),
                  helper.make_node("Transpose", [f"{k}4"], [f"{k}h"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qh", "kt"], ["qk"]),
              helper.make_node("Mul", ["qk", "scale"], ["scores"])]
    scores = "scores"
    if causal is not None:
        # keep where key <= query (+ causal offset): Range(seq) unsqueezed onto both axes
        nodes += [helper.make_node("Gather", ["shp", "one"], ["seqlen"], axis=0),
                  helper.make_node("Range", ["zero", "seqlen", "one"], ["pos"]),
                  helper.make_node("Unsqueeze", ["pos", "q_axes"], ["qpos"]),
                  helper.make_node("Unsqueeze", ["pos", "k_axes"], ["kpos"]),
                  helper.make_node("Add", ["qpos", "offset"], ["qpos2"]),
                  helper.make_node(causal, ["kpos", "qpos2"], ["keep"]),
                  helper.make_node("Where", ["keep", "scores", "neg"], ["masked"])]
        scores = "masked"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "vh"], ["o"]),
              helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ot", "merge_shape"], ["y"])]
    inits = {**w, "i0": i64(0), "i2": i64(2), "split_dims": i64(heads, d), "merged": i64(hidden),
             "scale": np.array(d ** -0.5, np.float32), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "q_axes": i64(0, 1, 3), "k_axes": i64(0, 1, 2), "offset": np.array(0, np.int64),
             "neg": np.array(-np.inf, np.float32)}
    return _model(nodes, [("x", TensorProto.FLOAT, ["batch", "seq", hidden])], ["y"], inits)


def _x(b, s, hidden=32):
    return {"x": np.random.default_rng(b * 100 + s).standard_normal((b, s, hidden)).astype(np.float32)}


SHAPES = [(1, 1), (1, 7), (2, 16), (3, 5), (4, 33)]


def test_attention_fuses_with_symbolic_batch_and_sequence():
    engine = _check_shapes(_heads_model(), _x, SHAPES)
    att = [l for l in engine.layers if l.op == "Attention"]
    assert len(att) == 1 and att[0].attrs["num_heads"] == 2
    assert not [l for l in engine.layers if l.op in ("Shape", "Softmax", "Concat")]  # shape arithmetic folded
    # the head split reads its dims from x: the Reshape targets became constants with 0 = "x's dim"
    reshapes = [l for l in engine.layers if l.op == "Reshape"]
    assert all(engine.plan.constants.get(l.inputs[1]) is not None for l in reshapes)


@pytest.mark.parametrize("op, causal", [("LessOrEqual", True), ("Less", False)])
def test_causal_triangle_from_positions(op, causal):
    """key <= query over Range(seq) is the causal triangle for every seq (the op states it, the
    positions vanish); key < query is not, so the mask stays."""
    engine = _check_shapes(_heads_model(causal=op), _x, [(1, 2), (2, 9), (3, 16), (1, 31), (2, 4)])
    (att,) = [l for l in engine.layers if l.op == "Attention"]
    assert att.attrs["causal"] == int(causal)
    assert (len(att.inputs) == 3) == causal  # no mask tensor when the triangle is all of it
    if causal:
        assert not [l for l in engine.layers if l.op == "Range"]


def test_causal_predicate_needs_both_axes_over_the_scores():
    proto = _heads_model(causal="LessOrEqual")
    model = ir_model(list(proto.graph.node), [("x", ["batch", "seq", 32])], ["y"],
                     {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer})
    infer_shapes(model)
    keep = next(v for n in model.graph for v in n.outputs if v.name == "keep")
    assert is_causal_predicate(keep, S, S)
    assert not is_causal_predicate(keep, S, sym("keys"))  # other key length: not this triangle
    assert not is_causal_predicate(keep, S, S, keep=False)


def test_head_count_that_is_symbolic_is_named():
    """Q/K/V arrive as [batch, heads, seq, 16] with heads symbolic: the Attention op needs a fixed
    head count, and the log says which dim stopped it."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["qk"]),
             helper.make_node("Softmax", ["qk"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    dims = ["batch", "heads", "seq", 16]
    proto = _model(nodes, [(n, TensorProto.FLOAT, dims) for n in "qkv"], ["y"])

    def feeds(b, h):
        r = np.random.default_rng(b + 10 * h)
        return {n: r.standard_normal((b, h, 5, 16)).astype(np.float32) for n in "qkv"}
    engine = _check_shapes(proto, feeds, [(1, 1), (2, 3), (1, 4), (3, 2), (2, 8)])
    (entry,) = {e["reason"] for e in _declined(engine, "attention")}
    assert "'heads'" in entry and "fixed number of heads" in entry


def test_unsized_norm_scale_names_the_dim():
    """A decomposed LayerNorm with no scale over a symbolic hidden dim: a unit scale cannot be sized."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
             helper.make_node("Sub", ["x", "mu"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["y"])]
    proto = _model(nodes, [("x", TensorProto.FLOAT, ["batch", "hidden"])], ["y"],
                   {"two": np.array(2, np.float32), "eps": np.array(1e-5, np.float32)})
    engine = _check_shapes(proto, lambda b, h: {"x": RNG.standard_normal((b, h)).astype(np.float32)},
                           [(1, 3), (2, 8), (4, 5), (3, 16), (1, 1)])
    (reason,) = {e["reason"] for e in _declined(engine, "decomposed_norm")}
    assert "'hidden'" in reason and "unit scale" in reason


def test_residual_of_other_length_is_not_assumed_equal():
    """Add(x [batch, seq, 32], r [batch, tokens, 32]) before a LayerNorm: equal only when seq == tokens
    at run time, so no SkipLayerNorm; the log names the dims. The engine still runs where they agree."""
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "g", "beta"], ["y"], axis=-1)]
    proto = _model(nodes, [("x", TensorProto.FLOAT, ["batch", "seq", 32]), ("r", TensorProto.FLOAT, ["batch", "tokens", 32])],
                   ["y"], {"g": RNG.random(32).astype(np.float32) + 0.5, "beta": RNG.standard_normal(32).astype(np.float32)})

    def feeds(b, s):
        r = np.random.default_rng(s)
        return {"x": r.standard_normal((b, s, 32)).astype(np.float32), "r": r.standard_normal((b, s, 32)).astype(np.float32)}
    engine = _check_shapes(proto, feeds, SHAPES)
    assert not _fired(engine, "skip_layer_norm")
    (reason,) = {e["reason"] for e in _declined(engine, "skip_layer_norm")}
    assert "'seq' vs 'tokens'" in reason


def test_same_model_static_and_symbolic_fuse_alike():
    """The attention model built at a static shape and with symbolic dims: the same fusions fire."""
    proto = _heads_model(causal="LessOrEqual")
    net = wb.load_onnx(proto)
    static = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"x": (2, 16, 32)}))
    dynamic = wb.build(net, wb.BuilderConfig(device="cpu"))
    count = lambda e: sorted(f["rule"] for f in e.reports["fusions"] if f["status"] == "fired"  # noqa: E731
                             and f["rule"] not in ("remove_noop", "merge_reshapes"))
    assert count(static) == count(dynamic)
    assert [l.op for l in static.layers] == [l.op for l in dynamic.layers if l.op not in ("Shape",)]


def _gather_model(reverse=False):
    """mask [batch, seq] read back through the legacy exporter's padding-mask index: Gather(Flatten(mask),
    b_idx * seq + kv_idx) over Range positions (``reverse``: kv_idx runs backwards, not the mask's order)."""
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [helper.make_node("Shape", ["mask"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["nb"], axis=0),
             helper.make_node("Gather", ["shp", "one"], ["ns"], axis=0),
             helper.make_node("Range", ["zero", "nb", "one"], ["bpos"]),
             helper.make_node("Range", ["zero", "ns", "one"], ["kpos"]),
             helper.make_node("Unsqueeze", ["bpos", "b_axes"], ["b4"]),
             helper.make_node("Unsqueeze", ["kpos", "k_axes"], ["k4"])]
    if reverse:
        nodes += [helper.make_node("Sub", ["ns", "one"], ["last"]),
                  helper.make_node("Sub", ["last", "k4"], ["k4r"])]
    nodes += [helper.make_node("Mul", ["b4", "ns"], ["row"]),
              helper.make_node("Add", ["row", "k4r" if reverse else "k4"], ["idx"]),
              helper.make_node("Flatten", ["mask"], ["flat"], axis=2),
              helper.make_node("Gather", ["flat", "idx"], ["picked"], axis=0),
              helper.make_node("Cast", ["picked"], ["y"], to=TensorProto.FLOAT)]
    return _model(nodes, [("mask", TensorProto.INT64, ["batch", "seq"])], ["y"],
                  {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "b_axes": i64(1, 2, 3), "k_axes": i64(0, 1, 2)})


def _mask(b, s):
    return {"mask": np.random.default_rng(b * 7 + s).integers(0, 2, size=(b, s)).astype(np.int64)}


@pytest.mark.parametrize("reverse", [False, True])
def test_gather_at_own_positions_is_a_reshape(reverse):
    engine = _check_shapes(_gather_model(reverse), _mask, SHAPES)
    ops = {l.op for l in engine.layers}
    if reverse:  # not the mask's own order: the gather stays, and is still right
        assert "Gather" in ops and not _fired(engine, "gather_positions")
    else:
        assert not ops & {"Gather", "Range", "Shape", "Flatten"} and len(_fired(engine, "gather_positions")) == 1
        # at a static shape the index is a constant, read back as the same positions
        static = wb.build(wb.load_onnx(_gather_model()), wb.BuilderConfig(device="cpu", shapes={"mask": (3, 5)}))
        assert not {l.op for l in static.layers} & {"Gather", "Flatten"} and _fired(static, "gather_positions")


def test_dim_values_fix_named_dims_only():
    from workbench.builder.shapes import apply_dim_values
    from workbench.errors import ShapeError

    model = _shape_chain_model()
    apply_dim_values(model, {"seq": 8})
    assert [str(d) for d in model.graph.inputs[0].shape] == ["batch", "8", "32"]
    infer_shapes(model)
    assert sdims(model.graph.outputs[0]) == (8 * B, 32)
    with pytest.raises(ShapeError, match="no input has a dim named 'tokens'"):
        apply_dim_values(_shape_chain_model(), {"tokens": 8})
    with pytest.raises(ShapeError, match="whole number"):
        apply_dim_values(_shape_chain_model(), {"seq": -2})
