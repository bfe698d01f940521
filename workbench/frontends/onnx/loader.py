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


def load_onnx(source, *, base_dir: str | os.PathLike | None = None, inline_functions: bool = True,
              memory_budget: int | None = None) -> Network:
    """Load an ONNX model from a path, bytes or a ``onnx.ModelProto``.

    Raises :class:`~workbench.errors.ModelLoadError` (or a subclass) naming what is wrong with a
    bad file, and :class:`~workbench.errors.UnsupportedModelError` for unsupported opsets/domains.
    ``memory_budget`` (bytes) bounds what densifying sparse initializers may allocate.
    """
    if isinstance(source, (str, os.PathLike)):
        desc = os.fspath(source)
        base = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(desc))
    else:
        desc = "<ModelProto>" if isinstance(source, onnx.ModelProto) else "<bytes>"
        base = base_dir
    proto = safe_read.read_model(source, base_dir=base, memory_budget=memory_budget)
    safe_read.check_opsets(proto)
    return network_from_proto(proto, source=desc, inline_functions=inline_functions)


def network_from_proto(proto: onnx.ModelProto, *, source: str = "<ModelProto>", inline_functions: bool = True) -> Network:
    check_graph(proto)
    # onnx-ir raises its own errors (SerdeError, RuntimeError, ...) on graphs the checks above let
    # through; at this boundary they become one line saying which step failed.
    step = "read the model graph"
    try:
        model = ir.serde.deserialize_model(proto)
        step = "name the nodes"
        name_nodes(model)
        if inline_functions and model.functions:
            step = "inline the model-local functions"
            InlinePass()(model)
            name_nodes(model)
        step = "name the values"
        if not _names_are_fixed(model):
            NameFixPass()(model)
    except (RecursionError, MemoryError) as exc:
        raise ModelLoadError(f"cannot {step}: {type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - any onnx-ir failure is a load error of this model
        raise ModelLoadError(f"cannot {step}: {type(exc).__name__}: {_first_line(exc)}") from None
    return Network(model=model, source=source, meta={"opsets": dict(model.opset_imports)})


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."


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


class _NeedsFixing(Exception):
    pass


def _names_are_fixed(model: ir.Model) -> bool:
    """Whether NameFixPass would leave every name as it is: each node named and unique in its graph,
    each value named and not reusing a name visible in its scope. It walks the graphs as that pass
    does, in the same order, but looks a name up through the chain of enclosing scopes where the pass
    copies the enclosing scope's set into every subgraph (quadratic: 12,000 sibling Ifs took seconds).
    Nothing is renamed here; when a fix is needed the caller runs the pass itself."""
    seen: set[int] = set()
    value_scopes: list[set[str]] = [set()]
    node_scopes: list[set[str]] = [set()]

    def visit(value) -> None:
        if value is None or id(value) in seen:
            return
        seen.add(id(value))
        name = value.name
        if not name or any(name in scope for scope in value_scopes):
            raise _NeedsFixing
        value_scopes[-1].add(name)

    def enter(graph) -> None:
        value_scopes.append(set())
        node_scopes.append(set())
        for value in (*graph.inputs, *graph.outputs):
            visit(value)
        if isinstance(graph, ir.Graph):
            for value in tuple(graph.initializers.values()):
                visit(value)

    def leave(_) -> None:
        value_scopes.pop()
        node_scopes.pop()

    try:
        for graph in (model.graph, *model.functions.values()):
            seen.clear()
            del value_scopes[1:], node_scopes[1:]
            for node in ir.traversal.RecursiveGraphIterator(graph, enter_graph=enter, exit_graph=leave):
                if not node.name or node.name in node_scopes[-1]:
                    raise _NeedsFixing
                node_scopes[-1].add(node.name)
                for value in (*node.inputs, *node.outputs):
                    visit(value)
    except _NeedsFixing:
        return False
    return True
