"""Network: a loaded model as the optimizer sees it (an onnx-ir Model plus provenance)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx_ir as ir

from ..core.plan import TensorSpec
from .types import spec_of


@dataclass
class Network:
    """A model ready for the builder. ``model`` is an onnx-ir Model whose nodes all have unique
    names; ``source`` says where it came from (a path, or a description)."""

    model: ir.Model
    source: str = "<memory>"
    meta: dict = field(default_factory=dict)

    @property
    def graph(self) -> ir.Graph:
        return self.model.graph

    @property
    def inputs(self) -> list[TensorSpec]:
        inits = set(self.graph.initializers)
        return [spec_of(v) for v in self.graph.inputs if v.name not in inits]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [spec_of(v) for v in self.graph.outputs]

    @staticmethod
    def spec(value: ir.Value) -> TensorSpec:
        """Name, dtype and shape of one of the graph's values."""
        return spec_of(value)

    @property
    def opsets(self) -> dict[str, int]:
        return dict(self.graph.opset_imports)

    def op_histogram(self) -> Counter:
        return Counter(n.op_type for n in self.graph.all_nodes())

    def parameter_count(self) -> int:
        total = 0
        for v in self.graph.initializers.values():
            if v.shape is not None and all(isinstance(d, int) for d in v.shape):
                n = 1
                for d in v.shape:
                    n *= d
                total += n
        return total

    def summary(self) -> dict:
        """A JSON-able summary: inputs, outputs, opsets, op histogram, parameter count."""
        return {
            "source": self.source,
            "producer": f"{self.model.producer_name or ''} {self.model.producer_version or ''}".strip(),
            "ir_version": self.model.ir_version,
            "opsets": self.opsets,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "nodes": sum(1 for _ in self.graph.all_nodes()),
            "op_histogram": dict(sorted(self.op_histogram().items(), key=lambda kv: (-kv[1], kv[0]))),
            "parameters": self.parameter_count(),
        }

    def __repr__(self) -> str:
        s = self.summary()
        ins = ", ".join(f"{i['name']}:{i['dtype']}{i['shape']}" for i in s["inputs"])
        return f"<Network {self.source!s} nodes={s['nodes']} inputs=[{ins}]>"
