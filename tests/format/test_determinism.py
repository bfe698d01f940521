"""The same build gives a byte-identical engine file. Tactics are chosen by timing, which varies from
build to build, so "the same build" means the same model, options and timing cache (as TensorRT's
timing cache makes its builds reproducible); the first build writes the cache, the second reads it."""

from __future__ import annotations

import hashlib

import workbench as wb
from tests.support.exporter_models import load_io, model_path


def test_same_build_gives_byte_identical_engine(tmp_path):
    net = wb.load_onnx(model_path("resnet_legacy"))
    inputs, _ = load_io("resnet_legacy")
    cfg = wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()},
                           timing_cache=str(tmp_path / "timing.json"))
    wb.build(net, cfg).save(tmp_path / "a.wbe")
    wb.build(wb.load_onnx(model_path("resnet_legacy")), cfg).save(tmp_path / "b.wbe")
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.wbe", "b.wbe")]
    assert digest[0] == digest[1]


def test_timing_cache_replays_the_cpu_choices(tmp_path):
    """A warm CPU build takes every timed layer from the cache: same tactics, same tables, no timing."""
    net = wb.load_onnx(model_path("resnet_legacy"))
    inputs, _ = load_io("resnet_legacy")
    cfg = wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()},
                           timing_cache=str(tmp_path / "timing.json"))
    cold = wb.build(net, cfg)
    warm = wb.build(net, cfg)
    assert cold.build_stats["timing_cache"]["misses"] > 0
    assert warm.build_stats["timing_cache"]["misses"] == 0
    assert warm.build_stats["timing_cache"]["hits"] == cold.build_stats["timing_cache"]["misses"]
    assert [(l.tactic, l.tactic_config, l.tactic_table) for l in warm.layers] == \
        [(l.tactic, l.tactic_config, l.tactic_table) for l in cold.layers]
