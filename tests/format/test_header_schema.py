"""Engine headers with a valid checksum but wrong types or ranges are refused at load by the
schema; the file can never raise the reader's own limits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench as wb
from workbench.errors import EngineFormatError
from workbench.format.container import read_container, write_container
from workbench.kernels.reference.limits import MAX_ELEMENTS


def _engine(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "e.wbe"
    wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu")).save(path)
    return path


def _tamper(path, edit):
    """Rewrite the engine with ``edit(header)`` applied; the container recomputes every checksum,
    as an attacker would."""
    header, blobs = read_container(path)
    header = copy.deepcopy(header)
    header.pop("blobs")
    edit(header)
    write_container(path, header, {k: bytes(v) for k, v in blobs.items()})


def _set(path_keys, value):
    def edit(h):
        d = h
        for k in path_keys[:-1]:
            d = d[k]
        d[path_keys[-1]] = value
    return edit


CASES = [
    (_set(["build"], "a string"), "header, build"),
    (_set(["reports"], [1, 2]), "header, reports"),
    (_set(["reports", "memory"], "x"), "reports.memory"),
    (_set(["reports", "memory", "arena_bytes"], "many"), "reports.memory.arena_bytes"),
    (_set(["reports", "fusions"], [1]), "reports.fusions[0]"),
    (_set(["reports", "fusions"], [{"rule": 3}]), "reports.fusions[0].rule"),
    (_set(["reports", "nodes"], [1]), "reports.nodes"),
    (_set(["reports", "counters"], {"a": "b"}), "reports.counters.a"),
    (_set(["reports", "counters"], {"a": -1}), "reports.counters.a"),
    (_set(["target"], "cpu"), "header, target"),
    (_set(["target", "backend"], 5), "target.backend"),
    (_set(["producer"], {"name": 1, "version": "x"}), "producer.name"),
    (_set(["kernels"], "abc"), "header, kernels"),
    (_set(["surprise"], 1), "unknown field"),
    (lambda h: h["plan"]["inputs"][0].__setitem__("dtype", "float99"), "unknown element type"),
    (lambda h: h["plan"]["inputs"][0].__setitem__("shape", [2**40, 8]), "over the limit"),
    (lambda h: h["plan"]["inputs"][0].__setitem__("shape", [2**70]), "out of range"),
    (_set(["plan", "options", "max_elements"], 4.6e14), "options.max_elements"),
    (_set(["plan", "options", "max_elements"], "abc"), "options.max_elements"),
    (_set(["plan", "options", "max_elements"], 2**60), "out of range"),
    (_set(["plan", "options", "max_elements"], 0), "out of range"),
    (_set(["plan", "arena", "bytes"], 2**70), "arena.bytes"),
    (_set(["plan", "arena", "alignment"], 3), "arena.alignment"),
    # a scale (quantization codes) belongs to an int8 / float8e4m3fn spec only, and is positive
    (lambda h: h["plan"]["inputs"][0].__setitem__("scale", 0.5), "a scale on a float32 tensor"),
    (lambda h: h["plan"]["inputs"][0].update(dtype="int8", scale=-1.0), "positive finite number"),
    (lambda h: h["plan"]["inputs"][0].update(dtype="int8", scale="x"), "positive finite number"),
]


@pytest.mark.parametrize(("edit", "match"), CASES)
def test_tampered_header_refused_at_load(tmp_path, edit, match):
    path = _engine(tmp_path)
    _tamper(path, edit)
    with pytest.raises(EngineFormatError, match=match.replace("[", r"\[").replace("]", r"\]")) as exc:
        wb.Engine.load(path)
    assert "\n" not in str(exc.value)


def test_stripped_reports_still_load_and_describe(tmp_path):
    path = _engine(tmp_path)
    _tamper(path, lambda h: (h.pop("reports"), h.pop("build")))
    engine = wb.Engine.load(path)
    assert engine.describe()["fusions"] == []
    assert "summary" in engine.report()


def test_file_cap_cannot_raise_the_readers_element_cap(tmp_path):
    path = _engine(tmp_path)
    _tamper(path, _set(["plan", "options", "max_elements"], 2**40))  # within the schema's range
    engine = wb.Engine.load(path)
    ctx = engine.create_context()
    assert ctx.limits.max_elements == MAX_ELEMENTS  # the reader's own cap, not the file's 2^40
    _tamper(path, _set(["plan", "options", "max_elements"], 10))
    assert wb.Engine.load(path).create_context().limits.max_elements == 10  # lowering is allowed
    out = wb.Engine.load(path).create_context().run({"x": np.ones((2, 3), np.float32)})
    assert out["y"].shape == (2, 3)


def test_describe_and_report_of_loaded_engine_use_checked_values(tmp_path):
    path = _engine(tmp_path)
    engine = wb.Engine.load(path)
    d = engine.describe()
    assert d["nodes"]["before"] == 1 and isinstance(d["memory"]["arena_bytes"], int)


def test_quantized_tensor_scale_round_trips():
    """A spec of codes keeps its scale through the engine header; others carry no scale field."""
    from workbench.core.plan import TensorSpec
    from workbench.format import strict

    spec = TensorSpec("h", "float8e4m3fn", [4, 8], 0.0125)
    d = spec.to_dict()
    assert d["scale"] == 0.0125 and TensorSpec.from_dict(d) == spec == strict.spec(d, "t")
    assert "scale" not in TensorSpec("x", "float32", [2]).to_dict()
