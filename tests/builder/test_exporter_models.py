"""Exporter-produced BERT / GPT-2 / Llama / ViT / ResNet / MobileNetV2 / ConvNeXt models (torch.onnx
legacy and dynamo exporters) match onnxruntime within relative error 1e-4 — through the CLI exactly
as a user runs it, through the API at the saved shapes, and at a second shape."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import workbench as wb
from tests.support.exporter_models import entry, load_io, model_names, model_path, shapes_of
from workbench.core.numerics import rel_err

NAMES = model_names()


@pytest.mark.parametrize("name", NAMES)
def test_cli_build_run_matches_onnxruntime(name, tmp_path):
    inputs, expected = load_io(name)
    np.savez(tmp_path / "in.npz", **inputs)
    shapes = ",".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in inputs.items())
    engine = tmp_path / "m.wbe"
    cmd = [sys.executable, "-m", "workbench.cli"]
    proc = subprocess.run(cmd + ["build", model_path(name), "-o", engine, "--device", "cpu", "--precision", "fp32",
                                 "--shapes", shapes], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(cmd + ["run", engine, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as out:
        for key, ref in expected.items():
            assert out[key].dtype == ref.dtype and out[key].shape == ref.shape, key
            assert rel_err(out[key], ref) < 1e-4, (key, rel_err(out[key], ref))


@pytest.mark.parametrize("name", NAMES)
def test_dynamic_shapes_and_unoptimized_agree(name):
    """Built without --shapes (symbolic dims kept), the engine runs the saved inputs and a second
    shape; the unoptimized build agrees with the optimized one."""
    net = wb.load_onnx(model_path(name))
    inputs, expected = load_io(name)
    dynamic = wb.build(net, wb.BuilderConfig(device="cpu"))
    outs = dynamic.create_context().run(inputs)
    for key, ref in expected.items():
        assert rel_err(outs[key], ref) < 1e-4, key
    plain = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False, shapes=shapes_of(inputs)))
    plain_outs = plain.create_context().run(inputs)
    for key in expected:
        assert rel_err(outs[key], plain_outs[key]) < 1e-5, key
    second = {i["name"]: i["second_shape"] for i in entry(name)["inputs"] if "second_shape" in i}
    if second:
        rng = np.random.default_rng(7)
        feeds = {}
        for k, v in inputs.items():
            shape = tuple(second.get(k, v.shape))
            if v.dtype.kind in "iu":
                feeds[k] = rng.integers(0, max(int(v.max()), 1) + 1, size=shape).astype(v.dtype)
            else:
                feeds[k] = rng.standard_normal(shape).astype(v.dtype)
        if "attention_mask" in feeds:
            feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
        got = dynamic.create_context().run(feeds)
        ort = pytest.importorskip("onnxruntime")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model_path(name), so, providers=["CPUExecutionProvider"])
        ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for key in expected:
            assert rel_err(got[key], ref[key]) < 1e-4, (key, "second shape")
