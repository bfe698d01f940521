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
    layers = [lower_node(n, opsets) for n in graph]
    tensors = {}
    for node in graph:
        for v in node.outputs:
            if v.name:
                tensors[v.name] = spec_of(v)
    return Plan(
        inputs=[spec_of(v) for v in graph.inputs if v.name not in inits],
        outputs=[spec_of(v) for v in graph.outputs],
        layers=layers,
        constants=_constants(graph),
        tensors=tensors,
    )
