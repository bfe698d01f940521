"""The CPU target chooses each layer's tactic by timing and records every candidate; threads are a
build and a context option (BLAS through threadpoolctl), defaulting to the process's cores."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.core.numerics import rel_err
from workbench.errors import WorkbenchError
from workbench.kernels.cpu._common import blas_libs
from workbench.runtime.cpu import cpu_threads, default_threads


def conv_model(path):
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 8, 3, 3], rng.standard_normal(16 * 8 * 9).astype(np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [16], rng.standard_normal(16).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, b]),
                                opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("cpu") / "conv.onnx"
    conv_model(path)
    fast = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu", threads=1))
    plain = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu", optimize=False, autotune=False))
    return fast, plain


def test_every_candidate_is_timed_or_declined_and_the_fastest_is_recorded(built):
    fast, _ = built
    conv = next(l for l in fast.layers if l.op == "FusedConv")
    timed = [r for r in conv.tactic_table if r.get("ms") is not None]
    declined = [r for r in conv.tactic_table if "reason" in r]
    assert {r["tactic"] for r in timed} >= {"cpu.blas.conv", "cpu.numpy"}
    from workbench.kernels.cpu import native

    ways = {"copy", "offsets"} | ({"native"} if native.MISSING is None else set())
    assert {r["config"].get("im2col") for r in timed if r["tactic"] == "cpu.blas.conv"} == ways
    if native.MISSING is None:  # direct and register-blocked forms (too narrow a layer for Winograd)
        assert {r["config"]["layout"] for r in timed if r["tactic"] == "cpu.native.conv"} == {"nchw", "blocked"}
    assert all(r["reason"] for r in declined) and {r["tactic"] for r in declined} >= {"cpu.fast.pool"}
    chosen = [r for r in conv.tactic_table if r.get("chosen")]
    assert len(chosen) == 1
    best_fast = min(r["ms"] for r in timed if r["tactic"] != "cpu.numpy")
    if chosen[0]["tactic"] == "cpu.numpy":  # the reference must win by the margin
        assert chosen[0]["ms"] * 1.15 <= best_fast
    else:
        assert chosen[0]["ms"] == best_fast
    assert (conv.tactic, conv.tactic_config) == (chosen[0]["tactic"], chosen[0]["config"])


def test_autotune_off_takes_the_first_candidate_untimed(built):
    _, plain = built
    conv = next(l for l in plain.layers if l.op == "Conv")
    assert conv.tactic == "cpu.blas.conv"
    assert all(r.get("ms") is None for r in conv.tactic_table)
    assert any("not timed" in r.get("reason", "") for r in conv.tactic_table)


def test_fast_and_reference_engines_agree_and_outputs_are_the_callers(built):
    fast, plain = built
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32)
    ctx = fast.create_context(threads=1)
    first = ctx.run({"x": x})["y"]
    want = plain.create_context().run({"x": x})["y"]
    assert rel_err(first, want) <= 1e-5 and np.any(want != 0)
    kept = first.copy()
    ctx.run({"x": -x})  # kept buffers are reused: an output the caller holds must not change
    assert np.array_equal(first, kept)


def test_threads_default_to_the_process_affinity_and_are_validated():
    assert default_threads() == len(os.sched_getaffinity(0))
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(WorkbenchError, match="threads"):
            wb.BuilderConfig(device="cpu", threads=bad)
    assert wb.BuilderConfig(device="cpu", threads=2).threads == 2


def test_context_threads_limit_blas_only_while_running(built):
    fast, _ = built
    with pytest.raises(WorkbenchError, match="threads"):
        fast.create_context(threads=0)
    assert fast.create_context().threads == default_threads()
    libs = blas_libs()
    if not libs:
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    before = [lib.get_num_threads() for lib in libs]
    with cpu_threads(1):
        assert all(lib.get_num_threads() == 1 for lib in libs)
    assert [lib.get_num_threads() for lib in libs] == before


def test_unread_optional_outputs_are_left_out_at_lowering():
    """A post-norm SkipLayerNorm's residual sum that nothing reads (BERT), and LayerNormalization's
    unread mean / inv_std_dev, are not outputs of their layers: no kernel computes or stores them.
    A sum the next block reads (GPT-2's pre-norm residual) or a graph output stays."""
    from tests.support.paths import MODELS

    def layers(name):
        path = os.path.join(MODELS, f"{name}.onnx")
        data = np.load(path[:-5] + ".npz")
        feeds = {k: data[k] for k in data.files if not k.startswith("output:")}
        eng = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="cpu", shapes={k: v.shape for k, v in feeds.items()}))
        out = eng.create_context().run(feeds)
        want = {k[len("output:"):]: data[k] for k in data.files if k.startswith("output:")}
        for k, v in want.items():
            assert rel_err(out[k], v) < 1e-4, k
        return [l for l in eng.layers if l.op == "SkipLayerNorm"]

    bert = layers("bert_sdpa_dynamo")
    assert bert and all(len(l.outputs) == 1 and len(l.output_specs) == 1 for l in bert)
    gpt2 = layers("gpt2_dynamo")
    assert any(len(l.outputs) == 2 and l.outputs[1] for l in gpt2)  # the residual stream reads the sum
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    ln = helper.make_node("LayerNormalization", ["x", "g"], ["y", "mean", "inv"], axis=-1)
    g = helper.make_graph([ln], "ln", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                          [onnx.numpy_helper.from_array(np.ones(8, np.float32), "g")])
    eng = wb.build(wb.load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()),
                   wb.BuilderConfig(device="cpu", optimize=False))
    assert eng.layers[0].outputs == ["y"]
