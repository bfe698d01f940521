"""The one rewrite mechanism every optimization rule uses.

A rule is three steps, read top to bottom like its docstring:

* ``pattern(root) -> Match | None`` — does the subgraph ending (or starting) at ``root`` have the
  shape this rule rewrites? ``None`` means "not this pattern" and is not logged.
* ``check(match) -> str`` — ``""`` when the rewrite is valid, else the reason it is not (logged as a
  declined attempt, so that "why wasn't this fused" has an answer).
* ``rewrite(match, emit) -> list[Value]`` — builds the replacement with ``emit`` and returns the
  values that replace ``match.outputs``, in order.

The engine adds one check every rule needs: a value computed inside the matched subgraph that is
also read outside it (or is a graph output) cannot disappear, so the attempt is declined naming that
value and its reader. Replacements keep the replaced values' names (graph outputs keep theirs), and
every new node records the original ONNX nodes it covers for the reports.

Why our own engine and not onnxscript's rewriter: exporter variants (operand order, optional Casts,
scales on either side) are easier to state as short producer/consumer walks than as one pattern per
variant; every attempt, including structural near-misses, must be logged with the ONNX node names it
involves; and fused nodes must carry provenance through repeated fusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx_ir as ir

from ..ir.attrs import to_attr
from ..ir.provenance import provenance, record
from ..ir.symdims import from_ir, is_unknown_name
from ..ir.symshapes import refine
from ..ir.typing import annotate, set_spec
from ..ops.fused import DOMAIN



@dataclass
class Match:
    """A matched subgraph: ``nodes`` are replaced; ``outputs`` are the values the rewrite replaces
    (default: the root's outputs); ``b`` holds whatever the pattern bound for check/rewrite."""

    root: ir.Node
    nodes: list[ir.Node]
    outputs: list[ir.Value] | None = None
    b: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.outputs is None:
            self.outputs = list(self.root.outputs)
        seen, uniq = set(), []
        for n in self.nodes:
            if id(n) not in seen:
                seen.add(id(n))
                uniq.append(n)
        self.nodes = uniq


class Rule:
    """Base class: subclasses set ``name`` and ``ops`` (the op types a root may have)."""

    name: str = ""
    ops: tuple[str, ...] = ()
    domain: str = ""  # of the root: "" = the ONNX domain, "workbench", or "*" = any

    def pattern(self, root: ir.Node) -> Match | None:
        raise NotImplementedError

    def check(self, m: Match) -> str:
        return ""

    def rewrite(self, m: Match, emit: "Emitter") -> list[ir.Value]:
        raise NotImplementedError


class Emitter:
    """Creates the replacement nodes of one rewrite, inserted before the last matched node (every
    external input of the match is produced before it; a rule whose replacement needs only inputs
    available earlier may name another node as ``m.b["anchor"]``), carrying the match's provenance.

    Every output it creates is typed (``ir.typing.annotate``: ONNX inference for standard ops, the
    fused ops' shape functions for ours; ``ir.symshapes.refine``: symbolic dims as expressions);
    ``specs`` overrides that with explicit (dtype, dims)."""

    def __init__(self, graph: ir.Graph, m: Match, anchor: ir.Node):
        self.graph, self.m, self.anchor = graph, m, anchor
        self.names, self.ops = provenance(m.nodes)
        self.count = 0
        self.created: list[ir.Node] = []
        self.opset = _opset(graph)

    def node(self, op: str, inputs: list, attrs: dict | None = None, *, domain: str = DOMAIN,
             n_outputs: int = 1, name: str | None = None, specs: list | None = None) -> ir.Node:
        ins = [self.value(v) for v in inputs]
        attributes = [to_attr(k, v) for k, v in (attrs or {}).items() if v is not None]
        self.count += 1
        node = ir.Node(domain, op, ins, attributes, num_outputs=n_outputs,
                       name=name or f"{op}:{self.m.root.name}" + (f"#{self.count}" if self.count > 1 else ""))
        record(node, self.names, self.ops)
        self.graph.insert_before(self.anchor, node)
        self.created.append(node)
        for v, spec in zip(node.outputs, specs or []):
            if spec is not None:
                set_spec(v, *spec)
        annotate(node, self.opset)
        refine(node)  # dims as expressions where ONNX's per-node inference leaves them unknown
        return node

    def op(self, op: str, inputs: list, attrs: dict | None = None, **kw) -> ir.Value:
        return self.node(op, inputs, attrs, **kw).outputs[0]

    def value(self, v):
        """Values pass through; NumPy arrays become new initializers."""
        if v is None or isinstance(v, ir.Value):
            return v
        arr = np.asarray(v)
        self.count += 1
        init = ir.Value(name=f"{self.m.root.name}/const{self.count}", const_value=ir.tensor(arr),
                        shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)))
        self.graph.register_initializer(init)
        return init


def _opset(graph: ir.Graph) -> int:
    v = graph.opset_imports.get("", graph.opset_imports.get("ai.onnx"))
    return int(v) if v else 21


def escaping_use(m: Match) -> str:
    """Why an intermediate value of the match cannot be removed, or ""."""
    inside = {id(n) for n in m.nodes}
    replaced = {id(v) for v in m.outputs}
    graph_outs = {id(v) for v in m.root.graph.outputs} if m.root.graph is not None else set()
    for n in m.nodes:
        for v in n.outputs:
            if id(v) in replaced:
                continue
            if id(v) in graph_outs:
                return f"{v.name} (from {n.name}) is a graph output, so it must stay"
            for user, _ in v.uses():
                if id(user) not in inside:
                    return f"{v.name} (from {n.name}) is also read by {user.name} ({user.op_type}), so it must stay"
    return ""


def replace_values(graph: ir.Graph, old: list[ir.Value], new: list[ir.Value], created=()) -> None:
    """Point every use of ``old`` at ``new``. New values take the old names, and so does an
    existing intermediate that now is a graph output (graph outputs keep their names); graph
    inputs and initializers are never renamed."""
    made = {id(n) for n in created}
    outs = {id(v) for v in graph.outputs}
    for o, n in zip(old, new):
        if o is n:
            continue
        name = o.name
        rename = n.producer() is not None and (id(n.producer()) in made or id(o) in outs)
        o.replace_all_uses_with(n, replace_graph_outputs=True)
        if name and rename:
            o.name = None
            n.name = name
        made_here = n.producer() is not None and id(n.producer()) in made
        if o.shape is not None and (n.shape is None or (made_here and len(n.shape) == len(o.shape)
                                                         and _better_known(o.shape, n.shape))):
            n.shape = o.shape
        if n.type is None and o.type is not None:
            n.type = o.type


def _better_known(old: ir.Shape, new: ir.Shape) -> bool:
    """The replaced value's dims say more: all known (ints or expressions), where the new value's
    inferred dims have an unknown or made-up (``unk__``) one."""
    def vague(d):
        d = from_ir(d)
        return d is None or is_unknown_name(d)
    return not any(vague(d) for d in old) and any(vague(d) for d in new)


def apply(model: ir.Model, ctx, rules: list[Rule], *, reverse: bool = False) -> bool:
    """One sweep of ``rules`` over the graph (topological order, or reversed); each node is tried
    against each enabled rule whose ``ops`` it has, until one fires. Returns whether any fired."""
    graph = model.graph
    active = [r for r in rules if ctx.enabled(r.name)]
    changed = False
    nodes = list(graph)
    for node in reversed(nodes) if reverse else nodes:
        if node.graph is None:  # removed by an earlier rewrite in this sweep
            continue
        for rule in active:
            if node.op_type in rule.ops and (rule.domain == "*" or node.domain in (rule.domain, "ai.onnx" if not rule.domain else rule.domain)):
                if try_rule(graph, ctx, rule, node):
                    changed = True
                    break
    return changed


def _last_in_graph(graph, nodes):
    """The matched node that comes last in the graph's order (the rewrite goes there). One node:
    itself; else walk the graph once, stopping as soon as every matched node has been seen."""
    if len(nodes) == 1:
        return nodes[0]
    wanted = {id(n) for n in nodes}
    last = None
    for n in graph:
        if id(n) in wanted:
            last = n
            wanted.discard(id(n))
            if not wanted:
                break
    return last


def try_rule(graph: ir.Graph, ctx, rule: Rule, node: ir.Node) -> bool:
    m = rule.pattern(node)
    if m is None:
        return False
    names, _ = provenance(m.nodes)
    reason = escaping_use(m) or rule.check(m)
    if reason:
        ctx.declined(rule.name, names, reason, root=node.name or "")
        return False
    anchor = m.b.get("anchor") or _last_in_graph(graph, m.nodes)
    emit = Emitter(graph, m, anchor)
    new = rule.rewrite(m, emit)
    replace_values(graph, m.outputs, new, emit.created)
    graph.remove(m.nodes, safe=True)
    for reason, nodes in m.b.get("declined", []):  # parts of the pattern that could not come along
        ctx.declined(rule.name, nodes, reason, root=node.name or "")
    ctx.fired(rule.name, names, root=node.name or "", reason=m.b.get("note", ""))
    return True


def fixed_point(fn: Callable[[], bool], max_rounds: int = 20) -> bool:
    changed = False
    for _ in range(max_rounds):
        if not fn():
            break
        changed = True
    return changed
