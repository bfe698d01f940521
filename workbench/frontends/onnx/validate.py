"""Graph-level checks of a model before it becomes IR: every value defined, no cycles, every
operator real in the opset the model imports, called with the inputs, outputs and attributes its
schema allows, and every model-local function body checked the same way.

``safe_read`` made sure the bytes are safe to hold; these checks make sure the graph means
something, so that a broken model fails at load with the node named rather than in a pass or at
run time.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache

import onnx
from onnx import AttributeProto, GraphProto, ModelProto

from ...core.limits import MAX_RANK
from ...errors import ModelLoadError, ModelTooLargeError, UnsupportedModelError
from .proto_checks import _q

# domains whose operators onnx's schema registry knows
_SCHEMA_DOMAINS = {"": "", "ai.onnx": "", "ai.onnx.ml": "ai.onnx.ml", "ai.onnx.preview.training": "ai.onnx.preview.training"}
_SINGLE = onnx.defs.OpSchema.FormalParameterOption.Single
_ATTR_NAMES = {v: k for k, v in AttributeProto.AttributeType.items()}


def check_graph(model: ModelProto) -> None:
    """Raise ModelLoadError / UnsupportedModelError naming the node for a malformed graph."""
    opsets = _opsets(model.opset_import)
    functions = {(f.domain, f.name): f for f in model.functions}
    _check_value_infos(model.graph, "main graph")
    _check_graph(model.graph, (), opsets, functions, "main graph")
    for fn in model.functions:
        where = f"function {_q(fn.domain + '::' + fn.name)}"
        fn_opsets = {**opsets, **_opsets(fn.opset_import)}
        _check_body(fn.node, set(fn.input), (), list(fn.output), fn_opsets, functions, where)


def _opsets(imports) -> dict[str, int]:
    return {_SCHEMA_DOMAINS.get(o.domain, o.domain): o.version for o in imports}


def _node_label(node, index: int) -> str:
    return f"node {_q(node.name or f'#{index}')} ({_q(node.op_type)})"


class _Label:
    """A node's label, written only when a message uses it: most nodes pass every check, and
    writing two quoted names per node was a fifth of the load time of a 50,000-node graph."""

    __slots__ = ("node", "index")

    def __init__(self, node, index: int):
        self.node, self.index = node, index

    def __str__(self) -> str:
        return _node_label(self.node, self.index)


def _subgraphs(node):
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == AttributeProto.GRAPHS:
            for k, g in enumerate(a.graphs):
                yield f"{a.name}[{k}]", g


def _check_value_infos(graph: GraphProto, where: str) -> None:
    """Declared ranks above MAX_RANK are refused: NumPy cannot hold them and shapes would explode."""
    for v in (*graph.input, *graph.output, *graph.value_info):
        t = v.type
        which = t.WhichOneof("value") if t.ByteSize() else None
        if which == "tensor_type" and len(t.tensor_type.shape.dim) > MAX_RANK:
            raise ModelTooLargeError(f"{where}: value {_q(v.name)} has rank {len(t.tensor_type.shape.dim)}; "
                                     f"the limit is {MAX_RANK}")


def _check_graph(graph: GraphProto, outer: tuple[set[str], ...], opsets: dict, functions: dict, where: str) -> None:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    _check_body(graph.node, defined, outer, [o.name for o in graph.output], opsets, functions, where)


def _check_body(nodes, local: set[str], outer: tuple[set[str], ...], outputs: list[str], opsets: dict,
                functions: dict, where: str) -> None:
    """Check one graph or function body: single definitions, reads, operators, outputs, no cycle.

    ``outer`` holds the enclosing scopes' names, one set each (at most MAX_NESTING): a subgraph
    looks names up through them rather than copying them, so 12,000 sibling Ifs stay linear."""
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                if out in producer or out in local:
                    raise ModelLoadError(f"{where}: value {_q(out)} is defined twice (again by {_node_label(node, i)})")
                producer[out] = i
    here = local | set(producer)
    scopes = outer + (here,)

    def visible(name: str) -> bool:
        return name in here or any(name in scope for scope in outer)

    for i, node in enumerate(nodes):
        label = _Label(node, i)
        for name in node.input:
            if name and not visible(name):
                raise ModelLoadError(f"{where}: {label} reads {_q(name)}, which no node, initializer or graph input defines")
        _check_operator(node, label, opsets, functions, where)
        for attr, sub in _subgraphs(node):
            sub_where = f"{where} > {label} {attr}"
            _check_value_infos(sub, sub_where)
            _check_graph(sub, scopes, opsets, functions, sub_where)
    for out in outputs:
        if not visible(out):
            raise ModelLoadError(f"{where}: graph output {_q(out)} is never produced")
    _check_acyclic(nodes, producer, where)


def _reads(node) -> set[str]:
    """Names a node reads, including those its subgraphs read from outside (explicit stack)."""
    names: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        names.update(x for x in n.input if x)
        for _, sub in _subgraphs(n):
            stack.extend(sub.node)
    return names


def _check_acyclic(nodes, producer: dict[str, int], where: str) -> None:
    """Kahn's algorithm over the node dependencies; nodes left over sit on (or behind) a cycle."""
    n = len(nodes)
    users: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for i, node in enumerate(nodes):
        reads = _reads(node) if len(node.attribute) else {x for x in node.input if x}
        for p in {producer[name] for name in reads if name in producer}:
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
        stuck = [_node_label(nodes[i], i) for i in range(n) if indegree[i] > 0][:4]
        raise ModelLoadError(f"{where}: the graph has a cycle through {', '.join(stuck)}")


class _Schema:
    """What the checks read from an operator schema, fetched once per (op, opset, domain): onnx's
    schema accessors build new Python lists and dicts on every call."""

    def __init__(self, schema):
        self.deprecated = schema.deprecated
        self.min_input, self.max_input = schema.min_input, schema.max_input
        self.min_output, self.max_output = schema.min_output, schema.max_output
        self.inputs = [(f.name, f.option) for f in schema.inputs]
        self.outputs = [(f.name, f.option) for f in schema.outputs]
        self.attributes = {name: (int(spec.type), spec.type.name, spec.required)
                           for name, spec in schema.attributes.items()}


@lru_cache(maxsize=4096)
def _schema(op_type: str, version: int, domain: str) -> _Schema | str:
    """The schema, or the reason it does not exist (a message tail)."""
    try:
        return _Schema(onnx.defs.get_schema(op_type, version, domain))
    except onnx.defs.SchemaError:
        hint = ""
        try:
            since = onnx.defs.get_schema(op_type, domain=domain).since_version
            hint = f" (it exists from opset {since})"
        except onnx.defs.SchemaError:
            pass
        return f"{domain or 'ai.onnx'} opset {version}{hint}"


def _check_operator(node, label, opsets: dict, functions: dict, where: str) -> None:
    fn = functions.get((node.domain, node.op_type))
    if fn is not None:
        _check_call(node, fn, label, where)
        return
    domain = _SCHEMA_DOMAINS.get(node.domain)
    if domain is None:
        return  # our own domain: its operators are checked where they are lowered
    version = opsets.get(domain)
    if version is None:
        return  # safe_read.check_opsets reports a missing import
    schema = _schema(node.op_type, version, domain)
    if isinstance(schema, str):
        raise UnsupportedModelError(f"{where}: {label}: operator {_q(node.op_type)} does not exist in {schema}")
    if schema.deprecated:
        raise UnsupportedModelError(f"{where}: {label}: operator {node.op_type} was removed before "
                                    f"{domain or 'ai.onnx'} opset {version}")
    _check_arity(node, schema, label, where)
    _check_attributes(node, schema, label, where)


def _count(n: int, lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"at least {lo}" if hi >= 2**31 - 1 else f"{lo} to {hi}"


def _check_arity(node, schema: _Schema, label, where: str) -> None:
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input:
        raise ModelLoadError(f"{where}: {label} has {n_in} inputs; {node.op_type} takes "
                             f"{_count(n_in, schema.min_input, schema.max_input)}")
    if not schema.min_output <= n_out <= schema.max_output:
        raise ModelLoadError(f"{where}: {label} has {n_out} outputs; {node.op_type} gives "
                             f"{_count(n_out, schema.min_output, schema.max_output)}")
    formals = schema.inputs
    for i, name in enumerate(node.input):
        formal = formals[min(i, len(formals) - 1)] if formals else None
        if not name and formal is not None and formal[1] == _SINGLE:
            raise ModelLoadError(f"{where}: {label} leaves its required input {i} ({formal[0]}) empty")
    if schema.outputs and node.output and not node.output[0] and schema.outputs[0][1] == _SINGLE:
        raise ModelLoadError(f"{where}: {label} leaves its required output 0 ({schema.outputs[0][0]}) empty")


def _check_attributes(node, schema: _Schema, label, where: str) -> None:
    declared = schema.attributes
    seen: set[str] = set()
    for a in node.attribute:
        if a.name in seen:
            raise ModelLoadError(f"{where}: {label} sets attribute {_q(a.name)} twice")
        seen.add(a.name)
        if a.ref_attr_name:
            continue  # a function-body reference: its value comes from the call
        if a.type == AttributeProto.UNDEFINED:
            raise ModelLoadError(f"{where}: {label} attribute {_q(a.name)} has no type (UNDEFINED)")
        spec = declared.get(a.name)
        if spec is None:
            raise ModelLoadError(f"{where}: {label} has attribute {_q(a.name)}, which {node.op_type} "
                                 f"does not define")
        if spec[0] != a.type:
            raise ModelLoadError(f"{where}: {label} attribute {_q(a.name)} is "
                                 f"{_ATTR_NAMES.get(a.type, a.type)}; {node.op_type} needs {spec[1]}")
    for name, spec in declared.items():
        if spec[2] and name not in seen:
            raise ModelLoadError(f"{where}: {label} lacks the required attribute {_q(name)}")


def _check_call(node, fn, label: str, where: str) -> None:
    """A call to a model-local function: no more inputs/outputs than declared, and every formal input
    the body reads is given (an omitted one would only fail at run time, inside the inlined body)."""
    if len(node.input) > len(fn.input) or len(node.output) > len(fn.output):
        raise ModelLoadError(f"{where}: {label} passes {len(node.input)} inputs / {len(node.output)} outputs; "
                             f"function {_q(fn.name)} declares {len(fn.input)} / {len(fn.output)}")
    read: set[str] = set()
    for inner in fn.node:
        read |= _reads(inner)
    for i, formal in enumerate(fn.input):
        given = i < len(node.input) and node.input[i]
        if not given and formal in read:
            raise ModelLoadError(f"{where}: {label} gives {sum(1 for x in node.input if x)} of the "
                                 f"{len(fn.input)} inputs of function {_q(fn.name)}; its input {i} "
                                 f"({_q(formal)}) is used by the body")
