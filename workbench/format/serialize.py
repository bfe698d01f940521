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

What the runtime reads is all in the plan; report sections are for people and may be stripped:

* ``layer.tactic`` (registry name), ``layer.tactic_config`` (the chosen candidate's configuration,
  a dict of JSON-able values) and ``layer.binaries`` ({kernel name: engine blob name}): the runtime
  rebuilds the layer's kernel from these. ``layer.tactic_table`` is a report and never read to run.
* Compiled code convention: a blob name in ``layer.binaries`` is a key of ``Engine.blobs`` (the
  builder names a cubin ``"cubin/" + sha256(cubin)[:32]``, so identical code is stored once); the
  engine file stores ``Engine.blobs[name]`` as container blob ``"kernel/" + name`` and lists the
  names in the header's ``"kernels"``. ``Engine.load`` refuses a plan whose binaries name a
  missing blob.
* ``plan.arena``: ``{"bytes", "offsets": {tensor: offset}, "alignment"}``, the static memory plan.
* ``plan.options``: ``{"cuda_graph": bool, "max_elements": int | null}``.
* ``plan.profiles`` (only written when there are any, so an engine without shape ranges is stored
  as before): ``[{input: [min shape, opt shape, max shape]}]``, checked at load (known inputs, equal
  ranks, min <= opt <= max).
* ``plan.buckets`` (likewise optional): ``[{"shapes", "profiles", "batch", "inputs", "outputs",
  "layers", "constants": [], "tensors", "arena"}]``, one static plan per bucket whose layers read
  the plan's constants; its blobs are named under ``bucket<i>/``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import sys
from typing import Any

import numpy as np

from workbench import dtypes
from workbench.core.limits import MAX_NESTING
from workbench.core.plan import Arena, Bucket, Layer, Plan, RunOptions, Subgraph, TensorSpec
from workbench.errors import ResourceLimitError
from workbench.format import strict

MAX_GRAPH_DEPTH = MAX_NESTING  # nested If/Loop/Scan bodies: the loader's limit, under MAX_JSON_DEPTH
MAX_VALUE_DEPTH = 32  # nested lists / dicts inside one attribute value
MAX_ELEMENTS = 1 << 40  # no real tensor has more; a bigger shape in a header is an attack or a bug
_LOW_BITS = {"int4": 4, "uint4": 4, "float4e2m1": 4, "int2": 2, "uint2": 2}
_TAGS = ("$float", "$bytes", "$tensor", "$graph", "$dict")

_LAYER_FIELDS = ("name", "op", "domain", "opset", "inputs", "outputs", "attrs", "onnx_nodes", "onnx_ops",
                 "precision", "tactic", "tactic_config", "binaries", "tactic_table", "input_specs", "output_specs",
                 "flops", "bytes_moved")
_PLAN_FIELDS = ("inputs", "outputs", "layers", "constants", "tensors", "arena", "options")
_PLAN_OPTIONAL = ("profiles", "buckets")  # written only when not empty
_BUCKET_FIELDS = ("shapes", "profiles", "batch", "inputs", "outputs", "layers", "constants", "tensors", "arena")
MAX_PROFILES = 1 << 10
MAX_BUCKETS = 1 << 10
_ARENA_FIELDS = ("bytes", "offsets", "alignment")
_OPTION_FIELDS = ("cuda_graph", "max_elements")
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
            "tactic_config": self.config(layer.tactic_config, f"{where}/tactic_config", depth),
            "binaries": _str_map(layer.binaries, f"{where}/binaries"),
            "tactic_table": self.value(list(layer.tactic_table), f"{where}/tactic_table", depth),
            "input_specs": [s.to_dict() for s in layer.input_specs],
            "output_specs": [s.to_dict() for s in layer.output_specs],
            "flops": int(layer.flops), "bytes_moved": int(layer.bytes_moved),
        }

    def config(self, config: dict, where: str, depth: int) -> dict:
        if not isinstance(config, dict):
            raise TypeError(f"{where}: a tactic config must be a dict, got {type(config).__name__}")
        return self.value(config, where, depth)

    def body(self, g: Plan | Subgraph, prefix: str, depth: int) -> dict:
        if depth > MAX_GRAPH_DEPTH:
            raise ResourceLimitError(f"{prefix or 'graph'}: subgraphs nest deeper than {MAX_GRAPH_DEPTH} levels")
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
    d.update(_tensors_and_arena(plan))
    max_elements = plan.options.max_elements
    d["options"] = {"cuda_graph": bool(plan.options.cuda_graph),
                    "max_elements": None if max_elements is None else int(max_elements)}
    if plan.profiles:
        d["profiles"] = [{_str_key(k, "profiles"): [[int(x) for x in shape] for shape in r] for k, r in p.items()}
                         for p in plan.profiles]
    if plan.buckets:
        d["buckets"] = [_encode_bucket(enc, b, i, plan) for i, b in enumerate(plan.buckets)]
    return d, enc.blobs


def _tensors_and_arena(plan: Plan) -> dict:
    arena = plan.arena
    return {"tensors": [{"key": k, **s.to_dict()} for k, s in plan.tensors.items()],
            "arena": {"bytes": int(arena.bytes), "alignment": int(arena.alignment),
                      "offsets": {_str_key(k, "arena.offsets"): int(v) for k, v in arena.offsets.items()}}}


def _encode_bucket(enc: "_Encoder", bucket: Bucket, i: int, plan: Plan) -> dict:
    if bucket.plan.constants and bucket.plan.constants is not plan.constants:
        raise ValueError(f"bucket {i}: its layers read the plan's constants; it must hold none of its own")
    body = dataclasses.replace(bucket.plan, constants={})  # the weights are stored once, with the plan
    return {"shapes": {_str_key(k, "bucket shapes"): [int(x) for x in v] for k, v in bucket.shapes.items()},
            "profiles": [int(p) for p in bucket.profiles],
            "batch": None if bucket.batch is None else int(bucket.batch),
            **enc.body(body, f"bucket{i}/", 0), **_tensors_and_arena(bucket.plan)}


def _str_key(k, where: str) -> str:
    if not isinstance(k, str):
        raise TypeError(f"{where}: keys must be str, got {k!r}")
    return k


def _str_map(d: dict, where: str) -> dict[str, str]:
    if not isinstance(d, dict):
        raise TypeError(f"{where}: expected a dict, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        if not isinstance(v, str) or not v:
            raise TypeError(f"{where}[{k!r}]: expected a non-empty str, got {v!r}")
        out[_str_key(k, where)] = v
    return out


# --------------------------------------------------------------------------- decoding


class _Decoder:
    def __init__(self, blobs: dict[str, memoryview]) -> None:
        self.blobs = blobs

    def tensor(self, d, where: str) -> np.ndarray:
        if not isinstance(d, dict):
            raise strict.fail(where, f"expected a tensor object, got {strict.type_name(d)}")
        dtype = strict.string(d.get("dtype"), f"{where}.dtype")
        is_string = dtype == "string"
        d = strict.fields(d, ("dtype", "kind", "shape", "strings") if is_string else ("dtype", "shape", "blob"), where)
        shape = strict.array(d["shape"], f"{where}.shape")
        count = 1
        for i, dim in enumerate(shape):
            if type(dim) is not int or dim < 0:
                raise strict.fail(f"{where}.shape[{i}]", f"expected a non-negative int, got {dim!r}")
            count *= dim
            if count > MAX_ELEMENTS:
                raise strict.fail(f"{where}.shape", f"{shape} exceeds the limit of {MAX_ELEMENTS} elements")
        if is_string:
            return self._strings(d, shape, count, where)
        try:
            dt = dtypes.to_numpy(dtype)
        except TypeError:
            raise strict.fail(f"{where}.dtype", f"unknown element type {dtype!r}") from None
        blob = strict.string(d["blob"], f"{where}.blob")
        if blob not in self.blobs:
            raise strict.fail(f"{where}.blob", f"blob {blob!r} is not in the engine file")
        mv = self.blobs[blob]
        if count * dt.itemsize != mv.nbytes:
            raise strict.fail(where, f"{dtype}{shape} needs {count * dt.itemsize} bytes, blob {blob!r} has {mv.nbytes}")
        if sys.byteorder == "big" and dt.byteorder == "=":
            dt = dt.newbyteorder("<")
        raw = np.frombuffer(mv, dtype=np.uint8)
        if dtype == "bool" and raw.size and raw.max() > 1:
            raise strict.fail(where, "bool tensor holds bytes other than 0 and 1")
        if dtype in _LOW_BITS and raw.size and raw.max() >> _LOW_BITS[dtype]:
            raise strict.fail(where, f"{dtype} tensor has bits set above its low {_LOW_BITS[dtype]}")
        return raw.view(dt).reshape(shape)  # read-only: a view of the container's read-only buffer

    def _strings(self, d: dict, shape: list[int], count: int, where: str) -> np.ndarray:
        kind = d["kind"]
        if kind not in ("U", "S", "O"):
            raise strict.fail(f"{where}.kind", f"expected 'U', 'S' or 'O', got {kind!r}")
        items = strict.array(d["strings"], f"{where}.strings")
        if len(items) != count:
            raise strict.fail(where, f"shape {shape} needs {count} strings, found {len(items)}")
        values = []
        for i, x in enumerate(items):
            if isinstance(x, str) and kind != "S":
                values.append(x)
            elif isinstance(x, dict) and kind != "U" and set(x) == {"$bytes"}:
                values.append(self._bytes(x["$bytes"], f"{where}.strings[{i}]"))
            else:
                raise strict.fail(f"{where}.strings[{i}]", f"not a valid element of a {kind!r} string tensor")
        if kind == "O":
            arr = np.empty(count, dtype=object)
            arr[:] = values
        else:
            arr = np.array(values, dtype=str if kind == "U" else bytes)
        return arr.reshape(shape)

    @staticmethod
    def _bytes(s, where: str) -> bytes:
        try:
            return base64.b64decode(strict.string(s, where), validate=True)
        except binascii.Error:
            raise strict.fail(where, "invalid base64") from None

    def value(self, v, where: str, depth: int, graph_depth: int) -> Any:
        if depth > MAX_VALUE_DEPTH:
            raise strict.fail(where, f"value nests deeper than {MAX_VALUE_DEPTH}")
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):  # only reachable when the dict did not come from our parser
                raise strict.fail(where, "non-finite float must be tagged")
            return v
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]", depth + 1, graph_depth) for i, x in enumerate(v)]
        if not isinstance(v, dict):
            raise strict.fail(where, f"unexpected value of type {strict.type_name(v)}")
        tags = [k for k in v if isinstance(k, str) and k.startswith("$")]
        if not tags:
            return {k: self.value(x, f"{where}.{k}", depth + 1, graph_depth) for k, x in v.items()}
        if len(v) != 1 or tags[0] not in _TAGS:
            raise strict.fail(where, f"unknown tag {tags[0]!r}" if tags[0] not in _TAGS
                        else f"tag {tags[0]!r} must be the object's only key")
        tag, x = tags[0], v[tags[0]]
        if tag == "$float":
            if x not in ("inf", "-inf", "nan"):
                raise strict.fail(where, f"$float must be 'inf', '-inf' or 'nan', got {x!r}")
            return float(x)
        if tag == "$bytes":
            return self._bytes(x, where)
        if tag == "$tensor":
            return self.tensor(x, where)
        if tag == "$graph":
            return self.graph(x, where, graph_depth + 1)
        if not isinstance(x, dict):
            raise strict.fail(where, f"$dict must hold an object, got {strict.type_name(x)}")
        return {k: self.value(y, f"{where}.{k}", depth + 1, graph_depth) for k, y in x.items()}

    def layer(self, d, where: str, graph_depth: int) -> Layer:
        d = strict.fields(d, _LAYER_FIELDS, where)
        name = strict.string(d["name"], f"{where}.name")
        where = f"{where} ({name!r})"
        at = {k: f"{where}.{k}" for k in _LAYER_FIELDS}
        attrs = strict.obj(d["attrs"], at["attrs"])
        binaries = strict.obj(d["binaries"], at["binaries"])
        binaries = {k: strict.string(v, f"{at['binaries']}.{k}") for k, v in binaries.items()}
        if not all(binaries.values()):
            raise strict.fail(at["binaries"], "blob names must not be empty")
        config = self.value(strict.obj(d["tactic_config"], at["tactic_config"]), at["tactic_config"], 0, graph_depth)
        if not isinstance(config, dict):
            raise strict.fail(at["tactic_config"], f"expected an object, got {strict.type_name(config)}")
        table = strict.array(d["tactic_table"], at["tactic_table"])
        for i, row in enumerate(table):
            strict.obj(row, f"{at['tactic_table']}[{i}]")
        return Layer(
            name=name, op=strict.string(d["op"], at["op"]), domain=strict.string(d["domain"], at["domain"]),
            opset=strict.integer(d["opset"], at["opset"]),
            inputs=strict.strings(d["inputs"], at["inputs"]), outputs=strict.strings(d["outputs"], at["outputs"]),
            attrs={k: self.value(v, f"{where}.attrs.{k}", 0, graph_depth) for k, v in attrs.items()},
            onnx_nodes=strict.strings(d["onnx_nodes"], at["onnx_nodes"]),
            onnx_ops=strict.strings(d["onnx_ops"], at["onnx_ops"]),
            precision=strict.string(d["precision"], at["precision"]), tactic=strict.string(d["tactic"], at["tactic"]),
            tactic_config=config, binaries=binaries,
            tactic_table=self.value(table, at["tactic_table"], 0, graph_depth),
            input_specs=_specs(d["input_specs"], at["input_specs"]),
            output_specs=_specs(d["output_specs"], at["output_specs"]),
            flops=strict.integer(d["flops"], at["flops"]),
            bytes_moved=strict.integer(d["bytes_moved"], at["bytes_moved"]),
        )

    def body(self, d: dict, where: str, graph_depth: int) -> dict:
        if graph_depth > MAX_GRAPH_DEPTH:
            raise strict.fail(where, f"subgraphs nest deeper than {MAX_GRAPH_DEPTH}")
        constants: dict[str, np.ndarray] = {}
        for i, c in enumerate(strict.array(d["constants"], f"{where}constants")):
            if not isinstance(c, dict):
                raise strict.fail(f"{where}constants[{i}]", f"expected an object, got {strict.type_name(c)}")
            name = strict.string(c.get("name"), f"{where}constants[{i}].name")
            if name in constants:
                raise strict.fail(f"{where}constants", f"duplicate constant {name!r}")
            constants[name] = self.tensor({k: x for k, x in c.items() if k != "name"}, f"{where}constant {name!r}")
        return {
            "inputs": _specs(d["inputs"], f"{where}inputs"),
            "outputs": _specs(d["outputs"], f"{where}outputs"),
            "layers": [self.layer(x, f"{where}layers[{i}]", graph_depth)
                       for i, x in enumerate(strict.array(d["layers"], f"{where}layers"))],
            "constants": constants,
        }

    def graph(self, d, where: str, graph_depth: int) -> Subgraph:
        d = strict.fields(d, _GRAPH_FIELDS, where)
        name = strict.string(d["name"], f"{where}.name")
        return Subgraph(name=name, **self.body(d, f"graph {where}: ", graph_depth))


def _specs(v, where: str) -> list[TensorSpec]:
    return [strict.spec(s, f"{where}[{i}]") for i, s in enumerate(strict.array(v, where))]


def decode_plan(d: dict, blobs: dict[str, memoryview]) -> Plan:
    """Rebuild a Plan from :func:`encode_plan` output, validating every field; arrays are read-only."""
    strict.obj(d, "plan")
    d = strict.fields(d, _PLAN_FIELDS + tuple(k for k in _PLAN_OPTIONAL if k in d), "plan")
    dec = _Decoder(blobs)
    plan = Plan(**dec.body(d, "", 0), tensors=_tensors(d["tensors"], "tensors"), arena=_arena(d["arena"]),
                options=_options(d["options"]))
    if "profiles" in d:
        plan.profiles = _profiles(d["profiles"], plan.inputs)
    if "buckets" in d:
        items = strict.array(d["buckets"], "buckets")
        if not items or len(items) > MAX_BUCKETS:
            raise strict.fail("buckets", f"expected 1 to {MAX_BUCKETS} buckets, got {len(items)}")
        plan.buckets = [_bucket(dec, b, f"buckets[{i}]", plan) for i, b in enumerate(items)]
    return plan


def _tensors(v, where: str) -> dict[str, TensorSpec]:
    tensors: dict[str, TensorSpec] = {}
    for i, t in enumerate(strict.array(v, where)):
        if not isinstance(t, dict):
            raise strict.fail(f"{where}[{i}]", f"expected an object, got {strict.type_name(t)}")
        key = strict.string(t.get("key"), f"{where}[{i}].key")
        if key in tensors:
            raise strict.fail(where, f"duplicate tensor {key!r}")
        tensors[key] = strict.spec(t, f"{where}[{i}]", extra=("key",))
    return tensors


def _dims(v, where: str) -> list[int]:
    dims = strict.array(v, where)
    for i, x in enumerate(dims):
        if not 0 <= strict.integer(x, f"{where}[{i}]") <= strict.MAX_DIM:
            raise strict.fail(f"{where}[{i}]", f"dimension {x} is out of range [0, {strict.MAX_DIM}]")
    return list(dims)


def _profiles(v, inputs: list[TensorSpec]) -> list[dict[str, list[list[int]]]]:
    """Shape ranges: known inputs, three shapes of one rank (the input's, where it has one), min <= opt <= max."""
    items = strict.array(v, "profiles")
    if len(items) > MAX_PROFILES:
        raise strict.fail("profiles", f"{len(items)} profiles, over the limit of {MAX_PROFILES}")
    ranks = {s.name: None if s.shape is None else len(s.shape) for s in inputs}
    out = []
    for i, p in enumerate(items):
        where = f"profiles[{i}]"
        profile = {}
        for name, r in strict.obj(p, where).items():
            at = f"{where}.{name}"
            if name not in ranks:
                raise strict.fail(at, "names no input of the plan")
            shapes = strict.array(r, at)
            if len(shapes) != 3:
                raise strict.fail(at, f"expected [min, opt, max], got {len(shapes)} shapes")
            lo, opt, hi = (_dims(s, f"{at}[{k}]") for k, s in enumerate(shapes))
            if not len(lo) == len(opt) == len(hi) or ranks[name] not in (None, len(lo)):
                raise strict.fail(at, "min, opt and max must have the input's rank")
            if any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise strict.fail(at, f"needs min <= opt <= max in every dim, got {lo}, {opt}, {hi}")
            profile[name] = [lo, opt, hi]
        out.append(profile)
    return out


def _bucket(dec: "_Decoder", d, where: str, plan: Plan) -> Bucket:
    d = strict.fields(d, _BUCKET_FIELDS, where)
    shapes = {k: _dims(v, f"{where}.shapes.{k}") for k, v in strict.obj(d["shapes"], f"{where}.shapes").items()}
    profiles = [strict.count(p, f"{where}.profiles[{i}]") for i, p in enumerate(strict.array(d["profiles"], f"{where}.profiles"))]
    if any(p >= max(len(plan.profiles), 1) for p in profiles):
        raise strict.fail(f"{where}.profiles", f"names a profile the plan does not have ({len(plan.profiles)} profiles)")
    batch = d["batch"]
    if batch is not None and not 1 <= strict.integer(batch, f"{where}.batch") <= strict.MAX_DIM:
        raise strict.fail(f"{where}.batch", f"{batch} is out of range")
    body = dec.body(d, f"bucket {where}: ", 0)
    if body["constants"]:
        raise strict.fail(f"{where}.constants", "a bucket reads the plan's constants and holds none of its own")
    names = {s.name for s in plan.inputs}
    if set(shapes) != names or {s.name for s in body["inputs"]} != names:
        raise strict.fail(where, "a bucket must give a shape for every input of the plan, and no other")
    for spec in body["inputs"]:
        if spec.shape != shapes[spec.name]:
            raise strict.fail(f"{where}.inputs", f"input {spec.name!r} has shape {spec.shape}, not the bucket's {shapes[spec.name]}")
    if batch is not None:  # padding a batch up to the bucket's needs every input and output to lead with it
        for spec in body["inputs"] + body["outputs"]:
            if not spec.shape or spec.shape[0] != batch:
                raise strict.fail(where, f"batch {batch}: tensor {spec.name!r} of shape {spec.shape} does not lead with it")
    sub = Plan(**body, tensors=_tensors(d["tensors"], f"{where}.tensors"), arena=_arena(d["arena"]), options=plan.options)
    sub.constants = plan.constants  # one dict: the weights are the plan's
    return Bucket(shapes=shapes, plan=sub, profiles=profiles, batch=batch)


def _arena(d) -> Arena:
    d = strict.fields(d, _ARENA_FIELDS, "arena")
    offsets = strict.obj(d["offsets"], "arena.offsets")
    offsets = {k: strict.count(v, f"arena.offsets.{k}") for k, v in offsets.items()}
    alignment = strict.count(d["alignment"], "arena.alignment")
    if not alignment:
        raise strict.fail("arena.alignment", "must be positive")
    if alignment & (alignment - 1) or alignment > 1 << 20:
        raise strict.fail("arena.alignment", f"must be a power of two up to {1 << 20}, got {alignment}")
    size = strict.count(d["bytes"], "arena.bytes")
    if size > strict.MAX_DIM:
        raise strict.fail("arena.bytes", f"{size} is out of range")
    for k, off in offsets.items():
        if off > size:
            raise strict.fail(f"arena.offsets.{k}", f"offset {off} is past the arena's {size} bytes")
    return Arena(bytes=size, offsets=offsets, alignment=alignment)


def _options(d) -> RunOptions:
    d = strict.fields(d, _OPTION_FIELDS, "options")
    cap = d["max_elements"]
    if cap is not None and not 1 <= strict.integer(cap, "options.max_elements") <= MAX_ELEMENTS:
        raise strict.fail("options.max_elements", f"{cap} is out of range [1, {MAX_ELEMENTS}]")
    # the file's cap can only lower the reader's own: the runtime takes the smaller of the two
    return RunOptions(cuda_graph=strict.boolean(d["cuda_graph"], "options.cuda_graph"), max_elements=cap)
