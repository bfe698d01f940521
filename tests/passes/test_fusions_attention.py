"""Attention fusion: causal masks split out of the exporters' combined masks (GPT-2 / Llama), rows
whose every key is masked, attention without a heads axis, and near misses that must decline (or
build unfused) instead of crashing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.paths import MODELS as HERE
from workbench.builder.config import parse_shapes
from workbench.core.numerics import rel_err
from workbench.frontends.onnx.loader import network_from_proto

F = TensorProto.FLOAT
RNG = np.random.default_rng(7)
MANIFEST = os.path.join(HERE, "manifest.json")
MODELS = {m["name"]: m for m in json.load(open(MANIFEST))["models"]} if os.path.exists(MANIFEST) else {}
MIN = np.finfo(np.float32).min


def both(net, feeds):
    ref = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False))
    opt = wb.build(net, wb.BuilderConfig(device="cpu"))
    want, got = ref.create_context().run(feeds), opt.create_context().run(feeds)
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-5, k
    return opt


def attention_layers(engine):
    return [l for l in engine.layers if l.op == "Attention"]


def declined(engine, rule="attention"):
    return [f["reason"] for f in engine.reports["fusions"] if f["rule"] == rule and f["status"] == "declined"]


# ---- exporter models: causal attention in every block ----------------------------------------

CAUSAL_MODELS = [n for n in sorted(MODELS) if MODELS[n]["family"] in ("gpt2", "llama")]


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_causal_attention_in_every_block_with_left_padding(name):
    """Left padding leaves the first query rows with every key masked: the fused op must give
    what the finfo.min mask gave there (a uniform row), not the -inf answer."""
    m = MODELS[name]
    d = np.load(os.path.join(HERE, m["data"]))
    feeds = {i["name"]: d[i["name"]] for i in m["inputs"]}
    mask = np.ones_like(feeds["attention_mask"])
    mask[1, :5] = 0  # left padding: rows 0..4 of sample 1 see no key
    feeds["attention_mask"] = mask
    net = wb.load_onnx(os.path.join(HERE, f"{name}.onnx"))
    shapes = parse_shapes(m["shapes"])
    ref = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False, shapes=shapes))
    opt = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes))
    att = attention_layers(opt)
    assert len(att) == 2 and all(a.attrs["causal"] == 1 for a in att)
    assert all(a.attrs["mask_kind"] == "additive" for a in att)  # the padding part only
    masks = {a.inputs[3] for a in att}
    assert len(masks) == 1  # one padding mask serves every layer
    want, got = ref.create_context().run(feeds), opt.create_context().run(feeds)
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-5, f"{name}:{k}"


# ---- small graphs: the mask forms ------------------------------------------------------------

S, D = 6, 4
TRIL = np.tril(np.ones((S, S), bool))


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def scores_graph(mask_nodes, mask_inits, extra_inputs=(), mask_value="m", q_shape=(2, 2, S, D), boolean_fill=None,
                 mask_first=False):
    """q, k, v [b, h, s, d] -> softmax(q kᵀ * 0.5 + mask) v, with the mask built by ``mask_nodes``
    (``mask_first``: softmax((q kᵀ + mask) * 0.5) v)."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]), helper.make_node("MatMul", ["q", "kt"], ["qk"])]
    scale = [helper.make_node("Mul", ["sm" if mask_first else "qk", "half"], ["ss" if mask_first else "sc"])]
    nodes += ([] if mask_first else scale) + mask_nodes
    scores = "qk" if mask_first else "sc"
    if boolean_fill is None:
        nodes.append(helper.make_node("Add", [scores, mask_value], ["sm"]))
    else:
        nodes.append(helper.make_node("Where", [mask_value, scores, "fill"], ["sm"]))
    nodes += (scale if mask_first else []) + [helper.make_node("Softmax", ["ss" if mask_first else "sm"], ["p"], axis=-1),
                                              helper.make_node("MatMul", ["p", "v"], ["y"])]
    inits = [init("half", np.float32(0.5))] + list(mask_inits)
    if boolean_fill is not None:
        inits.append(init("fill", np.float32(boolean_fill)))
    ins = [helper.make_tensor_value_info(n, F, list(q_shape)) for n in "qkv"]
    ins += [helper.make_tensor_value_info(n, t, s) for n, t, s in extra_inputs]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", F, None)], inits)
    net = network_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    feeds = {n: RNG.standard_normal(q_shape).astype(np.float32) for n in "qkv"}
    return net, feeds


PAD_IN = [("pad", TensorProto.BOOL, [2, 1, 1, S])]
PAD = np.ones((2, 1, 1, S), bool)
PAD[1, ..., :3] = False  # rows 0..2 of sample 1 have no key left under the triangle


def test_constant_causal_mask_without_padding_is_causal_and_maskless():
    mask = np.where(TRIL, 0, MIN).astype(np.float32).reshape(1, 1, S, S)
    net, feeds = scores_graph([], [init("m", mask)])
    a = attention_layers(both(net, feeds))
    assert len(a) == 1 and a[0].attrs["causal"] == 1 and a[0].attrs["mask_kind"] == "" and len(a[0].inputs) == 3


def test_where_and_of_triangle_and_padding():
    nodes = [helper.make_node("And", ["pad", "tri"], ["keep"]), helper.make_node("Where", ["keep", "zero", "low"], ["m"])]
    inits = [init("tri", TRIL.reshape(1, 1, S, S)), init("zero", np.float32(0)), init("low", np.float32(MIN))]
    net, feeds = scores_graph(nodes, inits, PAD_IN)
    a = attention_layers(both(net, {**feeds, "pad": PAD}))[0].attrs
    assert (a["causal"], a["mask_kind"], a["causal_fill"]) == (1, "additive", float(MIN))


def test_where_or_of_masked_triangle_and_padding():
    nodes = [helper.make_node("Not", ["pad"], ["gone"]), helper.make_node("Or", ["above", "gone"], ["masked"]),
             helper.make_node("Where", ["masked", "low", "zero"], ["m"])]
    inits = [init("above", ~TRIL.reshape(1, 1, S, S)), init("zero", np.float32(0)), init("low", np.float32(-np.inf))]
    net, feeds = scores_graph(nodes, inits, PAD_IN)
    e = both(net, {**feeds, "pad": np.ones_like(PAD)})  # -inf fill: keep every row non-empty
    a = attention_layers(e)[0].attrs
    assert a["causal"] == 1 and a["mask_kind"] == "additive" and "causal_fill" not in a


@pytest.mark.parametrize("op", ["Add", "Min"])
def test_sum_or_min_of_triangle_and_padding(op):
    tri = np.where(TRIL, 0, -np.inf).astype(np.float32).reshape(1, 1, S, S)
    nodes = [helper.make_node("Where", ["pad", "zero", "low"], ["padm"]), helper.make_node(op, ["tri", "padm"], ["m"])]
    inits = [init("tri", tri), init("zero", np.float32(0)), init("low", np.float32(MIN))]
    net, feeds = scores_graph(nodes, inits, PAD_IN)
    a = attention_layers(both(net, {**feeds, "pad": np.ones_like(PAD)}))[0].attrs
    assert a["causal"] == 1 and a["mask_kind"] == "additive"


def test_sum_with_finite_fill_keeps_the_triangle_in_the_mask():
    """finfo.min + finfo.min overflows to -inf: splitting would change fully masked rows."""
    tri = np.where(TRIL, 0, MIN).astype(np.float32).reshape(1, 1, S, S)
    nodes = [helper.make_node("Where", ["pad", "zero", "low"], ["padm"]), helper.make_node("Add", ["tri", "padm"], ["m"])]
    inits = [init("tri", tri), init("zero", np.float32(0)), init("low", np.float32(MIN))]
    net, feeds = scores_graph(nodes, inits, PAD_IN)
    e = both(net, {**feeds, "pad": PAD})
    a = attention_layers(e)[0].attrs
    assert a["causal"] == 0 and a["mask_kind"] == "additive"
    notes = [f["reason"] for f in e.reports["fusions"] if f["rule"] == "attention" and f["status"] == "fired"]
    assert any("does not absorb" in n for n in notes)


def test_boolean_where_of_triangle_is_causal():
    net, feeds = scores_graph([], [init("tri", TRIL.reshape(1, 1, S, S))], mask_value="tri", boolean_fill=-np.inf)
    a = attention_layers(both(net, feeds))[0].attrs
    assert a["causal"] == 1 and a["mask_kind"] == ""


def test_boolean_where_of_triangle_and_padding_with_finite_fill():
    nodes = [helper.make_node("And", ["tri", "pad"], ["keep"])]
    net, feeds = scores_graph(nodes, [init("tri", TRIL.reshape(1, 1, S, S))], PAD_IN, mask_value="keep", boolean_fill=MIN)
    a = attention_layers(both(net, {**feeds, "pad": PAD}))[0].attrs
    assert a["causal"] == 1 and a["mask_kind"] == "additive" and a["causal_fill"] == float(MIN)


def test_a_row_of_the_triangle_is_not_a_broadcast_mask():
    """A [1, S] all-keep row is 'triangular' for one query: it must not become causal for S queries."""
    mask = np.zeros((1, 1, 1, S), np.float32)
    net, feeds = scores_graph([], [init("m", mask)])
    a = attention_layers(both(net, feeds))[0].attrs
    assert a["causal"] == 0


def test_mask_that_widens_the_scores_declines():
    mask = np.zeros((2, 3, S, S), np.float32)  # 3 heads of mask over scores of 1 head
    net, feeds = scores_graph([], [init("m", mask)], q_shape=(2, 1, S, D))
    e = both(net, feeds)
    assert not attention_layers(e) and any("does not broadcast" in r for r in declined(e))


# ---- masks applied before the scale: softmax((q kᵀ + m) * s) = softmax(s q kᵀ + s m) ---------------

def test_constant_mask_before_the_scale_is_scaled():
    bias = RNG.standard_normal((1, 2, S, S)).astype(np.float32) * 3
    net, feeds = scores_graph([], [init("m", bias)], mask_first=True)
    e = both(net, feeds)
    a = attention_layers(e)
    assert len(a) == 1 and a[0].attrs["mask_kind"] == "additive" and a[0].attrs["scale"] == 0.5


def test_constant_causal_mask_before_the_scale_keeps_its_scaled_fill():
    mask = np.where(TRIL, 0, MIN).astype(np.float32).reshape(1, 1, S, S)
    net, feeds = scores_graph([], [init("m", mask)], mask_first=True)
    a = attention_layers(both(net, feeds))[0].attrs
    assert (a["causal"], a["mask_kind"], a["causal_fill"]) == (1, "", float(np.float32(MIN * 0.5)))


def test_runtime_mask_before_the_scale_declines():
    net, feeds = scores_graph([], [], [("m", F, [2, 1, 1, S])], mask_first=True)
    e = both(net, {**feeds, "m": RNG.standard_normal((2, 1, 1, S)).astype(np.float32)})
    assert not attention_layers(e) and any("added before the scale" in r for r in declined(e))


def test_boolean_where_before_the_scale():
    nodes = [helper.make_node("And", ["tri", "pad"], ["keep"])]
    net, feeds = scores_graph(nodes, [init("tri", TRIL.reshape(1, 1, S, S))], PAD_IN, mask_value="keep",
                              boolean_fill=MIN, mask_first=True)
    a = attention_layers(both(net, {**feeds, "pad": PAD}))[0].attrs
    assert a["causal"] == 1 and a["mask_kind"] == "additive" and a["causal_fill"] == float(np.float32(MIN * 0.5))


# ---- near misses: other ranks, non-constant scales ---------------------------------------------

def _plain_attention(shape, perm, mask_shape=None, scale_input=False):
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=perm), helper.make_node("MatMul", ["q", "kt"], ["qk"]),
             helper.make_node("Mul", ["qk", "scale"], ["sc"])]
    last = "sc"
    if mask_shape is not None:
        nodes.append(helper.make_node("Add", ["sc", "mask"], ["sm"]))
        last = "sm"
    nodes += [helper.make_node("Softmax", [last], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    ins = [helper.make_tensor_value_info(n, F, list(shape)) for n in "qkv"]
    inits = []
    feeds = {n: RNG.standard_normal(shape).astype(np.float32) for n in "qkv"}
    if scale_input:
        ins.append(helper.make_tensor_value_info("scale", F, []))
        feeds["scale"] = np.array(0.5, np.float32)
    else:
        inits.append(init("scale", np.float32(0.5)))
    if mask_shape is not None:
        ins.append(helper.make_tensor_value_info("mask", F, list(mask_shape)))
        feeds["mask"] = np.where(RNG.random(mask_shape) < 0.3, MIN, 0).astype(np.float32)
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", F, None)], inits)
    return network_from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])), feeds


def test_rank3_attention_is_one_head():
    net, feeds = _plain_attention((2, 5, 8), [0, 2, 1])
    a = attention_layers(both(net, feeds))
    assert len(a) == 1 and a[0].attrs["num_heads"] == 1 and a[0].attrs["q_layout"] == "bsd"


def test_rank3_attention_with_a_rank3_mask_gets_a_heads_axis():
    net, feeds = _plain_attention((2, 5, 8), [0, 2, 1], mask_shape=(2, 5, 5))
    assert len(attention_layers(both(net, feeds))) == 1


def test_rank3_kt_that_is_not_a_transpose_declines():
    net, feeds = _plain_attention((2, 5, 8), [0, 1, 2])  # an identity "transpose": kᵀ is [b, s, d]
    e = wb.build(net, wb.BuilderConfig(device="cpu"))
    assert not attention_layers(e)


def test_rank5_scores_decline_with_a_reason():
    net, feeds = _plain_attention((2, 2, 2, 5, 8), [0, 1, 2, 4, 3])
    e = both(net, feeds)
    assert not attention_layers(e) and any("rank 5" in r for r in declined(e))


def test_non_constant_scale_builds_unfused():
    net, feeds = _plain_attention((2, 2, 5, 8), [0, 1, 3, 2], scale_input=True)
    e = both(net, feeds)
    assert not attention_layers(e)
