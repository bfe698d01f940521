"""Fuzzing the three doors strangers' data comes through: the ONNX loader (mutated bytes of small
real models, then a build of what loads), the engine reader (header JSON mutated with every
checksum recomputed, as an attacker would), and the feed validator (dtypes, shapes, subclasses,
strides). Whatever the input, the only exceptions allowed are WorkbenchError subclasses with a
one-line message. Derandomized and bounded, so a run is reproducible and short."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.format.container import read_container, write_container
from workbench.runtime.feeds import random_feeds

FUZZ = settings(derandomize=True, deadline=None, max_examples=60, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
BUDGET = 64 << 20  # builds and runs of fuzzed inputs stay small


def _clean(exc: BaseException) -> None:
    """The failure contract: a WorkbenchError subclass, one line."""
    assert isinstance(exc, WorkbenchError), f"{type(exc).__name__} escaped: {exc!s:.300}"
    assert "\n" not in str(exc), f"multi-line message: {exc!s:.300}"


def _seed_models() -> list[bytes]:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    bn = [numpy_helper.from_array(np.full(2, v, np.float32), n) for n, v in
          (("s", 2.0), ("b", 0.5), ("m", 0.1), ("v", 1.5))]
    conv = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                              helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
                              helper.make_node("Relu", ["n"], ["y"])], "conv", [x], [y], [w, *bn])
    branch = lambda op: helper.make_graph([helper.make_node(op, ["x"], ["o"])], op, [],  # noqa: E731
                                          [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1, 2, 4, 4])])
    fn = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Sigmoid", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    cond = helper.make_graph([helper.make_node("If", ["c"], ["t"], then_branch=branch("Relu"), else_branch=branch("Neg")),
                              helper.make_node("f", ["t"], ["y"], domain="local")], "cond",
                             [x, helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    return [helper.make_model(conv, opset_imports=opsets).SerializeToString(),
            helper.make_model(cond, opset_imports=opsets, functions=[fn]).SerializeToString()]


SEEDS = _seed_models()


@st.composite
def mutated_model(draw):
    data = bytearray(SEEDS[draw(st.integers(0, len(SEEDS) - 1))])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 8))]
    if draw(st.booleans()) and len(data) > 1:
        data = data[: draw(st.integers(1, len(data)))]
    return bytes(data)


@FUZZ
@given(mutated_model())
def test_fuzz_onnx_loader(data):
    try:
        net = wb.load_onnx(data)
        engine = wb.build(net, wb.BuilderConfig(device="cpu", memory_budget=BUDGET, max_elements=1 << 20))
        feeds = random_feeds(engine.inputs, memory_budget=BUDGET)
        engine.create_context(memory_budget=BUDGET).run(feeds)
    except Exception as exc:  # noqa: BLE001 - checked by the contract
        _clean(exc)


# ---- the engine reader ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "seed.wbe"
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "k"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "k")]),
        opset_imports=[helper.make_opsetid("", 17)])
    wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu")).save(path)
    header, blobs = read_container(path)
    header = copy.deepcopy(header)
    header.pop("blobs")
    return path.parent, header, {k: bytes(v) for k, v in blobs.items()}


def _leaf_paths(obj, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += _leaf_paths(obj[k], prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            out += _leaf_paths(v, prefix + (i,))
    return out


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
                    | st.sampled_from(["float99", "cpu", "gpu", "fp16", "", "x" * 300]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["set", "delete"]), JSON), min_size=1, max_size=3))
def test_fuzz_engine_header(engine_file, edits):
    folder, seed_header, blobs = engine_file
    header = copy.deepcopy(seed_header)
    for pick, action, value in edits:
        paths = _leaf_paths(header)
        if not paths:
            break
        path = paths[pick % len(paths)]
        parent = header
        for k in path[:-1]:
            parent = parent[k]
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    target = folder / "fuzzed.wbe"
    try:
        write_container(target, header, blobs)
    except (TypeError, ValueError):
        return  # the writer itself refuses it (e.g. a 'blobs' key): nothing to read
    try:
        engine = wb.Engine.load(target)
        engine.describe()
        ctx = engine.create_context(memory_budget=BUDGET)
        ctx.run({spec.name: np.ones(spec.shape, np.float32) for spec in engine.inputs})
    except Exception as exc:  # noqa: BLE001 - checked by the contract
        _clean(exc)


# ---- the feed validator ---------------------------------------------------------------------

class Hostile(np.ndarray):
    """A subclass whose ufunc override must never run inside a layer."""
    calls = 0

    def __array_ufunc__(self, *args, **kwargs):
        Hostile.calls += 1
        raise RuntimeError("subclass code ran")


@pytest.fixture(scope="module")
def context():
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]), opset_imports=[helper.make_opsetid("", 17)])
    return wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu")).create_context(memory_budget=BUDGET)


DTYPES = ["float32", "float64", "float16", "int64", "int8", "bool", "complex64", "object", "U3", "V4", "datetime64[s]"]


@st.composite
def feed(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))) if draw(st.booleans()) else (2, 3)
    base = np.zeros((4, 6, 2), dtype=dtype).reshape(-1)[: int(np.prod(shape))].reshape(shape) if dtype != "V4" \
        else np.zeros(shape, dtype=dtype)
    kind = draw(st.sampled_from(["plain", "strided", "reversed", "fortran", "masked", "matrix", "hostile",
                                 "list", "scalar", "readonly", "none"]))
    if kind == "strided" and base.ndim:
        big = np.zeros(tuple(2 * d for d in shape), dtype=dtype)
        return big[tuple(slice(None, None, 2) for _ in shape)]
    if kind == "reversed" and base.ndim:
        return base[::-1]
    if kind == "fortran":
        return np.asfortranarray(base)
    if kind == "masked":
        return np.ma.masked_array(base, mask=np.zeros(shape, bool))
    if kind == "matrix" and base.ndim == 2:
        return np.asmatrix(base)
    if kind == "hostile":
        return base.view(Hostile)
    if kind == "list":
        return base.tolist()
    if kind == "scalar":
        return 1.5
    if kind == "readonly":
        base.flags.writeable = False
        return base
    if kind == "none":
        return None
    return base


@FUZZ
@given(value=feed(), name=st.sampled_from(["x", "x", "junk"]), extra=st.booleans())
def test_fuzz_feed_validator(context, value, name, extra):
    feeds = {name: value}
    if extra:
        feeds["other"] = np.zeros(3, np.float32)
    Hostile.calls = 0
    try:
        out = context.run(feeds)
    except Exception as exc:  # noqa: BLE001 - checked by the contract
        _clean(exc)
    else:
        assert type(out["y"]) is np.ndarray and out["y"].shape == (2, 3)
    assert Hostile.calls == 0
