"""Graph-level checks of a model before it becomes IR: every value defined, no cycles, every
operator real in the opset the model imports.

``safe_read`` made sure the bytes are safe to hold; these checks make sure the graph means
something, so that a broken model fails at load with the node named rather than at run time.
"""

from __future__ import annotations

from collections import deque

import onnx
from onnx import AttributeProto, GraphProto, ModelProto

from ...errors import ModelLoadError, UnsupportedModelError

# domains whose operators onnx's schema registry knows
_SCHEMA_DOMAINS = {"": "", "ai.onnx": "", "ai.onnx.ml": "ai.onnx.ml", "ai.onnx.preview.training": "ai.onnx.preview.training"}


def check_graph(model: ModelProto) -> None:
    """Raise ModelLoadError / UnsupportedModelError naming the node for a malformed graph."""
    opsets = {_SCHEMA_DOMAINS.get(o.domain, o.domain): o.version for o in model.opset_import}
    functions = {(f.domain, f.name) for f in model.functions}
    _check_graph(model.graph, set(), opsets, functions, "main graph")


def _node_label(node, index: int) -> str:
    return f"node {node.name or f'#{index}'!r} ({node.op_type})"


def _subgraphs(node):
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == AttributeProto.GRAPHS:
            for k, g in enumerate(a.graphs):
                yield f"{a.name}[{k}]", g


def _check_graph(graph: GraphProto, outer: set[str], opsets: dict, functions: set, where: str) -> None:
    defined = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    producer: dict[str, int] = {}
    local = defined - outer
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out:
                if out in producer or out in local:
                    raise ModelLoadError(f"{where}: value {out!r} is defined twice (again by {_node_label(node, i)})")
                producer[out] = i
    visible = defined | set(producer)
    for i, node in enumerate(graph.node):
        label = _node_label(node, i)
        for name in node.input:
            if name and name not in visible:
                raise ModelLoadError(f"{where}: {label} reads {name!r}, which no node, initializer or graph input defines")
        _check_operator(node, label, opsets, functions, where)
        for attr, sub in _subgraphs(node):
            _check_graph(sub, visible, opsets, functions, f"{where} > {label} {attr}")
    for out in graph.output:
        if out.name not in visible:
            raise ModelLoadError(f"{where}: graph output {out.name!r} is never produced")
    _check_acyclic(graph, producer, where)


def _reads(node) -> set[str]:
    """Names a node reads, including those its subgraphs read from outside."""
    names = {n for n in node.input if n}
    for _, sub in _subgraphs(node):
        for inner in sub.node:
            names |= _reads(inner)
    return names


def _check_acyclic(graph: GraphProto, producer: dict[str, int], where: str) -> None:
    """Kahn's algorithm over the node dependencies; nodes left over sit on (or behind) a cycle."""
    n = len(graph.node)
    users: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for i, node in enumerate(graph.node):
        for p in {producer[name] for name in _reads(node) if name in producer}:
            users[p].append(i)
            indegree[i] += 1
    ready = deque(i for i in range(n) if indegree[i] == 0)
    done = 0
    while ready:
        i = ready.popleft()
        done += 1
        for u in users[i]:
            indegree[u] -= 1
            if indegree[u] == 0:
                ready.append(u)
    if done < n:
        stuck = [_node_label(graph.node[i], i) for i in range(n) if indegree[i] > 0][:4]
        raise ModelLoadError(f"{where}: the graph has a cycle through {', '.join(stuck)}")


def _check_operator(node, label: str, opsets: dict, functions: set, where: str) -> None:
    domain = _SCHEMA_DOMAINS.get(node.domain)
    if domain is None or (node.domain, node.op_type) in functions:
        return  # our own domain, or a model-local function: checked elsewhere
    version = opsets.get(domain)
    if version is None:
        return  # safe_read.check_opsets reports a missing import
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        hint = ""
        try:
            since = onnx.defs.get_schema(node.op_type, domain=domain).since_version
            hint = f" (it exists from opset {since})"
        except onnx.defs.SchemaError:
            pass
        raise UnsupportedModelError(f"{where}: {label}: operator {node.op_type} does not exist in "
                                    f"{domain or 'ai.onnx'} opset {version}{hint}") from None
    if schema.deprecated:
        raise UnsupportedModelError(f"{where}: {label}: operator {node.op_type} was removed before "
                                    f"{domain or 'ai.onnx'} opset {version}")
