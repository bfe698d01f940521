"""The network-definition API: models written layer by layer build into engines whose outputs match
onnxruntime (on ``net.to_onnx()``) and a NumPy float64 reference; misuse raises named errors early."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import workbench as wb
from workbench.core.numerics import rel_err
from workbench.errors import ShapeError, UnsupportedModelError, WorkbenchError
from workbench.frontends.network.definition import (
    DuplicateNameError,
    ForeignTensorError,
    InvalidLayerError,
    MissingOutputError,
    NetworkDefinition,
    NetworkDefinitionError,
    Tensor,
    UnknownDTypeError,
    UnsupportedOpError,
)


def run_engine(net: NetworkDefinition, feeds: dict) -> dict:
    engine = wb.build(net.finish(), wb.BuilderConfig(device="cpu"))
    return engine.create_context().run(feeds)


def run_ort(net: NetworkDefinition, feeds: dict) -> dict:
    # unoptimized: onnxruntime 1.31's extended fusions break a graph holding an Erf-Gelu and a
    # Tanh-Gelu of the same input ("Node input 'gelu_1_half' is not a graph input"), and a
    # reference should not fuse anyway
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(net.to_onnx().SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def softmax64(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def conv2d64(x, w, b, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # N C H W kh kw
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


# ---- whole models ------------------------------------------------------------------------------

def test_mlp_matches_numpy_and_onnxruntime():
    rng = np.random.default_rng(0)
    w1, b1 = (rng.standard_normal((784, 256)) / 28).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    w2, b2 = (rng.standard_normal((256, 10)) / 16).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    net = NetworkDefinition("mlp", opset=21)
    x = net.input("x", "float32", ("batch", 784))
    h = net.relu(net.add(net.matmul(x, net.constant(w1, name="w1")), net.constant(b1)))
    y = net.softmax(net.gemm(h, w2, b2), axis=-1)
    assert net.output(y, name="probs").name == "probs"

    feeds = {"x": rng.standard_normal((5, 784)).astype(np.float32)}
    got = run_engine(net, feeds)["probs"]
    x64 = feeds["x"].astype(np.float64)
    want = softmax64(np.maximum(x64 @ w1 + b1, 0) @ w2 + b2)
    assert rel_err(got, want) < 1e-5
    assert rel_err(got, run_ort(net, feeds)["probs"]) < 1e-5


def test_cnn_conv_bn_relu_pool_gemm_matches_numpy_and_onnxruntime():
    rng = np.random.default_rng(1)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    w, b = f32(8, 3, 3, 3) * 0.3, f32(8)
    gamma, beta, mean = f32(8), f32(8), f32(8)
    var = (rng.random(8) + 0.5).astype(np.float32)
    wfc, bfc = f32(8 * 4 * 4, 10) * 0.1, f32(10)

    net = NetworkDefinition("cnn", opset=21)
    x = net.input("image", np.float32, ("n", 3, 8, 8))
    y = net.conv(x, w, b, pads=1, name="conv1")
    y = net.relu(net.batch_norm(y, gamma, beta, mean, var, epsilon=1e-5))
    y = net.max_pool(y, kernel=2)
    assert y.shape == ("n", 8, 4, 4)
    logits = net.gemm(net.flatten(y), wfc, bfc)
    net.output(logits, name="logits")

    feeds = {"image": f32(2, 3, 8, 8)}
    got = run_engine(net, feeds)["logits"]
    x64 = feeds["image"].astype(np.float64)
    z = conv2d64(x64, w.astype(np.float64), b.astype(np.float64), pad=1)
    z = (z - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None].astype(np.float64) + 1e-5)
    z = np.maximum(z * gamma[None, :, None, None] + beta[None, :, None, None], 0)
    z = z.reshape(2, 8, 4, 2, 4, 2).max(axis=(3, 5))
    want = z.reshape(2, -1) @ wfc + bfc
    assert rel_err(got, want) < 1e-5
    assert rel_err(got, run_ort(net, feeds)["logits"]) < 1e-5


def _many_layers(opset: int):
    rng = np.random.default_rng(2)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    net = NetworkDefinition(f"zoo{opset}", opset=opset)
    x = net.input("x", "float32", (2, 4, 6, 6))
    s = net.input("seq", "float32", (2, 2, 5, 8))  # (batch, heads, seq, head_dim)
    outs = {
        "deconv": net.conv_transpose(x, f32(4, 3, 3, 3) * 0.3, f32(3), strides=2, pads=1, output_padding=1),
        "grouped": net.conv(x, f32(4, 2, 3, 3), strides=2, pads="same", group=2),
        "avg": net.avg_pool(net.leaky_relu(x, 0.1), kernel=3, strides=1, pads=1),
        "gap": net.global_avg_pool(net.clip(x, -0.5, 0.5)),
        "up_nearest": net.resize(x, scales=[2.0, 2.0], mode="nearest"),
        "up_linear": net.resize(net.tanh(x), sizes=[9, 9], mode="linear"),
        "means": net.reduce_mean(x, axes=[2, 3], keepdims=False),
        "sums": net.reduce_sum(net.sigmoid(x), axes=1),
        "maxes": net.reduce_max(x, axes=[-1], keepdims=False),
        "perm": net.transpose(x, [0, 2, 3, 1]).reshape(2, -1),
        "cat": net.concat([x[:, :2], x[:, 2:] * 0.5, 1.0 - x[:, ::2]], axis=1),
        "picked": net.gather(x, [3, 0], axis=1)[0, :, 1:5:2, -1],
        "sliced": net.slice(x, starts=[1], ends=[-1], axes=[3]),
        "gelu": net.gelu(s) + net.gelu(s, approximate="tanh"),
        "ln": net.layer_norm(s, f32(8), f32(8)) if opset >= 17 else net.silu(s),
        "attn": net.attention(s, s, net.div(s, 2.0), mask=np.triu(np.full((5, 5), -1e4, np.float32), 1)),
        "casted": net.cast(net.cast(x, "int32"), "float32") ** 2,
    }
    for name, t in outs.items():
        net.output(t, name=name)
    return net, {"x": f32(2, 4, 6, 6), "seq": f32(2, 2, 5, 8)}


@pytest.mark.parametrize("opset", [21, 17])
def test_layer_helpers_match_onnxruntime(opset):
    net, feeds = _many_layers(opset)
    got, want = run_engine(net, feeds), run_ort(net, feeds)
    assert set(got) == set(want)
    for name in want:
        assert rel_err(got[name], want[name]) < 1e-5, name
    # older opsets get the older spellings: Gelu as Erf/Tanh, ReduceMean axes as an attribute
    ops = {n.op_type for n in net.to_onnx().graph.node}
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)


def test_finish_gives_a_loader_style_network_and_round_trips():
    net, _ = _many_layers(21)
    network = net.finish()
    assert isinstance(network, wb.Network)
    names = [n.name for n in network.graph]
    assert len(names) == len(set(names)) and all(names)
    assert "conv_transpose_0" in names and "attention_0_softmax" in names
    proto = net.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    reloaded = wb.load_onnx(proto.SerializeToString())
    assert [n.name for n in reloaded.graph] == names
    assert [o.name for o in reloaded.outputs] == [o.name for o in network.outputs]
    assert [i.to_dict() for i in reloaded.inputs] == [i.to_dict() for i in network.inputs]


def test_attention_without_a_heads_axis_builds():
    net = NetworkDefinition("attn3d")
    s = net.input("seq", "float32", (2, 5, 8))
    net.output(net.attention(s, s, s), name="attn")
    feeds = {"seq": np.random.default_rng(3).standard_normal((2, 5, 8)).astype(np.float32)}
    assert rel_err(run_engine(net, feeds)["attn"], run_ort(net, feeds)["attn"]) < 1e-5


# ---- tensors and operators ---------------------------------------------------------------------

def test_python_operators_keep_the_tensor_dtype():
    net = NetworkDefinition("ops")
    a = net.input("a", "float16", ("b", 3))
    for t in (a * 2.0, 2.0 * a, a + 1, 1 - a, a / 3, a ** 2, -a):
        assert isinstance(t, Tensor) and t.dtype == "float16" and t.shape == ("b", 3)
    m = net.constant(np.ones((3, 4), np.float16))
    assert (a @ m).shape == ("b", 4)
    assert (np.ones(3, np.float16) + a).dtype == "float16"  # NumPy defers to the Tensor
    with pytest.raises(TypeError):
        bool(a)


def test_node_names_are_readable_and_unique():
    net = NetworkDefinition("names")
    x = net.input("x", "float32", (2, 2))
    a, b = net.relu(x), net.relu(x)
    c = net.op("Relu", [x], name="my_relu")
    assert (a.name, b.name, c.name) == ("relu_0", "relu_1", "my_relu")
    assert net.batch_norm(x.reshape(2, 2, 1, 1), *[np.ones(2, np.float32)] * 4).name == "batch_norm_0"
    first, second = net.op("Split", [x, net.constant(np.array([1, 1]))], outputs=2, axis=1)
    assert (first.name, second.name) == ("split_0_out_0", "split_0_out_1")
    values, idx = net.op("TopK", [x, np.array([1])], outputs=["top_values", "top_indices"])
    assert values.name == "top_values" and idx.dtype == "int64"


def test_output_of_an_input_or_a_repeated_tensor_gets_an_identity():
    net = NetworkDefinition("passthrough")
    x = net.input("x", "float32", (3,))
    y = net.relu(x)
    net.output(x, name="x_copy")
    net.output(y, name="y")
    net.output(y, name="y_again")
    feeds = {"x": np.array([-1.0, 0.5, 2.0], np.float32)}
    got = run_engine(net, feeds)
    np.testing.assert_array_equal(got["x_copy"], feeds["x"])
    np.testing.assert_array_equal(got["y_again"], np.maximum(feeds["x"], 0))


def test_the_definition_stays_independent_of_the_finished_network():
    net = NetworkDefinition("independent")
    x = net.input("x", "float32", (2,))
    net.output(net.relu(x))
    first = net.finish()
    net.output(net.sigmoid(x))
    assert len(first.outputs) == 1 and len(net.finish().outputs) == 2


# ---- errors ------------------------------------------------------------------------------------

def test_tensor_from_another_network_is_rejected():
    a, b = NetworkDefinition("a"), NetworkDefinition("b")
    xa = a.input("x", "float32", (2,))
    xb = b.input("x", "float32", (2,))
    with pytest.raises(ForeignTensorError, match="belongs to network 'a'"):
        b.add(xa, xb)
    with pytest.raises(ForeignTensorError):
        xb + xa
    with pytest.raises(ForeignTensorError):
        b.output(xa)


def test_unknown_dtype_is_rejected():
    net = NetworkDefinition("dt")
    with pytest.raises(UnknownDTypeError, match="float33"):
        net.input("x", "float33", (2,))
    x = net.input("x", "float32", (2,))
    with pytest.raises(UnknownDTypeError):
        net.cast(x, "complex512")
    with pytest.raises(ShapeError):
        net.input("y", "float32", (2, -1))


def test_shape_mismatch_raises_at_the_layer_and_leaves_the_network_unchanged():
    net = NetworkDefinition("bad")
    x = net.input("x", "float32", ("batch", 784))
    w = net.constant(np.zeros((100, 10), np.float32))
    with pytest.raises(InvalidLayerError, match=r"matmul_\d+.*MatMul.*matrix multiplication") as info:
        net.matmul(x, w)
    assert isinstance(info.value, ShapeError) and isinstance(info.value, WorkbenchError)
    with pytest.raises(InvalidLayerError, match="Conv"):
        net.conv(net.input("img", "float32", (1, 3, 8, 8)), np.zeros((4, 5, 3, 3), np.float32))
    with pytest.raises(InvalidLayerError, match="Unrecognized attribute"):
        net.op("Relu", [x], alpha=1.0)
    with pytest.raises(InvalidLayerError):
        net.add(x, net.constant(np.zeros(784, np.float64)))  # float32 + float64
    assert not list(net._graph) and len(x._value.uses()) == 0
    ok = net.relu(x)
    assert ok.name == "relu_0"
    net.output(ok)
    assert [n.name for n in net.finish().graph] == ["relu_0"]


def test_duplicate_names_are_rejected():
    net = NetworkDefinition("dup")
    x = net.input("x", "float32", (2,))
    with pytest.raises(DuplicateNameError):
        net.input("x", "float32", (2,))
    with pytest.raises(DuplicateNameError):
        net.constant(np.zeros(2, np.float32), name="x")
    net.relu(x, name="act")
    with pytest.raises(DuplicateNameError):
        net.sigmoid(x, name="act")
    with pytest.raises(DuplicateNameError):
        net.silu(x, name="act")
    with pytest.raises(DuplicateNameError):
        net.output(net.tanh(x), name="x")


def test_missing_output_and_unknown_operators():
    net = NetworkDefinition("empty")
    x = net.input("x", "float32", (2,))
    net.relu(x)
    with pytest.raises(MissingOutputError):
        net.finish()
    with pytest.raises(MissingOutputError):
        net.to_onnx()
    with pytest.raises(UnsupportedOpError, match="no operator 'Frobnicate'"):
        net.op("Frobnicate", [x])
    old = NetworkDefinition("old", opset=16)
    with pytest.raises(UnsupportedOpError, match="LayerNormalization needs opset >= 17") as info:
        old.layer_norm(old.input("x", "float32", (2, 4)), np.ones(4, np.float32))
    assert isinstance(info.value, UnsupportedModelError)
    with pytest.raises(UnsupportedModelError):
        NetworkDefinition("ancient", opset=9)
    with pytest.raises(NetworkDefinitionError):
        net.max_pool(x, kernel=2)  # rank 1 has no spatial axes
