"""The Open Inference Protocol (KServe v2, the REST API of Triton, KServe and Seldon): its JSON
documents and the binary tensor data extension, turned into NumPy feeds and back.

An inference request is a JSON object ``{"id", "parameters", "inputs": [{"name", "datatype",
"shape", "data" | "parameters": {"binary_data_size"}}], "outputs": [{"name", "parameters":
{"binary_data"}}]}``. With the binary extension the JSON is followed by the raw tensors (little
endian, row major) of the inputs that give ``binary_data_size``, in input order, and the header
``Inference-Header-Content-Length`` says where the JSON ends; outputs asked for as binary come back
the same way. Everything a client sends is checked before any array is made: a request that is
malformed or does not fit the model raises :class:`ProtocolError` naming the problem (HTTP 400).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from ..dtypes import to_numpy
from ..errors import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "statistics"]
MODEL_VERSION = "1"

# workbench dtype name -> Open Inference Protocol datatype
DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "bfloat16": "BF16",
}


class ProtocolError(InputError):
    """A request that breaks the protocol or does not fit the model; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype(dtype: str | None) -> str:
    """The protocol's name for a workbench dtype; a ProtocolError for types it has none for."""
    name = DATATYPES.get(str(dtype))
    if name is None:
        raise ProtocolError(f"dtype {dtype} has no Open Inference Protocol datatype")
    return name


def unservable(engine) -> str | None:
    """Why ``engine`` cannot be served over the protocol (a tensor of a type it cannot carry), or None."""
    for kind, specs in (("input", engine.inputs), ("output", engine.outputs)):
        for spec in specs:
            if str(spec.dtype) not in DATATYPES:
                return (f"{kind} {spec.name!r} has dtype {spec.dtype}, which the Open Inference Protocol cannot "
                        f"carry (it has {', '.join(sorted(set(DATATYPES.values())))})")
    return None


# ---- metadata -------------------------------------------------------------------------------

def _wire_shape(shape, batched: bool) -> list[int]:
    if shape is None:
        return [-1]
    return [-1 if (batched and axis == 0) or not isinstance(d, int) else int(d) for axis, d in enumerate(shape)]


def server_metadata() -> dict:
    return {"name": "workbench", "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(name: str, engine, layout, max_batch: int) -> dict:
    """``GET /v2/models/{name}``: tensors with -1 where a request may choose (the batch, free dims)."""
    def tensors(specs):
        return [{"name": s.name, "datatype": datatype(s.dtype), "shape": _wire_shape(s.shape, layout.batched)}
                for s in specs]

    return {"name": name, "versions": [MODEL_VERSION], "platform": f"workbench_{engine.backend}",
            "inputs": tensors(engine.inputs), "outputs": tensors(engine.outputs),
            "parameters": {"max_batch_size": max_batch if layout.batched else 0,
                           "batched": layout.batched, **({"not_batched_because": layout.reason} if layout.reason else {})}}


# ---- requests --------------------------------------------------------------------------------

@dataclass
class InferRequest:
    """A decoded inference request: the feeds, and which outputs to send back and how."""

    id: str | None
    feeds: dict[str, np.ndarray]
    outputs: list[tuple[str, bool]] = field(default_factory=list)  # (name, as binary), in reply order


def parse_infer(body: bytes, header_length: str | None, inputs, outputs) -> InferRequest:
    """Decode ``body`` (JSON, or JSON plus binary tensors when ``header_length`` is given) against
    the model's input and output specs."""
    json_end = len(body)
    if header_length is not None:
        try:
            json_end = int(header_length.strip())
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be a whole number, got {header_length[:40]!r}") from None
        if not 0 < json_end <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {json_end} but the body has {len(body)} bytes")
    doc = _json_object(body[:json_end])
    binary = memoryview(body)[json_end:]
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string, got {type(request_id).__name__}")
    params = _params(doc, "the request")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise ProtocolError("the request needs 'inputs': a non-empty list of tensors")
    specs = {s.name: s for s in inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(f"inputs[{i}] must be an object, got {type(item).__name__}")
        name = item.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"inputs[{i}] needs a string 'name'")
        if name not in specs:
            raise ProtocolError(f"unknown input {name!r}; the model takes: {', '.join(specs)}")
        if name in feeds:
            raise ProtocolError(f"input {name!r} is given twice")
        spec = specs[name]
        want = datatype(spec.dtype)
        got = item.get("datatype")
        if got != want:
            raise ProtocolError(f"input {name!r} has datatype {got!r}; the model takes {want}")
        shape = _shape(name, item.get("shape"))
        size = _params(item, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise ProtocolError(f"input {name!r} gives binary_data_size but the request has no {HEADER_LENGTH} header")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ProtocolError(f"input {name!r}: binary_data_size must be a whole number, got {size!r}")
            if "data" in item:
                raise ProtocolError(f"input {name!r} gives both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise ProtocolError(f"input {name!r} needs {size} bytes of binary data; only {len(binary) - offset} remain")
            feeds[name] = _binary_array(name, binary[offset: offset + size], spec.dtype, shape)
            offset += size
        elif "data" in item:
            feeds[name] = _json_array(name, item["data"], spec.dtype, shape)
        else:
            raise ProtocolError(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    if offset != len(binary):
        raise ProtocolError(f"the body holds {len(binary) - offset} bytes of binary data that no input claims")
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise ProtocolError(f"missing input {missing[0]!r}; the model takes: {', '.join(specs)}")
    return InferRequest(request_id, feeds, _requested_outputs(doc, params, outputs))


def _json_object(raw) -> dict:
    try:
        doc = json.loads(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"the request header is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"the request is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError("the request JSON nests too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"the request must be a JSON object, got {type(doc).__name__}")
    return doc


def _params(doc: dict, what: str) -> dict:
    params = doc.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(f"'parameters' of {what} must be an object")
    return params


def _shape(name: str, shape) -> list[int]:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r} needs 'shape': a list of whole numbers, got {json.dumps(shape)[:80]}")
    return shape


def _json_array(name: str, data, dtype: str, shape: list[int]) -> np.ndarray:
    """Nested or flat JSON numbers as an array of ``dtype`` and ``shape``; never a silent cast
    (a float for an integer input, a number for a BOOL, a value out of range are refused)."""
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: 'data' must be a JSON array, got {type(data).__name__}")
    try:
        arr = np.array(data)
    except (ValueError, OverflowError):
        raise ProtocolError(f"input {name!r}: 'data' is ragged (nested lists of different lengths) or out of range") from None
    kind = arr.dtype.kind
    want = np.dtype(to_numpy(dtype))
    if kind == "O" or kind in "US":
        raise ProtocolError(f"input {name!r}: 'data' holds values that are not {_kind_word(want)} (or are out of range)")
    if want == np.bool_:
        if kind != "b" and arr.size:
            raise ProtocolError(f"input {name!r} is BOOL; 'data' must hold true/false")
    elif want.kind in "iu":
        if kind not in "iu" and arr.size:
            raise ProtocolError(f"input {name!r} is {datatype(dtype)}; 'data' must hold whole numbers")
        if arr.size:
            info = np.iinfo(want)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise ProtocolError(f"input {name!r}: value {lo if lo < info.min else hi} is out of range for {datatype(dtype)}")
    elif kind not in "iuf" and arr.size:
        raise ProtocolError(f"input {name!r} is {datatype(dtype)}; 'data' must hold numbers")
    count = math.prod(shape)
    if arr.size != count:
        raise ProtocolError(f"input {name!r} has {arr.size} values; shape {shape} needs {count}")
    return arr.astype(want).reshape(shape)


def _kind_word(dt: np.dtype) -> str:
    return "true/false" if dt == np.bool_ else "whole numbers" if dt.kind in "iu" else "numbers"


def _binary_array(name: str, raw: memoryview, dtype: str, shape: list[int]) -> np.ndarray:
    want = np.dtype(to_numpy(dtype))
    count = math.prod(shape)
    if count * want.itemsize != len(raw):
        raise ProtocolError(f"input {name!r}: shape {shape} of {datatype(dtype)} needs {count * want.itemsize} bytes; "
                            f"binary_data_size is {len(raw)}")
    if want == np.bool_:
        return (np.frombuffer(raw, np.uint8) != 0).reshape(shape)
    wire = want.newbyteorder("<") if want.byteorder not in ("|",) and want.kind in "iuf" else want
    return np.frombuffer(raw, wire).astype(want).reshape(shape)  # astype copies: aligned, writable, native order


def _requested_outputs(doc: dict, params: dict, outputs) -> list[tuple[str, bool]]:
    all_binary = params.get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise ProtocolError("parameter binary_data_output must be true or false")
    names = [s.name for s in outputs]
    asked = doc.get("outputs")
    if asked is None:
        return [(n, all_binary) for n in names]
    if not isinstance(asked, list):
        raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
    out: list[tuple[str, bool]] = []
    for i, item in enumerate(asked):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{i}] needs a string 'name'")
        name = item["name"]
        if name not in names:
            raise ProtocolError(f"unknown output {name!r}; the model gives: {', '.join(names)}")
        if any(n == name for n, _ in out):
            raise ProtocolError(f"output {name!r} is asked for twice")
        binary = _params(item, f"output {name!r}").get("binary_data", all_binary)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output {name!r}: binary_data must be true or false")
        out.append((name, binary))
    return out


# ---- responses -------------------------------------------------------------------------------

def encode_infer(model_name: str, request: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for ``outputs``: JSON, or JSON plus binary tensors."""
    items, blobs = _tensor_entries([(name, outputs[name], binary) for name, binary in request.outputs])
    doc: dict[str, Any] = {"model_name": model_name, "model_version": MODEL_VERSION, "outputs": items}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc).encode("utf-8")
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def _tensor_entries(tensors) -> tuple[list[dict], list[bytes]]:
    """The protocol's tensor entries for (name, array, binary) triples, and the binary blobs that
    follow the JSON (in entry order) for those sent as binary data."""
    from ..dtypes import from_numpy

    items, blobs = [], []
    for name, value, binary in tensors:
        arr = np.asarray(value)
        entry: dict[str, Any] = {"name": name, "datatype": datatype(from_numpy(arr.dtype)), "shape": list(arr.shape)}
        if binary:
            raw = _le_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_values(arr)
        items.append(entry)
    return items, blobs


def _le_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr).astype(np.uint8).tobytes()
    if arr.dtype.kind in "iuf" and arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).tobytes()


def _json_values(arr: np.ndarray) -> list:
    flat = arr.reshape(-1)
    if flat.dtype.kind not in "biuf":
        flat = flat.astype(np.float32)  # bfloat16 (an ml_dtypes type): plain floats on the wire
    return flat.tolist()


def error_body(message: str) -> bytes:
    """The protocol's error document: ``{"error": message}``."""
    return json.dumps({"error": message}).encode("utf-8")


# ---- client side (tests, the benchmark, users' scripts) ------------------------------------

def request_body(feeds: dict[str, np.ndarray], *, binary: bool = False, outputs: list[str] | None = None,
                 binary_outputs: bool = False, request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """An inference request for ``feeds`` (what a client sends): JSON data, or with ``binary`` the
    tensors after the JSON. Returns (body, headers)."""
    items, blobs = _tensor_entries([(name, value, binary) for name, value in feeds.items()])
    doc: dict[str, Any] = {"inputs": items}
    if request_id is not None:
        doc["id"] = request_id
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary_outputs}} for n in outputs]
    elif binary_outputs:
        doc["parameters"] = {"binary_data_output": True}
    head = json.dumps(doc).encode("utf-8")
    headers = {"content-type": "application/json"}
    if binary:
        headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return head + b"".join(blobs), headers


def example_request(engine, max_values: int = 64) -> str | None:
    """A one-row JSON request body for ``engine`` (random values), for curl examples; None when its
    inputs have free dims other than the batch or more than ``max_values`` values."""
    from ..core.numerics import random_inputs
    from ..core.plan import TensorSpec
    from .batching import batch_layout

    layout = batch_layout(engine)
    specs = []
    for spec in engine.inputs:
        shape = list(spec.shape or [])
        if layout.batched:
            shape[0] = 1
        if spec.shape is None or not all(isinstance(d, int) for d in shape):
            return None
        specs.append(TensorSpec(spec.name, spec.dtype, shape))
    if sum(math.prod(s.shape) for s in specs) > max_values:
        return None
    feeds = random_inputs(specs, seed=0)
    items = []
    for spec in specs:
        arr = feeds[spec.name]
        values = np.round(arr.astype(np.float64), 3).tolist() if arr.dtype.kind == "f" else arr.tolist()
        items.append({"name": spec.name, "datatype": datatype(spec.dtype), "shape": spec.shape,
                      "data": np.asarray(values).reshape(-1).tolist()})
    return json.dumps({"inputs": items})


def decode_response(body: bytes, headers) -> dict[str, np.ndarray]:
    """The outputs of an inference response (JSON or binary), as arrays of their datatypes."""
    length = headers.get(HEADER_LENGTH) if headers is not None else None
    end = int(length) if length is not None else len(body)
    doc = json.loads(body[:end].decode("utf-8"))
    if "error" in doc:
        raise ProtocolError(str(doc["error"]))
    by_type = {v: k for k, v in DATATYPES.items()}
    out, offset = {}, end
    for item in doc["outputs"]:
        dt = np.dtype(to_numpy(by_type[item["datatype"]]))
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset: offset + size]
            offset += size
            arr = (np.frombuffer(raw, np.uint8) != 0) if dt == np.bool_ else np.frombuffer(raw, dt.newbyteorder("<") if dt.kind in "iuf" else dt).astype(dt)
        else:
            arr = np.array(item["data"]).astype(dt)
        out[item["name"]] = arr.reshape(item["shape"])
    return out
