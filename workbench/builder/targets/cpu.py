"""CpuTarget: the NumPy reference kernels, chosen through the CPU tactic source.

Stages: precision (``precision.assign``: fp16 / bf16 are emulated, tensors stay float32 and the
tactic rounds a layer's inputs and outputs, which is what half storage with fp32 accumulation costs
in accuracy, so precision choices can be studied on a machine without a GPU) -> tactics (the first
tactic of ``kernels/reference/tactics.py`` that runs each layer at its precision; nothing to time).
"""

from __future__ import annotations

from ...core.plan import Layer, Plan
from ...core.precisions import supported_precisions
from ...errors import UnsupportedModelError
from ...kernels.reference import tactics
from ...precision import all_layers, assign_precisions
from ...runtime.engine import cpu_target


def _supports(layer: Layer, precision: str) -> bool:
    return any(reason is None for _, reason in tactics.candidates(layer, precision))


class CpuTarget:
    name = "cpu"
    precisions = tuple(supported_precisions("cpu"))

    def __init__(self):
        self.precision_rows: list[dict] = []
        self.build_stats: dict = {}

    def target(self) -> dict:
        return cpu_target()

    def assign(self, plan: Plan, config) -> None:
        self.precision_rows = assign_precisions(plan, config, "cpu", _supports)
        for layer in all_layers(plan.layers):
            _select(layer)

    def finish(self, engine, config) -> None:
        engine.reports["precision"] = self.precision_rows


def _select(layer: Layer) -> None:
    """The first CPU tactic that runs ``layer`` at its precision; the table keeps every candidate."""
    table, chosen = [], None
    for tactic, reason in tactics.candidates(layer, layer.precision):
        if reason is None and chosen is None:
            chosen = tactic
            config = tactic.configs(layer, layer.precision)[0]
            table.append({"tactic": tactic.name, "config": config, "ms": None})
        else:
            table.append({"tactic": tactic.name, "reason": reason or "another tactic was chosen"})
    if chosen is None:
        dom = f"{layer.domain}." if layer.domain else ""
        raise UnsupportedModelError(f"node {layer.onnx_nodes[0] if layer.onnx_nodes else layer.name!r}: "
                                    f"operator {dom}{layer.op} (opset {layer.opset}) is not supported")
    layer.tactic, layer.tactic_config, layer.tactic_table = chosen.name, dict(config), table
