"""Lowering: the optimized onnx-ir graph -> a Plan of Layers (plain data, no onnx-ir inside).

Every layer records the original ONNX nodes and op types it covers (``ir.provenance``: fused nodes
made by the passes carry them), so the reports can answer "where did my node go".
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..core.plan import Layer, Plan, Subgraph
from ..ir.attrs import node_attrs, tensor_to_numpy
from ..ir.provenance import provenance
from ..ir.types import spec_of

# default opset of a domain the model does not import explicitly
_DEFAULT_OPSETS = {"": 1, "ai.onnx.ml": 1, "ai.onnx.preview.training": 1, "ai.onnx.preview": 1, "workbench": 1}


# ops whose outputs from this index on are optional (ONNX: an absent optional output): at the top
# level, trailing ones nothing reads are left out, so that no kernel computes or stores them (the
# residual sum of a post-norm SkipLayerNorm, LayerNormalization's mean / inv_std_dev, ...)
OPTIONAL_TAIL = {("workbench", "SkipLayerNorm"): 1, ("", "LayerNormalization"): 1, ("", "Dropout"): 1,
                 ("", "MaxPool"): 1}


def _unread_tail(node: ir.Node) -> int:
    """How many trailing outputs of ``node`` may be left out: optional, unread, not graph outputs."""
    first = OPTIONAL_TAIL.get((_domain(node.domain), node.op_type))
    if first is None:
        return 0
    n = 0
    for i in range(len(node.outputs) - 1, first - 1, -1):
        v = node.outputs[i]
        if v.uses() or v.is_graph_output():
            break
        n += 1
    return n


def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


def lower_node(node: ir.Node, opsets: dict[str, int]) -> Layer:
    domain = _domain(node.domain)
    opset = node.version or opsets.get(domain, _DEFAULT_OPSETS.get(domain, 1))
    onnx_nodes, onnx_ops = provenance([node])
    return Layer(
        name=node.name or "",
        op=node.op_type,
        domain=domain,
        opset=int(opset or 0),
        inputs=[v.name if v is not None else "" for v in node.inputs],
        outputs=[v.name or "" for v in node.outputs],
        attrs=node_attrs(node, lambda g: lower_subgraph(g, opsets)),
        onnx_nodes=onnx_nodes,
        onnx_ops=onnx_ops,
        input_specs=[spec_of(v) for v in node.inputs if v is not None],
        output_specs=[spec_of(v) for v in node.outputs],
    )


def _constants(graph: ir.Graph) -> dict:
    """Weights, read-only: every context of the engine shares them (as a loaded engine's do)."""
    consts = {}
    for name, v in graph.initializers.items():
        if v.const_value is None:
            continue
        arr = np.array(tensor_to_numpy(v.const_value), copy=True)  # owned, never a view of the proto
        arr.flags.writeable = False
        consts[name] = arr
    return consts


def lower_subgraph(graph: ir.Graph, opsets: dict[str, int]) -> Subgraph:
    return Subgraph(
        inputs=[spec_of(v) for v in graph.inputs],
        outputs=[spec_of(v) for v in graph.outputs],
        layers=[lower_node(n, opsets) for n in graph],
        constants=_constants(graph),
        name=graph.name or "",
    )


def lower_model(model: ir.Model) -> Plan:
    graph = model.graph
    opsets = {_domain(k): v for k, v in model.opset_imports.items()}
    inits = set(graph.initializers)
    layers = []
    tensors = {}
    for node in graph:
        layer = lower_node(node, opsets)
        drop = _unread_tail(node)
        if drop:
            layer.outputs, layer.output_specs = layer.outputs[:-drop], layer.output_specs[:-drop]
        layers.append(layer)
        for v in node.outputs[:len(node.outputs) - drop]:
            if v.name:
                tensors[v.name] = spec_of(v)
    return Plan(
        inputs=[spec_of(v) for v in graph.inputs if v.name not in inits],
        outputs=[spec_of(v) for v in graph.outputs],
        layers=layers,
        constants=_constants(graph),
        tensors=tensors,
    )
