"""The engine container and plan serialization: round trips, determinism, and every hostile input
that RELIABILITY.md lists for engines (bad magic, truncation, bit flips, crafted headers and blob
tables, other format versions, no pickle anywhere)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import marshal
import math
import os
import pickle
import struct
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.paths import REPO
from workbench.format import container as fmt
from workbench.format import serialize
from workbench.format.container import (
    FORMAT_VERSION,
    MAGIC,
    read_container,
    write_container,
)
from workbench.core.plan import Arena, Layer, Plan, RunOptions, Subgraph, TensorSpec
from workbench.format.serialize import MAX_GRAPH_DEPTH, decode_plan, encode_plan
from workbench.errors import EngineCompatibilityError, EngineFormatError

# --------------------------------------------------------------------------- fixtures and helpers


def _body() -> Subgraph:
    return Subgraph(
        inputs=[TensorSpec("x", "float32", [2])], outputs=[TensorSpec("y", "float32", [2])],
        layers=[Layer("inner", "Add", inputs=["x", "k"], outputs=["y"], attrs={"t": np.ones(2, np.float16)})],
        constants={"k": np.array([1.0, 2.0], np.float32), "names": np.array(["a", "bé"], dtype=object)},
        name="then",
    )


def make_plan() -> Plan:
    rng = np.random.default_rng(0)
    attrs = {
        "i": -3, "big": 2**62, "f": 0.1, "neg0": -0.0, "inf": math.inf, "ninf": -math.inf, "nan": math.nan,
        "s": "héllo", "b": b"\x00\xffraw", "yes": True, "no": False, "none": None,
        "ints": [1, 2, 3], "floats": [1.5, math.inf], "strs": ["a", ""], "bytes_list": [b"x", b""],
        "t_f32": rng.standard_normal((3, 4)).astype(np.float32),
        "t_f16": np.array([1.5, -2.0], np.float16),
        "t_bf16": np.array([1.0, 3.0], ml_dtypes.bfloat16),
        "t_i64": np.array([[1, -2], [3, 4]], np.int64),
        "t_bool": np.array([True, False, True]),
        "t_int4": np.array([-8, 7, 0, 1], ml_dtypes.int4),
        "t_scalar": np.array(2.5, np.float64),
        "t_empty": np.zeros((0, 3), np.float32),
        "t_str": np.array(["x", "yz"]),
        "t_bytes": np.array([b"ab", b"c"]),
        "tensors": [np.arange(3, dtype=np.int32), np.array([0.5], np.float32)],
        "then_branch": _body(),
        "branches": [_body(), _body()],
        "$weird": {"$x": 1, "plain": [1]},
    }
    layer = Layer(
        name="conv/1", op="If", domain="com.workbench", opset=17, inputs=["a", ""], outputs=["b"],
        attrs=attrs, onnx_nodes=["n1", "n2"], onnx_ops=["If"], precision="fp16", tactic="cuda.if",
        tactic_config={"tile": [64, 64], "split_k": 2, "$odd": "key"}, binaries={"if_kernel": "cubin/abc"},
        tactic_table=[{"tactic": "t1", "config": {"tile": [64, 64]}, "ms": 0.25},
                      {"tactic": "t2", "config": {}, "reason": "unsupported"}],
        input_specs=[TensorSpec("a", "float32", [1, "N", None]), TensorSpec("", None, None)],
        output_specs=[TensorSpec("b", "float16", [1])], flops=123, bytes_moved=456,
    )
    constants = {
        "w/f32": rng.standard_normal((4, 3)).astype(np.float32),
        "w%f16": np.arange(5, dtype=np.float16),
        "bf16": np.array([1.0, -0.5], ml_dtypes.bfloat16),
        "i64": np.array([2**40, -1], np.int64),
        "mask": np.array([[True], [False]]),
        "q": np.array([-8, -1, 0, 7], ml_dtypes.int4),
        "u4": np.array([0, 15], ml_dtypes.uint4),
        "f8": np.array([1.0, 0.5], ml_dtypes.float8_e4m3fn),
        "vocab": np.array(["<s>", "é", ""], dtype=object),
        "be": np.array([1, 2], dtype=">i4"),
    }
    return Plan(
        inputs=[TensorSpec("a", "float32", [1, "N", None])], outputs=[TensorSpec("b", "float16", [1])],
        layers=[layer, Layer("relu", "Relu", inputs=["b"], outputs=["c"])], constants=constants,
        tensors={"b": TensorSpec("b", "float16", [1]), "c": TensorSpec("c_alias", "float16", None)},
        arena=Arena(bytes=512, offsets={"b": 0, "$c": 256}, alignment=256),
        options=RunOptions(cuda_graph=True, max_elements=1 << 20),
    )


def same(a, b, path="") -> None:
    """Deep equality that also checks array dtypes, NaN and -0.0, with the path of any difference."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape, path
        if a.dtype.kind in "USO":
            assert b.dtype.kind == a.dtype.kind and a.tolist() == b.tolist(), path
        else:
            assert np.dtype(a.dtype).newbyteorder("=") == b.dtype, (path, a.dtype, b.dtype)
            assert a.astype(b.dtype).tobytes() == b.tobytes(), path
        return
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
        return
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b) or set(a) == set(b), path
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b)), path
    else:
        assert a == b, path


def save(path, plan: Plan) -> dict:
    d, blobs = encode_plan(plan)
    return write_container(path, {"plan": d, "producer": {"workbench": "test"}}, blobs)


def load(source) -> Plan:
    header, blobs = read_container(source)
    return decode_plan(header["plan"], blobs)


@pytest.fixture(scope="module")
def engine_bytes(tmp_path_factory) -> bytes:
    p = tmp_path_factory.mktemp("eng") / "m.wbe"
    save(p, make_plan())
    return p.read_bytes()


def craft(header: bytes | dict, data: bytes = b"", version=FORMAT_VERSION) -> bytes:
    """A container around arbitrary header bytes with a correct trailing sha256, so that the
    structural checks, not the checksum, are what must refuse it."""
    hb = header if isinstance(header, bytes) else json.dumps(header, sort_keys=True).encode()
    head = struct.pack("<8sHHQ", MAGIC, *version, len(hb)) + hb
    body = head + bytes(fmt._align(len(head)) - len(head)) + data
    return body + hashlib.sha256(body).digest()


def data_start(header: dict) -> int:
    return fmt._align(20 + len(json.dumps(header, sort_keys=True).encode()))


def blob_file(entries: dict, data: bytes) -> bytes:
    """Craft a file whose blob table is `entries`; offsets are relative to the data region start,
    resolved with a fixed-point loop because the header's length moves the data start."""
    start = 64
    for _ in range(10):
        table = {n: {"offset": start + off if isinstance(off, int) else off, "size": size, "sha256": sha
                     or hashlib.sha256(data[off:off + size] if isinstance(off, int) and off >= 0 else b"").hexdigest()}
                 for n, (off, size, sha) in entries.items()}
        new = data_start({"blobs": table})
        if new == start:
            return craft({"blobs": table}, data)
        start = new
    raise AssertionError("no fixed point")


def refused(data: bytes, *match: str) -> EngineFormatError:
    with pytest.raises(EngineFormatError) as e:
        read_container(data)
    for m in match:
        assert m in str(e.value), (m, str(e.value))
    return e.value


# --------------------------------------------------------------------------- round trips


def test_round_trip_every_attribute_kind_and_dtype(tmp_path):
    plan = make_plan()
    info = save(tmp_path / "m.wbe", plan)
    assert info["size"] == os.path.getsize(tmp_path / "m.wbe")
    assert info["sha256"] == hashlib.sha256((tmp_path / "m.wbe").read_bytes()).hexdigest()
    back = load(tmp_path / "m.wbe")
    same(plan, back)
    attrs = back.layers[0].attrs
    assert attrs["t_bf16"].dtype == ml_dtypes.bfloat16 and attrs["t_int4"].dtype == ml_dtypes.int4
    assert back.constants["vocab"].dtype == object and attrs["t_str"].dtype.kind == "U"
    assert not back.constants["w/f32"].flags.writeable  # read-only views into the loaded buffer
    assert list(back.constants) == list(plan.constants)  # order kept
    assert not [n for n in os.listdir(tmp_path) if n != "m.wbe"]  # no temp file left behind


def test_blobs_are_64_aligned_in_file_and_memory(tmp_path):
    save(tmp_path / "m.wbe", make_plan())
    header, blobs = read_container(tmp_path / "m.wbe")
    assert header["blobs"] and all(e["offset"] % 64 == 0 for e in header["blobs"].values())
    for mv in blobs.values():
        assert mv.readonly and np.frombuffer(mv, np.uint8).ctypes.data % 64 == 0


def test_same_plan_gives_byte_identical_files(tmp_path):
    a, b = save(tmp_path / "a.wbe", make_plan()), save(tmp_path / "b.wbe", make_plan())
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a.wbe").read_bytes() == (tmp_path / "b.wbe").read_bytes()


def test_no_pickle_or_marshal_is_ever_used(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pickle/marshal must never be used")

    for mod, name in [(pickle, "loads"), (pickle, "load"), (pickle, "dumps"), (pickle, "dump"),
                      (marshal, "loads"), (marshal, "dumps")]:
        monkeypatch.setattr(mod, name, boom)
    save(tmp_path / "m.wbe", make_plan())
    same(make_plan(), load(tmp_path / "m.wbe"))


def test_empty_container(tmp_path):
    info = write_container(tmp_path / "e.wbe", {}, {})
    assert info["size"] == 96  # prefix + "{"blobs":{}}" padded to 64, then the trailer
    assert read_container(tmp_path / "e.wbe") == ({"blobs": {}}, {})
    assert read_container(craft({"blobs": {}})) == ({"blobs": {}}, {})


def test_deepest_allowed_graph_nesting_round_trips(tmp_path):
    sub = Subgraph([], [], [Layer("leaf", "Relu")])
    for _ in range(MAX_GRAPH_DEPTH - 1):
        sub = Subgraph([], [], [Layer("l", "If", attrs={"b": [sub]})], {"c": np.zeros(1)})
    plan = Plan([], [], [Layer("top", "If", attrs={"b": sub})])
    save(tmp_path / "deep.wbe", plan)
    same(plan, load(tmp_path / "deep.wbe"))
    with pytest.raises(ValueError, match="nest deeper"):
        encode_plan(Plan([], [], [Layer("top", "If", attrs={"b": Subgraph([], [], [Layer("x", "If", attrs={"b": sub})])})]))


def test_lean_modules_import_no_optimizer():
    code = ("import sys, workbench.format.container, workbench.format.serialize; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnx_ir')"
            " or m.startswith(('workbench.frontends', 'workbench.passes', 'workbench.builder'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    # numpy itself imports pickle, so the import list cannot show it unused; the source can
    for mod in (fmt, serialize):
        with open(mod.__file__, encoding="utf-8") as f:
            src = f.read()
        for word in ("import pickle", "import marshal", "eval(", "exec(", "allow_pickle=True", "__import__"):
            assert word not in src, (mod.__name__, word)


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write_container(tmp_path / "x", {"blobs": 1}, {})
    with pytest.raises(TypeError, match="object arrays"):
        write_container(tmp_path / "x", {}, {"a": np.array([object()])})
    (tmp_path / "x").write_bytes(b"old")
    with pytest.raises(ValueError):
        write_container(tmp_path / "x", {"v": math.nan}, {})
    assert (tmp_path / "x").read_bytes() == b"old" and os.listdir(tmp_path) == ["x"]  # atomic


def test_encoder_rejects_unstorable_values():
    plan = Plan([], [], [Layer("l", "X", attrs={"s": {1, 2}})])
    with pytest.raises(TypeError, match="set"):
        encode_plan(plan)


# --------------------------------------------------------------------------- corrupt files


def test_wrong_magic(engine_bytes):
    refused(b"PK\x03\x04" + engine_bytes[4:], "magic")
    refused(b"", "truncated")


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.1, 0.3, 0.5, 0.9, 0.99])
def test_truncated(engine_bytes, frac):
    refused(engine_bytes[: int(len(engine_bytes) * frac)], "truncated")


@pytest.mark.parametrize("cut", [7, 8, 19, 20, 21, 51, 52, 100, -33, -32, -1])
def test_truncated_at_boundaries(engine_bytes, cut):
    refused(engine_bytes[:cut], "truncated")


def _regions(data: bytes) -> dict[str, int]:
    """One byte offset inside each region of a real engine file."""
    hlen = struct.unpack_from("<Q", data, 12)[0]
    start = fmt._align(20 + hlen)
    header = json.loads(data[20:20 + hlen])
    entries = sorted((e["offset"], e["size"], n) for n, e in header["blobs"].items())
    out = {"magic": 3, "version_major": 8, "version_minor": 10, "header_length_low": 12,
           "header_length_high": 19, "header": 20 + hlen // 2, "header_padding": start - 1,
           "trailer": len(data) - 1}
    for off, size, n in entries:
        if size:
            out[f"blob:{n}"] = off + size // 2
    gaps = [(a[0] + a[1], b[0]) for a, b in itertools.pairwise(entries) if b[0] > a[0] + a[1]]
    out["blob_padding"] = gaps[0][0]
    return out


def test_one_flipped_bit_in_every_region_is_refused(engine_bytes):
    regions = _regions(engine_bytes)
    assert len(regions) > 20
    for pos in regions.values():
        for bit in (0, 7):
            bad = bytearray(engine_bytes)
            bad[pos] ^= 1 << bit
            with pytest.raises(EngineFormatError):
                read_container(bytes(bad))


def test_one_flipped_bit_anywhere_is_refused(tmp_path):
    """Exhaustive over a small engine: every byte, one bit."""
    plan = Plan([TensorSpec("x", "float32", [2])], [TensorSpec("y")], [Layer("l", "Relu", inputs=["x"])],
                {"w": np.arange(3, dtype=np.float32), "b": np.ones(2, np.float16)})
    path = tmp_path / "s.wbe"
    save(path, plan)
    good = path.read_bytes()
    for pos in range(len(good)):
        bad = bytearray(good)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(EngineFormatError):
            read_container(bytes(bad))


def test_flipped_data_bit_says_checksum(engine_bytes):
    bad = bytearray(engine_bytes)
    bad[_regions(engine_bytes)["header"]] ^= 4
    refused(bytes(bad), "checksum mismatch")


# --------------------------------------------------------------------------- crafted headers


def test_crafted_container_is_accepted_when_valid():
    data = b"abc" + bytes(61) + b"de"
    f = blob_file({"a": (0, 3, None), "b": (64, 2, None)}, data)
    _, blobs = read_container(f)
    assert bytes(blobs["a"]) == b"abc" and bytes(blobs["b"]) == b"de"


@pytest.mark.parametrize("text, match", [
    (b'{"blobs":{},"a":1,"a":2}', "duplicate key 'a'"),
    (b'{"blobs":{},"x":{"k":1,"k":1}}', "duplicate key 'k'"),
    (b'{"blobs":{},"a":NaN}', "NaN"),
    (b'{"blobs":{},"a":-Infinity}', "-Infinity"),
    (b'{"blobs":{},"a":1e999}', "out of range"),
    (b'{"blobs":{},"a":' + b"[" * 200 + b"]" * 200 + b"}", "nests"),
    (b'{"blobs":{},"a":' + b"[" * 100000 + b"}", "nests"),
    (b'{"blobs":{},"a":"' + b"[" * 500 + b'"}', None),  # brackets inside a string do not nest
    (b'{"blobs":{},"a":1', "not valid JSON"),
    (b'\xff{"blobs":{}}', "UTF-8"),
    (b'[1,2]', "JSON object"),
    (b'{"a":1}', "'blobs'"),
    (b'{"blobs":[]}', "'blobs'"),
])
def test_crafted_headers(text, match):
    if match is None:
        assert read_container(craft(text))[0]["a"] == "[" * 500
    else:
        refused(craft(text), match)


def test_huge_header_length():
    good = craft({"blobs": {}})
    for n in (2**63, 2**40, fmt.MAX_HEADER_BYTES + 1):
        bad = good[:12] + struct.pack("<Q", n) + good[20:]
        refused(bad, "exceeds the limit")
    refused(good[:12] + struct.pack("<Q", 10**6) + good[20:], "truncated")
    with pytest.raises(EngineFormatError, match="exceeds"):
        read_container(craft({"blobs": {}, "pad": "x" * 1000}), max_header_bytes=100)


@pytest.mark.parametrize("entries, data, match", [
    ({"a": (0, 100, None), "b": (64, 36, None)}, bytes(100), "overlaps blob 'a'"),
    ({"a": (0, 10, None), "b": (128, 10, None)}, bytes(138), "gap"),
    ({"a": (0, 10, None)}, bytes(80), "after its last blob"),
    ({"a": (0, 200, None)}, bytes(100), "out of bounds"),
    ({"a": (0, 10, None), "b": (74, 10, None)}, bytes(84), "misaligned"),
    ({"a": (-10**6, 10, None)}, bytes(10), "non-negative"),
    ({"a": (0, -1, None)}, bytes(10), "non-negative"),
    ({"a": (0, True, None)}, bytes(1), "non-negative int"),
    ({"a": (0.0, 1, None)}, bytes(1), "non-negative int"),
    ({"a": (0, 3, "0" * 64)}, b"abc", "checksum mismatch"),
    ({"a": (0, 3, "ABC")}, b"abc", "sha256"),
    ({"a": (0, 3, None), "b": (64, 1, None)}, b"abc" + b"\x01" + bytes(60) + b"z", "non-zero padding"),
])
def test_crafted_blob_tables(entries, data, match):
    refused(blob_file(entries, data), match)


def test_blob_far_out_of_bounds_allocates_nothing():
    refused(blob_file({"a": (0, 2**60, "0" * 64)}, b""), "out of bounds")


def test_nonzero_padding_after_header():
    good = craft({"blobs": {}})
    body = bytearray(good[:-32])
    body[-1] = 1
    refused(bytes(body) + hashlib.sha256(bytes(body)).digest(), "padding")


@pytest.mark.parametrize("version", [(1, 0), (0, 9), (65535, 1)])
def test_other_major_version_names_both(version):
    with pytest.raises(EngineCompatibilityError) as e:
        read_container(craft({"blobs": {}}, version=version))
    msg = str(e.value)
    assert f"{version[0]}.{version[1]}" in msg and "{}.{}".format(*FORMAT_VERSION) in msg and "rebuild" in msg


def test_format_1_engine_is_refused_in_one_line():
    """Format 1 engines kept the arena, tactic configs and kernel map in report sections; they are
    refused before their header is read, with the one line the CLI prints."""
    assert FORMAT_VERSION[0] == 2
    with pytest.raises(EngineCompatibilityError) as e:
        read_container(craft({"blobs": {}}, version=(1, 0)))
    assert str(e.value) == "engine file built by format 1.0, this workbench reads format 2.0 — rebuild it"


def test_newer_minor_version_is_read():
    assert read_container(craft({"blobs": {}}, version=(FORMAT_VERSION[0], 7)))[0] == {"blobs": {}}


# --------------------------------------------------------------------------- plan validation


def _encoded():
    d, blobs = encode_plan(make_plan())
    return json.loads(json.dumps(d)), {k: memoryview(bytes(v)) for k, v in blobs.items()}


def _attr(d, name):
    return d["layers"][0]["attrs"][name]


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["layers"][0].__setitem__("inputs", "a"), "inputs: expected list"),
    (lambda d: d["layers"][0].__setitem__("opset", "17"), "opset: expected int"),
    (lambda d: d["layers"][0].__setitem__("flops", True), "flops: expected int"),
    (lambda d: d["layers"][0].__setitem__("outputs", [1]), "outputs[0]: expected str"),
    (lambda d: d["layers"][0].pop("tactic"), "missing field 'tactic'"),
    (lambda d: d["layers"][0].__setitem__("extra", 1), "unknown field 'extra'"),
    (lambda d: d.__setitem__("layers", {}), "layers: expected list"),
    (lambda d: d["inputs"][0].__setitem__("shape", [1.5]), "expected int, str or null"),
    (lambda d: d["layers"][0]["attrs"].__setitem__("i", {"$code": "x"}), "unknown tag '$code'"),
    (lambda d: d["layers"][0]["attrs"].__setitem__("i", {"$float": "inf", "x": 1}), "only key"),
    (lambda d: d["layers"][0]["attrs"].__setitem__("i", {"$float": "1e5"}), "$float"),
    (lambda d: d["layers"][0]["attrs"].__setitem__("i", {"$bytes": "!!"}), "base64"),
    (lambda d: _attr(d, "t_f32")["$tensor"].__setitem__("shape", [3, 5]), "needs 60 bytes"),
    (lambda d: _attr(d, "t_f32")["$tensor"].__setitem__("shape", [-3, -4]), "non-negative int"),
    (lambda d: _attr(d, "t_f32")["$tensor"].__setitem__("shape", [2**31] * 4), "exceeds the limit"),
    (lambda d: _attr(d, "t_f32")["$tensor"].__setitem__("dtype", "float128"), "unknown element type"),
    (lambda d: _attr(d, "t_f32")["$tensor"].__setitem__("blob", "nope"), "not in the engine file"),
    (lambda d: _attr(d, "t_f32")["$tensor"].__setitem__("dtype", "string"), "missing field"),
    (lambda d: d["constants"][-2]["strings"].append("extra"), "needs 3 strings"),
    (lambda d: d["constants"].append(dict(d["constants"][0])), "duplicate constant"),
    (lambda d: d["tensors"].append(dict(d["tensors"][0])), "duplicate tensor"),
    (lambda d: d["layers"][0]["tactic_table"].__setitem__(0, "x"), "tactic_table[0]"),
    (lambda d: d["layers"][0].pop("tactic_config"), "missing field 'tactic_config'"),
    (lambda d: d["layers"][0].__setitem__("tactic_config", [1]), "tactic_config: expected an object"),
    (lambda d: d["layers"][0].__setitem__("tactic_config", {"$float": "inf"}), "tactic_config: expected an object"),
    (lambda d: d["layers"][0].__setitem__("binaries", ["k"]), "binaries: expected an object"),
    (lambda d: d["layers"][0]["binaries"].__setitem__("k", 3), "binaries.k: expected str"),
    (lambda d: d["layers"][0]["binaries"].__setitem__("k", ""), "blob names must not be empty"),
    (lambda d: d.pop("arena"), "missing field 'arena'"),
    (lambda d: d["arena"].__setitem__("bytes", -1), "arena.bytes: expected a non-negative int"),
    (lambda d: d["arena"]["offsets"].__setitem__("b", 1.5), "arena.offsets.b: expected int"),
    (lambda d: d["arena"].__setitem__("alignment", 0), "arena.alignment: must be positive"),
    (lambda d: d["arena"].__setitem__("extra", 0), "unknown field 'extra'"),
    (lambda d: d.pop("options"), "missing field 'options'"),
    (lambda d: d["options"].__setitem__("cuda_graph", 1), "options.cuda_graph: expected bool"),
    (lambda d: d["options"].__setitem__("max_elements", True), "options.max_elements: expected int"),
])
def test_decode_rejects_malformed_plans(mutate, match):
    d, blobs = _encoded()
    mutate(d)
    with pytest.raises(EngineFormatError) as e:
        decode_plan(d, blobs)
    assert match in str(e.value), str(e.value)


@pytest.mark.parametrize("const, raw, match", [("mask", b"\x02\x00", "bool"), ("q", b"\x10\x00\x00\x00", "int4")])
def test_decode_rejects_noncanonical_bytes(const, raw, match):
    d, blobs = _encoded()
    entry = next(c for c in d["constants"] if c["name"] == const)
    blobs[entry["blob"]] = memoryview(raw)
    with pytest.raises(EngineFormatError, match=match):
        decode_plan(d, blobs)


def test_decode_refuses_deep_graph_nesting():
    body = {"name": "g", "inputs": [], "outputs": [], "layers": [], "constants": []}
    for _ in range(40):
        layer = {"name": "l", "op": "If", "domain": "", "opset": 0, "inputs": [], "outputs": [],
                 "attrs": {"b": {"$graph": body}}, "onnx_nodes": [], "onnx_ops": [], "precision": "",
                 "tactic": "", "tactic_config": {}, "binaries": {}, "tactic_table": [], "input_specs": [],
                 "output_specs": [], "flops": 0, "bytes_moved": 0}
        body = {"name": "g", "inputs": [], "outputs": [], "layers": [layer], "constants": []}
    plan = {"inputs": [], "outputs": [], "layers": body["layers"], "constants": [], "tensors": [],
            "arena": {"bytes": 0, "offsets": {}, "alignment": 256},
            "options": {"cuda_graph": False, "max_elements": None}}
    with pytest.raises(EngineFormatError, match="nest"):
        decode_plan(plan, {})


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_fuzz_flips_and_truncations_only_raise_format_errors(engine_bytes, data):
    bad = bytearray(engine_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert"]))
        pos = data.draw(st.integers(0, max(len(bad) - 1, 0)))
        if kind == "flip" and bad:
            bad[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and bad:
            bad[pos] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            del bad[pos:]
        else:
            bad[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        plan = load(bytes(bad))
    except EngineFormatError:
        return
    assert bytes(bad) == engine_bytes  # only an unchanged file may load
    same(make_plan(), plan)
