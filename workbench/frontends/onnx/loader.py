"""load_onnx: an ONNX file (or bytes, or ModelProto) -> Network.

Reading goes through :mod:`.safe_read`, which validates every tensor and resolves external data
inside the model's folder only. Then the proto becomes an onnx-ir Model, every node gets a unique,
readable name (the fusion log and the engine refer to nodes by name), and model-local functions
are inlined so later stages see only operators.
"""

from __future__ import annotations

import os
from collections import Counter

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import InlinePass, NameFixPass

from ...errors import ModelLoadError
from ...ir.network import Network
from . import safe_read
from .validate import check_graph


def load_onnx(source, *, base_dir: str | os.PathLike | None = None, inline_functions: bool = True) -> Network:
    """Load an ONNX model from a path, bytes or a ``onnx.ModelProto``.

    Raises :class:`~workbench.errors.ModelLoadError` (or a subclass) naming what is wrong with a
    bad file, and :class:`~workbench.errors.UnsupportedModelError` for unsupported opsets/domains.
    """
    if isinstance(source, (str, os.PathLike)):
        desc = os.fspath(source)
        base = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(desc))
    else:
        desc = "<ModelProto>" if isinstance(source, onnx.ModelProto) else "<bytes>"
        base = base_dir
    proto = safe_read.read_model(source, base_dir=base)
    safe_read.check_opsets(proto)
    return network_from_proto(proto, source=desc, inline_functions=inline_functions)


def network_from_proto(proto: onnx.ModelProto, *, source: str = "<ModelProto>", inline_functions: bool = True) -> Network:
    check_graph(proto)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as exc:  # onnx-ir raises various errors on malformed graphs
        raise ModelLoadError(f"cannot read the model graph: {exc}") from None
    name_nodes(model)
    if inline_functions and model.functions:
        InlinePass()(model)
        name_nodes(model)
    NameFixPass()(model)
    return Network(model=model, source=source, meta={"opsets": dict(model.opset_imports)})


def name_nodes(model: ir.Model) -> None:
    """Give every unnamed node a readable unique name (``Conv_3``); rename duplicates."""
    seen: set[str] = set()
    counters: Counter = Counter()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        name = node.name
        if not name or name in seen:
            base = name or node.op_type
            while True:
                candidate = f"{base}_{counters[base]}"
                counters[base] += 1
                if candidate not in seen:
                    break
            node.name = candidate
        seen.add(node.name)
