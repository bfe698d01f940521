"""Contexts and threads: one context per thread matches serial runs; one context shared by threads
serializes its runs (on a 3-node model, and on BERT whose layers share a memory arena)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import workbench as wb
from tests.support.cli import small_model
from tests.support.exporter_models import load_io, model_path


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    small_model(path)
    return wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu", shapes={"x": (2, 4)}))


def test_threads_with_own_contexts_match_serial():
    inputs, _ = load_io("bert_legacy")
    engine = wb.build(wb.load_onnx(model_path("bert_legacy")), wb.BuilderConfig(device="cpu"))
    rng = np.random.default_rng(3)
    feeds = []
    for _ in range(8):
        f = dict(inputs)
        f["input_ids"] = rng.integers(0, 100, size=inputs["input_ids"].shape).astype(np.int64)
        feeds.append(f)
    serial = [engine.create_context().run(f) for f in feeds]
    local = threading.local()

    def work(i):
        if not hasattr(local, "ctx"):
            local.ctx = engine.create_context()
        return local.ctx.run(feeds[i])

    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(work, range(8)))
    for a, b in zip(serial, parallel):
        for k in a:
            assert np.array_equal(a[k], b[k])


def test_one_context_shared_by_threads_is_serialized(engine):
    ctx = engine.create_context()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(32)]
    expected = [engine.create_context().run({"x": x})["y"] for x in xs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda x: ctx.run({"x": x})["y"], xs))
    for a, b in zip(expected, got):
        assert np.array_equal(a, b)


def test_one_context_shared_by_threads_on_a_real_model():
    """test_one_context_shared_by_threads_is_serialized checks this on a 3-node model whose runs are too
    short to overlap; BERT's 27 layers share a memory arena, so unserialized runs would overwrite each
    other's buffers."""
    inputs, _ = load_io("bert_legacy")
    engine = wb.build(wb.load_onnx(model_path("bert_legacy")),
                      wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()}))
    rng = np.random.default_rng(7)
    feeds = []
    for _ in range(16):
        f = dict(inputs)
        f["input_ids"] = rng.integers(0, 100, size=inputs["input_ids"].shape).astype(np.int64)
        feeds.append(f)
    expected = [engine.create_context().run(f) for f in feeds]
    assert not np.array_equal(expected[0]["last_hidden_state"], expected[1]["last_hidden_state"])
    shared = engine.create_context()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(shared.run, feeds * 2))
    for want, have in zip(expected * 2, got):
        for k in want:
            assert np.array_equal(want[k], have[k]), k
