"""Engine A vs B per layer: layers matched through their ONNX nodes across different fusions, with
time, precision, tactic and the error of B's tensors against A's."""

from __future__ import annotations

import numpy as np
import pytest

import workbench as wb
from tests.explore.conftest import synthetic_profile
from workbench.core.numerics import rel_err, tolerance
from workbench.explore import match_layers, tensor_values


def test_groups_follow_the_onnx_nodes_across_fusions(fp32_split, fp16):
    groups = match_layers(fp32_split, fp16)
    assert sorted(i for g in groups for i in g["a"]) == list(range(len(fp32_split.layers)))
    assert sorted(i for g in groups for i in g["b"]) == list(range(len(fp16.layers)))
    for g in groups:
        nodes_a = {n for i in g["a"] for n in fp32_split.layers[i].onnx_nodes}
        nodes_b = {n for i in g["b"] for n in fp16.layers[i].onnx_nodes}
        assert nodes_a == nodes_b == set(g["nodes"])  # same model: both sides cover the same nodes
    split = [g for g in groups if len(g["a"]) == 2 and len(g["b"]) == 1]
    assert split, "the fp32 engine without conv_epilogue should split some FusedConv of the fp16 one"
    for g in split:
        assert fp16.layers[g["b"][0]].op == "FusedConv"
        assert [fp32_split.layers[i].op for i in g["a"]][0] == "Conv"


def test_compare_fp32_vs_fp16_time_precision_tactic_error(fp32_split, fp16, feeds):
    prof_a = synthetic_profile(fp32_split, lambda i, layer: 0.1 * (i + 1))
    prof_b = synthetic_profile(fp16, lambda i, layer: 0.05 * (i + 1))
    df = wb.compare(fp32_split, fp16, prof_a, prof_b, feeds=feeds)
    assert (df["match"] == "both").all()
    assert df.attrs["fused_differently"] == int(((df["layers_a"] == 2) & (df["layers_b"] == 1)).sum()) > 0
    ms_a = dict(zip(prof_a["layer"], prof_a["median_ms"]))
    ms_b = dict(zip(prof_b["layer"], prof_b["median_ms"]))
    for row in df.itertuples():
        assert row.ms_a == pytest.approx(sum(ms_a[n] for n in row.layer_names_a))
        assert row.ms_b == pytest.approx(sum(ms_b[n] for n in row.layer_names_b))
        assert row.speedup == pytest.approx(row.ms_a / row.ms_b)
        assert row.precision_a == "fp32" and row.precision_b == "fp16"
        assert row.tactic_b == "/".join(dict.fromkeys(fp16.plan.layer(n).tactic for n in row.layer_names_b))
        # fp16 storage (emulated on the CPU) moves every matched tensor, but only by rounding
        assert 0 < row.rel_err < tolerance("float16"), (row.layer, row.rel_err)
    assert df["ms_a"].sum() == pytest.approx(prof_a["median_ms"].sum())
    # the error of the last group is the error of the model's output
    want = fp32_split.create_context().run(feeds)
    got = fp16.create_context().run(feeds)
    out = fp16.outputs[0].name
    last = df[df["tensor"] == out]
    assert len(last) == 1 and last["rel_err"].iloc[0] == pytest.approx(rel_err(got[out], want[out]))


def test_compare_an_engine_with_itself(fp32, feeds):
    prof = synthetic_profile(fp32)
    df = wb.compare(fp32, fp32, prof, prof, feeds=feeds)
    assert len(df) == len(fp32.layers) and df.attrs["fused_differently"] == 0
    assert (df["rel_err"] == 0).all() and (df["speedup"] == 1).all()


def test_compare_profiles_both_engines_when_not_given(fp32, fp16, feeds):
    df = wb.compare(fp32, fp16, feeds=feeds, runs=1, error=False)
    assert df["ms_a"].notna().all() and df["ms_b"].notna().all() and df["rel_err"].isna().all()
    assert df.attrs["end_to_end_a"] > 0 and df.attrs["end_to_end_b"] > 0


def test_tensor_values_are_the_intermediates_of_one_run(fp32_split, feeds):
    engine = fp32_split
    names = [l.outputs[0] for l in engine.layers]
    values = tensor_values(engine, feeds, names)
    assert list(values) == names
    # the reference executor, layer by layer, gives the same intermediates
    from workbench.runtime.cpu import PlanExecutor

    env = dict(feeds)
    env.update(engine.plan.constants)
    ex = PlanExecutor(engine.plan, reuse=False)
    for layer, kernel, ctx in zip(engine.layers, ex.kernels, ex.contexts):
        outs = kernel(ctx, [env[n] if n else None for n in layer.inputs], layer.attrs)
        for n, v in zip(layer.outputs, outs):
            env[n] = np.array(v, copy=True)
    for n in names:
        np.testing.assert_array_equal(values[n], env[n])


def test_engines_of_different_models_are_refused(fp32, tmp_path):
    from tests.support.cli import small_model

    small_model(tmp_path / "m.onnx")
    other = wb.build(wb.load_onnx(str(tmp_path / "m.onnx")), wb.BuilderConfig(device="cpu", shapes={"x": (2, 4)}))
    with pytest.raises(wb.WorkbenchError, match="different inputs"):
        wb.compare(fp32, other, time=False)


def test_a_value_stored_in_another_type_keeps_its_name():
    from workbench.explore.compare import value_name

    assert value_name("logits/float16") == "logits" and value_name("/m/conv/Relu_output_0/bfloat16") == "/m/conv/Relu_output_0"
    assert value_name("/m/conv/Relu_output_0") == "/m/conv/Relu_output_0" and value_name("/float16") == "/float16"
