"""The Open Inference Protocol codec (``workbench.serve.protocol``): JSON and binary tensors both
ways, and every malformed or mismatched request refused with a message naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.core.plan import TensorSpec
from workbench.serve import protocol as P

INPUTS = [TensorSpec("x", "float32", ["batch", 3]), TensorSpec("ids", "int32", ["batch", 2]),
          TensorSpec("flag", "bool", ["batch"])]
OUTPUTS = [TensorSpec("y", "float32", ["batch", 3]), TensorSpec("h", "float16", ["batch"])]


def feeds(rows=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((rows, 3)).astype(np.float32),
            "ids": rng.integers(-1000, 1000, (rows, 2)).astype(np.int32),
            "flag": rng.random(rows) < 0.5}


def same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("binary", [False, True])
def test_request_round_trip(binary):
    f = feeds()
    body, headers = P.request_body(f, binary=binary, request_id="r-1")
    req = P.parse_infer(body, headers.get(P.HEADER_LENGTH), INPUTS, OUTPUTS)
    same(req.feeds, f)
    assert req.id == "r-1" and req.outputs == [("y", False), ("h", False)]
    if binary:
        assert headers["content-type"] == "application/octet-stream"
        assert int(headers[P.HEADER_LENGTH]) < len(body)


def test_nested_json_data_is_read_row_major():
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5.5, 6]]},
                      {"name": "ids", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                      {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]}]}
    req = P.parse_infer(json.dumps(doc).encode(), None, INPUTS, OUTPUTS)
    np.testing.assert_array_equal(req.feeds["x"], np.array([[1, 2, 3], [4, 5.5, 6]], np.float32))
    assert req.feeds["ids"].dtype == np.int32 and req.feeds["flag"].tolist() == [True, False]


@pytest.mark.parametrize("binary_outputs", [False, True])
def test_response_round_trip_and_output_choice(binary_outputs):
    outs = {"y": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "h": np.array([0.5, -2], np.float16)}
    body, headers = P.request_body(feeds(), outputs=["h"], binary_outputs=binary_outputs)
    req = P.parse_infer(body, headers.get(P.HEADER_LENGTH), INPUTS, OUTPUTS)
    assert req.outputs == [("h", binary_outputs)]
    out_body, out_headers = P.encode_infer("m", req, outs)
    got = P.decode_response(out_body, out_headers)
    same(got, {"h": outs["h"]})
    doc = json.loads(out_body[: int(out_headers.get(P.HEADER_LENGTH, len(out_body)))])
    assert doc["model_name"] == "m" and doc["outputs"][0]["datatype"] == "FP16"
    assert ("binary_data_size" in doc["outputs"][0].get("parameters", {})) == binary_outputs


def test_binary_data_output_parameter_sends_every_output_binary():
    body, headers = P.request_body(feeds(), binary=True, binary_outputs=True)
    req = P.parse_infer(body, headers[P.HEADER_LENGTH], INPUTS, OUTPUTS)
    assert req.outputs == [("y", True), ("h", True)]


def _doc(**changes):
    f = feeds()
    items = [{"name": k, "datatype": P.DATATYPES[str(v.dtype) if v.dtype != np.bool_ else "bool"],
              "shape": list(v.shape), "data": v.reshape(-1).tolist()} for k, v in f.items()]
    doc = {"inputs": items}
    for key, value in changes.items():
        if key.startswith("x_"):
            items[0][key[2:]] = value
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize("body, header, message", [
    (b"{", None, "not valid JSON"),
    (b"\xff\xfe", None, "not UTF-8"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b"{}", None, "needs 'inputs'"),
    (b"[" * 100000 + b"]" * 100000, None, "nests too deeply"),
    (_doc(x_name="q"), None, "unknown input 'q'; the model takes: x, ids, flag"),
    (_doc(x_datatype="FP64"), None, "input 'x' has datatype 'FP64'; the model takes FP32"),
    (_doc(x_shape=[2, -3]), None, "input 'x' needs 'shape'"),
    (_doc(x_shape=[2, 4]), None, "input 'x' has 6 values; shape [2, 4] needs 8"),
    (_doc(x_data=[[1, 2], [3]]), None, "ragged"),
    (_doc(x_data=["a"] * 6), None, "not numbers"),
    (_doc(x_data="abc"), None, "'data' must be a JSON array"),
    (_doc(outputs=[{"name": "nope"}]), None, "unknown output 'nope'; the model gives: y, h"),
    (_doc(outputs=[{"name": "y"}, {"name": "y"}]), None, "output 'y' is asked for twice"),
    (_doc(id=5), None, "'id' must be a string"),
    (_doc(parameters={"binary_data_output": "yes"}), None, "binary_data_output must be true or false"),
    (_doc(x_parameters={"binary_data_size": 24}), None, "no Inference-Header-Content-Length header"),
    (_doc(), "abc", "must be a whole number"),
    (_doc(), "999999", "but the body has"),
])
def test_bad_requests_name_the_problem(body, header, message):
    with pytest.raises(P.ProtocolError) as info:
        P.parse_infer(body, header, INPUTS, OUTPUTS)
    assert message in str(info.value) and info.value.status == 400


def test_integer_and_bool_data_are_never_cast_silently():
    def doc(name, datatype, shape, data):
        items = [{"name": n, "datatype": d, "shape": s, "data": v} for n, d, s, v in [
            ("x", "FP32", [1, 3], [1.0, 2.0, 3.0]), ("ids", "INT32", [1, 2], [1, 2]), ("flag", "BOOL", [1], [True])]]
        items = [it if it["name"] != name else {"name": name, "datatype": datatype, "shape": shape, "data": data}
                 for it in items]
        return json.dumps({"inputs": items}).encode()

    for body, message in [(doc("ids", "INT32", [1, 2], [1.5, 2]), "must hold whole numbers"),
                          (doc("ids", "INT32", [1, 2], [2 ** 40, 1]), "out of range for INT32"),
                          (doc("flag", "BOOL", [1], [1]), "must hold true/false")]:
        with pytest.raises(P.ProtocolError, match=message):
            P.parse_infer(body, None, INPUTS, OUTPUTS)


def test_binary_sizes_must_add_up():
    f = feeds()
    body, headers = P.request_body(f, binary=True)
    head = int(headers[P.HEADER_LENGTH])
    for broken, message in [(body + b"\0", "binary data that no input claims"),
                            (body[:-1], "input .flag. needs 2 bytes of binary data; only 1 remain")]:
        with pytest.raises(P.ProtocolError, match=message):
            P.parse_infer(broken, str(head), INPUTS, OUTPUTS)
    doc = json.loads(body[:head])
    doc["inputs"][0]["parameters"]["binary_data_size"] = 20
    doc["inputs"][1]["parameters"]["binary_data_size"] += 4
    head2 = json.dumps(doc).encode()
    with pytest.raises(P.ProtocolError, match=r"input 'x': shape \[2, 3\] of FP32 needs 24 bytes; binary_data_size is 20"):
        P.parse_infer(head2 + body[head:], str(len(head2)), INPUTS, OUTPUTS)


def test_missing_input_and_duplicate_input():
    doc = json.loads(_doc())
    doc["inputs"] = doc["inputs"][:2]
    with pytest.raises(P.ProtocolError, match="missing input 'flag'"):
        P.parse_infer(json.dumps(doc).encode(), None, INPUTS, OUTPUTS)
    doc = json.loads(_doc())
    doc["inputs"].append(doc["inputs"][0])
    with pytest.raises(P.ProtocolError, match="input 'x' is given twice"):
        P.parse_infer(json.dumps(doc).encode(), None, INPUTS, OUTPUTS)


def test_engine_types_the_protocol_cannot_carry_are_named():
    class Fake:
        inputs = [TensorSpec("x", "float8e4m3fn", [1])]
        outputs = [TensorSpec("y", "float32", [1])]

    assert "input 'x' has dtype float8e4m3fn" in P.unservable(Fake())
    Fake.inputs = [TensorSpec("x", "bfloat16", [1])]
    assert P.unservable(Fake()) is None
