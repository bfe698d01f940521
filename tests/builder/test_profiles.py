"""Shape ranges in the builder: BuilderConfig(profiles=, buckets=) validation with one-line errors,
checks against the model (names, ranks, fixed dims, one range per named dim), the batch dim, the
buckets a build makes (vLLM's sizes by default, other dims specialised), and an engine header whose
ranges are malformed."""

from __future__ import annotations

import json

import pytest

import workbench as wb
from tests.support.exporter_models import model_path
from workbench.builder.profiles import (
    MAX_BUCKETS,
    bucket_specs,
    parse_buckets,
    profiles_from_text,
    resolve_profiles,
    variables,
    vllm_sizes,
)
from workbench.core.plan import TensorSpec
from workbench.errors import EngineFormatError, ShapeError

IDS = ((1, 16), (8, 128), (32, 512))
TEXT = [TensorSpec("input_ids", "int64", ["batch", "sequence"]), TensorSpec("mask", "int64", ["batch", "sequence"])]


@pytest.mark.parametrize("profiles,message", [
    ([{"input_ids": ((1, 16), (8, 128))}], "needs (min, opt, max)"),
    ([{"input_ids": ((1, 16), (8,), (32, 512))}], "different ranks"),
    ([{"input_ids": ((1, 16), (8, 8), (32, 512))}], "axis 1 has min 16, opt 8, max 512"),
    ([{"input_ids": ((1, -1), (8, 8), (32, 512))}], "negative dim"),
    ([{"input_ids": ((1, 1.5), (8, 8), (32, 512))}], "must hold integers"),
    ([{"input_ids": ((1, True), (8, 8), (32, 512))}], "must hold integers"),
    ([{}], "non-empty dict"),
    ("input_ids", "must be a list"),
])
def test_config_refuses_malformed_profiles(profiles, message):
    with pytest.raises(ShapeError) as e:
        wb.BuilderConfig(profiles=profiles)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_normalizes_and_refuses_conflicts():
    cfg = wb.BuilderConfig(profiles={"input_ids": IDS}, buckets=[8, 1, 4, 4])
    assert cfg.profiles == [{"input_ids": IDS}] and cfg.buckets == (1, 4, 8)
    assert wb.BuilderConfig(profiles=[{"input_ids": IDS}], buckets="batch=1,2;sequence=128").buckets == \
        {"batch": (1, 2), "sequence": (128,)}
    with pytest.raises(ShapeError, match="not both"):
        wb.BuilderConfig(profiles=[{"input_ids": IDS}], shapes={"input_ids": (1, 16)})
    with pytest.raises(ShapeError, match="give profiles too"):
        wb.BuilderConfig(buckets=[1, 2])
    for bad in ([], [0, 1], [1.0], {"batch": []}, {}):
        with pytest.raises(ShapeError):
            wb.BuilderConfig(profiles=[{"input_ids": IDS}], buckets=bad)


def test_profiles_against_the_model():
    good = resolve_profiles(TEXT, [{"input_ids": ((1, 16), (2, 32), (4, 64))}])[0]
    assert good["mask"] == good["input_ids"]  # the named dims it shares give the mask its range
    cases = [
        ({"ids": IDS}, "names 'ids', which is not an input; inputs are: input_ids, mask"),
        ({"input_ids": ((1,), (1,), (2,))}, "has rank 2 (batchxsequence); the profile gives rank 1"),
        ({"input_ids": ((1, 16), (1, 16), (2, 16)), "mask": ((1, 8), (1, 16), (2, 16))},
         "dim 'sequence' is 16..16 (opt 16) in input 'input_ids' but 8..16 (opt 16) in input 'mask'"),
    ]
    for profile, message in cases:
        with pytest.raises(ShapeError) as e:
            resolve_profiles(TEXT, [profile])
        assert message in str(e.value), str(e.value)
    fixed = [TensorSpec("x", "float32", ["batch", 3, 224, 224])]
    with pytest.raises(ShapeError, match="axis 1 is fixed at 3; the profile gives min 1, opt 3, max 3"):
        resolve_profiles(fixed, [{"x": ((1, 1, 224, 224), (1, 3, 224, 224), (2, 3, 224, 224))}])
    unnamed = [TensorSpec("a", "float32", [None, 4]), TensorSpec("b", "float32", [None, 4])]
    with pytest.raises(ShapeError, match="no range for input 'b' axis 0"):
        resolve_profiles(unnamed, [{"a": ((1, 4), (1, 4), (2, 4))}])


def test_batch_dim_is_the_leading_symbol_every_input_shares():
    assert variables(TEXT)[1] == "batch"
    assert variables([TensorSpec("a", "int64", ["n", 4]), TensorSpec("b", "int64", ["m", 4])])[1] is None
    assert variables([TensorSpec("a", "int64", [None, 4])])[1] is None  # unnamed: not provably shared
    assert variables([TensorSpec("a", "int64", ["n", 4]), TensorSpec("b", "int64", [4])])[1] is None


def test_default_buckets_are_vllm_sizes_and_other_dims_min_opt_max():
    assert vllm_sizes(32) == [1, 2, 4, 8, 16, 24, 32]
    assert vllm_sizes(300)[-3:] == [256, 272, 288]
    profiles = resolve_profiles(TEXT, [{"input_ids": ((1, 16), (8, 128), (32, 512))}])
    specs = bucket_specs(TEXT, profiles)
    batches = sorted({s.batch for s in specs})
    seqs = sorted({s.shapes["input_ids"][1] for s in specs})
    assert batches == [1, 2, 4, 8, 16, 24, 32] and seqs == [16, 128, 512] and len(specs) == 21
    assert specs[0].shapes["input_ids"] == (32, 512)  # largest first
    # batches beyond the max: the smallest listed size that holds it; below the min: dropped
    specs = bucket_specs(TEXT, resolve_profiles(TEXT, [{"input_ids": ((3, 16), (4, 16), (20, 16))}]), (1, 2, 4, 8, 32))
    assert sorted(s.batch for s in specs) == [4, 8, 32]
    with pytest.raises(ShapeError, match="end below profile 0's max batch 20"):
        bucket_specs(TEXT, resolve_profiles(TEXT, [{"input_ids": ((3, 16), (4, 16), (20, 16))}]), (1, 8))
    with pytest.raises(ShapeError, match="no value inside profile 0's range 16..64"):
        bucket_specs(TEXT, resolve_profiles(TEXT, [{"input_ids": ((1, 16), (1, 32), (2, 64))}]), {"sequence": (128,)})
    with pytest.raises(ShapeError, match="names dim 'seq', which is not a dynamic dim"):
        bucket_specs(TEXT, profiles, {"seq": (128,)})
    with pytest.raises(ShapeError, match=f"over the limit of {MAX_BUCKETS}"):
        bucket_specs(TEXT, resolve_profiles(TEXT, [{"input_ids": ((1, 1), (1, 1), (64, 64))}]),
                     {"batch": tuple(range(1, 65)), "sequence": (1, 64)})


def test_profiles_share_buckets():
    profiles = resolve_profiles(TEXT, [{"input_ids": ((1, 16), (1, 16), (4, 16))}, {"input_ids": ((4, 16), (8, 16), (8, 16))}])
    specs = {s.batch: s.profiles for s in bucket_specs(TEXT, profiles)}
    assert specs == {8: [1], 4: [0, 1], 2: [0], 1: [0]}


def test_cli_spelling():
    assert profiles_from_text(["a:1x16,b:1x16"], ["a:8x128,b:8x128"], ["a:32x512,b:32x512"]) == [
        {"a": IDS, "b": IDS}]
    with pytest.raises(ShapeError, match="missing --opt-shapes, --max-shapes"):
        profiles_from_text(["a:1x16"], None, None)
    with pytest.raises(ShapeError, match="bad --max-shapes entry"):
        profiles_from_text(["a:1x16"], ["a:1x16"], ["a:1xZ"])
    with pytest.raises(ShapeError, match="input 'b' has no shape in --opt-shapes"):
        profiles_from_text(["a:1x16,b:1"], ["a:1x16"], ["a:1x16,b:1"])
    assert parse_buckets(["1,2,4"]) == (1, 2, 4)
    assert parse_buckets(["batch=1,2", "sequence=128;"]) == {"batch": (1, 2), "sequence": (128,)}
    with pytest.raises(ShapeError, match="mixes"):
        parse_buckets(["1,2", "sequence=4"])
    with pytest.raises(ShapeError, match="positive integers"):
        parse_buckets(["1,x"])
    with pytest.raises(ShapeError, match="empty"):
        parse_buckets([" ; "])


def test_engine_header_with_bad_ranges_is_refused(tmp_path):
    net = wb.load_onnx(model_path("bert_dynamo"))
    profile = {s.name: ((1, 4), (2, 8), (2, 8)) for s in net.inputs}
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[profile], buckets=[1, 2], autotune=False))
    from workbench.format.container import write_container

    for patch, message in [
        (lambda p: p["profiles"][0]["input_ids"].__setitem__(0, [3, 4]), "min <= opt <= max"),
        (lambda p: p["profiles"][0].__setitem__("nope", [[1], [1], [1]]), "names no input"),
        (lambda p: p["buckets"][0].__setitem__("batch", 3), "does not lead with it"),
        (lambda p: p["buckets"][0].__setitem__("profiles", [4]), "names a profile"),
        (lambda p: p["buckets"][0]["shapes"].pop("input_ids"), "every input"),
    ]:
        header, blobs = engine.to_header()
        header = json.loads(json.dumps(header))
        patch(header["plan"])
        path = tmp_path / "bad.wbe"
        write_container(path, header, blobs)
        with pytest.raises(EngineFormatError) as e:
            wb.Engine.load(path)
        assert message in str(e.value), str(e.value)


def test_dims_fixed_in_every_profile_build_the_static_plan():
    """A range over the batch with the sequence held at one length: the sequence dim is made static
    (fixed_dim_values), so the positions and masks that depend on it fold and the CPU plan has the
    static build's layers; a dim that varies in any profile stays symbolic."""
    from workbench.builder.profiles import fixed_dim_values, resolve_profiles

    net = wb.load_onnx(model_path("gpt2_legacy"))
    seq16 = {"input_ids": ((1, 16), (4, 16), (8, 16)), "attention_mask": ((1, 16), (4, 16), (8, 16))}
    assert fixed_dim_values(net.inputs, resolve_profiles(net.inputs, [seq16])) == {"sequence": 16}
    seq_varies = {**seq16, "attention_mask": ((1, 8), (4, 16), (8, 16)), "input_ids": ((1, 8), (4, 16), (8, 16))}
    assert fixed_dim_values(net.inputs, resolve_profiles(net.inputs, [seq16, seq_varies])) == {}
    ranged = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[seq16]))
    static = wb.build(net, wb.BuilderConfig(device="cpu", shapes={"input_ids": (4, 16), "attention_mask": (4, 16)}))
    assert [layer.op for layer in ranged.layers] == [layer.op for layer in static.layers]
    assert ranged.plan.inputs[0].shape[1] == 16 and not isinstance(ranged.plan.inputs[0].shape[0], int)


def test_cpu_tactics_of_a_range_are_timed_at_the_opt_shapes():
    """Layers with symbolic shapes are timed at the first profile's opt shapes (not left on their
    first candidate): the convolutions of a ranged ResNet get a fast tactic (BLAS or native, as a
    static build picks) chosen from timed rows, and the engine still runs every batch of the range."""
    net = wb.load_onnx(model_path("resnet_legacy"))
    image = (3, 64, 64)
    engine = wb.build(net, wb.BuilderConfig(device="cpu", profiles=[{"pixel_values": ((1, *image), (4, *image), (8, *image))}]))
    assert engine.build_stats["retimed_at_opt"] == len(engine.layers)
    convs = [layer for layer in engine.layers if layer.op in ("Conv", "FusedConv")]
    assert convs and all(any(row.get("ms") is not None for row in layer.tactic_table) for layer in convs)
    assert all(layer.tactic in ("cpu.blas.conv", "cpu.native.conv") for layer in convs)
    assert all(any(row.get("chosen") and row.get("ms") is not None for row in layer.tactic_table) for layer in convs)
    import numpy as np

    ctx = engine.create_context()
    for batch in (1, 5, 8):
        out = ctx.run({"pixel_values": np.random.default_rng(batch).standard_normal((batch, *image)).astype(np.float32)})
        assert out["logits"].shape[0] == batch and np.isfinite(out["logits"]).all()
