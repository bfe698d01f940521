"""The plan carries everything the runtime needs: reports are for people (an engine stripped of them
runs the same), CPU kernels are bound by the recorded tactic name through the CPU tactic source,
and what a plan refers to must be in the file."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from tests.support.cli import small_model
from workbench.core.plan import Layer
from workbench.core.precisions import STORAGE
from workbench.dtypes import to_numpy
from workbench.errors import EngineCompatibilityError, EngineFormatError
from workbench.kernels import cpu
from workbench.kernels.reference import tactics


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The small MLP built for the CPU at x: 2x4, its Relu layer emulated in fp16."""
    path = tmp_path_factory.mktemp("plan") / "m.onnx"
    small_model(path)
    return wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu", shapes={"x": (2, 4)},
                                                         layer_precisions={"relu": "fp16"}))


def _reloaded(engine, tmp_path, name="e.wbe"):
    engine.save(tmp_path / name)
    return wb.Engine.load(tmp_path / name)


def _without_reports(engine, tmp_path):
    """``engine`` saved, reloaded, stripped of every report, build record and tactic table, saved and
    reloaded again."""
    stripped = _reloaded(engine, tmp_path)
    stripped.reports = {}
    stripped.build_info = {}
    for layer in stripped.layers:
        layer.tactic_table = []
    return _reloaded(stripped, tmp_path, "stripped.wbe")


def test_engine_without_reports_runs_the_same(engine, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    want = engine.create_context().run({"x": x})
    again = _without_reports(engine, tmp_path)
    assert again.reports == {} and all(not layer.tactic_table for layer in again.layers)
    got = again.create_context().run({"x": x})
    assert set(got) == set(want)
    for name in want:
        assert np.array_equal(got[name], want[name])


def test_cpu_layers_are_bound_by_their_recorded_tactic(engine):
    names = {layer.tactic for layer in engine.layers}
    assert names <= set(cpu.BY_NAME) and "fp16" in {layer.precision for layer in engine.layers}
    for layer in engine.layers:  # each recorded tactic runs its layer at the layer's precision
        assert cpu.BY_NAME[layer.tactic].supports(layer, layer.precision, engine.plan.constants) is None
    assert set(tactics.BY_NAME) <= set(cpu.BY_NAME)  # the CPU source offers the reference tactics too


def test_unknown_cpu_tactic_is_refused_when_the_context_is_made(engine, tmp_path):
    loaded = _reloaded(engine, tmp_path)
    layer = loaded.layers[0]
    layer.tactic = "cpu.vectorized"
    again = _reloaded(loaded, tmp_path, "unknown.wbe")
    with pytest.raises(EngineCompatibilityError) as info:
        again.create_context()
    msg = str(info.value)
    assert repr(layer.name) in msg and "'cpu.vectorized'" in msg and "rebuild" in msg


def test_binaries_naming_a_missing_blob_are_refused_at_load(engine, tmp_path):
    loaded = _reloaded(engine, tmp_path)
    loaded.layers[0].binaries = {"gemm_kernel": "cubin/0123"}
    loaded.save(tmp_path / "missing.wbe")
    with pytest.raises(EngineFormatError, match="'cubin/0123'.*'gemm_kernel'"):
        wb.Engine.load(tmp_path / "missing.wbe")
    loaded.blobs["cubin/0123"] = b"\x7fELF"
    assert _reloaded(loaded, tmp_path, "present.wbe").layers[0].binaries == {"gemm_kernel": "cubin/0123"}


@pytest.mark.parametrize("precision, name", [("fp32", "cpu.numpy"), ("fp16", "cpu.numpy.fp16-emulated"),
                                             ("bf16", "cpu.numpy.bf16-emulated")])
def test_cpu_tactic_source_offers_one_tactic_per_precision(precision, name):
    layer = Layer("r", "Relu", inputs=["x"], outputs=["y"])
    found = tactics.candidates(layer, precision)
    assert [t.name for t, why in found if why is None] == [name]
    assert all(t.source == "reference" for t, _ in found)
    assert all(why for _, why in tactics.candidates(Layer("n", "NoSuchOp"), precision))
    x = np.array([1.0001, -2.0], np.float32)
    kernel = tactics.BY_NAME[name].build(layer, precision, tactics.BY_NAME[name].configs(layer, precision)[0])
    (y,) = kernel(None, [x], {})
    want = np.maximum(x, 0).astype(to_numpy(STORAGE[precision])).astype(np.float32)
    assert y.dtype == np.float32 and np.array_equal(y, want)


@pytest.mark.gpu
def test_gpu_engine_without_reports_runs_the_same(tmp_path):
    """A GPU engine rebuilds every kernel from the plan alone (tactic, config, cubin blobs, arena):
    with every report and tactic table gone it runs the same kernels and gives the same outputs (to
    the run-to-run spread of cuDNN's and cuBLASLt's reduction orders, far under fp16's tolerance)."""
    from workbench.core.numerics import host, random_inputs, rel_err
    from workbench.demo import embedded_model_path

    net = wb.load_onnx(embedded_model_path("light_squeezenet"))
    engine = wb.build(net, wb.BuilderConfig(device="gpu", precision="fp16"))
    feeds = random_inputs(engine.inputs, seed=3)
    want = {k: host(v) for k, v in _reloaded(engine, tmp_path).create_context().run(feeds).items()}
    again = _without_reports(engine, tmp_path)
    assert any(layer.binaries for layer in again.layers) and again.plan.arena.offsets
    assert [(l.tactic, l.tactic_config, l.binaries) for l in again.layers] == \
        [(l.tactic, l.tactic_config, l.binaries) for l in engine.layers]
    got = again.create_context().run(feeds)
    for name in want:
        assert rel_err(got[name], want[name]) < 1e-3
