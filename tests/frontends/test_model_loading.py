"""RELIABILITY.md, model-loading rows: one test (or parametrized family) per row.

Models are made here with onnx.helper so each test shows the one thing that is wrong with its input.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from workbench.core.limits import MAX_NESTING
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.support.paths import REPO
from workbench.errors import ExternalDataError, ModelLoadError, UnsupportedModelError
from workbench.frontends.onnx.safe_read import check_opsets, read_model

NEWEST = onnx.defs.onnx_opset_version()


def make_model(initializers=(), nodes=None, opset=17, functions=(), extra_opsets=()):
    """y = x + w, with w an initializer of shape [3] unless other initializers/nodes are given."""
    if nodes is None:
        nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add0")]
    graph = helper.make_graph(
        nodes, "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        initializer=list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(graph, opset_imports=imports, functions=list(functions))


def weight(name="w", values=(1.0, 2.0, 3.0)):
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def external_tensor(name, location, offset=None, length=None, extra=()):
    """A float32 [3] tensor whose data lives in `location`."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[3], data_location=TensorProto.EXTERNAL)
    entries = [("location", location)] + [(k, v) for k, v in (("offset", offset), ("length", length)) if v is not None]
    for key, value in [*entries, *extra]:
        e = t.external_data.add()
        e.key, e.value = key, str(value)
    return t


@pytest.fixture
def model_dir(tmp_path):
    """tmp/models/ holds w.bin (12 bytes = float32 [1, 2, 3]); tmp/secret.bin sits outside it."""
    d = tmp_path / "models"
    d.mkdir()
    (d / "w.bin").write_bytes(np.array([1, 2, 3], np.float32).tobytes())
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 12)
    return d


@pytest.fixture
def opened(monkeypatch):
    """Record every path given to open()/os.open() while the test runs."""
    seen: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):
        seen.append(os.fspath(file) if not isinstance(file, int) else f"fd:{file}")
        return real_open(file, *a, **k)

    def spy_os_open(path, *a, **k):
        seen.append(os.fspath(path))
        return real_os_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    return seen


def load_with_external(model_dir, tensor, **kw):
    return read_model(make_model([tensor]).SerializeToString(), base_dir=model_dir, **kw)


# Row: external-data location escaping the folder ---------------------------------------------------

@pytest.mark.parametrize("location", ["../secret.bin", "a/../../secret.bin", "ABSOLUTE",
                                      "\\\\srv\\share\\secret.bin", "C:\\secret.bin", "C:secret.bin",
                                      "w.bin\0", "sub\\..\\..\\secret.bin", "", "./"])
def test_location_escaping_folder_refused_before_any_open(model_dir, opened, location):
    if location == "ABSOLUTE":
        location = str(model_dir.parent / "secret.bin")
    with pytest.raises(ExternalDataError, match="'weights_w'") as info:
        load_with_external(model_dir, external_tensor("weights_w", location))
    assert "location" in str(info.value)
    assert opened == []  # not the sentinel, nor anything else


# Row: symlinks and hard links --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["symlink_file", "symlinked_folder", "hard_link", "symlink_inside"])
def test_linked_external_file_refused(model_dir, kind):
    secret = model_dir.parent / "secret.bin"
    if kind == "symlink_file":
        os.symlink(secret, model_dir / "link.bin")
        location = "link.bin"
    elif kind == "symlinked_folder":
        os.symlink(model_dir.parent, model_dir / "up")
        location = "up/secret.bin"
    elif kind == "symlink_inside":  # even a link that stays inside the folder is refused
        (model_dir / "real").mkdir()
        (model_dir / "real" / "v.bin").write_bytes(b"\x00" * 12)
        os.symlink(model_dir / "real", model_dir / "alias")
        location = "alias/v.bin"
    else:
        os.link(secret, model_dir / "hard.bin")
        location = "hard.bin"
    with pytest.raises(ExternalDataError, match="'w'.*(symlink|hard links)"):
        load_with_external(model_dir, external_tensor("w", location))


def test_external_file_missing_or_not_regular(model_dir):
    (model_dir / "folder").mkdir()
    with pytest.raises(ExternalDataError, match="not found"):
        load_with_external(model_dir, external_tensor("w", "nope.bin"))
    with pytest.raises(ExternalDataError, match="not a regular file"):
        load_with_external(model_dir, external_tensor("w", "folder"))


# Row: bad offset / length ------------------------------------------------------------------------

@pytest.mark.parametrize("offset,length,match", [
    ("-1", None, "offset '-1'"), ("abc", None, "offset 'abc'"), (" 0", None, "offset"), ("1e3", None, "offset"),
    (None, "-12", "length '-12'"), (None, "twelve", "length"), (None, str(2**60), "length 1152921504606846976"),
    (str(2**60), None, "past the end"), ("4", None, "past the end"), ("12", "12", "past the end"),
    (None, "8", "length 8 does not match"), ("9" * 30, None, "offset"),
])
def test_bad_offset_length_refused(model_dir, offset, length, match):
    with pytest.raises(ExternalDataError, match=match) as info:
        load_with_external(model_dir, external_tensor("w", "w.bin", offset, length))
    assert "'w'" in str(info.value)


def test_huge_offset_length_do_not_allocate(model_dir):
    """Under a 2 GiB address-space cap a 2**60 offset/length must give ExternalDataError, not MemoryError."""
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
        sys.path.insert(0, {REPO!r})
        from onnx import TensorProto, helper
        from workbench.errors import ExternalDataError
        from workbench.frontends.onnx.safe_read import read_model
        for offset, length in (({2**60}, 12), (0, {2**60}), ({2**60}, None)):
            t = TensorProto(name="w", data_type=1, dims=[3], data_location=TensorProto.EXTERNAL)
            for k, v in (("location", "w.bin"), ("offset", offset), ("length", length)):
                if v is not None:
                    e = t.external_data.add(); e.key, e.value = k, str(v)
            g = helper.make_graph([], "g", [], [], initializer=[t])
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                read_model(m.SerializeToString(), base_dir={str(model_dir)!r})
            except ExternalDataError:
                pass
            else:
                sys.exit("no error")
            grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            assert grown_kib < 20_000, grown_kib
        print("ok")
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


# Row: unknown and dunder keys --------------------------------------------------------------------

def test_unknown_and_dunder_keys_ignored_with_warning(model_dir):
    extra = [("__class__", "os.system"), ("__dict__", "x"), ("basepath", "/etc"), ("colour", "red")]
    t = external_tensor("w", "w.bin", 0, 12, extra)
    with pytest.warns(UserWarning, match="__class__.*__dict__.*basepath.*colour"):
        model = load_with_external(model_dir, t)
    (w,) = model.graph.initializer
    assert (w.name, w.data_type, list(w.dims)) == ("w", TensorProto.FLOAT, [3])
    assert w.data_location == TensorProto.DEFAULT and len(w.external_data) == 0
    np.testing.assert_array_equal(numpy_helper.to_array(w), [1, 2, 3])
    assert type(w) is TensorProto and not hasattr(w, "basepath")


# Row: empty, truncated, random bytes ---------------------------------------------------------------

def rich_model():
    """A small model touching most proto features: initializers, Constant, If subgraph, a local function."""
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [3])])
    fn = helper.make_function("local", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    nodes = [
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["c"], ["z"], then_branch=then_g, else_branch=else_g, name="if0"),
        helper.make_node("Add", ["z", "w"], ["s"], name="add0"),
        helper.make_node("Twice", ["s"], ["y"], domain="local", name="twice0"),
    ]
    return make_model([weight()], nodes, functions=[fn], extra_opsets=[("local", 1)])


def test_empty_truncated_random_bytes_refused(tmp_path):
    good = rich_model().SerializeToString()
    for bad in [b"", good[: len(good) // 2], good[:-1], b"\xff" * 64, os.urandom(256), b"\x0a\xff\xff\xff\xff\x0f"]:
        with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
            read_model(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty.onnx"):
        read_model(empty)
    for path in (tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(ModelLoadError, match=str(path.name)):
            read_model(path)


def test_names_that_are_not_utf8_refused():
    data = make_model([weight("wXYZ")]).SerializeToString().replace(b"wXYZ", b"w\xff\xfeZ")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        read_model(data)


def test_model_without_graph_or_opset_refused():
    m = rich_model()
    m.ClearField("opset_import")
    with pytest.raises(ModelLoadError, match="opset_import"):
        read_model(m)
    with pytest.raises(ModelLoadError, match="no graph"):
        read_model(onnx.ModelProto(ir_version=8, opset_import=[helper.make_opsetid("", 17)]))


def _seeds():
    seeds = [rich_model().SerializeToString()]
    light = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_bvlc_alexnet.onnx")
    if os.path.exists(light):
        with open(light, "rb") as f:
            seeds.append(f.read())
    return seeds


SEEDS = _seeds()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_mutated_model_bytes_load_or_raise_model_load_error(seed, data):
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["set", "delete", "insert", "truncate"]))
        if op == "set":
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del buf[pos]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos:]
        if not buf:
            break
    try:
        model = read_model(bytes(buf))
    except ModelLoadError:
        return
    assert isinstance(model, onnx.ModelProto) and model.HasField("graph")
    assert all(t.data_location == TensorProto.DEFAULT for t in model.graph.initializer)


# Row: inline model over 2 GiB ---------------------------------------------------------------------

def test_inline_model_over_limit_says_use_external_data(tmp_path):
    path = tmp_path / "big.onnx"
    onnx.save_model(make_model([weight(values=np.zeros(1000))]), path)
    with pytest.raises(ModelLoadError, match="save weights as external data"):
        read_model(path, max_inline_bytes=1000)
    with pytest.raises(ModelLoadError, match="save weights as external data"):
        read_model(path.read_bytes(), max_inline_bytes=1000)
    assert read_model(path).graph.initializer[0].name == "w"  # under the default 2 GiB limit it loads


# Row: raw_data length vs shape --------------------------------------------------------------------

@pytest.mark.parametrize("data_type,dims,raw,ok", [
    (TensorProto.FLOAT, [3], b"\x00" * 8, False),     # shorter than its shape
    (TensorProto.FLOAT, [3], b"\x00" * 11, False),    # not a multiple of the element size
    (TensorProto.FLOAT, [3], b"\x00" * 16, False),    # longer
    (TensorProto.FLOAT, [3], b"\x00" * 12, True),
    (TensorProto.INT4, [3], b"\x00" * 2, True),       # 4-bit packs two per byte, rounded up
    (TensorProto.INT4, [3], b"\x00" * 3, False),
    (TensorProto.UINT2, [5], b"\x00" * 2, True),      # 2-bit packs four per byte
    (TensorProto.UINT2, [5], b"\x00" * 1, False),
    (TensorProto.COMPLEX128, [2], b"\x00" * 32, True),
    (TensorProto.FLOAT, [0, 5], b"", True),
])
def test_raw_data_must_match_shape(data_type, dims, raw, ok):
    t = TensorProto(name="bad_w", data_type=data_type, dims=dims, raw_data=raw)
    model = make_model([t], nodes=[])
    if ok:
        read_model(model)
    else:
        with pytest.raises(ModelLoadError, match=r"'bad_w'.*raw_data has \d+ bytes.*needs \d+"):
            read_model(model)


@pytest.mark.parametrize("make", [
    lambda: TensorProto(name="bad_w", data_type=TensorProto.FLOAT, dims=[3], float_data=[1, 2]),
    lambda: TensorProto(name="bad_w", data_type=TensorProto.FLOAT, dims=[3], int64_data=[1, 2, 3]),
    lambda: TensorProto(name="bad_w", data_type=TensorProto.INT4, dims=[3], int32_data=[1, 2, 3]),
    lambda: TensorProto(name="bad_w", data_type=TensorProto.FLOAT, dims=[3], float_data=[1, 2, 3], raw_data=b"1"),
    lambda: TensorProto(name="bad_w", data_type=TensorProto.FLOAT, dims=[3]),
    lambda: TensorProto(name="bad_w", data_type=99, dims=[1], raw_data=b"\x00"),
    lambda: TensorProto(name="bad_w", data_type=TensorProto.STRING, dims=[1], raw_data=b"\x00"),
])
def test_typed_fields_must_match_shape_and_type(make):
    with pytest.raises(ModelLoadError, match="'bad_w'"):
        read_model(make_model([make()], nodes=[]))


# Row: negative / overflowing dims -------------------------------------------------------------------

@pytest.mark.parametrize("dims,match", [([-1], "negative"), ([3, -2], "negative"),
                                        ([2**32, 2**32], "element cap"), ([2**62] * 60, "element cap"), ([1] * 1000, "rank 1000")])
def test_bad_dims_refused_before_allocating(dims, match):
    t = TensorProto(name="big_w", data_type=TensorProto.FLOAT, dims=dims, raw_data=b"")
    const = helper.make_node("Constant", [], ["k"], name="const0", value=t)
    for model in (make_model([t], nodes=[]), make_model([], nodes=[const])):
        with pytest.raises(ModelLoadError, match=f"'big_w'.*{match}"):
            read_model(model)


def test_element_cap_is_configurable():
    model = make_model([weight()], nodes=[])
    with pytest.raises(ModelLoadError, match="more than 2 elements"):
        read_model(model, max_elements=2)


def test_sparse_and_subgraph_tensors_are_checked():
    sparse = helper.make_sparse_tensor(
        TensorProto(name="sv", data_type=TensorProto.FLOAT, dims=[2], float_data=[1.0]),
        TensorProto(name="si", data_type=TensorProto.INT64, dims=[2], int64_data=[0, 1]), [4])
    with pytest.raises(ModelLoadError, match="'sv'"):
        read_model(make_model([], nodes=[helper.make_node("Constant", [], ["k"], sparse_value=sparse)]))
    bad = TensorProto(name="deep_w", data_type=TensorProto.FLOAT, dims=[3], raw_data=b"\x00")
    body = helper.make_graph([helper.make_node("Constant", [], ["t"], value=bad)], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    with pytest.raises(ModelLoadError, match="'deep_w'"):
        read_model(make_model([], nodes=[node]))


# Row: deep nesting; recursive local functions ---------------------------------------------------------

def nested_model(depth: int, op: str = "If") -> onnx.ModelProto:
    """A model whose graphs nest `depth` levels below the main graph, built top-down without copies."""
    model = make_model([], nodes=[])
    graph = model.graph
    for level in range(depth):
        node = graph.node.add(op_type=op, name=f"{op.lower()}{level}", input=["c"], output=["y"])
        attr = node.attribute.add(name={"If": "then_branch", "Loop": "body", "Scan": "body"}[op],
                                  type=onnx.AttributeProto.GRAPH)
        graph = attr.g
        graph.name = f"level{level + 1}"
    return model


@pytest.mark.parametrize("op", ["If", "Loop", "Scan"])
def test_nesting_deeper_than_limit_refused(op):
    # the loader's default is the one limit the builder and the engine format share
    read_model(nested_model(MAX_NESTING, op))  # exactly at the default limit: fine
    with pytest.raises(ModelLoadError, match=f"nested {MAX_NESTING + 1} deep; the limit is {MAX_NESTING}"):
        read_model(nested_model(MAX_NESTING + 1, op))
    with pytest.raises(ModelLoadError, match="limit is 4"):
        read_model(nested_model(5, op), max_nesting=4)


def test_nesting_10000_deep_refused_without_recursion_error():
    model = nested_model(10_000)
    with pytest.raises(ModelLoadError, match="nested"):
        read_model(model)
    check_opsets(model)  # the opset walk is iterative too
    with pytest.raises(ModelLoadError, match="nested too deeply"):  # protobuf's own depth cap, as bytes
        read_model(model.SerializeToString())


def function(name, calls):
    nodes = [helper.make_node(c, ["a"], ["a"] if i < len(calls) - 1 else ["b"], domain="local")
             for i, c in enumerate(calls)] or [helper.make_node("Identity", ["a"], ["b"])]
    return helper.make_function("local", name, ["a"], ["b"], nodes,
                                [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])


@pytest.mark.parametrize("functions,name", [
    ([function("F", ["F"])], "F"),
    ([function("F", ["G"]), function("G", ["H"]), function("H", ["F"])], "F"),
    ([function("Ok", []), function("A", ["Ok", "B"]), function("B", ["A"])], "A"),
])
def test_recursive_local_functions_refused(functions, name):
    node = helper.make_node(functions[0].name, ["x"], ["y"], domain="local")
    model = make_model([], nodes=[node], functions=functions, extra_opsets=[("local", 1)])
    with pytest.raises(ModelLoadError, match=f"function 'local::{name}' is recursive"):
        read_model(model)


def test_function_calls_through_subgraph_count_as_recursion():
    body = helper.make_graph([helper.make_node("F", ["a"], ["t"], domain="local")], "b", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])])
    fn = helper.make_function("local", "F", ["a", "c"], ["b"],
                              [helper.make_node("If", ["c"], ["b"], then_branch=body, else_branch=body)],
                              [helper.make_opsetid("", 17)])
    model = make_model([], nodes=[helper.make_node("F", ["x", "x"], ["y"], domain="local")], functions=[fn])
    with pytest.raises(ModelLoadError, match="recursive"):
        read_model(model)


def test_nonrecursive_functions_load():
    fns = [function("Ok", []), function("A", ["Ok"]), function("B", ["A", "Ok"])]
    node = helper.make_node("B", ["x"], ["y"], domain="local")
    read_model(make_model([], nodes=[node], functions=fns, extra_opsets=[("local", 1)]))


# A valid model with external data loads ------------------------------------------------------------

def test_valid_external_data_model_loads(tmp_path):
    tensors = [weight("w"), numpy_helper.from_array(np.arange(24, dtype=np.int64).reshape(2, 3, 4), "idx"),
               numpy_helper.from_array(np.array([], np.float32), "empty")]
    originals = {t.name: numpy_helper.to_array(t).copy() for t in tensors}
    model = make_model(tensors)
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    raw = onnx.load_model(tmp_path / "m.onnx", load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)

    loaded = read_model(tmp_path / "m.onnx")
    assert {t.name for t in loaded.graph.initializer} == set(originals)
    for t in loaded.graph.initializer:
        assert t.data_location == TensorProto.DEFAULT and not t.external_data
        np.testing.assert_array_equal(numpy_helper.to_array(t), originals[t.name])
    # a ModelProto source is left as it was
    before = raw.SerializeToString()
    read_model(raw, base_dir=tmp_path)
    assert raw.SerializeToString() == before
    with pytest.raises(ModelLoadError, match="base_dir"):
        read_model(raw)
    with pytest.raises(ModelLoadError, match="max_external_bytes"):
        read_model(tmp_path / "m.onnx", max_external_bytes=100)


def test_external_data_in_subfolder_and_offset(model_dir):
    (model_dir / "sub").mkdir()
    (model_dir / "sub" / "d.bin").write_bytes(b"pad!" + np.array([4, 5, 6], np.float32).tobytes())
    model = load_with_external(model_dir, external_tensor("w", "sub/./d.bin", 4, 12))
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), [4, 5, 6])


# Row: unknown domain, unsupported opset ------------------------------------------------------------

@pytest.mark.parametrize("opset", [6, NEWEST + 1])
def test_unsupported_opset_refused(opset):
    model = make_model([weight()], opset=opset)
    read_model(model)  # read_model leaves opsets to the caller
    with pytest.raises(UnsupportedModelError, match=f"ai.onnx opset {opset}; supported 7..{NEWEST}"):
        check_opsets(model)


def test_unknown_domain_refused_naming_nodes():
    nodes = [helper.make_node("Evil", ["x"], ["y"], domain="com.evil", name="evil0")]
    model = make_model([], nodes=nodes, extra_opsets=[("com.evil", 1)])
    with pytest.raises(UnsupportedModelError, match=r"'com.evil'.*'evil0' \('Evil'\)"):
        check_opsets(model)


def test_known_domains_and_local_functions_accepted():
    check_opsets(rich_model())
    for opset in (7, NEWEST):
        check_opsets(make_model([weight()], opset=opset))
    ml = [helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml", norm="MAX")]
    check_opsets(make_model([], nodes=ml, extra_opsets=[("ai.onnx.ml", 3)]))


def test_external_data_in_constant_attribute_and_sparse_values(model_dir):
    const = helper.make_node("Constant", [], ["k"], name="c0", value=external_tensor("kval", "w.bin", 0, 12))
    model = make_model([], nodes=[const])
    loaded = read_model(model.SerializeToString(), base_dir=model_dir)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.node[0].attribute[0].t), [1, 2, 3])
    bad = helper.make_node("Constant", [], ["k"], name="c0", value=external_tensor("kval", "../secret.bin"))
    with pytest.raises(ExternalDataError, match="'kval'.*'c0'"):
        read_model(make_model([], nodes=[bad]).SerializeToString(), base_dir=model_dir)
