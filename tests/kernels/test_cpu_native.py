"""The native CPU tactics (``cpu.native.*``, C kernels built at install) and the data-movement
tactic (``cpu.fast.tensor``) against the reference kernels on random data, the cases the older
fast tactics leave to the reference (finite causal fills, channels-first LayerNorm, RMSNorm), the
numerics of the native activations over their whole range (inf and NaN included), and that an
install with a C compiler has the native kernels at all."""

from __future__ import annotations

import math
import shutil
import sysconfig

import numpy as np
import pytest

from workbench.core.numerics import random_array, rel_err
from workbench.kernels import cpu
from workbench.kernels.cpu import native
from workbench.kernels.reference import KernelContext, KernelError
from workbench.kernels.reference.tactics import BY_NAME as REFERENCE

from .test_cpu_tactics import check, f32, layer

needs_native = pytest.mark.skipif(native.MISSING is not None, reason=native.MISSING or "")


def test_native_kernels_are_built_where_a_compiler_is():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine: the package installs without native kernels")
    assert native.MISSING is None, native.MISSING


@needs_native
@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1], "group": 6},
    {"pads": [3, 3, 3, 3], "group": 6, "kernel_shape": [7, 7]},
    {"strides": [2, 2], "pads": [0, 1, 2, 0], "group": 6},
    {"dilations": [2, 2], "pads": [2, 2, 2, 2], "group": 6},
])
@pytest.mark.parametrize("act", [{}, {"activation": "Relu"}, {"activation": "Clip", "act_min": 0.0, "act_max": 6.0}])
def test_native_depthwise_both_layouts(attrs, act):
    """6 channels: the 8-channel block is partly padding."""
    k = attrs.get("kernel_shape", [3, 3])
    from workbench.kernels.cpu.conv import geometry

    x, w = (2, 6, 9, 8), (6, 1) + tuple(k)
    out = (2, 6) + tuple(geometry(x, w, attrs)[-1])
    lay = layer("FusedConv", [f32("x", *x), f32("w", *w), f32("b", 6), f32("z", *out)], [f32("y", *out)],
                {**attrs, **act, "residual": 1}, domain="workbench")
    ran = check(lay, {"w", "b"})
    assert ("cpu.native.conv", None) in ran
    configs = [c for t, r in cpu.candidates(lay, "fp32", {"w": 0, "b": 0}) if t.name == "cpu.native.conv"
               for c in t.configs(lay, "fp32")]
    assert configs == [{"layout": "nchw"}, {"layout": "c8"}]


@needs_native
def test_native_conv_declines_what_it_does_not_fuse():
    lay = layer("FusedConv", [f32("x", 1, 2, 5, 5), f32("w", 3, 2, 3, 3)], [f32("y", 1, 3, 3, 3)],
                {"activation": "HardSwish"}, domain="workbench")
    reasons = {t.name: r for t, r in cpu.candidates(lay, "fp32", {"w": np.ones((3, 2, 3, 3), np.float32)})}
    assert "HardSwish" in reasons["cpu.native.conv"]
    conv1d = layer("Conv", [f32("x", 1, 2, 9), f32("w", 3, 2, 3)], [f32("y", 1, 3, 7)])
    reasons = {t.name: r for t, r in cpu.candidates(conv1d, "fp32", {"w": np.ones((3, 2, 3), np.float32)})}
    assert reasons["cpu.native.conv"] == "2-D convolutions only"


@needs_native
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_native_norms(precision):
    ran = check(layer("LayerNorm", [f32("x", 2, 8, 5, 3), f32("g", 8), f32("b", 8)], [f32("y", 2, 8, 5, 3)],
                      {"epsilon": 1e-5, "channels_first": 1}, domain="workbench"), precision=precision)
    assert ("cpu.native.rowwise", None) in ran
    ran = check(layer("RMSNorm", [f32("x", 3, 4, 24), f32("g", 24)], [f32("y", 3, 4, 24)], {"epsilon": 1e-6},
                      domain="workbench"), precision=precision)
    assert ran == [("cpu.native.rowwise", None)]
    ran = check(layer("RMSNorm", [f32("x", 3, 4, 6), f32("g", 4, 6)], [f32("y", 3, 4, 6)], {"axis": -2},
                      domain="workbench"), precision=precision)
    assert ran == [("cpu.native.rowwise", None)]


@needs_native
@pytest.mark.parametrize("shape,attrs", [
    ((2, 7, 5, 3), {"size": 5, "alpha": 0.5, "beta": 0.75, "bias": 1.0}),  # Caffe's form
    ((1, 6, 4), {"size": 4, "alpha": 0.3, "beta": 0.5, "bias": 2.0}),     # even window: one more after
    ((1, 5, 2, 3, 2), {"size": 3, "alpha": 0.2, "beta": 1.0}),
    ((2, 9, 4, 4), {"size": 7, "alpha": 0.4, "beta": 0.6, "bias": 0.5}),  # powf
    ((1, 3, 6, 6), {"size": 9}),                                           # window wider than C
])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_native_lrn(shape, attrs, precision):
    assert ("cpu.native.rowwise", None) in check(layer("LRN", [f32("x", *shape)], [f32("y", *shape)], attrs),
                                                 precision=precision)


@needs_native
@pytest.mark.parametrize("mask", ["", "additive", "boolean"])
def test_native_attention_with_a_finite_causal_fill(mask):
    """The exporters' finfo.min causal masks: masked scores are the raw score plus the fill."""
    b, h, kv, s, d = 2, 4, 2, 6, 8
    ins = [f32("q", b, h, s, d), f32("k", b, kv, s, d), f32("v", b, s, kv * d)]
    feeds = {}
    if mask == "additive":
        ins.append(f32("m", b, 1, 1, s))
    elif mask == "boolean":
        ins.append(("m", "bool", (b, 1, 1, s)))
        feeds["m"] = np.random.default_rng(1).random((b, 1, 1, s)) < 0.8
    attrs = {"q_layout": "bhsd", "k_layout": "bhsd", "v_layout": "bsd", "out_layout": "bsd", "num_heads": h,
             "kv_heads": kv, "scale": 0.35, "causal": 1, "mask_kind": mask, "causal_fill": -3.4028234663852886e38}
    lay = layer("Attention", ins, [f32("o", b, s, h * d)], attrs, domain="workbench")
    assert ("cpu.native.rowwise", None) in check(lay, feeds=feeds)
    reasons = {t.name: r for t, r in cpu.candidates(lay, "fp32", {})}
    assert reasons["cpu.fast.rowwise"] == "a finite causal fill is left to the reference kernel"


@needs_native
def test_native_attention_masks_that_broadcast_and_fully_masked_rows():
    b, h, s, d = 1, 2, 4, 8
    keep = np.ones((1, 1, s, s), bool)
    keep[0, 0, 2] = False  # one query sees no key: NaN, or 0 with nan_to_zero
    for nan_to_zero in (0, 1):
        attrs = {"num_heads": h, "scale": 1.0, "mask_kind": "boolean", "nan_to_zero": nan_to_zero}
        lay = layer("Attention", [f32("q", b, h, s, d), f32("k", b, h, s, d), f32("v", b, h, s, d),
                                  ("m", "bool", (1, 1, s, s))], [f32("o", b, h, s, d)], attrs, domain="workbench")
        rng = np.random.default_rng(5)
        values = [random_array("float32", (b, h, s, d), rng) for _ in range(3)] + [keep]
        ctx = KernelContext(opset=21, n_outputs=1, name="a")
        want = REFERENCE["cpu.numpy"].build(lay, "fp32", {})(ctx, values, attrs)[0]
        got = native.TACTICS[1].build(lay, "fp32", {})(ctx, values, attrs)[0]
        assert np.array_equal(np.isnan(got), np.isnan(want))
        assert rel_err(np.nan_to_num(got), np.nan_to_num(want)) < 1e-6


@needs_native
@pytest.mark.parametrize("op,x,attrs,out", [
    ("MaxPool", (2, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 3, 5, 5)),
    ("AveragePool", (1, 2, 8, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 4, 4)),
    ("GlobalAveragePool", (2, 5, 6, 7), {}, (2, 5, 1, 1)),
])
def test_native_pool_runs(op, x, attrs, out):
    assert ("cpu.native.pool", None) in check(layer(op, [f32("x", *x)], [f32("y", *out)], attrs))


@needs_native
def test_native_max_pool_propagates_nan_and_ignores_padding():
    lay = layer("MaxPool", [f32("x", 1, 1, 4, 4)], [f32("y", 1, 1, 2, 2)],
                {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
    x = -np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) - 1  # all negative: padding must not win
    x[0, 0, 3, 3] = np.nan
    ctx = KernelContext(opset=21, n_outputs=1, name="p")
    want = REFERENCE["cpu.numpy"].build(lay, "fp32", {})(ctx, [x], lay.attrs)[0]
    got = native.TACTICS[2].build(lay, "fp32", {})(ctx, [x], lay.attrs)[0]
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0, 0, 1, 1]) and got[0, 0, 0, 0] == -1


@needs_native
@pytest.mark.parametrize("act,fn", [
    ("Gelu", lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    ("GeluTanh", lambda x: 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))),
    ("Sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("Silu", lambda x: x / (1 + np.exp(-x))),
    ("Tanh", np.tanh),
])
def test_native_activations_over_their_range(act, fn):
    from workbench.kernels.cpu._common import activate_inplace

    x = np.concatenate([np.linspace(-30, 30, 20001), [0.0, -0.0, 1e-30, -1e-30, 1e-6, 88.0, 90.0, -90.0]]
                       ).astype(np.float32)
    y = x.copy()
    activate_inplace(y, {"activation": act})
    with np.errstate(all="ignore"):
        want = fn(x.astype(np.float64))
    # float32 round-off relative to the value, absolute where the value is below 1e-3
    err = np.abs(y - want) / np.maximum(np.abs(want), 1e-3)
    assert err.max() < 3e-4, (act, float(err.max()), x[np.argmax(err)])
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    y = special.copy()
    activate_inplace(y, {"activation": act})
    with np.errstate(all="ignore"):
        want = fn(special.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(y[~np.isnan(y)], want[~np.isnan(want)].astype(np.float32))


def _run_tensor(lay, values, constants=None):
    """The tensor tactic and the reference on the same inputs (views are compared, never poisoned:
    they are the inputs' own memory)."""
    constants = constants or {}
    ctx = KernelContext(opset=lay.opset, n_outputs=len(lay.outputs), name=lay.name)
    assert {t.name: r for t, r in cpu.candidates(lay, "fp32", constants)}["cpu.fast.tensor"] is None
    want = REFERENCE["cpu.numpy"].build(lay, "fp32", {})(ctx, values, lay.attrs)
    got = cpu.BY_NAME["cpu.fast.tensor"].build(lay, "fp32", {}, constants)(ctx, values, lay.attrs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    return got


def test_tensor_views():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    shape = np.array([6, -1], np.int64)
    got = _run_tensor(layer("Reshape", [f32("x", 2, 3, 4, 5), ("s", "int64", (2,))], [f32("y", 6, 20)]),
                      [x, shape], {"s": shape})
    assert np.shares_memory(got[0], x)
    _run_tensor(layer("Flatten", [f32("x", 2, 3, 4, 5)], [f32("y", 6, 20)], {"axis": 2}), [x])
    axes = np.array([1, -1], np.int64)
    _run_tensor(layer("Unsqueeze", [f32("x", 2, 3, 4, 5), ("a", "int64", (2,))], [f32("y", 2, 1, 3, 4, 5, 1)]),
                [x, axes], {"a": axes})
    _run_tensor(layer("Transpose", [f32("x", 2, 3, 4, 5)], [f32("y", 5, 2, 4, 3)], {"perm": [3, 0, 2, 1]}), [x])
    _run_tensor(layer("Transpose", [f32("x", 2, 3, 4, 5)], [f32("y", 5, 4, 3, 2)]), [x])
    sizes = np.array([1, 3, 1], np.int64)
    got = _run_tensor(layer("Split", [f32("x", 2, 3, 5, 5), ("n", "int64", (3,))],
                            [f32("a", 2, 3, 5, 1), f32("b", 2, 3, 5, 3), f32("c", 2, 3, 5, 1)], {"axis": -1}),
                      [rng.standard_normal((2, 3, 5, 5)).astype(np.float32), sizes], {"n": sizes})
    assert [g.shape[-1] for g in got] == [1, 3, 1]


@pytest.mark.parametrize("starts,ends,axes,steps,out", [
    ([1], [3], [1], [1], (2, 2, 4, 5)),
    ([-1], [-4], [2], [-1], (2, 3, 3, 5)),
    ([0, 10], [9223372036854775807, -100], [0, 3], [1, -2], (2, 3, 4, 3)),
    ([2], [2], [1], [1], (2, 0, 4, 5)),
    ([-100, 1], [100, 5], [-1, -2], [2, 2], (2, 3, 2, 3)),
    ([3], [-9223372036854775807], [2], [-1], (2, 3, 4, 5)),
])
def test_tensor_slice_clamps_as_onnx(starts, ends, axes, steps, out):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    consts = {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64), "ax": np.array(axes, np.int64),
              "sp": np.array(steps, np.int64)}
    lay = layer("Slice", [f32("x", 2, 3, 4, 5)] + [(n, "int64", (len(starts),)) for n in consts], [f32("y", *out)])
    _run_tensor(lay, [x] + list(consts.values()), consts)


def test_tensor_slice_declines_a_wrong_static_shape_and_runtime_starts():
    consts = {"st": np.array([1], np.int64), "en": np.array([3], np.int64)}
    lay = layer("Slice", [f32("x", 4, 5), ("st", "int64", (1,)), ("en", "int64", (1,))], [f32("y", 3, 5)])
    assert "differs" in {t.name: r for t, r in cpu.candidates(lay, "fp32", consts)}["cpu.fast.tensor"]
    reason = {t.name: r for t, r in cpu.candidates(lay, "fp32", {"st": consts["st"]})}["cpu.fast.tensor"]
    assert reason == "starts / ends / axes / steps are not constants"


def test_tensor_gather_and_cast():
    rng = np.random.default_rng(2)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    idx = np.array([[0, -1], [9, 3]], np.int64)
    _run_tensor(layer("Gather", [f32("t", 10, 4), ("i", "int64", (2, 2))], [f32("y", 2, 2, 4)]), [table, idx])
    _run_tensor(layer("Gather", [f32("t", 10, 4), ("i", "int32", ())], [f32("y", 10)], {"axis": 1}),
                [table, np.array(-2, np.int32)])
    bad = layer("Gather", [f32("t", 10, 4), ("i", "int64", (1,))], [f32("y", 1, 4)])
    kernel = cpu.BY_NAME["cpu.fast.tensor"].build(bad, "fp32", {}, {})
    with pytest.raises(IndexError):
        kernel(KernelContext(), [table, np.array([10], np.int64)], {})
    ints = np.array([[1, 0, 7]], np.int64)
    _run_tensor(layer("Cast", [("m", "int64", (1, 3))], [f32("y", 1, 3)], {"to": 1}), [ints])
    floats = np.array([1.7, -2.5, np.nan, 1e20], np.float32)
    with np.errstate(all="ignore"):
        _run_tensor(layer("Cast", [f32("x", 4)], [("y", "int32", (4,))], {"to": 6}), [floats])
    same = layer("Cast", [f32("x", 4)], [f32("y", 4)], {"to": 1})
    assert "same type" in {t.name: r for t, r in cpu.candidates(same, "fp32", {})}["cpu.fast.tensor"]


def test_tensor_tactic_under_emulated_half_precision():
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    lay = layer("Transpose", [f32("x", 3, 8)], [f32("y", 8, 3)])
    ctx = KernelContext(opset=21, n_outputs=1, name="t")
    want = REFERENCE["cpu.numpy.fp16-emulated"].build(lay, "fp16", {})(ctx, [x], {})[0]
    got = cpu.BY_NAME["cpu.fast.tensor"].build(lay, "fp16", {}, {})(ctx, [x], {})[0]
    np.testing.assert_array_equal(got, want)


def test_native_tactics_fall_back_without_the_extension(monkeypatch):
    """An engine that recorded a native tactic still runs where the extension is missing: each
    layer binds the NumPy kernel of its op."""
    monkeypatch.setattr(native, "_native", None)
    lay = layer("Conv", [f32("x", 1, 4, 6, 6), f32("w", 4, 1, 3, 3)], [f32("y", 1, 4, 4, 4)], {"group": 4})
    w = random_array("float32", (4, 1, 3, 3), np.random.default_rng(4))
    x = random_array("float32", (1, 4, 6, 6), np.random.default_rng(5))
    ctx = KernelContext(opset=21, n_outputs=1, name="c")
    kernel = native.TACTICS[0].build(lay, "fp32", {"layout": "c8"}, {"w": w})
    want = REFERENCE["cpu.numpy"].build(lay, "fp32", {})(ctx, [x, w], lay.attrs)[0]
    assert rel_err(kernel(ctx, [x, w], lay.attrs)[0], want) < 1e-5
    norm = layer("RMSNorm", [f32("x", 2, 6), f32("g", 6)], [f32("y", 2, 6)], {}, domain="workbench")
    xs, g = random_array("float32", (2, 6), np.random.default_rng(6)), np.ones(6, np.float32)
    want = REFERENCE["cpu.numpy"].build(norm, "fp32", {})(ctx, [xs, g], {})[0]
    assert rel_err(native.TACTICS[1].build(norm, "fp32", {})(ctx, [xs, g], {})[0], want) < 1e-6


@needs_native
def test_native_kernels_refuse_bad_buffers_with_an_error():
    from workbench.kernels.cpu import _native

    x = np.ones((1, 2, 4, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        _native.conv2d(x.astype(np.float64), np.ones((2, 1, 3, 3), np.float32), None, None,
                       np.empty((1, 2, 2, 2), np.float32), 1, 1, 0, 0, 1, 1, 2, 0, 0.0, 0.0)
    with pytest.raises(ValueError, match="channels"):
        _native.conv2d(x, np.ones((3, 1, 3, 3), np.float32), None, None, np.empty((1, 3, 2, 2), np.float32),
                       1, 1, 0, 0, 1, 1, 2, 0, 0.0, 0.0)
    with pytest.raises(ValueError):  # a read-only output
        _native.softmax(np.broadcast_to(np.float32(1), (2, 3)))
    with pytest.raises(ValueError, match="broadcast"):
        q = np.ones((1, 2, 3, 4), np.float32)
        _native.attention(q, q, q, np.ones((1, 1, 3, 5), np.float32), np.empty_like(q), 1.0, 1, 0, 0, -np.inf)
    with pytest.raises(KernelError):
        lay = layer("Conv", [f32("x", 1, 1, 2, 2), f32("w", 1, 1, 3, 3)], [f32("y", 1, 1, 1, 1)])
        k = native.TACTICS[0].build(lay, "fp32", {"layout": "nchw"}, {"w": np.ones((1, 1, 3, 3), np.float32)})
        k(KernelContext(), [np.ones((1, 1, 2, 2), np.float32), None], {})


@needs_native
@pytest.mark.parametrize("plane", [1, 7, 8, 9, 127, 128, 129, 169, 196, 3136])
def test_native_global_average_pool_sums_as_numpy_does(plane):
    """np.mean's pairwise float32 order, to the bit: channels that differ only in their last bits
    round alike (the light squeezenet's constant weights give 1000 such logits)."""
    from workbench.kernels.cpu import _native

    x = (np.random.default_rng(plane).standard_normal((2, 5, plane)) * 100 + 3).astype(np.float32)
    y = np.empty((2, 5), np.float32)
    _native.global_pool(x, y, 1)
    np.testing.assert_array_equal(y, np.mean(x, axis=2))


def test_fast_pointwise_takes_chains_with_integer_and_bool_inputs():
    """An attention-mask chain: int64 mask cast to float, inverted and scaled, plus a bool step;
    the non-float32 steps run their reference kernels inside the fast tactic."""
    import json

    prog = [{"op": "Cast", "args": ["in0"], "out": "t0", "attrs": {"to": 1}},
            {"op": "Sub", "args": ["c:1.0", "t0"], "out": "t1"},
            {"op": "Mul", "args": ["t1", "c:-10000.0"], "out": "t2"},
            {"op": "Add", "args": ["t2", "in1"], "out": "t3"},
            {"op": "Not", "args": ["in2"], "out": "b0"},
            {"op": "Cast", "args": ["b0"], "out": "t4", "attrs": {"to": 1}},
            {"op": "Add", "args": ["t3", "t4"], "out": "t5"}]
    attrs = {"program": json.dumps(prog), "outputs": ["t5"]}
    lay = layer("Pointwise", [("m", "int64", (2, 1, 1, 5)), f32("x", 1, 1, 5, 1), ("k", "bool", (2, 1, 1, 5))],
                [f32("y", 2, 1, 5, 5)], attrs, domain="workbench")
    feeds = {"m": np.array([1, 1, 1, 0, 0] * 2, np.int64).reshape(2, 1, 1, 5),
             "k": np.array([True, False, True, True, False] * 2).reshape(2, 1, 1, 5)}
    assert ("cpu.fast.pointwise", None) in check(lay, feeds=feeds)


_CHAINS = [
    # batch-norm + ReLU on channels (densenet's pre-activation), two outputs, a shared temp
    ([{"op": "Mul", "args": ["in0", "in1"], "out": "t0"}, {"op": "Add", "args": ["t0", "in2"], "out": "t1"},
      {"op": "Relu", "args": ["t1"], "out": "t2"}, {"op": "Max", "args": ["t2", "t0"], "out": "t3"}],
     [(2, 6, 5, 7), (6, 1, 1), (6, 1, 1)], ["t3", "t1"]),
    # rotary-style: two broadcast tables over the last dims, constants, every unary op
    ([{"op": "Mul", "args": ["in0", "in1"], "out": "a"}, {"op": "Sub", "args": ["c:0.5", "a"], "out": "b"},
      {"op": "Div", "args": ["b", "c:3.0"], "out": "c"}, {"op": "Tanh", "args": ["c"], "out": "d"},
      {"op": "Exp", "args": ["d"], "out": "e"}, {"op": "Sigmoid", "args": ["e"], "out": "f"},
      {"op": "Erf", "args": ["f"], "out": "g"}, {"op": "Neg", "args": ["g"], "out": "h"},
      {"op": "Abs", "args": ["h"], "out": "i"}, {"op": "Sqrt", "args": ["i"], "out": "j"},
      {"op": "Reciprocal", "args": ["j"], "out": "k"}, {"op": "Min", "args": ["k", "in2"], "out": "m"}],
     [(2, 3, 4, 8), (1, 1, 4, 8), (3, 1, 1)], ["m"]),
    # a row vector against a column vector: the output is larger than either
    ([{"op": "Add", "args": ["in0", "in1"], "out": "t0"}, {"op": "Mul", "args": ["t0", "t0"], "out": "t1"}],
     [(1, 7), (5, 1)], ["t1"]),
]


@needs_native
@pytest.mark.parametrize("prog,shapes,outs", _CHAINS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_native_pointwise_chains(prog, shapes, outs, precision):
    import json

    from workbench.kernels.cpu.pointwise import PointwiseKernel

    full = np.broadcast_shapes(*shapes)
    attrs = {"program": json.dumps(prog), "outputs": outs}
    lay = layer("Pointwise", [f32(f"x{i}", *s) for i, s in enumerate(shapes)],
                [f32(f"o{i}", *full) for i in range(len(outs))], attrs, domain="workbench")
    assert ("cpu.fast.pointwise", None) in check(lay, precision=precision)
    kernel = PointwiseKernel(lay, None, True)
    values = [random_array("float32", s, np.random.default_rng(i)) for i, s in enumerate(shapes)]
    values[0].reshape(-1)[:3] = [np.nan, np.inf, -np.inf]  # special values go through the same steps
    got = kernel(KernelContext(), values, attrs)
    assert kernel.native is not None, "the chain did not take the native path"
    want = REFERENCE["cpu.numpy"].build(lay, "fp32", {})(KernelContext(), values, attrs)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        finite = np.isfinite(w)
        assert rel_err(g[finite], w[finite]) < 2e-6


@needs_native
def test_native_pointwise_reads_strided_views_and_keeps_the_reference_path_for_the_rest():
    import json

    from workbench.kernels.cpu.pointwise import PointwiseKernel

    prog = [{"op": "Mul", "args": ["in0", "c:2.0"], "out": "t0"}, {"op": "Add", "args": ["t0", "in1"], "out": "t1"}]
    attrs = {"program": json.dumps(prog), "outputs": ["t1"]}
    lay = layer("Pointwise", [f32("a", 4, 6), f32("b", 6)], [f32("y", 4, 6)], attrs, domain="workbench")
    kernel = PointwiseKernel(lay, None, True)
    base = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    a, b = base.T, np.random.default_rng(1).standard_normal(12).astype(np.float32)[::2]  # transposed, strided
    got = kernel(KernelContext(), [a, b], attrs)[0]
    np.testing.assert_array_equal(got, a * np.float32(2) + b)
    # a transposed view's last stride is not 0 or 1: the ufunc path ran it
    assert kernel.native is None
    got = kernel(KernelContext(), [np.ascontiguousarray(a), b], attrs)[0]
    assert kernel.native is None  # b's last stride is 2
    got = kernel(KernelContext(), [np.ascontiguousarray(a), np.ascontiguousarray(b)], attrs)[0]
    assert kernel.native is not None
    np.testing.assert_array_equal(got, a * np.float32(2) + b)


@needs_native
@pytest.mark.parametrize("x,pads", [((2, 5, 9, 8), [1, 1, 1, 1]), ((1, 3, 6, 7), [0, 0, 0, 0]), ((1, 4, 5, 5), [2, 0, 2, 0])])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_native_winograd(x, pads, precision, monkeypatch):
    """3x3 stride-1 convolutions as Winograd F(2x2, 3x3) (odd output sizes: partial edge tiles),
    with bias, residual and Clip (narrow layers here: the channel floor lowered for the test)."""
    from workbench.kernels.cpu.conv import geometry

    monkeypatch.setattr(native, "_WINOGRAD_MIN_CHANNELS", 1)
    attrs = {"pads": pads, "residual": 1, "activation": "Clip", "act_min": -0.5, "act_max": 0.7}
    out = (x[0], 6) + tuple(geometry(x, (6, x[1], 3, 3), attrs)[-1])
    lay = layer("FusedConv", [f32("x", *x), f32("w", 6, x[1], 3, 3), f32("b", 6), f32("z", *out)], [f32("y", *out)],
                attrs, domain="workbench")
    check(lay, {"w", "b"}, precision)
    configs = native.TACTICS[0].configs(lay, precision)
    assert {"layout": "winograd"} in configs
    w = random_array("float32", (6, x[1], 3, 3), np.random.default_rng(0))
    values = [random_array("float32", s, np.random.default_rng(i)) for i, s in enumerate([x, None, (6,), out]) if s]
    values.insert(1, w)
    ctx = KernelContext(opset=21, n_outputs=1, name="w")
    want = REFERENCE["cpu.numpy" if precision == "fp32" else "cpu.numpy.bf16-emulated"].build(lay, precision, {})(
        ctx, values, attrs)[0]
    got = native.TACTICS[0].build(lay, precision, {"layout": "winograd"}, {"w": w, "b": values[2]})(ctx, values, attrs)[0]
    assert rel_err(got, want) < (1e-5 if precision == "fp32" else 1.5e-2)


def test_native_winograd_only_where_it_applies():
    def configs(c=128, **attrs):
        lay = layer("Conv", [f32("x", 1, c, 8, 8), f32("w", c, c // attrs.get("group", 1), 3, 3)], [f32("y", 1, c, 8, 8)],
                    attrs)
        return native.TACTICS[0].configs(lay, "fp32")

    assert {"layout": "winograd"} not in configs(c=64, pads=[1, 1, 1, 1])  # too narrow to pay for its transforms
    assert {"layout": "winograd"} in configs(pads=[1, 1, 1, 1])
    assert {"layout": "winograd"} not in configs(pads=[1, 1, 0, 0])
    assert {"layout": "winograd"} not in configs(pads=[1, 1, 1, 1], strides=[2, 2])
    assert {"layout": "winograd"} not in configs(pads=[2, 2, 2, 2], dilations=[2, 2])
    assert {"layout": "winograd"} not in configs(pads=[1, 1, 1, 1], group=2)
    assert {"layout": "winograd"} not in configs(auto_pad="SAME_UPPER")
