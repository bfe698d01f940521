"""NumPy-referenced checks of the tensor / indexing / cast / image reference kernels beyond onnx's
node tests: random data, negative axes, broadcasting, error paths and allocation caps."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ResourceLimitError
from workbench.kernels.reference import cast, control, image, indexing, quant, sequence, tensor
from workbench.kernels.reference._base import KernelContext, KernelError

rng = np.random.default_rng(1234)


def ctx(opset=21, n_outputs=1, **kw):
    return KernelContext(opset=opset, n_outputs=n_outputs, **kw)


def i64(*v):
    return np.array(v, dtype=np.int64)


def test_reshape_zero_minus_one_and_allowzero():
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    (y,) = tensor.reshape(ctx(), [x, i64(0, -1)], {})
    assert y.shape == (2, 12) and np.array_equal(y, x.reshape(2, 12))
    (y,) = tensor.reshape(ctx(), [x, i64(-1, 0, 2)], {})
    assert y.shape == (4, 3, 2)
    empty = np.zeros((0, 3), np.float32)
    (y,) = tensor.reshape(ctx(), [empty, i64(3, 0)], {"allowzero": 1})
    assert y.shape == (3, 0)
    with pytest.raises(KernelError, match="Reshape"):
        tensor.reshape(ctx(), [x, i64(5, -1)], {})
    with pytest.raises(KernelError, match="Reshape"):
        tensor.reshape(ctx(), [x, i64(7, 7)], {})


def test_reshape_legacy_shape_attribute():
    x = np.arange(6, dtype=np.float32)
    (y,) = tensor.reshape(ctx(opset=1), [x], {"shape": [3, -1]})
    assert y.shape == (3, 2)


def test_gather_negative_indices_and_out_of_range():
    x = rng.standard_normal((5, 4)).astype(np.float32)
    idx = i64(-1, 0, -5, 2)
    (y,) = indexing.gather(ctx(), [x, idx], {"axis": -2})
    np.testing.assert_array_equal(y, x[[4, 0, 0, 2]])
    (y,) = indexing.gather(ctx(), [x, np.array([[1, -1]], np.int32)], {"axis": 1})
    np.testing.assert_array_equal(y, np.take(x, [[1, 3]], axis=1))
    with pytest.raises(KernelError, match="out of range"):
        indexing.gather(ctx(), [x, i64(5)], {"axis": 0})


def test_expand_broadcasts_both_ways():
    x = rng.standard_normal((3, 1)).astype(np.float32)
    (y,) = tensor.expand(ctx(), [x, i64(2, 1, 4)], {})
    np.testing.assert_array_equal(y, np.broadcast_to(x, (2, 3, 4)))
    (y,) = tensor.expand(ctx(), [x, i64(1)], {})  # shape smaller than the input keeps the input
    assert y.shape == (3, 1)
    with pytest.raises(KernelError, match="Expand"):
        tensor.expand(ctx(), [x, i64(2, 2)], {})


@pytest.mark.parametrize("op, inputs", [
    (tensor.expand, [np.zeros((1,), np.float32), i64(2**20, 2**20)]),
    (tensor.constant_of_shape, [i64(2**40)]),
    (tensor.tile, [np.zeros((2, 2), np.float32), i64(2**20, 2**20)]),
])
def test_data_dependent_sizes_are_capped(op, inputs):
    with pytest.raises(ResourceLimitError):
        op(ctx(), inputs, {})


def test_range_and_onehot_caps():
    with pytest.raises(ResourceLimitError, match="Range"):
        tensor.range_(ctx(), [np.array(0, np.int64), np.array(2**40, np.int64), np.array(1, np.int64)], {})
    with pytest.raises(ResourceLimitError, match="OneHot"):
        indexing.one_hot(ctx(), [i64(1, 2), np.array(2**40), np.array([0.0, 1.0], np.float32)], {})


def test_range_matches_numpy():
    for start, limit, delta, dt in [(1, 10, 3, np.int32), (10, -3, -4, np.int64), (0.5, 3.1, 0.3, np.float32)]:
        (y,) = tensor.range_(ctx(), [np.array(start, dt), np.array(limit, dt), np.array(delta, dt)], {})
        np.testing.assert_allclose(y, np.arange(start, limit, delta, dtype=dt), rtol=1e-6)
        assert y.dtype == dt


def test_slice_negative_axes_steps_and_clamping():
    x = rng.standard_normal((4, 5, 6)).astype(np.float32)
    (y,) = tensor.slice_(ctx(), [x, i64(-1, 100), i64(-100, 1), i64(-1, 0), i64(-2, -1)], {})
    np.testing.assert_array_equal(y, x[3:1:-1, :, 5::-2])
    (y,) = tensor.slice_(ctx(opset=9), [x], {"starts": [1], "ends": [-1], "axes": [-2]})
    np.testing.assert_array_equal(y, x[:, 1:-1])


def test_transpose_concat_split_squeeze_roundtrip():
    x = rng.standard_normal((2, 1, 3, 4)).astype(np.float32)
    (t,) = tensor.transpose(ctx(), [x], {"perm": [3, 0, 2, 1]})
    np.testing.assert_array_equal(t, x.transpose(3, 0, 2, 1))
    parts = tensor.split(ctx(n_outputs=2), [x, i64(1, 3)], {"axis": -1})
    (c,) = tensor.concat(ctx(), parts, {"axis": -1})
    np.testing.assert_array_equal(c, x)
    (s,) = tensor.squeeze(ctx(), [x, i64(-3)], {})
    assert s.shape == (2, 3, 4)
    (u,) = tensor.unsqueeze(ctx(), [s, i64(-1, 0)], {})
    assert u.shape == (1, 2, 3, 4, 1)
    with pytest.raises(KernelError, match="Squeeze"):
        tensor.squeeze(ctx(), [x, i64(0)], {})


def test_pad_modes_match_numpy():
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for mode in ("reflect", "edge", "wrap"):
        (y,) = tensor.pad(ctx(), [x, i64(1, 2, 2, 1)], {"mode": mode})
        np.testing.assert_array_equal(y, np.pad(x, [(1, 2), (2, 1)], mode=mode))
    (y,) = tensor.pad(ctx(opset=2), [x], {"pads": [0, -1, 1, 1], "value": 2.0})
    np.testing.assert_array_equal(y, np.pad(x[:, 1:], [(0, 1), (0, 1)], constant_values=2.0))


def test_gather_elements_and_scatter_roundtrip():
    x = rng.standard_normal((3, 5)).astype(np.float32)
    idx = np.argsort(rng.standard_normal((3, 5)), axis=1).astype(np.int64) - 5  # all negative
    (g,) = indexing.gather_elements(ctx(), [x, idx], {"axis": -1})
    np.testing.assert_array_equal(g, np.take_along_axis(x, idx + 5, axis=1))
    (s,) = indexing.scatter_elements(ctx(), [np.zeros_like(x), idx, g], {"axis": 1})
    np.testing.assert_array_equal(s, x)
    (a,) = indexing.scatter_nd(ctx(), [np.zeros(4, np.float32), i64(1, 1, 3).reshape(3, 1),
                                       np.ones(3, np.float32)], {"reduction": "add"})
    np.testing.assert_array_equal(a, [0, 2, 0, 1])


def test_topk_ties_keep_lower_index():
    x = np.array([[1, 3, 3, 2, 3]], np.float32)
    v, i = indexing.top_k(ctx(n_outputs=2), [x, i64(2)], {})
    np.testing.assert_array_equal(i, [[1, 2]])
    v, i = indexing.top_k(ctx(n_outputs=2), [x, i64(3)], {"largest": 0})
    np.testing.assert_array_equal(i, [[0, 3, 1]])


def test_unique_unsorted_matches_first_occurrence():
    x = np.array([2, 1, 1, 3, 4, 3], np.int64)
    y, first, inv, counts = indexing.unique(ctx(n_outputs=4), [x], {"sorted": 0})
    np.testing.assert_array_equal(y, [2, 1, 3, 4])
    np.testing.assert_array_equal(first, [0, 1, 3, 4])
    np.testing.assert_array_equal(inv, [0, 1, 1, 2, 3, 2])
    np.testing.assert_array_equal(counts, [1, 2, 2, 1])


def test_cast_float8_saturates_and_strings_roundtrip():
    x = np.array([1e6, -np.inf, 0.3], np.float32)
    (y,) = cast.cast(ctx(), [x], {"to": 17})
    np.testing.assert_array_equal(y.astype(np.float32)[:2], [448, -448])
    (s,) = cast.cast(ctx(), [np.array([1.5, -2.0], np.float32)], {"to": 8})
    assert s.dtype == object and list(s) == ["1.5", "-2.0"]
    (f,) = cast.cast(ctx(), [s], {"to": 1})
    np.testing.assert_array_equal(f, [1.5, -2.0])


def test_quantize_dequantize_per_axis_roundtrip():
    x = rng.uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    scale = np.array([0.01, 0.02, 0.03], np.float32)
    zp = np.array([0, 10, -5], np.int8)
    (q,) = quant.quantize_linear(ctx(), [x, scale, zp], {"axis": 1})
    (d,) = quant.dequantize_linear(ctx(), [q, scale, zp], {"axis": -2})
    assert q.dtype == np.int8 and d.dtype == np.float32
    np.testing.assert_allclose(d, x, atol=0.016)


def test_resize_nearest_integer_scale_is_repeat():
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    (y,) = image.resize(ctx(), [x, None, np.array([1, 1, 2, 3], np.float32)], {"mode": "nearest"})
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(3, axis=3))
    with pytest.raises(ResourceLimitError):
        image.resize(ctx(), [x, None, None, i64(1, 2, 2**20, 2**20)], {})


def test_sequence_ops_do_not_mutate_inputs():
    a, b = np.zeros(2, np.float32), np.ones(2, np.float32)
    seq = [a]
    (s2,) = sequence.sequence_insert(ctx(), [seq, b, i64(0)], {})
    assert len(seq) == 1 and len(s2) == 2 and s2[0] is b
    with pytest.raises(KernelError, match="SequenceAt"):
        sequence.sequence_at(ctx(), [s2, i64(2)], {})


def test_loop_counts_with_scan_output():
    def body(_graph, args):
        i, _cond, acc = args
        return [np.array(True), acc + i, acc * 2]

    outs = control.loop(ctx(n_outputs=2, run_subgraph=body), [np.array(4, np.int64), np.array(True),
                                                              np.array(1, np.int64)], {"body": None})
    assert int(outs[0]) == 1 + 0 + 1 + 2 + 3
    np.testing.assert_array_equal(outs[1], [2, 2, 4, 8])
