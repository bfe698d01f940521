"""Per-model fusion counters and numerics on the exporter-produced test models and the light_*
models: optimized engines match unoptimized ones, and the structures each family is known for are
fused (matched structurally, never by node name)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import workbench as wb
from tests.support.paths import MODELS as HERE
from workbench.builder.config import parse_shapes
from tests.support.softmax import outputs_and_logits, tied
from workbench.core.numerics import rel_err

MANIFEST = os.path.join(HERE, "manifest.json")
MODELS = {m["name"]: m for m in json.load(open(MANIFEST))["models"]} if os.path.exists(MANIFEST) else {}
NEVER_ALONE = {"Softmax", "Erf", "Tanh", "Pow", "Sqrt", "BatchNormalization", "Relu", "Clip", "Sigmoid"}
SHAPE_OPS = {"Shape", "Size"}
_CACHE: dict = {}


def _engines(name):
    if name not in _CACHE:
        m = MODELS.get(name)
        path = os.path.join(HERE, f"{name}.onnx")
        if m is None or not os.path.exists(path):
            pytest.skip(f"{name} not present")
        d = np.load(os.path.join(HERE, m["data"]))
        feeds = {i["name"]: d[i["name"]] for i in m["inputs"]}
        net = wb.load_onnx(path)
        shapes = parse_shapes(m["shapes"])
        ref = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False, shapes=shapes))
        opt = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes))
        _CACHE[name] = (m, feeds, ref, opt)
    return _CACHE[name]


def _layers(engine, op):
    return [l for l in engine.layers if l.op == op]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_optimized_matches_unoptimized(name):
    m, feeds, ref, opt = _engines(name)
    want, got = ref.create_context().run(feeds), opt.create_context().run(feeds)
    for k in want:
        err = rel_err(got[k], want[k])
        assert err < 1e-5, f"{name}:{k} relative error {err:.2e}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_lone_activation_or_shape_arithmetic(name):
    m, feeds, ref, opt = _engines(name)
    desc = opt.describe()
    lone = [l["name"] for l in desc["layers"] if l["op"] in NEVER_ALONE]
    assert not lone, f"{name}: lone {lone}"
    assert not [l for l in desc["layers"] if l["op"] in SHAPE_OPS]
    # nothing computed from constants alone is left (that is what shape arithmetic was)
    consts = set(opt.plan.constants) if hasattr(opt, "plan") else set()
    for layer in opt.layers:
        if layer.op in ("Gather", "Unsqueeze", "Concat") and consts:
            assert not all(i in consts for i in layer.inputs if i), f"{name}: {layer.name} folds"
    assert all(l["onnx_nodes"] for l in desc["layers"])


SHAPE_ARITHMETIC = {"Shape", "Size", "Gather", "Unsqueeze", "Concat", "Squeeze", "Range", "ConstantOfShape", "Equal",
                    "Where", "Expand", "Reshape", "Cast", "Slice", "Add", "Sub", "Mul", "Div", "Mod", "Less", "Greater"}


def shape_arithmetic(engine) -> list[str]:
    """Layers that compute shapes, not data: a value is shape-derived when it is a constant, an
    output of Shape/Size, or an output of a SHAPE_ARITHMETIC layer whose inputs are all
    shape-derived. At static shapes every such layer folds, so none may be left. (An embedding
    Gather reads a runtime index tensor, and a mask built from attention_mask reads runtime data:
    neither is shape-derived.)"""
    consts = set(engine.plan.constants)
    derived, left = set(consts), []
    for layer in engine.layers:
        ins = [i for i in layer.inputs if i]
        if layer.op in ("Shape", "Size") or (layer.op in SHAPE_ARITHMETIC and all(i in derived for i in ins)):
            derived.update(layer.outputs)
            left.append(f"{layer.name} ({layer.op})")
    return left


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_shape_arithmetic_left_at_static_shapes(name):
    _, _, _, opt = _engines(name)
    assert shape_arithmetic(opt) == []


def test_shape_arithmetic_detector_sees_a_shape_chain():
    """The definition above is not vacuous: with shapes left dynamic the chains are there."""
    name = next((n for n in ("bert_legacy", "gpt2_legacy") if n in MODELS), None)
    if name is None:
        pytest.skip("no test model")
    net = wb.load_onnx(os.path.join(HERE, f"{name}.onnx"))
    raw = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False, shapes=parse_shapes(MODELS[name]["shapes"])))
    assert any("(Shape)" in x for x in shape_arithmetic(raw))


def _family(name):
    return MODELS[name]["family"] if name in MODELS else name.split("_")[0]


def _layer_count(m):
    return int(m.get("layers") or 2)  # every test config has 2 blocks


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) in ("bert", "vit")])
def test_encoder_layers(name):
    m, _, _, opt = _engines(name)
    blocks = 2
    assert len(_layers(opt, "Attention")) == blocks
    norms = _layers(opt, "SkipLayerNorm") + _layers(opt, "LayerNorm")
    assert len(norms) >= 2 * blocks
    gelu = [l for l in _layers(opt, "FusedGemm") if l.attrs.get("activation") == "Gelu"]
    assert len(gelu) == blocks


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) == "gpt2"])
def test_gpt2_blocks(name):
    _, _, _, opt = _engines(name)
    assert len(_layers(opt, "Attention")) == 2
    gelu = [l for l in _layers(opt, "FusedGemm") if l.attrs.get("activation") in ("GeluTanh",)]
    assert len(gelu) == 2


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) == "llama"])
def test_llama_blocks(name):
    _, _, _, opt = _engines(name)
    att = _layers(opt, "Attention")
    assert len(att) == 2 and all(a.attrs["kv_heads"] < a.attrs["num_heads"] for a in att)
    assert len(_layers(opt, "RMSNorm")) == 5
    assert not _layers(opt, "Expand")
    # GQA: V's head split is absorbed as without GQA (only Q and K keep theirs, RoPE reads them)
    assert all(a.attrs["v_layout"] in ("bsd", "bshd") for a in att)
    assert len(_layers(opt, "Transpose")) == 4
    # Q, K, V reach the Attention through RoPE: merged as parallel GEMMs over the same input
    fired = [r for r in opt.reports["fusions"] if r["rule"] == "merge_parallel_gemms" and r["status"] == "fired"]
    assert len(fired) == 2 and all(len(_layers(opt, op)) for op in ("Split", "FusedGemm"))


def _qkv_gemms(engine):
    """GEMM layers whose output an Attention reads as Q, K and V: in place (the packed operand,
    ``qkv_columns``) or through a Split into three."""
    prod = {o: l for l in engine.layers for o in l.outputs}
    found = []
    for att in _layers(engine, "Attention"):
        qkv = att.inputs[:3]
        if len(set(qkv)) == 1 and att.attrs.get("qkv_columns"):
            gemm = prod.get(qkv[0])
        else:
            splits = {id(prod[t]): prod[t] for t in qkv if t in prod and prod[t].op == "Split"}
            split = next(iter(splits.values())) if len(splits) == 1 else None
            gemm = prod.get(split.inputs[0]) if split is not None and len(split.outputs) == 3 else None
        if gemm is not None and gemm.op == "FusedGemm":
            found.append(gemm)
    return found


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) in ("bert", "vit", "gpt2")])
def test_one_qkv_gemm_per_layer(name):
    m, feeds, ref, opt = _engines(name)
    assert len(_qkv_gemms(opt)) == 2  # one per block; outputs equal: test_optimized_matches_unoptimized
    shapes = parse_shapes(m["shapes"])
    if _family(name) != "gpt2":  # GPT-2's c_attn is one GEMM already
        fired = [r for r in opt.reports["fusions"] if r["rule"] == "merge_qkv_projections" and r["status"] == "fired"]
        assert len(fired) == 2
        off = wb.build(wb.load_onnx(os.path.join(HERE, f"{name}.onnx")),
                       wb.BuilderConfig(device="cpu", shapes=shapes, disable=["merge_qkv_projections", "merge_parallel_gemms"]))
        assert not _qkv_gemms(off) and len(_layers(off, "FusedGemm")) == len(_layers(opt, "FusedGemm")) + 4


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) in ("bert", "vit", "gpt2")])
def test_attention_reads_packed_qkv(name):
    """No Split after the merged Q/K/V GEMM: each Attention reads its column ranges in place, and
    the engine computes what the engine with the Split computes."""
    m, feeds, ref, opt = _engines(name)
    att = _layers(opt, "Attention")
    assert len(att) == 2 and not _layers(opt, "Split")
    for a in att:
        assert len(set(a.inputs[:3])) == 1
        cols = list(a.attrs["qkv_columns"])
        width = next(l for l in opt.layers if a.inputs[0] in l.outputs).output_specs[0].shape[-1]
        assert cols[0] == 0 and cols[1] == cols[2] and cols[3] == cols[4] and cols[5] == width
    fired = [r for r in opt.reports["fusions"] if r["rule"] == "attention_reads_packed_qkv" and r["status"] == "fired"]
    assert len(fired) == 2
    split = wb.build(wb.load_onnx(os.path.join(HERE, f"{name}.onnx")),
                     wb.BuilderConfig(device="cpu", shapes=parse_shapes(m["shapes"]), disable=["attention_reads_packed_qkv"]))
    assert len(_layers(split, "Split")) == 2 and not any(a.attrs.get("qkv_columns") for a in _layers(split, "Attention"))
    want, got = split.create_context().run(feeds), opt.create_context().run(feeds)
    for k in want:
        assert rel_err(got[k], want[k]) < 1e-6, k


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) == "resnet"])
def test_resnet(name):
    m, _, ref, opt = _engines(name)
    assert not _layers(opt, "BatchNormalization") and not _layers(opt, "Relu") and not _layers(opt, "Add")
    residual = [l for l in _layers(opt, "FusedConv") if l.attrs["residual"]]
    src_adds = sum(1 for l in ref.layers if l.op == "Add")
    assert len(residual) >= 2 and src_adds >= 0


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) == "mobilenetv2"])
def test_mobilenetv2(name):
    _, _, _, opt = _engines(name)
    relu6 = [l for l in _layers(opt, "FusedConv") if l.attrs["activation"] == "Clip"]
    assert len(relu6) == 35 and all((l.attrs["act_min"], l.attrs["act_max"]) == (0.0, 6.0) for l in relu6)
    assert not _layers(opt, "Pad") and not _layers(opt, "Clip")


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if _family(n) == "convnext"])
def test_convnext(name):
    _, _, _, opt = _engines(name)
    assert not _layers(opt, "LayerNormalization")
    cf = [l for l in _layers(opt, "LayerNorm") if l.attrs["channels_first"]]
    assert len(cf) == 2  # embeddings and downsampling: their Transposes are gone
    assert len(_layers(opt, "Transpose")) == 4  # only the two per block around the channels-last MLP


def test_report_lists_fusions_and_counts():
    name = next((n for n in ("bert_legacy", "resnet_legacy") if n in MODELS), None)
    if name is None:
        pytest.skip("no test model")
    _, _, _, opt = _engines(name)
    rep = opt.report()
    assert {"rule", "status", "reason", "nodes"} <= set(rep["fusions"].columns)
    desc = opt.describe()
    assert desc["fusion_counts"] and desc["onnx_node_to_layer"]


LIGHT = ["light_bvlc_alexnet", "light_inception_v1", "light_resnet50", "light_shufflenet", "light_squeezenet",
         "light_zfnet512", "light_inception_v2", "light_densenet121", "light_vgg19"]


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_optimized_matches_unoptimized(name):
    from workbench.demo import embedded_model_path, reference_io

    path = embedded_model_path(name)
    feeds, _ = reference_io(path)
    net = wb.load_onnx(path)
    want, want_logits = outputs_and_logits(wb.build(net, wb.BuilderConfig(device="cpu", optimize=False)), feeds)
    opt = wb.build(net, wb.BuilderConfig(device="cpu"))
    got, got_logits = outputs_and_logits(opt, feeds)
    for k in want:  # a softmax over tied logits is decided by rounding: compare the logits (tests/support/softmax.py)
        if k in want_logits and tied(want_logits[k]):
            # logits of 1e9..1e12 summed in another order (folded BatchNorm, fused epilogues)
            assert rel_err(got_logits[k], want_logits[k]) < 1e-4, k
        else:
            assert rel_err(got[k], want[k]) < 1e-5, k
    assert not [l.name for l in opt.layers if l.op in NEVER_ALONE - {"Softmax"}]
