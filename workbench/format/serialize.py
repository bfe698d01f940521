"""Plan <-> (JSON-able dict, blobs): how an execution plan is stored in an engine container.

Everything structural goes into the JSON header; every numeric tensor (constants and tensor
attributes, nested graphs' included) becomes a raw blob, little-endian, C order, with its dtype
name and shape written next to its blob name. 4-bit and 2-bit types (int4, uint4, float4e2m1, int2,
uint2) are stored as ml_dtypes holds them in memory: one element per byte, value in the low bits.
That costs 2-4x their packed size but needs no packing code, and the reader checks the high bits
are clear. String tensors are stored inline as JSON lists.

Attribute values that JSON cannot say directly are tagged objects with one "$"-key::

    {"$float": "inf" | "-inf" | "nan"}            non-finite float
    {"$bytes": "<base64>"}                        bytes
    {"$tensor": {"dtype", "shape", "blob"}}       numeric array (strings: "strings", "kind")
    {"$graph": {...}}                             Subgraph, encoded like a plan
    {"$dict": {...}}                              a dict whose own keys start with "$"

Plain dicts (no "$" keys) stay plain. Tuples come back as lists and numpy scalars as Python
numbers; dict-valued fields (attrs, tactic configs) come back with sorted keys, because the
container writes canonical JSON. Constants and tensor specs are lists, so their order survives.

Decoded arrays are read-only views of the container's buffer (``numpy.frombuffer``, no copy):
weights are never written by the runtime, and a stray write raises instead of corrupting a shared
engine. Callers that need to write copy first.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
from typing import Any

import numpy as np

from workbench import dtypes
from workbench.core.plan import Layer, Plan, Subgraph, TensorSpec
from workbench.errors import EngineFormatError

MAX_GRAPH_DEPTH = 16  # nested If/Loop/Scan bodies; keeps the header under format.MAX_JSON_DEPTH
MAX_VALUE_DEPTH = 32  # nested lists / dicts inside one attribute value
MAX_ELEMENTS = 1 << 40  # no real tensor has more; a bigger shape in a header is an attack or a bug
_LOW_BITS = {"int4": 4, "uint4": 4, "float4e2m1": 4, "int2": 2, "uint2": 2}
_TAGS = ("$float", "$bytes", "$tensor", "$graph", "$dict")

_LAYER_FIELDS = ("name", "op", "domain", "opset", "inputs", "outputs", "attrs", "onnx_nodes", "onnx_ops",
                 "precision", "tactic", "tactic_table", "input_specs", "output_specs", "flops", "bytes_moved")
_PLAN_FIELDS = ("inputs", "outputs", "layers", "constants", "tensors")
_GRAPH_FIELDS = ("name", "inputs", "outputs", "layers", "constants")


def _escape(part: str) -> str:
    # "/" separates blob-name components, so escaping it (and the escape char) keeps names unique
    return part.replace("%", "%25").replace("/", "%2F")


# --------------------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self) -> None:
        self.blobs: dict[str, memoryview] = {}

    def tensor(self, arr: np.ndarray, blob: str) -> dict:
        arr = np.asarray(arr)
        shape = list(arr.shape)
        if arr.dtype.kind in "USO":
            kind = arr.dtype.kind
            items = [self._string_item(x, blob) for x in arr.reshape(-1).tolist()]
            return {"dtype": "string", "kind": kind, "shape": shape, "strings": items}
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        name = dtypes.from_numpy(arr.dtype.newbyteorder("="))  # TypeError for unsupported dtypes
        if blob in self.blobs:
            raise ValueError(f"two tensors would share blob name {blob!r}")
        flat = np.ascontiguousarray(arr).reshape(-1)
        self.blobs[blob] = memoryview(flat.view(np.uint8)).toreadonly()
        return {"dtype": name, "shape": shape, "blob": blob}

    @staticmethod
    def _string_item(x, where: str):
        if isinstance(x, str):
            return x
        if isinstance(x, bytes):
            return {"$bytes": base64.b64encode(x).decode("ascii")}
        raise TypeError(f"{where}: string tensor element must be str or bytes, got {type(x).__name__}")

    def value(self, v: Any, blob: str, graph_depth: int, depth: int = 0) -> Any:
        if depth > MAX_VALUE_DEPTH:
            raise ValueError(f"{blob}: value nests deeper than {MAX_VALUE_DEPTH}")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            v = float(v)
            return v if math.isfinite(v) else {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(v, bytes):
            return {"$bytes": base64.b64encode(v).decode("ascii")}
        if isinstance(v, np.ndarray):
            return {"$tensor": self.tensor(v, blob)}
        if isinstance(v, Subgraph):
            return {"$graph": self.graph(v, blob + "/", graph_depth + 1)}
        if isinstance(v, (list, tuple)):
            return [self.value(x, f"{blob}/{i}", graph_depth, depth + 1) for i, x in enumerate(v)]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"{blob}: dict keys must be str, got {k!r}")
                out[k] = self.value(x, f"{blob}/{_escape(k)}", graph_depth, depth + 1)
            return {"$dict": out} if any(k.startswith("$") for k in out) else out
        raise TypeError(f"{blob}: cannot store a value of type {type(v).__name__} in an engine")

    def layer(self, layer: Layer, prefix: str, depth: int) -> dict:
        where = f"{prefix}layer/{_escape(layer.name)}"
        return {
            "name": layer.name, "op": layer.op, "domain": layer.domain, "opset": int(layer.opset),
            "inputs": list(layer.inputs), "outputs": list(layer.outputs),
            "attrs": {k: self.value(v, f"{where}/attr/{_escape(k)}", depth) for k, v in layer.attrs.items()},
            "onnx_nodes": list(layer.onnx_nodes), "onnx_ops": list(layer.onnx_ops),
            "precision": layer.precision, "tactic": layer.tactic,
            "tactic_table": self.value(list(layer.tactic_table), f"{where}/tactic_table", depth),
            "input_specs": [s.to_dict() for s in layer.input_specs],
            "output_specs": [s.to_dict() for s in layer.output_specs],
            "flops": int(layer.flops), "bytes_moved": int(layer.bytes_moved),
        }

    def body(self, g: Plan | Subgraph, prefix: str, depth: int) -> dict:
        if depth > MAX_GRAPH_DEPTH:
            raise ValueError(f"{prefix}: subgraphs nest deeper than {MAX_GRAPH_DEPTH}")
        return {
            "inputs": [s.to_dict() for s in g.inputs],
            "outputs": [s.to_dict() for s in g.outputs],
            "layers": [self.layer(layer, prefix, depth) for layer in g.layers],
            "constants": [{"name": k, **self.tensor(v, f"{prefix}const/{_escape(k)}")} for k, v in g.constants.items()],
        }

    def graph(self, g: Subgraph, prefix: str, depth: int) -> dict:
        return {"name": g.name, **self.body(g, prefix, depth)}


def encode_plan(plan: Plan) -> tuple[dict, dict[str, memoryview]]:
    """The plan as a JSON-able dict plus its tensors as named raw blobs (read-only memoryviews)."""
    enc = _Encoder()
    d = enc.body(plan, "", 0)
    d["tensors"] = [{"key": k, **s.to_dict()} for k, s in plan.tensors.items()]
    return d, enc.blobs


# --------------------------------------------------------------------------- decoding


def _fail(where: str, msg: str) -> EngineFormatError:
    return EngineFormatError(f"engine plan, {where}: {msg}")


def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _fields(d, names: tuple[str, ...], where: str) -> dict:
    if not isinstance(d, dict):
        raise _fail(where, f"expected an object, got {_type_name(d)}")
    missing = [n for n in names if n not in d]
    extra = sorted(set(d) - set(names))
    if missing:
        raise _fail(where, f"missing field {missing[0]!r}")
    if extra:
        raise _fail(where, f"unknown field {extra[0]!r}")
    return d


def _str(v, where: str) -> str:
    if not isinstance(v, str):
        raise _fail(where, f"expected str, got {_type_name(v)}")
    return v


def _int(v, where: str) -> int:
    if type(v) is not int:
        raise _fail(where, f"expected int, got {_type_name(v)}")
    return v


def _list(v, where: str) -> list:
    if not isinstance(v, list):
        raise _fail(where, f"expected list, got {_type_name(v)}")
    return v


def _str_list(v, where: str) -> list[str]:
    return [_str(x, f"{where}[{i}]") for i, x in enumerate(_list(v, where))]


def _spec(d, where: str, extra: tuple[str, ...] = ()) -> TensorSpec:
    d = _fields(d, ("name", "dtype", "shape") + extra, where)
    dtype = d["dtype"]
    if dtype is not None:
        _str(dtype, f"{where}.dtype")
    shape = d["shape"]
    if shape is not None:
        for i, dim in enumerate(_list(shape, f"{where}.shape")):
            if dim is not None and not isinstance(dim, str) and type(dim) is not int:
                raise _fail(f"{where}.shape[{i}]", f"expected int, str or null, got {_type_name(dim)}")
    return TensorSpec(_str(d["name"], f"{where}.name"), dtype, None if shape is None else list(shape))


class _Decoder:
    def __init__(self, blobs: dict[str, memoryview]) -> None:
        self.blobs = blobs

    def tensor(self, d, where: str) -> np.ndarray:
        if not isinstance(d, dict):
            raise _fail(where, f"expected a tensor object, got {_type_name(d)}")
        dtype = _str(d.get("dtype"), f"{where}.dtype")
        is_string = dtype == "string"
        d = _fields(d, ("dtype", "kind", "shape", "strings") if is_string else ("dtype", "shape", "blob"), where)
        shape = _list(d["shape"], f"{where}.shape")
        count = 1
        for i, dim in enumerate(shape):
            if type(dim) is not int or dim < 0:
                raise _fail(f"{where}.shape[{i}]", f"expected a non-negative int, got {dim!r}")
            count *= dim
            if count > MAX_ELEMENTS:
                raise _fail(f"{where}.shape", f"{shape} exceeds the limit of {MAX_ELEMENTS} elements")
        if is_string:
            return self._strings(d, shape, count, where)
        try:
            dt = dtypes.to_numpy(dtype)
        except TypeError:
            raise _fail(f"{where}.dtype", f"unknown element type {dtype!r}") from None
        blob = _str(d["blob"], f"{where}.blob")
        if blob not in self.blobs:
            raise _fail(f"{where}.blob", f"blob {blob!r} is not in the engine file")
        mv = self.blobs[blob]
        if count * dt.itemsize != mv.nbytes:
            raise _fail(where, f"{dtype}{shape} needs {count * dt.itemsize} bytes, blob {blob!r} has {mv.nbytes}")
        if sys.byteorder == "big" and dt.byteorder == "=":
            dt = dt.newbyteorder("<")
        raw = np.frombuffer(mv, dtype=np.uint8)
        if dtype == "bool" and raw.size and raw.max() > 1:
            raise _fail(where, "bool tensor holds bytes other than 0 and 1")
        if dtype in _LOW_BITS and raw.size and raw.max() >> _LOW_BITS[dtype]:
            raise _fail(where, f"{dtype} tensor has bits set above its low {_LOW_BITS[dtype]}")
        return raw.view(dt).reshape(shape)  # read-only: a view of the container's read-only buffer

    def _strings(self, d: dict, shape: list[int], count: int, where: str) -> np.ndarray:
        kind = d["kind"]
        if kind not in ("U", "S", "O"):
            raise _fail(f"{where}.kind", f"expected 'U', 'S' or 'O', got {kind!r}")
        items = _list(d["strings"], f"{where}.strings")
        if len(items) != count:
            raise _fail(where, f"shape {shape} needs {count} strings, found {len(items)}")
        values = []
        for i, x in enumerate(items):
            if isinstance(x, str) and kind != "S":
                values.append(x)
            elif isinstance(x, dict) and kind != "U" and set(x) == {"$bytes"}:
                values.append(self._bytes(x["$bytes"], f"{where}.strings[{i}]"))
            else:
                raise _fail(f"{where}.strings[{i}]", f"not a valid element of a {kind!r} string tensor")
        if kind == "O":
            arr = np.empty(count, dtype=object)
            arr[:] = values
        else:
            arr = np.array(values, dtype=str if kind == "U" else bytes)
        return arr.reshape(shape)

    @staticmethod
    def _bytes(s, where: str) -> bytes:
        try:
            return base64.b64decode(_str(s, where), validate=True)
        except binascii.Error:
            raise _fail(where, "invalid base64") from None

    def value(self, v, where: str, depth: int, graph_depth: int) -> Any:
        if depth > MAX_VALUE_DEPTH:
            raise _fail(where, f"value nests deeper than {MAX_VALUE_DEPTH}")
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):  # only reachable when the dict did not come from our parser
                raise _fail(where, "non-finite float must be tagged")
            return v
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]", depth + 1, graph_depth) for i, x in enumerate(v)]
        if not isinstance(v, dict):
            raise _fail(where, f"unexpected value of type {_type_name(v)}")
        tags = [k for k in v if isinstance(k, str) and k.startswith("$")]
        if not tags:
            return {k: self.value(x, f"{where}.{k}", depth + 1, graph_depth) for k, x in v.items()}
        if len(v) != 1 or tags[0] not in _TAGS:
            raise _fail(where, f"unknown tag {tags[0]!r}" if tags[0] not in _TAGS
                        else f"tag {tags[0]!r} must be the object's only key")
        tag, x = tags[0], v[tags[0]]
        if tag == "$float":
            if x not in ("inf", "-inf", "nan"):
                raise _fail(where, f"$float must be 'inf', '-inf' or 'nan', got {x!r}")
            return float(x)
        if tag == "$bytes":
            return self._bytes(x, where)
        if tag == "$tensor":
            return self.tensor(x, where)
        if tag == "$graph":
            return self.graph(x, where, graph_depth + 1)
        if not isinstance(x, dict):
            raise _fail(where, f"$dict must hold an object, got {_type_name(x)}")
        return {k: self.value(y, f"{where}.{k}", depth + 1, graph_depth) for k, y in x.items()}

    def layer(self, d, where: str, graph_depth: int) -> Layer:
        d = _fields(d, _LAYER_FIELDS, where)
        name = _str(d["name"], f"{where}.name")
        where = f"{where} ({name!r})"
        attrs = d["attrs"]
        if not isinstance(attrs, dict):
            raise _fail(f"{where}.attrs", f"expected an object, got {_type_name(attrs)}")
        table = _list(d["tactic_table"], f"{where}.tactic_table")
        for i, row in enumerate(table):
            if not isinstance(row, dict):
                raise _fail(f"{where}.tactic_table[{i}]", f"expected an object, got {_type_name(row)}")
        return Layer(
            name=name, op=_str(d["op"], f"{where}.op"), domain=_str(d["domain"], f"{where}.domain"),
            opset=_int(d["opset"], f"{where}.opset"),
            inputs=_str_list(d["inputs"], f"{where}.inputs"), outputs=_str_list(d["outputs"], f"{where}.outputs"),
            attrs={k: self.value(v, f"{where}.attrs.{k}", 0, graph_depth) for k, v in attrs.items()},
            onnx_nodes=_str_list(d["onnx_nodes"], f"{where}.onnx_nodes"),
            onnx_ops=_str_list(d["onnx_ops"], f"{where}.onnx_ops"),
            precision=_str(d["precision"], f"{where}.precision"), tactic=_str(d["tactic"], f"{where}.tactic"),
            tactic_table=self.value(table, f"{where}.tactic_table", 0, graph_depth),
            input_specs=[_spec(s, f"{where}.input_specs[{i}]")
                         for i, s in enumerate(_list(d["input_specs"], f"{where}.input_specs"))],
            output_specs=[_spec(s, f"{where}.output_specs[{i}]")
                          for i, s in enumerate(_list(d["output_specs"], f"{where}.output_specs"))],
            flops=_int(d["flops"], f"{where}.flops"), bytes_moved=_int(d["bytes_moved"], f"{where}.bytes_moved"),
        )

    def body(self, d: dict, where: str, graph_depth: int) -> dict:
        if graph_depth > MAX_GRAPH_DEPTH:
            raise _fail(where, f"subgraphs nest deeper than {MAX_GRAPH_DEPTH}")
        constants: dict[str, np.ndarray] = {}
        for i, c in enumerate(_list(d["constants"], f"{where}constants")):
            if not isinstance(c, dict):
                raise _fail(f"{where}constants[{i}]", f"expected an object, got {_type_name(c)}")
            name = _str(c.get("name"), f"{where}constants[{i}].name")
            if name in constants:
                raise _fail(f"{where}constants", f"duplicate constant {name!r}")
            constants[name] = self.tensor({k: x for k, x in c.items() if k != "name"}, f"{where}constant {name!r}")
        return {
            "inputs": [_spec(s, f"{where}inputs[{i}]") for i, s in enumerate(_list(d["inputs"], f"{where}inputs"))],
            "outputs": [_spec(s, f"{where}outputs[{i}]") for i, s in enumerate(_list(d["outputs"], f"{where}outputs"))],
            "layers": [self.layer(x, f"{where}layers[{i}]", graph_depth)
                       for i, x in enumerate(_list(d["layers"], f"{where}layers"))],
            "constants": constants,
        }

    def graph(self, d, where: str, graph_depth: int) -> Subgraph:
        d = _fields(d, _GRAPH_FIELDS, where)
        return Subgraph(name=_str(d["name"], f"{where}.name"), **self.body(d, f"graph {where}: ", graph_depth))


def decode_plan(d: dict, blobs: dict[str, memoryview]) -> Plan:
    """Rebuild a Plan from :func:`encode_plan` output, validating every field; arrays are read-only."""
    d = _fields(d, _PLAN_FIELDS, "plan")
    dec = _Decoder(blobs)
    tensors: dict[str, TensorSpec] = {}
    for i, t in enumerate(_list(d["tensors"], "tensors")):
        if not isinstance(t, dict):
            raise _fail(f"tensors[{i}]", f"expected an object, got {_type_name(t)}")
        key = _str(t.get("key"), f"tensors[{i}].key")
        if key in tensors:
            raise _fail("tensors", f"duplicate tensor {key!r}")
        tensors[key] = _spec(t, f"tensors[{i}]", extra=("key",))
    return Plan(**dec.body(d, "", 0), tensors=tensors)
