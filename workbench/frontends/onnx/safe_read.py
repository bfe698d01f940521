"""Read an ONNX model from an untrusted source into a validated ModelProto with all tensor data inline.

Models come from strangers, so nothing here trusts the file: protobuf bytes are parsed without onnx's
external-data loader (which follows `location` wherever it points and sets attributes from arbitrary
keys), every tensor's declared shape is checked against the bytes it carries before anyone allocates
from it, subgraphs are walked with an explicit stack (a 10,000-deep If chain must be an error, not a
RecursionError), and external data is read only from regular, singly-linked files inside the model's
folder, reached without symlinks. `check_opsets` is separate: the caller decides when opsets matter.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, FunctionProto, GraphProto, ModelProto, TensorProto

from ...dtypes import NAMES_BY_CODE
from ...errors import ExternalDataError, ModelLoadError, ResourceLimitError, UnsupportedModelError

__all__ = ["read_model", "check_opsets", "ModelTooLargeError"]

MIN_OPSET = 7
KNOWN_DOMAINS = frozenset({"ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview", "workbench"})


class ModelTooLargeError(ModelLoadError, ResourceLimitError):
    """A model exceeds a configured limit; catchable as either a load error or a limit error."""


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
_KNOWN_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_DECIMAL = re.compile(r"[0-9]{1,20}")  # 20 digits bounds int() cost; real sizes are far smaller


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


def _external_entries(t: TensorProto, label: str) -> tuple[str, int, int | None]:
    """Parse a tensor's external_data into (location, offset, length); length None means 'whole tensor'."""
    values: dict[str, str] = {}
    ignored = []
    for entry in t.external_data:
        key, value = entry.key, entry.value  # already checked to be str by _check_utf8
        if key not in _KNOWN_EXTERNAL_KEYS:
            ignored.append(key)  # onnx's loader would setattr() these, dunders included; we never do
            continue
        if key in values:
            raise ExternalDataError(f"{label}: external_data key {_q(key)} is given twice")
        values[key] = value
    if ignored:
        warnings.warn(f"{label}: ignoring unknown external_data keys {[_q(k) for k in ignored]}", stacklevel=4)
    if "location" not in values:
        raise ExternalDataError(f"{label}: external data has no 'location'")
    numbers: dict[str, int | None] = {}
    for key in ("offset", "length"):
        text = values.get(key)
        if text is not None and not _DECIMAL.fullmatch(text):
            raise ExternalDataError(f"{label}: external data {key} {_q(text)} (location "
                                    f"{_q(values['location'])}) is not a non-negative decimal integer")
        numbers[key] = None if text is None else int(text)
    return values["location"], numbers["offset"] or 0, numbers["length"]


def _location_parts(location: str, label: str) -> list[str]:
    """Split a relative location into components, refusing anything that could leave the folder."""
    why = None
    if not location:
        why = "is empty"
    elif "\0" in location:
        why = "contains a NUL byte"
    elif "\\" in location:
        why = "contains a backslash (UNC or Windows path)"
    elif _DRIVE.match(location):
        why = "is a Windows drive path"
    elif location.startswith("/") or os.path.isabs(location):
        why = "is an absolute path"
    parts = [p for p in location.split("/") if p not in ("", ".")]
    if why is None and ".." in parts:
        why = "contains a '..' component"
    if why is None and not parts:
        why = "names no file"
    if why:
        raise ExternalDataError(f"{label}: external data location {_q(location)} {why}; "
                                "it must be a relative path inside the model's folder")
    return parts


class _ExternalFiles:
    """Opens external-data files safely, once per location, and closes them all at the end."""

    def __init__(self, base_dir: str):
        self.base_dir = os.fspath(base_dir)
        self.base_real = os.path.realpath(self.base_dir)
        self.open_files: dict[str, tuple[int, int]] = {}  # location -> (fd, size)

    def close(self) -> None:
        for fd, _ in self.open_files.values():
            os.close(fd)
        self.open_files.clear()

    def open(self, location: str, label: str) -> tuple[int, int]:
        if location in self.open_files:
            return self.open_files[location]
        parts = _location_parts(location, label)  # string checks come before any file-system access
        where = f"{label}: external data file {_q(location)} in {_q(self.base_dir)}"
        path = self.base_dir
        try:
            for part in parts[:-1]:
                path = os.path.join(path, part)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                    raise ExternalDataError(f"{where}: {_q(path)} is a symlink or not a folder")
            path = os.path.join(path, parts[-1])
            st = os.lstat(path)
        except FileNotFoundError:
            raise ExternalDataError(f"{where}: not found") from None
        except OSError as e:
            raise ExternalDataError(f"{where}: cannot be read ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise ExternalDataError(f"{where}: is a symlink")
        if not stat.S_ISREG(st.st_mode):
            raise ExternalDataError(f"{where}: is not a regular file")
        if st.st_nlink != 1:
            raise ExternalDataError(f"{where}: has {st.st_nlink} hard links; only 1 is allowed")
        if not os.path.realpath(path).startswith(self.base_real + os.sep):
            raise ExternalDataError(f"{where}: resolves outside the model's folder")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)  # a FIFO swapped in must not block
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise ExternalDataError(f"{where}: cannot be opened ({e.strerror})") from None
        fst = os.fstat(fd)
        # The file opened must be the one checked: refuse if it was swapped between lstat and open.
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode) \
                or fst.st_nlink != 1:
            os.close(fd)
            raise ExternalDataError(f"{where}: changed while being opened")
        self.open_files[location] = (fd, fst.st_size)
        return fd, fst.st_size


def _read_exactly(fd: int, offset: int, length: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)
    chunks, got = [], 0
    while got < length:  # Linux returns at most ~2 GiB per read, so loop
        chunk = os.read(fd, min(length - got, 1 << 30))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _load_external(model: ModelProto, base_dir, max_external_bytes: int | None) -> None:
    """Replace every external tensor's reference by its bytes, read safely from inside base_dir."""
    files = _ExternalFiles(base_dir) if base_dir is not None else None
    total = 0
    try:
        for kind, t, label, _ in list(_walk(model, None)):
            if kind != "tensor" or t.data_location != TensorProto.EXTERNAL:
                continue
            location, offset, length = _external_entries(t, label)
            label = f"{label}, location {_q(location)}"
            expected = _nbytes(t.data_type, _element_count(t.dims, label, 1 << 62))
            if length is not None and length != expected:
                raise ExternalDataError(f"{label}: external data length {length} does not match "
                                        f"the {expected} bytes its shape {_shape(t.dims)} needs")
            if files is None:
                _location_parts(location, label)
                raise ExternalDataError(f"{label}: the model has external data but no base_dir was given")
            total += expected
            if max_external_bytes is not None and total > max_external_bytes:
                raise ModelTooLargeError(f"{label}: external data exceeds max_external_bytes={max_external_bytes}")
            fd, size = files.open(location, label)
            if offset > size or expected > size - offset:
                raise ExternalDataError(f"{label}: offset {offset} + length {expected} is past the end "
                                        f"of the {size}-byte file")
            data = _read_exactly(fd, offset, expected)
            if len(data) != expected:
                raise ExternalDataError(f"{label}: file shrank while being read")
            t.raw_data = data
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
    finally:
        if files is not None:
            files.close()


# Public entry points


def _limit_text(limit: int) -> str:
    return "2 GiB" if limit in (2**31 - 1, 2**31) else f"{limit}-byte"


def _read_file(path: str, max_inline_bytes: int) -> bytes:
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ModelLoadError(f"model path {_q(path)} is a folder, not an ONNX file")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device could block or never end
            raise ModelLoadError(f"model path {_q(path)} is not a regular file")
        if st.st_size > max_inline_bytes:
            raise ModelTooLargeError(f"model {_q(path)} is over {_limit_text(max_inline_bytes)} "
                                     f"({st.st_size} bytes): save weights as external data")
        with open(path, "rb") as f:
            data = f.read(max_inline_bytes + 1)  # the file may have grown since stat
    except FileNotFoundError:
        raise ModelLoadError(f"model file {_q(path)} does not exist") from None
    except OSError as e:
        raise ModelLoadError(f"model file {_q(path)} cannot be read: {e.strerror or e}") from None
    if len(data) > max_inline_bytes:
        raise ModelTooLargeError(f"model {_q(path)} is over {_limit_text(max_inline_bytes)}: "
                                 "save weights as external data")
    return data


def _parse(data: bytes, what: str) -> ModelProto:
    if not data:
        raise ModelLoadError(f"not a valid ONNX model: {what} is empty")
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError (and, in some backends, other types) on garbage
        hint = "; its subgraphs are nested too deeply" if "Depth" in str(e) else ""
        raise ModelLoadError(f"not a valid ONNX model: cannot parse {what} ({e}){hint}") from None
    return model


def read_model(source: str | os.PathLike | bytes | ModelProto, *, base_dir: str | os.PathLike | None = None,
               max_inline_bytes: int = 2**31 - 1, max_external_bytes: int | None = None,
               max_nesting: int = 32, max_elements: int = 2**31) -> ModelProto:
    """Parse and validate a model; return a ModelProto whose tensors all hold their data inline.

    A path's external data is read from the file's folder (or `base_dir` if given); for bytes or a
    ModelProto, external data needs `base_dir`. A ModelProto source is never modified: it is returned
    itself when nothing is external, else a copy; max_inline_bytes applies only to files and bytes. Raises ModelLoadError (ExternalDataError for unsafe
    or inconsistent external data, ModelTooLargeError for limits) naming the offending tensor.
    """
    if isinstance(source, ModelProto):
        model, what = source, "ModelProto"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_inline_bytes:
            raise ModelTooLargeError(f"model is over {_limit_text(max_inline_bytes)} ({len(source)} bytes): "
                                     "save weights as external data")
        model, what = _parse(bytes(source), "model bytes"), "model bytes"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        what = f"file {_q(path)}"
        model = _parse(_read_file(path, max_inline_bytes), what)
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError(f"read_model takes a path, bytes or onnx.ModelProto, not {type(source).__name__}")
    try:
        if _check_structure(model, max_nesting, max_elements):
            if model is source:
                copy = ModelProto()
                copy.CopyFrom(model)  # safe now: nesting is bounded, so protobuf's own recursion is too
                model = copy
            _load_external(model, base_dir, max_external_bytes)
    except ModelLoadError as e:
        raise type(e)(f"{what}: {e}") from None  # say which model, the message names the tensor
    return model


def check_opsets(model: ModelProto) -> None:
    """Raise UnsupportedModelError unless every opset and operator domain the model uses is supported."""
    newest = onnx.defs.onnx_opset_version()
    imports = [(imp.domain, imp.version, "model") for imp in model.opset_import]
    for fn in model.functions:
        imports += [(imp.domain, imp.version, f"function {_q(fn.name)}") for imp in fn.opset_import]
    for domain, version, who in imports:
        if domain in ("", "ai.onnx") and not MIN_OPSET <= version <= newest:
            prefix = "model" if who == "model" else f"model ({who})"
            raise UnsupportedModelError(f"{prefix} uses ai.onnx opset {version}; supported {MIN_OPSET}..{newest}")
    allowed = KNOWN_DOMAINS | {fn.domain for fn in model.functions}
    default_imported = any(d in ("", "ai.onnx") for d, _, _ in imports)
    unknown: dict[str, list[str]] = {}
    for kind, node, _, _ in _walk(model, None):
        if kind != "node":
            continue
        if node.domain in ("", "ai.onnx"):
            if not default_imported:
                raise UnsupportedModelError(f"node {_q(node.name)} ({_q(node.op_type)}) uses ai.onnx, "
                                            "but the model imports no ai.onnx opset")
        elif node.domain not in allowed:
            unknown.setdefault(node.domain, []).append(f"{_q(node.name)} ({_q(node.op_type)})")
    if unknown:
        domain, nodes = next(iter(unknown.items()))
        more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        raise UnsupportedModelError(
            f"operator domain {_q(domain)} is not supported (used by node {', '.join(nodes[:5])}{more}); "
            f"supported: ai.onnx, {', '.join(sorted(allowed))}")
