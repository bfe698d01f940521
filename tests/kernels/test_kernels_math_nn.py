"""Reference kernels (math / NN families) against float64 NumPy formulas and onnxruntime.

The onnx node tests pin the spec's examples; these pin what they leave out: odd shapes, groups with
dilation and asymmetric pads, broadcasting, half-precision dtypes staying half, ragged sequences.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from workbench.kernels.reference import activation, attention, conv, elementwise, linalg, norm, pool, \
    reduce, rnn
from workbench.kernels.reference._base import KernelContext

RNG = np.random.default_rng(1234)


def ctx(opset=21, n_outputs=1):
    return KernelContext(opset=opset, n_outputs=n_outputs)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def conv_direct(x, w, b, strides, pads, dil, group):
    """Float64 convolution summed over kernel offsets, written independently of the im2col path."""
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh = (h - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // group
    for g, i, j in itertools.product(range(group), range(kh), range(kw)):
        patch = x[:, g * cg:(g + 1) * cg, i * dil[0]:i * dil[0] + (oh - 1) * strides[0] + 1:strides[0],
                  j * dil[1]:j * dil[1] + (ow - 1) * strides[1] + 1:strides[1]]
        y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, w[g * mg:(g + 1) * mg, :, i, j])
    return y + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("group,strides,pads,dil", [
    (1, [1, 1], [0, 0, 0, 0], [1, 1]),
    (2, [2, 1], [1, 0, 2, 1], [1, 2]),
    (6, [1, 2], [2, 2, 0, 1], [2, 1]),
])
def test_conv_matches_direct_sum(group, strides, pads, dil):
    x, w, b = randn(2, 6, 11, 9), randn(12, 6 // group, 3, 2), randn(12)
    attrs = dict(group=group, strides=strides, pads=pads, dilations=dil)
    y = conv.KERNELS["Conv"](ctx(), [x, w, b], attrs)[0]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, conv_direct(x, w, b, strides, pads, dil, group), rtol=1e-4, atol=1e-4)


def test_conv_float16_stays_float16_and_same_upper():
    x, w, b = randn(1, 4, 7, 8, dtype=np.float16), randn(4, 4, 3, 3, dtype=np.float16), randn(4, dtype=np.float16)
    y = conv.KERNELS["Conv"](ctx(), [x, w, b], dict(auto_pad="SAME_UPPER", strides=[2, 2]))[0]
    assert y.dtype == np.float16 and y.shape == (1, 4, 4, 4)
    # rows: total pad 2 -> 1 + 1; columns: total pad 1 -> SAME_UPPER puts it at the end
    ref = conv_direct(x, w, b, [2, 2], [1, 0, 1, 1], [1, 1], 1)
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-2, atol=2e-2)


def test_conv_transpose_is_adjoint_of_conv():
    x, w = randn(2, 4, 9, 7, dtype=np.float64), randn(6, 2, 3, 4, dtype=np.float64)  # group 2
    attrs = dict(group=2, strides=[2, 3], pads=[1, 0, 1, 2], dilations=[1, 2])
    y = conv.KERNELS["Conv"](ctx(), [x, w], attrs)[0]
    g = randn(*y.shape, dtype=np.float64)
    # <conv(x), g> == <x, conv_transpose(g)> with W read as [C_in_of_transpose=6, 4/2, kh, kw]
    out_shape = list(x.shape[2:])
    xt = conv.KERNELS["ConvTranspose"](ctx(), [g, w], dict(attrs, output_shape=out_shape))[0]
    assert xt.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, xt), rtol=1e-10)


def test_matmul_broadcast_and_dtypes():
    a, b = randn(2, 1, 3, 5), randn(4, 5, 6)
    y = linalg.KERNELS["MatMul"](ctx(), [a, b], {})[0]
    assert y.dtype == np.float32 and y.shape == (2, 4, 3, 6)
    np.testing.assert_allclose(y, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-5, atol=1e-5)
    h = linalg.KERNELS["MatMul"](ctx(), [a.astype(np.float16), b.astype(np.float16)], {})[0]
    assert h.dtype == np.float16
    g = linalg.KERNELS["Gemm"](ctx(), [randn(5, 3), randn(4, 5), randn(4)],
                               dict(transA=1, transB=1, alpha=0.5, beta=2.0))[0]
    assert g.shape == (3, 4) and g.dtype == np.float32


def test_erf_accuracy_and_gelu():
    x = np.linspace(-6, 6, 20001).astype(np.float32)
    ref = np.array([math.erf(v) for v in x.astype(np.float64)])
    y = elementwise.KERNELS["Erf"](ctx(), [x], {})[0]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=2e-7, atol=3e-7)
    xh = x.astype(np.float16)
    g = activation.KERNELS["Gelu"](ctx(20), [xh], {})[0]
    assert g.dtype == np.float16
    xd = xh.astype(np.float64)
    ref = 0.5 * xd * (1 + np.array([math.erf(v / math.sqrt(2)) for v in xd]))
    np.testing.assert_allclose(g.astype(np.float64), ref, rtol=2e-3, atol=2e-3)


def test_integer_div_truncates_and_mod_sign():
    a, b = np.array([-7, 7, -7, 7], np.int32), np.array([2, -2, -2, 2], np.int32)
    assert elementwise.KERNELS["Div"](ctx(), [a, b], {})[0].tolist() == [-3, -3, 3, 3]
    assert elementwise.KERNELS["Mod"](ctx(), [a, b], {})[0].tolist() == [1, -1, -1, 1]
    assert elementwise.KERNELS["Mod"](ctx(), [a, b], {"fmod": 1})[0].tolist() == [-1, 1, -1, 1]
    p = elementwise.KERNELS["Pow"](ctx(), [np.array([2, 3], np.int32), np.array([2.0, 3.0], np.float32)], {})[0]
    assert p.dtype == np.int32 and p.tolist() == [4, 27]


def test_variadic_broadcast_keeps_dtype():
    xs = [randn(3, 1, dtype=np.float16), randn(1, 4, dtype=np.float16), randn(4, dtype=np.float16)]
    for op, fn in (("Sum", np.add), ("Max", np.maximum), ("Min", np.minimum)):
        y = elementwise.KERNELS[op](ctx(), xs, {})[0]
        assert y.dtype == np.float16 and y.shape == (3, 4)
        ref = fn(fn(xs[0].astype(np.float64), xs[1]), xs[2])
        np.testing.assert_allclose(y.astype(np.float64), ref, rtol=2e-3, atol=2e-3)


def test_softmax_old_opset_coerces_to_2d():
    x = randn(2, 3, 4)
    old = activation.KERNELS["Softmax"](ctx(11), [x], {"axis": 1})[0]
    flat = x.astype(np.float64).reshape(2, 12)
    ref = np.exp(flat - flat.max(1, keepdims=True))
    np.testing.assert_allclose(old, (ref / ref.sum(1, keepdims=True)).reshape(x.shape), rtol=1e-5)
    new = activation.KERNELS["Softmax"](ctx(13), [x], {"axis": 1})[0]
    np.testing.assert_allclose(new.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("op,fn", [("ReduceSum", np.sum), ("ReduceMean", np.mean), ("ReduceMax", np.max),
                                   ("ReduceL2", lambda v, axis, keepdims: np.sqrt(np.sum(v * v, axis=axis, keepdims=keepdims)))])
def test_reductions_negative_axes(op, fn):
    x = randn(3, 5, 7)
    axes = np.array([-1, 0], np.int64)
    y = reduce.KERNELS[op](ctx(18), [x, axes], {"keepdims": 0})[0]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, fn(x.astype(np.float64), axis=(0, 2), keepdims=False), rtol=1e-5, atol=1e-6)
    # opset 13 form: axes as an attribute
    y13 = reduce.KERNELS[op](ctx(13), [x], {"axes": [-1, 0], "keepdims": 1})[0]
    assert y13.shape == (1, 5, 1)


def test_average_pool_counts_and_max_pool_indices():
    x = randn(2, 3, 7, 6)
    attrs = dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1])
    inc = pool.KERNELS["AveragePool"](ctx(), [x], dict(attrs, count_include_pad=1))[0]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (1, 1), (0, 1)])
    ref = np.zeros(inc.shape)
    for i, j in itertools.product(range(inc.shape[2]), range(inc.shape[3])):
        ref[:, :, i, j] = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 2].mean(axis=(2, 3))
    np.testing.assert_allclose(inc, ref, rtol=1e-5, atol=1e-6)
    y, idx = pool.KERNELS["MaxPool"](ctx(n_outputs=2), [x], attrs)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(-1)[idx], y)


def test_layer_norm_float16_statistics_in_float32():
    x = (randn(4, 10) * 50 + 300).astype(np.float16)
    scale, bias = randn(10, dtype=np.float16), randn(10, dtype=np.float16)
    y, mean, inv = norm.KERNELS["LayerNormalization"](ctx(17, 3), [x, scale, bias], {})
    assert y.dtype == np.float16 and mean.dtype == np.float32 and mean.shape == (4, 1)
    xd = x.astype(np.float64)
    ref = (xd - xd.mean(1, keepdims=True)) / np.sqrt(xd.var(1, keepdims=True) + 1e-5) * scale + bias
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-2, atol=1e-2)


def test_attention_gqa_causal_against_float64():
    q, k, v = randn(2, 4, 5, 8), randn(2, 2, 7, 8), randn(2, 2, 7, 8)
    past_k, past_v = k[:, :, :2], v[:, :, :2]
    y, pk, pv = attention.KERNELS["Attention"](ctx(23, 3), [q, k[:, :, 2:], v[:, :, 2:], None, past_k, past_v],
                                               {"is_causal": 1})[:3]
    assert pk.shape == (2, 2, 7, 8)
    kd, vd = np.repeat(k.astype(np.float64), 2, axis=1), np.repeat(v.astype(np.float64), 2, axis=1)
    s = q.astype(np.float64) @ kd.transpose(0, 1, 3, 2) / np.sqrt(8)
    allowed = np.arange(7)[None, :] <= np.arange(5)[:, None] + 2  # frontier shifted by past length
    s = np.where(allowed, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(y, (p / p.sum(-1, keepdims=True)) @ vd, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent_ragged_bidirectional_matches_onnxruntime(op):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    seq, batch, inp, hid = 5, 3, 4, 6
    x = randn(seq, batch, inp)
    w, r, b = randn(2, gates * hid, inp), randn(2, gates * hid, hid), randn(2, 2 * gates * hid)
    lens = np.array([5, 2, 4], np.int32)
    h0 = randn(2, batch, hid)
    names = ["X", "W", "R", "B", "L", "H0"]
    vals = [x, w, r, b, lens, h0]
    attrs = dict(hidden_size=hid, direction="bidirectional")
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    outs = ["Y", "Yh"]
    node = helper.make_node(op, names, outs, **attrs)
    ins = [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "L" else TensorProto.FLOAT, v.shape)
           for n, v in zip(names, vals)]
    outs_vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs]
    model = helper.make_model(helper.make_graph([node], "g", ins, outs_vi),
                              opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, dict(zip(names, vals)))
    got = rnn.KERNELS[op](ctx(14, 2), vals, attrs)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
