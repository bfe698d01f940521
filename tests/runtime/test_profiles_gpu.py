"""GPU engines built for a batch range: one static plan per bucket, each captured into its own CUDA
graphs when the context is made, all in one shared arena; a run pads its batch up to the next bucket
and returns unpadded outputs equal to a static engine's rows; shapes outside the range are refused;
IO binding per bucket; the file round trip. Marked ``gpu``: skipped where there is no CUDA GPU."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from tests.runtime.test_profiles import _onnxruntime
from tests.support.exporter_models import model_path
from workbench.core.numerics import rel_err
from workbench.runtime.buckets import ShapeRangeError

pytestmark = pytest.mark.gpu
NAME = "bert_dynamo"
SEQ = 16


def _feeds(net, n: int, rng, seq: int = SEQ) -> dict:
    feeds = {}
    for s in net.inputs:
        if s.name == "attention_mask":
            mask = np.ones((n, seq), np.int64)
            mask[1:, seq - 4:] = 0
            feeds[s.name] = mask
        elif s.name == "token_type_ids":
            feeds[s.name] = (np.arange(seq)[None, :] >= seq // 2).astype(np.int64).repeat(n, 0)
        else:
            feeds[s.name] = rng.integers(0, 100, (n, seq)).astype(np.int64)
    return feeds


def _padded(feeds: dict, batch: int) -> dict:
    return {k: np.concatenate([v, np.repeat(v[-1:], batch - len(v), 0)]) for k, v in feeds.items()}


@pytest.fixture(scope="module")
def built():
    net = wb.load_onnx(model_path(NAME))
    profile = {s.name: ((1, SEQ), (2, SEQ), (4, SEQ)) for s in net.inputs}
    bucketed = wb.build(net, wb.BuilderConfig(device="gpu", profiles=[profile]))
    static4 = wb.build(net, wb.BuilderConfig(device="gpu", shapes={s.name: (4, SEQ) for s in net.inputs},
                                             autotune=False))
    return net, bucketed, static4


def test_buckets_are_built_and_captured_largest_first_in_one_arena(built):
    _, engine, _ = built
    assert [b.batch for b in engine.plan.buckets] == [4, 2, 1]  # vLLM sizes up to the max, largest first
    assert all(r["build_ms"] > 0 for r in engine.build_stats["buckets"])
    assert all(any(l.tactic_table for l in b.plan.layers) for b in engine.plan.buckets)  # tuned per bucket
    ctx = engine.create_context()
    assert len(ctx.subs) == 3 and all(sub._segments is not None for sub in ctx.subs)  # captured when made
    arena = ctx.shared.arena
    assert arena.nbytes == max(b.plan.arena.bytes for b in engine.plan.buckets)
    assert all(sub.buffers["__arena__"] is arena for sub in ctx.subs)


def test_padded_runs_are_unpadded_and_equal_a_static_engines_rows(built):
    import cupy as cp

    net, engine, static4 = built
    ctx = engine.create_context()
    ref = _onnxruntime(NAME)
    rng = np.random.default_rng(0)
    for n in (1, 3, 4):
        feeds = _feeds(net, n, rng)
        ctx.shared.arena.fill(0xFF)  # NaN everywhere: a row the run does not write cannot pass
        cp.cuda.Device().synchronize()  # the fill ran on the default stream, the context runs on its own
        got = ctx.run(feeds)
        want = ref(feeds)
        for key, w in want.items():
            assert got[key].shape == w.shape, (n, key)
            assert rel_err(got[key], w) < 1e-3, (n, key, rel_err(got[key], w))
        dev = ctx.run({k: cp.asarray(v) for k, v in feeds.items()})  # CuPy in, CuPy out
        again = ctx.run({k: cp.asarray(v) for k, v in feeds.items()})  # the remembered route
        for key in want:
            assert isinstance(dev[key], cp.ndarray) and dev[key].shape == want[key].shape
            assert rel_err(cp.asnumpy(again[key]), got[key]) < 1e-6
        eager = ctx.run_eager(feeds)
        for key in want:
            assert rel_err(eager[key], got[key]) < 1e-5
        if n == 3:  # the rows of a static batch-4 engine fed the same padding
            rows = static4.create_context().run(_padded(feeds, 4))
            for key in want:
                assert rel_err(got[key], rows[key][:3]) < 1e-4, key


def test_out_of_range_is_refused(built):
    net, engine, _ = built
    ctx = engine.create_context()
    rng = np.random.default_rng(1)
    with pytest.raises(ShapeRangeError, match=r"'input_ids' has shape \[5, 16\], outside profile 0's range \[1, 16\]\.\.\[4, 16\]"):
        ctx.run(_feeds(net, 5, rng))
    with pytest.raises(ShapeRangeError, match=r"\[2, 12\], outside"):
        ctx.run(_feeds(net, 2, rng, seq=12))
    bad = _feeds(net, 2, rng)
    bad["input_ids"] = bad["input_ids"][None]
    with pytest.raises(ShapeRangeError, match="rank 3, expected rank 2"):
        ctx.run(bad)


def test_io_binding_per_bucket(built):
    import cupy as cp

    net, engine, _ = built
    ctx = engine.create_context()
    feeds = _feeds(net, 3, np.random.default_rng(2))
    want = ctx.run(feeds)
    i = ctx.select(feeds)
    assert engine.plan.buckets[i].batch == 4 and ctx.current == i
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        for name, v in _padded(feeds, 4).items():
            ctx.input_buffer(name, i)[...] = cp.asarray(v)
        ctx.execute(s, bucket=i)
        out = {k: ctx.output_buffer(k, i)[:3].copy() for k in want}
    s.synchronize()
    for k in want:
        assert rel_err(cp.asnumpy(out[k]), want[k]) < 1e-5
    with pytest.raises(IndexError):
        ctx.input_buffer("input_ids", 9)


def test_file_round_trip_and_profile(built, tmp_path):
    net, engine, _ = built
    engine.save(tmp_path / "b.wbe")
    loaded = wb.Engine.load(tmp_path / "b.wbe")
    assert loaded.plan.profiles == engine.plan.profiles and len(loaded.plan.buckets) == 3
    feeds = _feeds(net, 3, np.random.default_rng(3))
    a, b = loaded.create_context().run(feeds), engine.create_context().run(feeds)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    df = loaded.create_context().profile(feeds, runs=2)
    assert df.attrs["bucket"]["index"] == 0 and df.attrs["padded_from"] == 3 and len(df) > 0


def test_latency_vs_batch_on_the_gpu_runs_each_batch_in_its_bucket(built):
    """``wb.latency_vs_batch`` on a bucketed GPU engine: the defaults are the buckets, a batch between
    two buckets runs padded in the larger one (the context's own choice), and the timer is the
    replayed graph."""
    _, engine, _ = built
    df = wb.latency_vs_batch(engine, runs=3)
    assert list(df["batch"]) == [1, 2, 4] and list(df["padded_to"]) == [1, 2, 4]
    df = wb.latency_vs_batch(engine, [3], runs=3)
    ctx = engine.create_context()
    assert list(df["padded_to"]) == [4] and int(df["bucket"][0]) == ctx.select({s.name: (3, SEQ) for s in engine.inputs})
    assert (df["median_ms"] > 0).all() and df.attrs["device"] == "gpu" and "CUDA graph" in df.attrs["timer"]
