"""workbench.onnx_backend's public contract: run_node matches onnx's ReferenceEvaluator (default and
ai.onnx.ml domains), prepare/run_model match the exporter's reference outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tests.support.exporter_models import load_io, model_path
from workbench.core.numerics import rel_err


def _run_node_and_compare(node, inputs):
    import workbench.onnx_backend as backend

    got = backend.run_node(node, inputs)
    names = [n for n in node.input if n]
    want = ReferenceEvaluator(node).run(None, dict(zip(names, inputs)))
    assert isinstance(got, tuple) and len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_run_node_relu():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    _run_node_and_compare(helper.make_node("Relu", ["x"], ["y"]), [x])


def test_run_node_add_broadcasting():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 1)).astype(np.float32), rng.standard_normal((2, 1, 4)).astype(np.float32)
    _run_node_and_compare(helper.make_node("Add", ["a", "b"], ["y"]), [a, b])


def test_run_node_conv():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    _run_node_and_compare(helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2]), [x, w, b])


def test_run_node_ml_domain():
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    _run_node_and_compare(helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.1), [x])


def test_prepare_and_run_model_match_onnxruntime_reference():
    import workbench.onnx_backend as backend

    inputs, outputs = load_io("resnet_legacy")
    model = onnx.load(model_path("resnet_legacy"))
    assert backend.supports_device("CPU") and not backend.supports_device("TPU")
    got = backend.prepare(model, "CPU").run([inputs[k] for k in inputs])
    got2 = backend.run_model(model, inputs)
    for g, g2, w in zip(got, got2, outputs.values()):
        assert np.array_equal(g, g2)
        assert rel_err(g, w) < 1e-4
