"""Engines built for shape ranges on the CPU: exporter models run at shapes across their range and
match onnxruntime; shapes outside it (or of the wrong rank) get one-line errors naming the input,
its shape and the range; several profiles and ``set_profile``; the engine file keeps the ranges;
CPU buckets pad the batch and match a static engine's rows, and specialise the other dims."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from tests.support.exporter_models import model_path
from workbench.core.numerics import rel_err
from workbench.runtime.buckets import ShapeRangeError, describe_ranges

TEXT = ["bert_legacy", "bert_dynamo", "gpt2_legacy", "gpt2_dynamo", "llama_legacy", "llama_dynamo"]
IMAGE = ["vit_legacy", "vit_dynamo"]
TEXT_RANGE = ((1, 4), (2, 16), (4, 32))  # batch 1..4, sequence 4..32 (the models' positions stop at 64)
TEXT_SHAPES = [(1, 4), (2, 16), (3, 7), (4, 32), (2, 31), (1, 1 + 4)]
IMAGE_RANGE = ((1, 3, 32, 32), (2, 3, 32, 32), (5, 3, 32, 32))


def _profile(net, r) -> dict:
    return {s.name: r for s in net.inputs}


def _feeds(net, shape, rng) -> dict:
    feeds = {}
    for s in net.inputs:
        if s.name == "pixel_values":
            feeds[s.name] = rng.standard_normal(shape).astype(np.float32)
        elif s.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            mask[1:, shape[1] - shape[1] // 3:] = 0  # later rows padded at the end, as the exporter's data
            feeds[s.name] = mask
        elif s.name == "token_type_ids":
            feeds[s.name] = (np.arange(shape[1])[None, :] >= shape[1] // 2).astype(np.int64).repeat(shape[0], 0)
        else:
            feeds[s.name] = rng.integers(0, 100, shape).astype(np.int64)
    return feeds


def _onnxruntime(name: str):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_path(name), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(None, feeds)))


@pytest.mark.parametrize("name", TEXT + IMAGE)
def test_exporter_model_over_its_range_matches_onnxruntime(name):
    net = wb.load_onnx(model_path(name))
    image = name in IMAGE
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[_profile(net, IMAGE_RANGE if image else TEXT_RANGE)]))
    assert engine.plan.profiles and not engine.plan.buckets
    mem = engine.reports["memory"]
    assert mem["arena_bytes_at_max"] > 0 and mem["peak_live_bytes_at_max"] > 0  # the arena a run at max needs
    ref = _onnxruntime(name)
    ctx = engine.create_context()
    rng = np.random.default_rng(3)
    shapes = [(b, 3, 32, 32) for b in (1, 2, 3, 4, 5)] if image else TEXT_SHAPES
    for shape in shapes:
        feeds = _feeds(net, shape, rng)
        got, want = ctx.run(feeds), ref(feeds)
        for key, w in want.items():
            assert got[key].shape == w.shape, (name, shape, key)
            assert rel_err(got[key], w) < 1e-4, (name, shape, key, rel_err(got[key], w))


def _bert(**cfg):
    net = wb.load_onnx(model_path("bert_dynamo"))
    return net, wb.build(net, wb.BuilderConfig(device="cpu", **cfg))


def test_out_of_range_and_wrong_rank_name_input_shape_and_range():
    net, engine = _bert(profiles=[_profile(wb.load_onnx(model_path("bert_dynamo")), TEXT_RANGE)])
    ctx = engine.create_context()
    rng = np.random.default_rng(0)
    cases = [((5, 16), "[5, 16]"), ((2, 33), "[2, 33]"), ((2, 3), "[2, 3]")]
    for shape, text in cases:
        with pytest.raises(ShapeRangeError) as e:
            ctx.run(_feeds(net, shape, rng))
        msg = str(e.value)
        assert "\n" not in msg and "'input_ids'" in msg and text in msg and "[1, 4]..[4, 32]" in msg, msg
    bad = _feeds(net, (2, 16), rng)
    bad["input_ids"] = bad["input_ids"][None]
    with pytest.raises(wb.InputError, match=r"'input_ids' has shape \[1, 2, 16\] \(rank 3, expected rank 2\)"):
        ctx.run(bad)
    # the errors are ShapeErrors too, and a run inside the range still works afterwards
    with pytest.raises(wb.ShapeError):
        ctx.run(_feeds(net, (9, 9), rng))
    assert ctx.run(_feeds(net, (4, 4), rng))["last_hidden_state"].shape == (4, 4, 32)


def test_several_profiles_and_set_profile():
    net = wb.load_onnx(model_path("bert_dynamo"))
    small = _profile(net, ((1, 4), (1, 8), (2, 16)))
    large = _profile(net, ((3, 17), (4, 24), (8, 32)))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[small, large]))
    ctx = engine.create_context()
    rng = np.random.default_rng(1)
    ref = _onnxruntime("bert_dynamo")
    for shape in [(1, 8), (2, 16), (4, 20), (8, 32)]:
        feeds = _feeds(net, shape, rng)
        assert rel_err(ctx.run(feeds)["last_hidden_state"], ref(feeds)["last_hidden_state"]) < 1e-4
    with pytest.raises(ShapeRangeError, match=r"no profile holds.*profile 0 \[1, 4\]\.\.\[2, 16\].*profile 1 \[3, 17\]"):
        ctx.run(_feeds(net, (1, 20), rng))
    ctx.set_profile(0)
    assert ctx.active_profile == 0
    with pytest.raises(ShapeRangeError, match=r"outside profile 0's range .*\(set_profile\)"):
        ctx.run(_feeds(net, (4, 20), rng))
    ctx.set_profile(None)
    assert ctx.run(_feeds(net, (4, 20), rng))["pooler_output"].shape == (4, 32)
    with pytest.raises(wb.WorkbenchError, match=r"set_profile\(2\).*profiles 0\.\.1"):
        ctx.set_profile(2)


def test_engine_file_keeps_profiles_and_old_engines_load(tmp_path):
    net, engine = _bert(profiles=[_profile(wb.load_onnx(model_path("bert_dynamo")), TEXT_RANGE)])
    engine.save(tmp_path / "r.wbe")
    loaded = wb.Engine.load(tmp_path / "r.wbe")
    assert loaded.plan.profiles == engine.plan.profiles
    assert describe_ranges(loaded)["profiles"][0]["arena_bytes_at_max"] == engine.reports["memory"]["arena_bytes_at_max"]
    assert loaded.build_info["profiles"] == engine.plan.profiles
    rng = np.random.default_rng(2)
    feeds = _feeds(net, (3, 9), rng)
    np.testing.assert_array_equal(loaded.create_context().run(feeds)["pooler_output"],
                                  engine.create_context().run(feeds)["pooler_output"])
    with pytest.raises(ShapeRangeError):
        loaded.create_context().run(_feeds(net, (5, 9), rng))
    # an engine without ranges writes no profiles field: its file is what it was before ranges existed
    _, static = _bert(shapes={s.name: (2, 16) for s in net.inputs})
    header, _ = static.to_header()
    assert "profiles" not in header["plan"] and "buckets" not in header["plan"]
    static.save(tmp_path / "s.wbe")
    assert wb.Engine.load(tmp_path / "s.wbe").plan.profiles == []


def _with_padding(feeds: dict, batch: int) -> dict:
    return {k: np.concatenate([v, np.repeat(v[-1:], batch - len(v), 0)]) for k, v in feeds.items()}


def test_cpu_buckets_pad_the_batch_and_equal_a_static_engines_rows(tmp_path):
    net = wb.load_onnx(model_path("bert_dynamo"))
    profile = _profile(net, ((1, 16), (2, 16), (8, 16)))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[profile], buckets=[1, 2, 4, 8], autotune=False))
    assert [b.batch for b in engine.plan.buckets] == [8, 4, 2, 1]  # largest first
    assert [r["shapes"]["input_ids"] for r in engine.build_stats["buckets"]] == [[8, 16], [4, 16], [2, 16], [1, 16]]
    assert all(r["build_ms"] > 0 for r in engine.build_stats["buckets"])
    static4 = wb.build(net, wb.BuilderConfig(device="cpu", shapes={s.name: (4, 16) for s in net.inputs}, autotune=False))
    engine.save(tmp_path / "b.wbe")
    ctx = wb.Engine.load(tmp_path / "b.wbe").create_context()
    assert ctx.select({"input_ids": (3, 16), "attention_mask": (3, 16), "token_type_ids": (3, 16)}) == 1
    rng = np.random.default_rng(4)
    ref = _onnxruntime("bert_dynamo")
    for n in (1, 3, 5, 8):
        feeds = _feeds(net, (n, 16), rng)
        got = ctx.run(feeds)
        want = ref(feeds)
        for key in want:
            assert got[key].shape == want[key].shape and rel_err(got[key], want[key]) < 1e-4, (n, key)
        if n == 3:  # the rows of a static batch-4 engine fed the same padding
            rows = static4.create_context().run(_with_padding(feeds, 4))
            for key in want:
                assert rel_err(got[key], rows[key][:3]) < 1e-6, key
    with pytest.raises(ShapeRangeError, match=r"'input_ids' has shape \[9, 16\], outside"):
        ctx.run(_feeds(net, (9, 16), rng))
    df = ctx.profile(_feeds(net, (3, 16), rng), runs=2)
    assert df.attrs["bucket"]["index"] == 1 and df.attrs["padded_from"] == 3 and len(df) == len(engine.plan.buckets[1].plan.layers)


def test_cpu_buckets_specialise_other_dims():
    net = wb.load_onnx(model_path("bert_dynamo"))
    profile = _profile(net, ((1, 8), (2, 16), (2, 16)))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[profile], buckets={"batch": [2], "sequence": [8, 16]},
                                            autotune=False))
    assert sorted(tuple(b.shapes["input_ids"]) for b in engine.plan.buckets) == [(2, 8), (2, 16)]
    ctx = engine.create_context()
    rng = np.random.default_rng(5)
    ref = _onnxruntime("bert_dynamo")
    for shape in [(1, 8), (2, 16), (1, 16)]:
        feeds = _feeds(net, shape, rng)
        assert rel_err(ctx.run(feeds)["last_hidden_state"], ref(feeds)["last_hidden_state"]) < 1e-4
    with pytest.raises(ShapeRangeError, match=r"\[2, 12\].*sequence \(axis 1\) = only 8, 16.*not padded"):
        ctx.run(_feeds(net, (2, 12), rng))


def test_no_padding_when_outputs_do_not_keep_the_batch():
    """A batch that an output sums over cannot be padded: the buckets then take their sizes only."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0, name="sum")
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [axes]), opset_imports=[helper.make_opsetid("", 17)])
    engine = wb.build(wb.load_onnx(model.SerializeToString()),
                      wb.BuilderConfig(device="cpu", profiles=[{"x": ((1, 4), (2, 4), (4, 4))}], buckets=[1, 2, 4]))
    assert all(b.batch is None for b in engine.plan.buckets)
    ctx = engine.create_context()
    x2 = np.random.default_rng(6).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(ctx.run({"x": x2})["y"], x2.sum(0), rtol=1e-6)
    with pytest.raises(ShapeRangeError, match=r"batch \(axis 0\) = only 1, 2, 4.*pads no dim"):
        ctx.run({"x": np.ones((3, 4), np.float32)})


def test_profile_without_feeds_uses_the_opt_shapes():
    net = wb.load_onnx(model_path("bert_dynamo"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[_profile(net, ((1, 4), (3, 8), (4, 16)))]))
    df = engine.create_context().profile(runs=1)
    rows = {r.layer: r for r in df.itertuples(index=False)}
    assert len(rows) == len(engine.layers) and df.attrs["end_to_end_ms"] > 0
