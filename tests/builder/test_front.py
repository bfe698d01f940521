"""The front half of a build shared by the builds of one network (workbench.builder.front): a
build from a ``FrontCache`` makes the same engine file as one without it, whatever it asks for
after lowering (precision, calibration, per-layer precisions); a second build with other shapes
or passes makes its own front; the budgeted search and the int8 / fp8 fallback step make one
front for all their builds."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

import workbench as wb
from workbench.builder import builder as B
from workbench.builder import mixed
from workbench.builder.front import FrontCache
from workbench.precision.calibration import Calibration
from tests.precision import accuracy_models as M
from tests.precision.test_qdq import _modelopt_style
from tests.support.paths import MODELS


def _configs(net, shapes):
    """Builds that differ after lowering (tactics by rule, not by timing: same build, same bytes)."""
    cal = Calibration(_feeds_of(net, shapes))
    # (one base, as the search and the fallback step make theirs: the default memory budget is
    # taken from the memory free when a config is made)
    base = wb.BuilderConfig(device="cpu", shapes=shapes, autotune=False)
    yield base
    yield replace(base, precision="fp16")
    yield replace(base, precision="int8", calibration=cal)
    yield replace(base, precision="fp8", calibration=cal)
    first = next(l.name for l in wb.build(net, base).layers if l.op != "Cast")
    yield replace(base, precision="int8", calibration=cal, layer_precisions={first: "fp16"})


def _feeds_of(net, shapes):
    out = []
    for i in range(3):
        rng = np.random.default_rng(i)
        feed = {}
        for s in net.inputs:
            shape = shapes.get(s.name) or tuple(d if isinstance(d, int) else 2 for d in s.shape)
            if "int" in str(s.dtype):  # token ids; a mask and token types of ones
                feed[s.name] = rng.integers(0, 50, shape) if s.name == "input_ids" else np.ones(shape, np.int64)
            else:
                feed[s.name] = rng.standard_normal(shape).astype(np.float32)
        out.append(feed)
    return out


CASES = {
    "bert": (os.path.join(MODELS, "bert_legacy.onnx"),
             {"input_ids": (2, 8), "attention_mask": (2, 8), "token_type_ids": (2, 8)}),
    "resnet": (os.path.join(MODELS, "resnet_legacy.onnx"), {}),
    "qdq fp8": (_modelopt_style("fp8"), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_build_from_the_cache_makes_the_same_engine_file(case, tmp_path):
    model, shapes = CASES[case]
    net = wb.load_onnx(model)
    cache = FrontCache()
    for k, cfg in enumerate(_configs(net, shapes)):
        fresh = wb.build(net, cfg)
        cached = B.Builder(cfg, front=cache).build(net)
        assert (k > 0) == ("front" in cached.build_stats) and "front" not in fresh.build_stats
        a, b = fresh.save(tmp_path / f"fresh{k}.wbe"), cached.save(tmp_path / f"cached{k}.wbe")
        assert a["sha256"] == b["sha256"], (case, cfg.precision)
        assert cached.reports["fusions"] == fresh.reports["fusions"]
        assert cached.reports["nodes"] == fresh.reports["nodes"]
    assert cache.made == 1


def test_other_shapes_or_passes_make_their_own_front():
    net = wb.load_onnx(os.path.join(MODELS, "bert_legacy.onnx"))
    shapes = {"input_ids": (2, 8), "attention_mask": (2, 8), "token_type_ids": (2, 8)}
    cache = FrontCache()
    made = []
    real = B._front

    def counted(*args):
        made.append(1)
        return real(*args)

    B._front, saved = counted, B._front
    try:
        base = wb.BuilderConfig(device="cpu", shapes=shapes)
        B.Builder(base, front=cache).build(net)
        B.Builder(replace(base, precision="fp16"), front=cache).build(net)
        assert len(made) == 1
        e = B.Builder(replace(base, shapes={k: (4, 8) for k in shapes}), front=cache).build(net)
        assert len(made) == 2 and tuple(e.inputs[0].shape) == (4, 8)
        e = B.Builder(replace(base, optimize=False), front=cache).build(net)
        assert len(made) == 3 and not any(r["status"] == "fired" for r in e.reports["fusions"])
        B.Builder(replace(base, disable=["fuse_attention"]), front=cache).build(net)
        B.Builder(replace(base, memory_budget=base.memory_budget // 2), front=cache).build(net)
        assert len(made) == 5 and cache.made == 5
    finally:
        B._front = saved


def test_a_build_changing_its_copy_leaves_the_cached_front_alone():
    net = wb.load_onnx(M.mlp())
    cfg = wb.BuilderConfig(device="cpu")
    cache = FrontCache()
    progress = B.BuildProgress(False)
    make = lambda: B._front(net, cfg, "cpu", progress)  # noqa: E731
    first, reused = cache.get(cfg, "cpu", make)
    assert not reused
    want = {n: np.array(v) for n, v in first.plan.constants.items()}
    orig = dict(first.plan.constants)
    layers = [l.name for l in first.plan.layers]
    first.plan.constants["extra"] = np.ones(3, np.float32)  # what the later stages of a build do to their copy
    for name, value in list(first.plan.constants.items()):
        if value.flags.writeable:
            value[...] = 0
        else:
            first.plan.constants[name] = np.zeros_like(value)
    first.plan.layers[0].precision = "fp16"
    first.plan.layers[0].attrs["touched"] = True
    first.plan.layers.pop()
    first.ctx.log.clear()
    second, reused = cache.get(cfg, "cpu", make)
    assert reused and cache.made == 1
    assert [l.name for l in second.plan.layers] == layers and second.ctx.log
    assert second.plan.layers[0].precision != "fp16" and "touched" not in second.plan.layers[0].attrs
    for name, value in want.items():
        np.testing.assert_array_equal(second.plan.constants[name], value)
        # the model's weights (read-only views) are shared, anything writable is a copy
        same = second.plan.constants[name] is orig[name]
        assert same == (not orig[name].flags.writeable)
    assert any(v is orig[n] for n, v in second.plan.constants.items()) and "extra" not in second.plan.constants


def test_the_search_makes_one_front_for_all_its_builds(monkeypatch):
    """On the GPU every candidate is built (the CPU stands in with ``EMULATED`` emptied): the passes
    run once for the search, not once per build."""
    made = []
    real = B._front

    def counted(*args):
        made.append(1)
        return real(*args)

    monkeypatch.setattr(mixed, "EMULATED", ())
    monkeypatch.setattr(B, "_front", counted)
    net = wb.load_onnx(M.mlp())
    engine = wb.build(net, wb.BuilderConfig(device="cpu", precision="best", accuracy_budget=4.5e-4,
                                            calibration=Calibration(M.feeds(8))))
    rep = engine.reports["mixed_precision"]
    assert rep["builds"] > 4 and len(made) == 1
    assert engine.build_stats.get("front")


def test_the_fallback_step_makes_one_front_for_its_builds(monkeypatch):
    """An int8 / fp8 build on the GPU compares with fp16 by more builds (the CPU stands in, the step
    made to apply and every layer made faster at fp16): they share the plan the first one lowered."""
    from workbench.builder import fallback

    made = []
    real = B._front

    def counted(*args):
        made.append(1)
        return real(*args)

    def faster_at_fp16(layers, half, precision):
        return [{"layer": l.name, f"{precision}_ms": 2.0, "fp16_ms": 1.0} for l in layers]

    monkeypatch.setattr(B, "_front", counted)
    monkeypatch.setattr(fallback, "applies", lambda cfg, device: cfg.precision == "int8" and not cfg.strict_precision)
    monkeypatch.setattr(fallback, "slower_layers", faster_at_fp16)
    monkeypatch.setattr(fallback, "engine_latency", lambda e: (10.0 - sum(l.precision == "fp16" for l in e.layers),
                                                                "made-up"))
    engine = wb.build(wb.load_onnx(M.mlp()), wb.BuilderConfig(device="cpu", precision="int8",
                                                              calibration=Calibration(M.feeds(4))))
    rep = engine.reports["precision_fallback"]
    assert rep["kept"] == "with_fallback" and len(rep["tries"]) == 1  # placed, fp16, one try: 3 builds
    assert len(made) == 1 and engine.build_stats.get("front")
