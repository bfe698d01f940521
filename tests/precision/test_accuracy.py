"""The per-layer accuracy report (workbench.runtime.accuracy): its numbers against a direct NumPy
computation, non-finite values named at the layer that makes them, several feeds pooled, the
engine left as it was, bad feeds refused, and on MobileNetV2 in fp16 the layers it ranks first are
the ones whose fp32 removes the error."""

from __future__ import annotations

import json
import math
import os

import ml_dtypes
import numpy as np
import pytest

import workbench as wb
from workbench.core.numerics import rel_err
from workbench.errors import InputError
from workbench.runtime.accuracy import measure
from tests.precision import accuracy_models as M
from tests.support.paths import MODELS


def engine_of(model: bytes, precision: str, **cfg):
    return wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu", precision=precision, **cfg))


def pooled(pairs) -> float:
    num = sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2)) for a, b in pairs)
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for _, b in pairs)
    return (num / den) ** 0.5


@pytest.mark.parametrize("precision,dtype", [("fp16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_numbers_match_numpy(precision, dtype):
    engine = engine_of(M.mlp(), precision)
    assert [l.onnx_nodes for l in engine.layers] == [["fc1", "relu1"], ["fc2", "relu2"], ["fc3"]]
    feeds = M.feeds(3)
    report = engine.accuracy(feeds)
    w, rnd = M.mlp_weights(), M.half(dtype)
    f32 = M.half(np.float32)  # the reference's tensors are float32: rounding to fp16 starts from those
    ref = [M.forward(f["x"], w, f32) for f in feeds]
    eng = [M.forward(f["x"], w, rnd) for f in feeds]  # inputs, weights and outputs rounded per layer
    tol = dict(rel=2e-3)
    for i, row in enumerate(report.layers):
        assert row["onnx_nodes"] == list(engine.layers[i].onnx_nodes) and row["precision"] == precision
        assert row["rel_err"] == pytest.approx(pooled([(e[i], r[i]) for e, r in zip(eng, ref)]), **tol)
        diff = max(float(np.max(np.abs(e[i] - r[i]))) for e, r in zip(eng, ref))
        assert row["max_abs_err"] == pytest.approx(diff, **tol)
        a = np.concatenate([e[i].ravel() for e in eng])
        b = np.concatenate([r[i].ravel() for r in ref])
        assert 1 - row["cosine"] == pytest.approx(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=0.05, abs=1e-9)
        # added: the layer alone on the reference inputs; inherited: its inputs in the engine
        local = [M.forward(f["x"], w, rnd, start=i, carry=r[i - 1] if i else f["x"])[0] for f, r in zip(feeds, ref)]
        assert row["added_err"] == pytest.approx(pooled([(l, r[i]) for l, r in zip(local, ref)]), **tol)
        inherited = pooled([(e[i - 1], r[i - 1]) for e, r in zip(eng, ref)]) if i else 0.0
        assert row["inherited_err"] == pytest.approx(inherited, **tol, abs=1e-12)
        # at the outputs: the local output carried through the reference (a difference of two float32
        # computations here, whose round-off differs from float64's by up to ~1% of these small errors)
        out = [M.forward(f["x"], w, f32, start=i + 1, carry=l)[-1] if i < 2 else l for f, l in zip(feeds, local)]
        assert row["output_err"] == pytest.approx(pooled([(o, r[-1]) for o, r in zip(out, ref)]), rel=2e-2)
        assert row["nonfinite"] == 0 and row["ref_amax"] == pytest.approx(
            max(max(np.max(np.abs(r[i])), np.max(np.abs(r[i - 1] if i else f["x"]))) for f, r in zip(feeds, ref)),
            rel=1e-5)
    # the output summary is the engine's own run against the fp32 reference
    ctx = engine.create_context()
    got = [ctx.run(f)["y"] for f in feeds]
    assert report.outputs["y"]["rel_err"] == pytest.approx(pooled([(g, r[-1]) for g, r in zip(got, ref)]), **tol)
    assert report.error == report.outputs["y"]["rel_err"]
    assert report.first_nonfinite is None
    # one feed: the same number core.numerics.rel_err gives
    one = engine.accuracy(feeds[0])
    assert one.feeds == 1 and one.layers[-1]["rel_err"] == pytest.approx(rel_err(eng[0][-1], ref[0][-1]), **tol)


def test_fp32_engine_adds_only_round_off():
    report = engine_of(M.mlp(), "fp32").accuracy(M.feeds(2))
    assert all(r["precision"] == "fp32" and r["added_err"] < 1e-5 and r["rel_err"] < 1e-5 for r in report.layers)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")  # the build's timing runs
def test_first_nonfinite_names_the_layer_that_overflows():
    # the first Gemm's outputs reach ~1e6: past fp16's 65504, so fp16 storage makes them infinite
    engine = engine_of(M.mlp(scale=3e5), "fp16")
    report = engine.accuracy(M.feeds(2))
    bad = report.first_nonfinite
    assert bad is not None and bad["layer"] == engine.layers[0].name and bad["onnx_nodes"] == ["fc1", "relu1"]
    assert bad["feed"] == 0 and bad["tensor"] == engine.layers[0].outputs[0]
    first = report.layers[0]
    assert first["nonfinite"] > 0 and first["local_nonfinite"] > 0 and first["ref_nonfinite"] == 0
    assert first["rel_err"] == float("inf") and first["ref_amax"] > 65504
    assert "fc1" in report.to_text() and "first non-finite value: layer" in report.to_text()
    # bf16 has fp32's range: nothing overflows
    assert engine_of(M.mlp(scale=3e5), "bf16").accuracy(M.feeds(2)).first_nonfinite is None


def test_several_feeds_pool_and_an_iterator_works():
    engine = engine_of(M.mlp(), "fp16")
    feeds = M.feeds(3)
    both = engine.accuracy(iter(feeds))  # a one-shot iterator (a generator) is read once
    parts = [engine.accuracy(f) for f in feeds]
    assert both.feeds == 3
    # pooled: the squared errors add up over the feeds
    ref = [M.forward(f["x"], M.mlp_weights()) for f in feeds]
    for i, row in enumerate(both.layers):
        dens = [float(np.sum(r[i] ** 2)) for r in ref]
        num = sum((p.layers[i]["rel_err"] ** 2) * d for p, d in zip(parts, dens))
        assert row["rel_err"] == pytest.approx((num / sum(dens)) ** 0.5, rel=1e-6)
        assert row["max_abs_err"] == pytest.approx(max(p.layers[i]["max_abs_err"] for p in parts))


def test_impact_runs_within_a_time_budget(monkeypatch):
    engine = engine_of(M.mlp(), "fp16")
    feeds = M.feeds(2)
    full = measure(engine, feeds)
    assert full.engine["impact"] == "measured"
    roomy = measure(engine, feeds, impact=1e6)
    assert roomy.engine["impact"] == "measured"
    assert [r["output_err"] for r in roomy.layers] == pytest.approx([r["output_err"] for r in full.layers])
    # the estimate from the first feed's reference pass: a clock that says each reference call took
    # 0.5 s. Three layers in a chain, each with local outputs: the second runs again for the first,
    # the third for both, so the downstream runs would take 0.5 * (0 + 1 + 2) = 1.5 s per feed
    import workbench.runtime.accuracy as acc

    ticks = iter(np.arange(0.0, 1e4, 0.5))
    monkeypatch.setattr(acc, "_clock", lambda: float(next(ticks)))
    over = measure(engine, feeds, impact=1.4)
    assert over.engine["impact"].startswith("skipped") and "about 1.5 s per feed" in over.engine["impact"]
    assert "1.4 s budget" in over.engine["impact"]
    assert all(math.isnan(r["output_err"]) for r in over.layers) and over.sort_column == "added_err"
    # everything else is as measured without a budget
    for a, b in zip(over.layers, full.layers):
        assert a["added_err"] == pytest.approx(b["added_err"]) and a["rel_err"] == pytest.approx(b["rel_err"])
    within = measure(engine, feeds, impact=1.6)
    assert within.engine["impact"] == "measured"
    assert [r["output_err"] for r in within.layers] == pytest.approx([r["output_err"] for r in full.layers])
    assert measure(engine, feeds, impact=False).engine["impact"] == "not asked"
    for bad in (0, -1.0):
        with pytest.raises(InputError, match="time budget in seconds must be positive"):
            measure(engine, feeds, impact=bad)


def test_measuring_leaves_the_engine_as_it_was():
    engine = engine_of(M.mlp(), "fp16")
    before = [(l.name, l.precision, l.tactic, dict(l.tactic_config)) for l in engine.layers]
    feed = M.feeds(1)[0]
    out = engine.create_context().run(feed)["y"]
    engine.accuracy(feed)
    assert [(l.name, l.precision, l.tactic, dict(l.tactic_config)) for l in engine.layers] == before
    np.testing.assert_array_equal(engine.create_context().run(feed)["y"], out)


def test_report_forms():
    engine = engine_of(M.mlp(), "fp16")
    report = measure(engine, M.feeds(2))
    df = report.to_dataframe()
    assert list(df["layer"]) == [l.name for l in engine.layers]
    assert {"added_err", "inherited_err", "output_err", "rel_err", "max_abs_err", "cosine", "nonfinite",
            "onnx_nodes"} <= set(df.columns)
    d = report.to_dict()
    json.dumps(d, allow_nan=False)  # plain JSON: no NaN or infinity
    assert d["top"][0] == report.top(1)[0]["layer"] and len(d["layers"]) == len(engine.layers)
    text = report.to_text(top=2)
    assert "top contributors: " + report.top(1)[0]["layer"] in text
    # a layer the build inserted (a cast at the output, on the GPU) has no ONNX node to steer: said so
    top = report.top(1)[0]
    nodes, top["onnx_nodes"] = top["onnx_nodes"], []
    assert f"{top['layer']} (" in report.to_text(top=2) and "no ONNX node: inserted by the build" in report.to_text(top=2)
    top["onnx_nodes"] = nodes
    # without the local runs there is nothing to rank by at the outputs, and no added error
    quick = measure(engine, M.feeds(1), local=False)
    assert quick.sort_column == "added_err" and all(r["added_err"] != r["added_err"] for r in quick.layers)


@pytest.mark.parametrize("feeds,match", [
    ([], "no feeds"),
    ({"nope": np.zeros((4, 32), np.float32)}, "missing input 'x'"),
    ([{"x": np.zeros((4, 32), np.float64)}], "x"),
    ([{"x": np.zeros((5, 32), np.float32)}], "x"),
    (["not a feed"], "feed 0"),
    (np.zeros(3), "feeds must be"),
])
def test_bad_feeds_are_one_line_errors(feeds, match):
    engine = engine_of(M.mlp(), "fp16")
    with pytest.raises(InputError, match=match) as exc:
        engine.accuracy(feeds)
    assert "\n" not in str(exc.value)


def test_subgraph_layers_are_reported_as_one():
    from onnx import TensorProto, helper

    then = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"], name="then_mul")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
                             [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="else_neg")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    nodes = [helper.make_node("If", ["c"], ["r"], name="branch", then_branch=then, else_branch=other),
             helper.make_node("Exp", ["r"], ["y"], name="exp")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                           helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    engine = engine_of(model, "fp16")
    x = np.linspace(-1, 1, 4).astype(np.float32)
    report = engine.accuracy([{"x": x, "c": np.array(True)}, {"x": x, "c": np.array(False)}])
    assert len(report.layers) == len(engine.layers)
    row = next(r for r in report.layers if r["op"] == "If")
    assert row["onnx_nodes"] == ["branch"] and row["rel_err"] < 1e-2


@pytest.mark.slow
def test_mobilenetv2_fp16_report_finds_the_layers_behind_its_error():
    """Forcing the report's first-ranked layers back to fp32 removes most of the fp16 error; as many
    of its last-ranked ones remove almost none. (On the CPU fp16 is emulated: the error is the
    rounding of stored tensors, 1e-4 here, not the GPU's.)"""
    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    shapes = {"pixel_values": (1, 3, 64, 64)}
    rng = np.random.default_rng(0)
    feeds = [{"pixel_values": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(2)]

    def build(**over):
        return wb.build(net, wb.BuilderConfig(device="cpu", precision="fp16", shapes=shapes, autotune=False,
                                              layer_precisions=over))

    fp16 = build()
    report = fp16.accuracy(feeds)
    ref = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, autotune=False)).create_context()
    want = [ref.run(f)["logits"] for f in feeds]

    def error(engine):
        ctx = engine.create_context()
        return pooled([(ctx.run(f)["logits"], w) for f, w in zip(feeds, want)])

    base = error(fp16)
    assert base == pytest.approx(report.error, rel=0.05) and base > 1e-5
    ranked = [r["layer"] for r in report.ranked()]
    k = 5
    top = error(build(**{n: "fp32" for n in ranked[:k]}))
    bottom = error(build(**{n: "fp32" for n in ranked[-k:]}))
    print(f"MobileNetV2 fp16 (CPU): error {base:.3g}; top {k} of {len(ranked)} layers in fp32: {top:.3g}; "
          f"last {k}: {bottom:.3g}")
    assert top < 0.25 * base and bottom > 0.75 * base


def test_transformer_layers_keep_their_attributes():
    """ViT in fp16: the Attention layer's reference keeps its layouts (``q_layout`` is not a
    quantization attribute), and every layer stays close to the reference."""
    d = np.load(os.path.join(MODELS, "vit_legacy.npz"))
    net = wb.load_onnx(os.path.join(MODELS, "vit_legacy.onnx"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", precision="fp16", autotune=False,
                                            shapes={"pixel_values": d["pixel_values"].shape}))
    report = engine.accuracy({"pixel_values": d["pixel_values"]}, impact=False)
    att = [r for r in report.layers if r["op"] == "Attention"]
    assert att and all(r["added_err"] < 2e-2 for r in att)
    assert report.first_nonfinite is None and report.error < 2e-2


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_quantized_layers_against_the_fp32_weights(fmt):
    """An int8 / fp8 engine stores its weights quantized: with the fp32 build as ``reference`` the
    report compares against the model's own weights (its output error is the true one); without,
    against the stored weights dequantized, which leaves the weights' rounding out."""
    if fmt not in wb.supported_precisions("cpu"):
        pytest.skip(f"the CPU does not run {fmt} layers")
    from workbench.precision.calibration import Calibration

    feeds = M.feeds(4)
    engine = engine_of(M.mlp(), fmt, calibration=Calibration(feeds[:3]))
    fp32 = engine_of(M.mlp(), "fp32")
    assert all(l.precision == fmt for l in engine.layers)
    own, dequantized = engine.accuracy(feeds[3], reference=fp32), engine.accuracy(feeds[3])
    got, want = engine.create_context().run(feeds[3])["y"], fp32.create_context().run(feeds[3])["y"]
    assert own.error == pytest.approx(rel_err(got, want), rel=1e-4)
    assert dequantized.error < own.error
    fp16 = engine_of(M.mlp(), "fp16").accuracy(feeds[3])
    assert all(q["added_err"] > 3 * h["added_err"] for q, h in zip(own.layers, fp16.layers))


def test_diff_statistics_with_and_without_nonfinite_values():
    """``Diff`` pools relative error, cosine and max |error| in float64 over every pair added;
    finite arrays take a shorter path (no masks), which must give the same numbers, and non-finite
    values are counted and flag a mismatch only where the reference disagrees."""
    from workbench.runtime.accuracy_report import Diff

    rng = np.random.default_rng(5)
    pairs = []
    for n in (1000, 37):
        want = rng.standard_normal(n).astype(np.float32)
        pairs.append((want + 1e-3 * rng.standard_normal(n).astype(np.float32), want))
    d = Diff()
    for got, want in pairs:
        d.add(got, want)
    g = np.concatenate([p[0] for p in pairs]).astype(np.float64)
    w = np.concatenate([p[1] for p in pairs]).astype(np.float64)
    assert d.rel == pytest.approx(np.linalg.norm(g - w) / np.linalg.norm(w), rel=1e-12)
    assert d.cosine == pytest.approx(g @ w / (np.linalg.norm(g) * np.linalg.norm(w)), rel=1e-12)
    assert d.max_abs_err == np.max(np.abs(g - w)) and d.nonfinite == 0 and not d.mismatch
    # the same values with a NaN both sides agree on: same statistics over the finite ones
    got, want = pairs[0][0].copy(), pairs[0][1].copy()
    got[3] = want[3] = np.nan
    both = Diff()
    both.add(got, want)
    keep = np.isfinite(want)
    ref = Diff()
    ref.add(got[keep], want[keep])
    assert both.rel == pytest.approx(ref.rel, rel=1e-12) and both.nonfinite == both.ref_nonfinite == 1
    assert not both.mismatch
    got[4] = np.inf  # a value the reference has finite
    bad = Diff()
    bad.add(got, want)
    assert bad.mismatch and bad.rel == float("inf") and bad.nonfinite == 2


def test_diff_over_several_blocks_matches_one_float64_pass():
    """Large tensors are pooled block by block (``BLOCK`` elements widened at a time): the
    statistics equal one float64 pass over the whole tensor, non-finite values in any block are
    counted, and ``add`` says whether ``got`` has a NaN/Inf where the reference has a number."""
    from workbench.runtime.accuracy_report import BLOCK, Diff

    rng = np.random.default_rng(11)
    n = 3 * BLOCK + 1234  # the last block is a partial one
    want = rng.standard_normal(n).astype(np.float32)
    got = (want + 1e-2 * rng.standard_normal(n)).astype(np.float16)  # a GPU layer's fp16 output
    d = Diff()
    assert d.add(got, want) is False
    g, w = got.astype(np.float64), want.astype(np.float64)
    assert d.rel == pytest.approx(np.linalg.norm(g - w) / np.linalg.norm(w), rel=1e-9)
    assert d.cosine == pytest.approx(g @ w / (np.linalg.norm(g) * np.linalg.norm(w)), rel=1e-9)
    assert d.max_abs_err == np.max(np.abs(g - w))
    # a NaN both agree on in the second block, an Inf only ``got`` has in the last one
    got32, want2 = got.astype(np.float32), want.copy()
    got32[BLOCK + 7] = want2[BLOCK + 7] = np.nan
    agree = Diff()
    assert agree.add(got32, want2) is False and not agree.mismatch and agree.nonfinite == agree.ref_nonfinite == 1
    keep = np.isfinite(want2)
    assert agree.rel == pytest.approx(np.linalg.norm(g[keep] - w[keep]) / np.linalg.norm(w[keep]), rel=1e-9)
    got32[n - 3] = np.inf
    bad = Diff()
    assert bad.add(got32, want2) is True and bad.mismatch and bad.nonfinite == 2 and bad.rel == float("inf")
    # pairs of another shape count as a mismatch, not an error
    odd = Diff()
    assert odd.add(got32[:10], want2[:11]) is False and odd.mismatch


def test_blocked_erf_matches_libm():
    """The reference kernels' float64 erf (GELU's), evaluated in cache-sized blocks, against
    ``math.erf`` across block boundaries, both branches and the special values."""
    import math

    from workbench.kernels.reference.elementwise import ERF_BLOCK, erf_float64

    rng = np.random.default_rng(2)
    x = np.concatenate([3 * rng.standard_normal(2 * ERF_BLOCK + 5),
                        [0.0, -0.0, 1.999999, 2.0, -2.0, 6.0, -40.0, 1e30, -1e300, np.inf, -np.inf, np.nan]])
    got = erf_float64(x.reshape(-1, 1))  # any shape
    assert got.shape == (x.size, 1) and got.dtype == np.float64
    want = np.array([math.erf(v) for v in x[:-1]])
    assert np.max(np.abs(got[:-1, 0] - want)) < 1e-9 and np.isnan(got[-1, 0])
    assert np.array_equal(got[-3:-1, 0], [1.0, -1.0])
