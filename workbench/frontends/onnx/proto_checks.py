"""Structural checks of an untrusted ModelProto: every tensor's shape against its bytes, element
caps, an explicit-stack walk of nested subgraphs and functions (no RecursionError), UTF-8 strings,
and no recursive local functions. Nothing here allocates from a declared size before checking it."""

from __future__ import annotations

from collections.abc import Iterator

from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, TensorProto

from ...core.limits import MAX_RANK
from ...dtypes import NAMES_BY_CODE
from ...errors import ModelLoadError, ModelTooLargeError


# Bits per element for every data type this reader knows. Written out (not taken from onnx) so that a
# type added by a newer onnx is refused as unknown instead of being given a guessed size.
_BITS: dict[int, int] = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 0, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
    14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
    27: 6, 28: 6,
}
# The typed field each data type stores into when raw_data is not used, per onnx.proto.
_FIELD: dict[int, str] = {1: "float_data", 14: "float_data", 11: "double_data", 15: "double_data",
                          7: "int64_data", 12: "uint64_data", 13: "uint64_data", 8: "string_data"}
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _q(value: object, limit: int = 80) -> str:
    """repr() of a name from the model, shortened: names are attacker-chosen and may be huge."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _shape(dims) -> str:
    return str(list(dims[:8])) if len(dims) <= 8 else f"[{', '.join(map(str, dims[:8]))}, ...] (rank {len(dims)})"


def _nbytes(data_type: int, n: int) -> int:
    return -(-n * _BITS[data_type] // 8)  # packed sub-byte types round up to whole bytes


def _typed_count(data_type: int, n: int) -> int:
    """Entries a typed field must hold for n elements (complex uses two, packed types share one)."""
    if data_type in (14, 15):
        return 2 * n
    if data_type in (21, 22, 23):
        return -(-n // 2)
    if data_type in (25, 26):
        return -(-n // 4)
    return n


def _element_count(dims, label: str, max_elements: int) -> int:
    if len(dims) > MAX_RANK:
        raise ModelTooLargeError(f"{label}: rank {len(dims)} is over the limit of {MAX_RANK}")
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{label}: negative dimension in shape {_shape(dims)}")
    if 0 in dims:
        return 0
    n = 1
    for d in dims:  # stop early so a shape like [2**62]*1000 never builds a huge integer
        n *= d
        if n > max_elements:
            raise ModelTooLargeError(
                f"{label}: shape {_shape(dims)} has more than {max_elements} elements (the element cap)")
    return n


# Walking every graph, node and tensor of a model without recursion


def _function_key(domain: str, name: str, overload: str = "") -> tuple[str, str, str]:
    return ("" if domain == "ai.onnx" else domain, name, overload)


def _walk(model: ModelProto, max_nesting: int | None) -> Iterator[tuple[str, object, str, tuple | None]]:
    """Yield (kind, proto, label, function) for every node, tensor and sparse tensor, without recursion.

    kind is "node", "tensor" (sparse values/indices included) or "sparse"; function is the key of the
    model-local function whose body holds the item, else None. The main graph and function bodies are
    depth 0, a graph attribute of a node at depth d is d + 1; past max_nesting raises before descending.
    Labels name only the nearest graph, so their length does not grow with depth.
    """
    stack: list[tuple[GraphProto | FunctionProto | AttributeProto, int, str, tuple | None]] = []
    if model.HasField("graph"):
        stack.append((model.graph, 0, f"graph {_q(model.graph.name)}", None))
    for i, info in enumerate(model.training_info):
        for field in ("initialization", "algorithm"):
            if info.HasField(field):
                stack.append((getattr(info, field), 0, f"training_info[{i}].{field}", None))
    for fn in model.functions:
        key = _function_key(fn.domain, fn.name, fn.overload)
        stack.append((fn, 0, f"function {_q(f'{fn.domain}::{fn.name}')}", key))
    while stack:
        proto, depth, where, owner = stack.pop()
        tensor_where = where
        if isinstance(proto, AttributeProto):
            # Every tensor/graph field is looked at whatever `type` claims: a consumer may read them.
            tensors = ([proto.t] if proto.HasField("t") else []) + list(proto.tensors)
            sparse = ([proto.sparse_tensor] if proto.HasField("sparse_tensor") else []) + list(proto.sparse_tensors)
            for g in ([proto.g] if proto.HasField("g") else []) + list(proto.graphs):
                if max_nesting is not None and depth + 1 > max_nesting:
                    raise ModelTooLargeError(f"subgraph {_q(g.name)} in {where} is nested {depth + 1} deep; "
                                             f"the limit is {max_nesting}")
                stack.append((g, depth + 1, f"graph {_q(g.name)}", owner))
        elif isinstance(proto, GraphProto):
            tensors, sparse = proto.initializer, proto.sparse_initializer
            tensor_where = f"initializer of {where}"
        else:  # FunctionProto: default attribute values may hold tensors and graphs
            tensors, sparse = (), ()
            stack.extend((a, depth, f"default of attribute {_q(a.name)} of {where}", owner)
                         for a in proto.attribute_proto)
        for t in tensors:
            yield "tensor", t, f"tensor {_q(t.name)} ({tensor_where})", owner
        for s in sparse:
            label = f"sparse tensor {_q(s.values.name)} ({tensor_where})"
            yield "tensor", s.values, f"values of {label}", owner
            yield "tensor", s.indices, f"indices of {label}", owner
            yield "sparse", s, label, owner
        if not isinstance(proto, AttributeProto):
            for node in proto.node:
                yield "node", node, where, owner
                if len(node.attribute):  # the label is written only for nodes that have attributes
                    node_where = f"node {_q(node.name)} ({_q(node.op_type)}) in {where}"
                    stack.extend((a, depth, f"attribute {_q(a.name)} of {node_where}", owner) for a in node.attribute)


# Structural validation


def _check_tensor(t: TensorProto, label: str, max_elements: int) -> int:
    """Check a tensor's type, shape and inline data; return its element count."""
    if t.data_type not in _BITS:
        raise ModelLoadError(f"{label}: unknown data_type {t.data_type}")
    n = _element_count(t.dims, label, max_elements)
    if t.HasField("segment"):
        raise ModelLoadError(f"{label}: segmented tensors are not supported")
    typed = [f for f in _TYPED_FIELDS if len(getattr(t, f))]
    has_raw = t.HasField("raw_data")
    dtype = NAMES_BY_CODE.get(t.data_type) or TensorProto.DataType.Name(t.data_type).lower()
    if t.data_location == TensorProto.EXTERNAL:
        if has_raw or typed:
            raise ModelLoadError(f"{label}: has both external and inline data")
        if t.data_type == TensorProto.STRING:
            raise ModelLoadError(f"{label}: string tensors cannot use external data")
        return n
    if has_raw and typed:
        raise ModelLoadError(f"{label}: has both raw_data and {typed[0]}")
    if len(typed) > 1:
        raise ModelLoadError(f"{label}: has data in several fields {typed}")
    if has_raw:
        if t.data_type == TensorProto.STRING:
            raise ModelLoadError(f"{label}: string tensors cannot use raw_data")
        expected = _nbytes(t.data_type, n)
        if len(t.raw_data) != expected:
            raise ModelLoadError(f"{label}: raw_data has {len(t.raw_data)} bytes; shape {_shape(t.dims)} "
                                 f"of {dtype} needs {expected}")
    elif typed:
        field, want = typed[0], _FIELD.get(t.data_type, "int32_data")
        if field != want:
            raise ModelLoadError(f"{label}: {dtype} data must be in {want}, not {field}")
        expected, got = _typed_count(t.data_type, n), len(getattr(t, field))
        if got != expected:
            raise ModelLoadError(f"{label}: {field} has {got} entries; shape {_shape(t.dims)} "
                                 f"of {dtype} needs {expected}")
    elif n:
        raise ModelLoadError(f"{label}: shape {_shape(t.dims)} has {n} elements but the tensor has no data")
    return n


def _check_sparse(s, label: str, max_elements: int) -> None:
    _element_count(s.dims, label, max_elements)  # densifying allocates the full shape
    nnz = _element_count(s.values.dims, f"values of {label}", max_elements)
    if len(s.values.dims) != 1:
        raise ModelLoadError(f"{label}: values must be 1-D, got shape {_shape(s.values.dims)}")
    if list(s.indices.dims) not in ([nnz], [nnz, len(s.dims)]):
        raise ModelLoadError(f"{label}: indices shape {_shape(s.indices.dims)} does not fit {nnz} values of rank {len(s.dims)}")


def _check_utf8(model: ModelProto) -> None:
    """Refuse string fields that are not UTF-8: upb hands them back as bytes, which breaks every consumer."""
    stack: list = [model]
    while stack:
        msg = stack.pop()
        for field, value in msg.ListFields():
            if field.type == field.TYPE_MESSAGE:
                if field.is_repeated:
                    stack.extend(value)
                else:
                    stack.append(value)
            elif field.type == field.TYPE_STRING:
                for v in value if field.is_repeated else (value,):
                    if not isinstance(v, str):
                        raise ModelLoadError(f"not a valid ONNX model: {field.full_name} {_q(v)} is not UTF-8")


def _check_structure(model: ModelProto, max_nesting: int, max_elements: int) -> bool:
    """Validate every tensor, nesting depth and the function call graph; return True if any data is external."""
    if model.ir_version <= 0:
        raise ModelLoadError("not a valid ONNX model: ir_version is missing")
    if not model.HasField("graph"):
        raise ModelLoadError("not a valid ONNX model: it has no graph")
    if not len(model.opset_import):
        raise ModelLoadError("not a valid ONNX model: it has no opset_import")
    _check_utf8(model)
    functions: dict[tuple, FunctionProto] = {}
    for fn in model.functions:
        key = _function_key(fn.domain, fn.name, fn.overload)
        if key in functions:
            raise ModelLoadError(f"model-local function {_q(fn.domain + '::' + fn.name)} is defined twice")
        functions[key] = fn
    calls: dict[tuple, set[tuple]] = {key: set() for key in functions}
    external = False
    for kind, proto, label, owner in _walk(model, max_nesting):
        if kind == "node":
            callee = _function_key(proto.domain, proto.op_type, proto.overload)
            if owner is not None and callee in functions:
                calls[owner].add(callee)
        elif kind == "tensor":
            _check_tensor(proto, label, max_elements)
            external |= proto.data_location == TensorProto.EXTERNAL
        else:
            _check_sparse(proto, label, max_elements)
    _check_no_recursion(calls)
    return external


def _check_no_recursion(calls: dict[tuple, set[tuple]]) -> None:
    """Refuse a cycle in the call graph of model-local functions (inlining it would never end)."""
    state: dict[tuple, int] = {}  # 1 = on the current path, 2 = done
    for root in calls:
        if root in state:
            continue
        path, iters = [root], [iter(sorted(calls[root]))]
        state[root] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                names = " -> ".join(f"{d}::{n}" for d, n, _ in cycle)
                raise ModelLoadError(f"model-local function {_q(nxt[0] + '::' + nxt[1])} is recursive: {names}")
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(calls[nxt])))


# External data
