"""Profiling an engine without feeds (random inputs of the engine's shapes)."""

from __future__ import annotations

import workbench as wb
from tests.support.exporter_models import load_io, model_path


def test_profile_without_feeds_on_bert():
    inputs, _ = load_io("bert_legacy")
    engine = wb.build(wb.load_onnx(model_path("bert_legacy")),
                      wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()}))
    df = engine.create_context().profile(runs=1)
    assert len(df) == len(engine.layers)
