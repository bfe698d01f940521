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
import stat

import onnx
from onnx import ModelProto

from ...core.budget import check_budget
from ...core.files import open_regular
from ...core.limits import MAX_NESTING
from ...errors import ModelLoadError, ModelTooLargeError, ResourceLimitError, UnsupportedModelError
from .external_data import _load_external
from .proto_checks import _check_structure, _q, _walk
from .sparse import densify_sparse_initializers, has_sparse

__all__ = ["read_model", "check_opsets", "ModelTooLargeError"]

MIN_OPSET = 7
KNOWN_DOMAINS = frozenset({"ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview", "workbench"})



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
        with open_regular(path, "model", error=ModelLoadError) as f:  # never blocks on a FIFO swapped in
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
               max_nesting: int = MAX_NESTING, max_elements: int = 2**31,
               memory_budget: int | None = None) -> ModelProto:
    """Parse and validate a model; return a ModelProto whose tensors all hold their data inline.

    A path's external data is read from the file's folder (or `base_dir` if given); for bytes or a
    ModelProto, external data needs `base_dir`. A ModelProto source is never modified: it is returned
    itself when nothing is external or sparse, else a copy; max_inline_bytes applies only to files and
    bytes. Sparse initializers are densified, their dense bytes checked against `memory_budget`
    (default: :func:`~workbench.core.budget.default_memory_budget`). Raises ModelLoadError (ExternalDataError for unsafe
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
        external = _check_structure(model, max_nesting, max_elements)
        sparse = has_sparse(model)
        if (external or sparse) and model is source:
            copy = ModelProto()
            copy.CopyFrom(model)  # safe now: nesting is bounded, so protobuf's own recursion is too
            model = copy
        if external:
            _load_external(model, base_dir, max_external_bytes)
        if sparse:
            densify_sparse_initializers(model, check_budget(memory_budget))
    except (ModelLoadError, ResourceLimitError) as e:
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
