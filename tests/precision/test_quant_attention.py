"""fp8 attention: the emulation (``core.quant.attention_fp8``) against float64 attention and its own
one-pass form, where the placement puts it (ViT's unmasked attention; not BERT's masked one, not at
int8), and what the accuracy report says of it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import workbench as wb
from workbench.core import quant
from workbench.core.numerics import rel_err
from workbench.precision.calibration import Calibration

MODELS = os.path.join(os.path.dirname(__file__), "..", "models")
RNG = np.random.default_rng(3)


def _qkv(b, h, s, d):
    return [(RNG.standard_normal((b, h, s, d)) * 1.5).astype(np.float32) for _ in range(3)]


def _exact(q, k, v, scale, causal=False):
    sc = q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2) * scale
    if causal:
        sc = np.where(np.tril(np.ones(sc.shape[-2:], bool)), sc, -np.inf)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)


def _scales(q, k, v):
    return tuple(float(quant.scale_from_amax(np.abs(x).max(), "fp8")) for x in (q, k, v))


@pytest.mark.parametrize("s,causal", [(64, False), (197, False), (300, True)])
def test_fp8_attention_is_within_e4m3_error_of_float64(s, causal):
    q, k, v = _qkv(2, 3, s, 64)
    exact = _exact(q, k, v, 0.125, causal)
    res = float(quant.scale_from_amax(np.abs(exact).max(), "fp8"))
    got = quant.attention_fp8(q, k, v, scale=0.125, scales=_scales(q, k, v), result_scale=res, causal=causal)
    err = rel_err(got, exact)
    # three mantissa bits for Q, K, V, the probabilities and the result: a few percent, not zero
    assert 1e-2 < err < 0.1, err
    # every value is an e4m3 code's value of the result scale
    np.testing.assert_array_equal(quant.fake_quantize(got, res, 0, "fp8"), got)


def test_one_block_is_the_plain_softmax_with_rounded_probabilities():
    """At most ATTENTION_BLOCK keys: one block, so p = exp(S - row max) rounded to e4m3 once, and
    O = (p codes . V codes) * P_SCALE * scale_v / sum(p) -- written out here step by step."""
    q, k, v = _qkv(1, 2, 128, 32)
    sc = _scales(q, k, v)
    res = 0.004
    got = quant.attention_fp8(q, k, v, scale=0.2, scales=sc, result_scale=res)
    qv, kv = quant.fake_quantize(q, sc[0], 0, "fp8"), quant.fake_quantize(k, sc[1], 0, "fp8")
    vc = quant.quantize(v, sc[2], 0, "fp8").astype(np.float32)
    s = (qv @ np.swapaxes(kv, -1, -2)) * np.float32(0.2)
    p = np.exp(s - s.max(-1, keepdims=True)).astype(np.float32)
    pc = quant.quantize(p, quant.P_SCALE, 0, "fp8").astype(np.float32)
    o = (pc @ vc) * np.float32(quant.P_SCALE * sc[2]) / p.sum(-1, keepdims=True, dtype=np.float32)
    want = quant.fake_quantize(o, res, 0, "fp8")
    assert np.mean(got == want) > 0.999  # (float32 sums in another order may move a code at a boundary)


def test_blocks_rescale_to_nearly_the_one_pass_result(monkeypatch):
    """Over several blocks the running maximum rescales earlier blocks (the probabilities were
    rounded against a smaller maximum): close to the one-block result, not equal."""
    q, k, v = _qkv(1, 2, 384, 64)
    kw = dict(scale=0.125, scales=_scales(q, k, v), result_scale=0.01)
    blocked = quant.attention_fp8(q, k, v, **kw)
    monkeypatch.setattr(quant, "ATTENTION_BLOCK", 4096)
    whole = quant.attention_fp8(q, k, v, **kw)
    assert 0 < rel_err(blocked, whole) < 3e-2


def _vit():
    d = np.load(os.path.join(MODELS, "vit_legacy.npz"))
    net = wb.load_onnx(os.path.join(MODELS, "vit_legacy.onnx"))
    shapes = {"pixel_values": d["pixel_values"].shape}
    feeds = [{"pixel_values": RNG.standard_normal(d["pixel_values"].shape).astype(np.float32)} for _ in range(4)]
    return net, shapes, feeds


def test_vit_attention_runs_fp8_with_its_scales_and_reason():
    net, shapes, feeds = _vit()
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes))
    eng = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, precision="fp8", calibration=Calibration(feeds[:3])))
    att = [l for l in eng.layers if l.op == "Attention"]
    assert len(att) == 2 and all(l.precision == "fp8" and l.tactic == "cpu.numpy.fp8" for l in att)
    for l in att:
        a = l.attrs
        assert a["q_input_scale"] == a["q_key_scale"] == a["q_value_scale"] > 0  # one packed Q/K/V tensor
        assert a["q_result_scale"] > 0 and a["q_source"] == "calibration:minmax"
    # the out-projection quantizes the attention's output with the same scale as its result's
    readers = [l for l in eng.layers if l.op == "FusedGemm" and l.inputs[0] in {x.outputs[0] for x in att}]
    assert readers and all(r.attrs["q_input_scale"] == next(x for x in att if x.outputs[0] == r.inputs[0])
                           .attrs["q_result_scale"] for r in readers)
    rows = {r["layer"]: r["reason"] for r in eng.reports["precision"]}
    assert all("softmax in e4m3" in rows[l.name] for l in att)
    # the per-layer report names the error each fp8 attention adds (against fp32 attention)
    report = eng.accuracy(feeds[3], reference=fp32, impact=False)
    errs = [r["added_err"] for r in report.layers if r["op"] == "Attention"]
    assert len(errs) == 2 and all(1e-3 < e < 0.15 for e in errs), errs
    # without the fp32 build the reference is the engine's own layers in float: the attention's
    # layouts (q_layout is not a quantization attribute) and packed columns stay
    alone = eng.accuracy(feeds[3], impact=False)
    assert [r["added_err"] for r in alone.layers if r["op"] == "Attention"] == pytest.approx(errs, rel=0.2)
    out, want = eng.create_context().run(feeds[3]), fp32.create_context().run(feeds[3])
    assert 0 < rel_err(out["last_hidden_state"], want["last_hidden_state"]) < 0.3


def test_attention_stays_float_where_fp8_cannot_or_int8_is_asked():
    d = np.load(os.path.join(MODELS, "bert_legacy.npz"))
    net = wb.load_onnx(os.path.join(MODELS, "bert_legacy.onnx"))
    feeds = {k: d[k] for k in d.files if not k.startswith("output:")}
    shapes = {k: v.shape for k, v in feeds.items()}
    eng = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, precision="fp8", calibration=Calibration([feeds])))
    rows = [r for r in eng.reports["precision"] if r["op"] == "Attention"]
    assert rows and all(r["precision"] == "fp32" and "no mask input" in r["reason"] for r in rows)
    net, shapes, vit_feeds = _vit()
    eng = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, precision="int8",
                                         calibration=Calibration(vit_feeds[:2])))
    rows = [r for r in eng.reports["precision"] if r["op"] == "Attention"]
    assert rows and all(r["precision"] == "fp32" and "no int8 one" in r["reason"] for r in rows)


def test_only_the_fused_attention_has_quantized_operands():
    """ONNX's own Attention (domain "") has other attributes: neither placed at fp8 nor read as codes."""
    from workbench.core.plan import Layer

    a = {"q_format": "fp8", "q_input_scale": 0.1, "q_key_scale": 0.2, "q_value_scale": 0.3, "q_result_scale": 0.1}
    fused = Layer("a", "Attention", domain="workbench", inputs=["q", "k", "v"], outputs=["o"], attrs=dict(a),
                  precision="fp8")
    onnx_op = Layer("b", "Attention", domain="", inputs=["q", "k", "v"], outputs=["o"], attrs=dict(a), precision="fp8")
    assert [quant.operand_scale(fused, p) for p in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert quant.is_attention(fused) and not quant.is_attention(onnx_op)
    assert quant.operand_scale(onnx_op, 0) == pytest.approx(0.1) and quant.operand_scale(onnx_op, 1) is None


def _packed_layer(b=2, s=16, h=2, d=8, causal=0, kv_seq=None):
    from workbench.core.plan import Layer, TensorSpec

    a = {"scale": 0.35, "num_heads": h, "kv_heads": h, "q_layout": "bsd", "k_layout": "bsd", "v_layout": "bsd",
         "out_layout": "bsd", "causal": causal, "q_format": "fp8", "q_input_scale": 0.02, "q_input_zero_point": 0,
         "q_key_scale": 0.02, "q_value_scale": 0.02, "q_result_scale": 0.01}
    shapes = [[b, s, h * d], [b, kv_seq or s, h * d], [b, kv_seq or s, h * d]]
    lay = Layer("att", "Attention", domain="workbench", inputs=["q", "k", "v"], outputs=["o"], attrs=a,
                input_specs=[TensorSpec(n, "float32", sh) for n, sh in zip("qkv", shapes)],
                output_specs=[TensorSpec("o", "float32", [b, s, h * d])], precision="fp8")
    return lay


def test_codes_in_are_read_as_the_values_they_stand_for():
    """An input of codes (a GPU plan's Q/K/V written by their GEMM) gives the result of its values."""
    from workbench.core.plan import TensorSpec
    from workbench.kernels.reference import KernelContext
    from workbench.kernels.reference.quantized import QuantizedAttention

    lay = _packed_layer()
    xs = [(RNG.standard_normal(s.shape) * 1.5).astype(np.float32) for s in lay.input_specs]
    want = QuantizedAttention(lay)(KernelContext(), xs, lay.attrs)[0]
    codes = [quant.quantize(x, 0.02, 0, "fp8") for x in xs]
    lay.input_specs = [TensorSpec(s.name, quant.ELEMENT["fp8"], s.shape, 0.02) for s in lay.input_specs]
    np.testing.assert_array_equal(QuantizedAttention(lay)(KernelContext(), codes, lay.attrs)[0], want)


def test_causal_fp8_attention_needs_square_scores():
    from workbench.kernels.reference.quantized import check_attention

    assert check_attention(_packed_layer(causal=1), "fp8") is None
    assert "as many queries as keys" in check_attention(_packed_layer(causal=1, kv_seq=24), "fp8")
    assert check_attention(_packed_layer(causal=0, kv_seq=24), "fp8") is None
    assert "no int8 form" in check_attention(_packed_layer(), "int8")
