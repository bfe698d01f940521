"""GPU engines on the device: tactics vs the NumPy reference, real models in fp32 / fp16, engine
save/load without recompilation, timing-cache reuse, CUDA-graph replay vs eager, OOM and
compatibility errors. Marked ``gpu``: skipped where there is no CUDA GPU."""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from tests.support.paths import MODELS
from workbench.core.numerics import rel_err
from workbench.demo import embedded_model_path, reference_io
from workbench.errors import OutOfMemoryError

pytestmark = pytest.mark.gpu
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
    "Gather": (_model("Gather", [("a", "f", [50, 24])], [("y", [2, 3, 24])],
                      inits=[("i", np.array([[3, -1, 7], [0, 49, 5]], np.int64))]), {}),
    "Gather_axis1": (_model("Gather", [("a", "f", [4, 50, 6])], [("y", [4, 5, 6])], {"axis": 1},
                            inits=[("i", np.array([1, 0, -2, 9, 9], np.int64))]), {}),
    "Split": (_model("Split", [("a", "f", [4, 6, 12])], [("y0", [4, 6, 2]), ("y1", [4, 6, 4]), ("y2", [4, 6, 6])],
                     {"axis": -1}, inits=[("s", np.array([2, 4, 6], np.int64))]), {}),
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
    assert math.isfinite(prof.attrs["end_to_end_ms"]) and math.isfinite(prof.attrs["sum_of_layers_ms"])
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


def test_run_paths_and_io_binding():
    """CuPy feeds (fast path, direct input cast, copy_outputs=False), NumPy feeds, a non-contiguous
    CuPy feed and the IO-binding API all give the same outputs; a wrong feed still gets the full
    check's message."""
    import cupy as cp

    from workbench.errors import InputError, InputTypeError

    feeds, _ = _io("resnet_legacy")
    cfg = wb.BuilderConfig(device="gpu", precision="fp16", shapes={k: v.shape for k, v in feeds.items()})
    ctx = wb.build(wb.load_onnx(os.path.join(MODELS, "resnet_legacy.onnx")), cfg).create_context()
    name = ctx.engine.inputs[0].name
    out = ctx.engine.outputs[0].name
    ref = ctx.run(feeds)[out]  # NumPy path
    dfeeds = {k: cp.asarray(v) for k, v in feeds.items()}
    assert ctx._direct, "the fp16 engine's input cast should read the caller's array directly"
    for _ in range(3):  # first run captures, later ones replay (the cast straight from the feed)
        got = ctx.run(dfeeds)
        assert rel_err(cp.asnumpy(got[out]), ref) < 1e-3
    assert ctx._tail_segments, "no graph without the input cast"
    views = ctx.run(dfeeds, copy_outputs=False)
    assert views[out].data.ptr == ctx.output_buffer(out).data.ptr
    assert rel_err(cp.asnumpy(views[out]), ref) < 1e-3
    # a non-contiguous feed takes the general path
    x = cp.asfortranarray(dfeeds[name])
    assert rel_err(cp.asnumpy(ctx.run({name: x})[out]), ref) < 1e-3
    # other inputs must not leak into the fresh outputs of an earlier run
    keep = ctx.run(dfeeds)[out].copy()
    other = ctx.run({name: dfeeds[name] * 0.5})[out]
    assert rel_err(cp.asnumpy(keep), ref) < 1e-3
    assert not np.array_equal(cp.asnumpy(other), ref)
    # IO binding: write the input buffer, execute on a stream, read the output buffer
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        ctx.input_buffer(name)[...] = dfeeds[name]
        ctx.execute(s)
        res = ctx.output_buffer(out).copy()
    s.synchronize()
    assert rel_err(cp.asnumpy(res), ref) < 1e-3
    ctx.execute()  # default: the current stream
    assert rel_err(cp.asnumpy(ctx.output_buffer(out)), ref) < 1e-3
    with pytest.raises(KeyError):
        ctx.input_buffer("nope")
    with pytest.raises(InputTypeError, match="dtype"):
        ctx.run({name: dfeeds[name].astype(cp.float64)})
    with pytest.raises(InputError, match="missing"):
        ctx.run({})


@pytest.mark.parametrize("name", ["Gather", "Gather_axis1"])
def test_nvrtc_gather_kernel(name):
    """The NVRTC gather kernel itself (the autotuner may pick cupy.ops for a tiny case)."""
    import cupy as cp

    from workbench.kernels.cuda.device import gpu_info
    from workbench.kernels.cuda.gather import GatherTactic

    model, _ = CASES[name]
    eng = wb.build(wb.load_onnx(model.SerializeToString()), wb.BuilderConfig(device="gpu", optimize=False))
    layer = next(l for l in eng.layers if l.op == "Gather")
    t = GatherTactic()
    assert t.supports(layer, "fp32", gpu_info()) is None
    idx = eng.plan.constants[layer.inputs[1]]
    data = R(*layer.input_specs[0].shape)
    k = t.build(layer, "fp32", t.configs(layer, "fp32", gpu_info())[0], {layer.inputs[1]: cp.asarray(idx)}, gpu_info())
    y = cp.full(tuple(layer.output_specs[0].shape), cp.nan, cp.float32)
    k.run([cp.asarray(data), cp.asarray(idx)], [y], None, cp.cuda.get_current_stream())
    np.testing.assert_array_equal(cp.asnumpy(y), np.take(data, idx, axis=int(layer.attrs.get("axis", 0))))


def test_nvrtc_split_kernel():
    import cupy as cp

    from workbench.kernels.cuda.device import gpu_info
    from workbench.kernels.cuda.gather import SplitTactic

    model, _ = CASES["Split"]
    eng = wb.build(wb.load_onnx(model.SerializeToString()), wb.BuilderConfig(device="gpu", optimize=False))
    layer = next(l for l in eng.layers if l.op == "Split")
    t = SplitTactic()
    assert t.supports(layer, "fp32", gpu_info()) is None
    x = R(4, 6, 12)
    k = t.build(layer, "fp32", t.configs(layer, "fp32", gpu_info())[0], {}, gpu_info())
    ys = [cp.full(tuple(s.shape), cp.nan, cp.float32) for s in layer.output_specs]
    k.run([cp.asarray(x)], ys, None, cp.cuda.get_current_stream())
    for y, r in zip(ys, np.split(x, [2, 6], axis=-1)):
        np.testing.assert_array_equal(cp.asnumpy(y), r)


NORM_CASES = [  # (op, dtype, rows, cols, extras)
    ("LayerNorm", "float16", 64, 768, {}),
    ("LayerNorm", "float32", 33, 100, {}),
    ("LayerNorm", "bfloat16", 16, 512, {"bias": False}),
    ("RMSNorm", "float16", 16, 4096, {"bias": False}),
    ("SkipLayerNorm", "float16", 64, 768, {"sum": True, "add_bias": True}),
    ("SkipLayerNorm", "float16", 64, 768, {"codes": ("copy", "fp8")}),
    ("SkipLayerNorm", "float16", 40, 96, {"codes": ("output", "int8"), "sum": True}),
    ("LayerNorm", "float16", 64, 768, {"codes": ("output", "fp8")}),
    ("LayerNorm", "float32", 24, 256, {"codes": ("copy", "int8")}),
]


def _norm_case(op, dtype, rows, cols, extras):
    """A row-wise norm layer, its device constants, host inputs and the float64 reference."""
    from workbench.core import quant
    from workbench.core.plan import Layer, TensorSpec
    from workbench.kernels.cuda.device import from_device_bits, to_device_bits

    bias = extras.get("bias", True) and op != "RMSNorm"
    names = ["x"] + (["skip"] if op == "SkipLayerNorm" else []) + ["scale"] + (["bias"] if bias else [])
    if extras.get("add_bias"):
        names += ["add_bias"]
    vals = {n: R(rows, cols) if n in ("x", "skip") else (1 + 0.1 * R(cols) if n == "scale" else R(cols)) for n in names}
    vals = {n: to_device_bits(v, dtype) for n, v in vals.items()}  # the values the kernel reads
    f = {n: from_device_bits(v, dtype).astype(np.float64) for n, v in vals.items()}
    s = f["x"] + f.get("skip", 0) + f.get("add_bias", 0)
    mean = 0 if op == "RMSNorm" else s.mean(-1, keepdims=True)
    ref = (s - mean) / np.sqrt(((s - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * f["scale"] + f.get("bias", 0)
    outs = [TensorSpec("y", dtype, [rows, cols])]
    if extras.get("sum"):
        outs.append(TensorSpec("sum", dtype, [rows, cols]))
    attrs = {"epsilon": 1e-5}
    mode = extras.get("codes")
    if mode:
        how, fmt = mode
        scale = float(quant.scale_from_amax(np.abs(ref).max(), fmt))
        code = TensorSpec("yq", quant.ELEMENT[fmt], [rows, cols], scale)
        if how == "output":
            outs[0] = TensorSpec("y", code.dtype, [rows, cols], scale)
        else:
            outs.append(code)
        attrs["q_output_scale" if how == "output" else "q_copy_scale"] = scale
    layer = Layer("norm", op, domain="workbench", opset=1, inputs=names, outputs=[s.name for s in outs], attrs=attrs,
                  precision="fp16" if dtype == "float16" else "bf16" if dtype == "bfloat16" else "fp32",
                  input_specs=[TensorSpec(n, dtype, list(vals[n].shape)) for n in names], output_specs=outs)
    return layer, vals, ref, s


@pytest.mark.parametrize("case", NORM_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}-{c[4]}")
def test_rowwise_norm_every_config(case):
    """nvrtc.rowwise's normalizations, every config (scalar and vector widths), against float64:
    float outputs within their type's rounding, codes (Y as codes, or a copy) at most one step
    from the codes of the float64 result, on rare rounding boundaries only; outputs poisoned."""
    import cupy as cp

    from workbench.core import quant
    from workbench.kernels.cuda.device import from_device_bits, gpu_info
    from workbench.kernels.cuda.rowwise import RowwiseTactic

    op, dtype, rows, cols, extras = case
    layer, vals, ref, s = _norm_case(*case)
    t, gpu = RowwiseTactic(), gpu_info()
    assert t.supports(layer, layer.precision, gpu) is None, t.supports(layer, layer.precision, gpu)
    cfgs = t.configs(layer, layer.precision, gpu)
    assert any(c.get("vec") for c in cfgs) == (cols % 2 == 0)
    tol = {"float32": 2e-6, "float16": 1e-3, "bfloat16": 8e-3}[dtype]
    for cfg in cfgs:
        k = t.build(layer, layer.precision, cfg, {}, gpu)
        outs = [cp.full(tuple(sp.shape), 0xFF, np.uint8 if quant.is_coded(sp) else np.uint16 if sp.dtype != "float32"
                        else np.uint32) for sp in layer.output_specs]  # NaN / 0xFF bytes: unwritten fails
        k.run([cp.asarray(vals[n]) for n in layer.inputs], outs, None, cp.cuda.get_current_stream())
        cp.cuda.get_current_stream().synchronize()
        for sp, buf in zip(layer.output_specs, outs):
            got = cp.asnumpy(buf)
            if quant.is_coded(sp):
                want = quant.encode(ref, sp).view(np.uint8).astype(np.int64)
                got = got.view(np.uint8).astype(np.int64)
                if sp.dtype == "int8":
                    want, got = (want + 128) % 256, (got + 128) % 256  # two's complement -> ordered
                off = got != want
                assert np.abs(got - want).max() <= 1 and off.mean() < 1e-3, (cfg, sp.name, off.sum())
            else:
                want = s if sp.name == "sum" else ref
                host = got.view(np.float32 if sp.dtype == "float32" else np.float16 if sp.dtype == "float16" else np.uint16)
                err = rel_err(from_device_bits(host, sp.dtype).astype(np.float64), want)
                assert err < tol, (cfg, sp.name, err)
