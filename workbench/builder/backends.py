"""Targets the builder can build for. Each states what it can run and picks a tactic per layer.

CPU: every layer runs its NumPy reference kernel (tactic "numpy"). The GPU target lives in
``workbench.kernels.cuda`` and is loaded only when a GPU build is asked for.
"""

from __future__ import annotations

from ..engine.engine import cpu_target
from ..engine.plan import Layer, Plan
from ..errors import BuildError, UnsupportedModelError
from ..kernels.reference import get_kernel


def gpu_available() -> bool:
    try:
        import cupy  # noqa: PLC0415

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_device(device: str) -> str:
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        raise BuildError("--device gpu was asked for, but no CUDA GPU (with CuPy) is available here")
    return device


class CpuTarget:
    name = "cpu"
    precisions = ("fp32",)

    def target(self) -> dict:
        return cpu_target()

    def assign(self, plan: Plan, config) -> None:
        if config.precision not in ("fp32", "best"):
            raise BuildError(f"precision {config.precision} needs a GPU target; the CPU target runs fp32 "
                             "(use --precision fp32, or --device gpu)")
        for p in set(config.layer_precisions.values()):
            if p != "fp32":
                raise BuildError(f"layer precision {p} needs a GPU target; the CPU target runs fp32")
        _check_kernels(plan.layers)
        for layer in _all_layers(plan.layers):
            layer.precision = "fp32"
            layer.tactic = "cpu.numpy"
            layer.tactic_table = [{"tactic": "cpu.numpy", "config": {}, "ms": None}]


def _all_layers(layers: list[Layer]):
    from ..engine.liveness import subgraphs_of

    for layer in layers:
        yield layer
        for sub in subgraphs_of(layer):
            yield from _all_layers(sub.layers)


def _check_kernels(layers: list[Layer]) -> None:
    for layer in _all_layers(layers):
        if get_kernel(layer.domain, layer.op) is None:
            dom = f"{layer.domain}." if layer.domain else ""
            raise UnsupportedModelError(f"node {layer.onnx_nodes[0] if layer.onnx_nodes else layer.name!r}: "
                                        f"operator {dom}{layer.op} (opset {layer.opset}) is not supported")


def get_target(device: str):
    if device == "cpu":
        return CpuTarget()
    from ..kernels.cuda.target import GpuTarget  # noqa: PLC0415

    return GpuTarget()
