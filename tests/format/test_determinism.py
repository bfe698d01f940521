"""The same build gives a byte-identical engine file."""

from __future__ import annotations

import hashlib

import workbench as wb
from tests.support.exporter_models import load_io, model_path


def test_same_build_gives_byte_identical_engine(tmp_path):
    net = wb.load_onnx(model_path("resnet_legacy"))
    inputs, _ = load_io("resnet_legacy")
    cfg = wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in inputs.items()})
    wb.build(net, cfg).save(tmp_path / "a.wbe")
    wb.build(wb.load_onnx(model_path("resnet_legacy")), cfg).save(tmp_path / "b.wbe")
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.wbe", "b.wbe")]
    assert digest[0] == digest[1]
