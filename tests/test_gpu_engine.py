"""GPU engines on the device: tactics vs the NumPy reference, real models in fp32 / fp16, engine
save/load without recompilation, timing-cache reuse, CUDA-graph replay vs eager, OOM and
compatibility errors. Marked ``gpu``: skipped where there is no CUDA GPU."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.errors import OutOfMemoryError
from workbench.demo import embedded_model_path, reference_io, rel_err

pytestmark = pytest.mark.gpu
MODELS = os.path.join(os.path.dirname(__file__), "models")
LIGHT = ["light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_resnet50",
         "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512"]


def _poison(ctx):
    ctx.buffers["__arena__"].fill(0xFF)  # NaN in every float type: unwritten outputs cannot pass


def _model(op, inputs, outputs, attrs=None, inits=(), opset=17):
    node = helper.make_node(op, [i[0] for i in inputs] + [n for n, _ in inits], [o[0] for o in outputs], **(attrs or {}))
    g = helper.make_graph([node], op, [helper.make_tensor_value_info(n, TensorProto.FLOAT if t == "f" else TensorProto.INT64, s)
                                       for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


rng = np.random.default_rng(0)
R = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
CASES = {
    "Add_bcast": (_model("Add", [("a", "f", [4, 8, 16]), ("b", "f", [8, 1])], [("y", [4, 8, 16])]), {}),
    "Mul": (_model("Mul", [("a", "f", [64, 33]), ("b", "f", [64, 33])], [("y", [64, 33])]), {}),
    "Relu": (_model("Relu", [("a", "f", [3, 1000])], [("y", [3, 1000])]), {}),
    "Sigmoid": (_model("Sigmoid", [("a", "f", [3, 100])], [("y", [3, 100])]), {}),
    "Erf": (_model("Erf", [("a", "f", [3, 100])], [("y", [3, 100])]), {}),
    "Clip": (_model("Clip", [("a", "f", [3, 100])], [("y", [3, 100])], inits=[("lo", np.float32(-0.5)), ("hi", np.float32(0.7))]), {}),
    "Softmax": (_model("Softmax", [("a", "f", [6, 4, 77])], [("y", [6, 4, 77])], {"axis": -1}), {}),
    "LayerNorm": (_model("LayerNormalization", [("a", "f", [6, 96])], [("y", [6, 96])], {"axis": -1},
                         inits=[("s", R(96)), ("b", R(96))]), {}),
    "Transpose": (_model("Transpose", [("a", "f", [2, 3, 4, 5])], [("y", [2, 4, 5, 3])], {"perm": [0, 2, 3, 1]}), {}),
    "ReduceMean": (_model("ReduceMean", [("a", "f", [4, 8, 16])], [("y", [4, 1, 16])], {"axes": [1]}, opset=17), {}),
    "MaxPool": (_model("MaxPool", [("a", "f", [2, 3, 17, 17])], [("y", [2, 3, 9, 9])],
                       {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}), {}),
    "AvgPool": (_model("AveragePool", [("a", "f", [2, 3, 16, 16])], [("y", [2, 3, 8, 8])],
                       {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}), {}),
    "GAP": (_model("GlobalAveragePool", [("a", "f", [2, 8, 7, 7])], [("y", [2, 8, 1, 1])]), {}),
    "BatchNorm": (_model("BatchNormalization", [("a", "f", [2, 8, 5, 5])], [("y", [2, 8, 5, 5])],
                         inits=[("s", R(8)), ("b", R(8)), ("m", R(8)), ("v", np.abs(R(8)) + 0.5)]), {}),
    "LRN": (_model("LRN", [("a", "f", [2, 8, 5, 5])], [("y", [2, 8, 5, 5])], {"size": 3}), {}),
    "MatMul": (_model("MatMul", [("a", "f", [2, 16, 64])], [("y", [2, 16, 32])], inits=[("w", R(64, 32))]), {}),
    "Conv": (_model("Conv", [("a", "f", [2, 16, 12, 12])], [("y", [2, 8, 12, 12])], {"pads": [1, 1, 1, 1]},
                    inits=[("w", R(8, 16, 3, 3) * 0.1), ("b", R(8))]), {}),
}


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 1e-2)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_tactic_against_reference(name, precision, tol):
    model, _ = CASES[name]
    net = wb.load_onnx(model.SerializeToString())
    feeds = {i.name: R(*[d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input}
    ref = wb.build(net, wb.BuilderConfig(device="cpu", optimize=False)).create_context().run(feeds)
    eng = wb.build(net, wb.BuilderConfig(device="gpu", precision=precision, optimize=False))
    ctx = eng.create_context()
    _poison(ctx)
    out = ctx.run(feeds)
    for k, v in ref.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert np.isfinite(out[k]).all()
        assert rel_err(out[k], v) < tol, f"{name} {precision}: {rel_err(out[k], v):.2e} ({eng.layers[-1].tactic})"


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_fp32(name):
    path = embedded_model_path(name)
    feeds, expected = reference_io(path)
    eng = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="gpu", precision="fp32"))
    ctx = eng.create_context()
    _poison(ctx)
    outs = ctx.run(feeds)
    for spec, exp in zip(eng.outputs, expected):
        assert rel_err(outs[spec.name], exp) < 1e-3, f"{name}: {rel_err(outs[spec.name], exp):.2e}"


def _exported():
    return sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(MODELS, "*.onnx"))
                  if os.path.exists(p[:-5] + ".npz"))


def _io(name):
    data = np.load(os.path.join(MODELS, name + ".npz"))
    feeds = {k: data[k] for k in data.files if not k.startswith("output:")}
    exp = {k[len("output:"):]: data[k] for k in data.files if k.startswith("output:")}
    return feeds, exp


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 1e-2)])
@pytest.mark.parametrize("name", _exported())
def test_exported_model(name, precision, tol):
    feeds, exp = _io(name)
    cfg = wb.BuilderConfig(device="gpu", precision=precision, shapes={k: v.shape for k, v in feeds.items()})
    ctx = wb.build(wb.load_onnx(os.path.join(MODELS, name + ".onnx")), cfg).create_context()
    _poison(ctx)
    outs = ctx.run(feeds)
    for k, v in exp.items():
        assert rel_err(outs[k], v) < tol, f"{name} {precision} {k}: {rel_err(outs[k], v):.2e}"


def test_save_load_does_not_recompile_and_graph_matches_eager(tmp_path):
    import cupy as cp

    from workbench.kernels.cuda import nvrtc

    path = embedded_model_path("light_squeezenet")
    feeds, expected = reference_io(path)
    eng = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="gpu", precision="fp16"))
    assert any(k.startswith("cubin/") for k in eng.blobs)
    eng.save(tmp_path / "e.wbe")
    nvrtc._CUBINS.clear()
    before = nvrtc.COMPILES["count"]
    ctx = wb.Engine.load(tmp_path / "e.wbe").create_context()
    assert nvrtc.COMPILES["count"] == before
    graph = ctx.run(feeds)
    eager = ctx.run_eager(feeds)
    for k in graph:
        np.testing.assert_array_equal(graph[k], eager[k])
    dev = ctx.run({k: cp.asarray(v) for k, v in feeds.items()})
    assert all(isinstance(v, cp.ndarray) for v in dev.values())
    prof = ctx.profile(feeds, runs=5)
    assert prof.attrs["end_to_end_ms"] > 0 and prof.attrs["sum_of_layers_ms"] > 0
    assert list(prof.columns)[:6] == ["layer", "type", "onnx_ops", "precision", "tactic", "mean_ms"]


def test_timing_cache_warm_build_skips_tuning(tmp_path):
    path = embedded_model_path("light_squeezenet")
    cache = tmp_path / "tc.json"
    net = wb.load_onnx(path)
    cold = wb.build(net, wb.BuilderConfig(device="gpu", precision="fp16", timing_cache=cache))
    warm = wb.build(net, wb.BuilderConfig(device="gpu", precision="fp16", timing_cache=cache))
    st = warm.build_stats["timing_cache"]
    assert st["misses"] == 0 and st["hits"] == len(warm.layers) and warm.build_stats["nvrtc_compiles"] == 0
    assert [l.tactic for l in cold.layers] == [l.tactic for l in warm.layers]
    assert cold.layers[0].tactic_table == warm.layers[0].tactic_table


def test_out_of_memory_is_clear_and_recoverable():
    import cupy as cp

    path = embedded_model_path("light_squeezenet")
    eng = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="gpu"))
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    pool.set_limit(size=1024)
    try:
        with pytest.raises(OutOfMemoryError):
            eng.create_context()
    finally:
        pool.set_limit(size=0)
    feeds, _ = reference_io(path)
    assert np.isfinite(eng.create_context().run(feeds)[eng.outputs[0].name]).all()


def test_engine_refuses_other_arch(tmp_path):
    from workbench.errors import EngineCompatibilityError

    eng = wb.build(wb.load_onnx(CASES["Relu"][0].SerializeToString()), wb.BuilderConfig(device="gpu"))
    eng.target["arch"] = "sm_80"
    eng.save(tmp_path / "e.wbe")
    with pytest.raises(EngineCompatibilityError, match="built for sm_80.*rebuild"):
        wb.Engine.load(tmp_path / "e.wbe").create_context()
