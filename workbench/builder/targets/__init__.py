"""Targets the builder can build for. Each states what it can run and picks a tactic per layer.

CPU: every layer runs its NumPy reference kernel (tactic "numpy"). The GPU target lives in
``workbench.kernels.cuda`` and is loaded only when a GPU build is asked for.
"""

from __future__ import annotations

from ...runtime.engine import cpu_target
from ...core.plan import Layer, Plan
from ...errors import BuildError, UnsupportedModelError
from ...kernels.reference import get_kernel


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
    """NumPy reference kernels. fp16 / bf16 are emulated: a layer at reduced precision sees its
    float inputs rounded to that format and its outputs rounded again (math in fp32), which is what
    storage in fp16 with fp32 accumulation costs in accuracy — so precision choices can be studied
    on a machine without a GPU."""

    name = "cpu"
    precisions = ("fp32", "fp16", "bf16")

    def target(self) -> dict:
        return cpu_target()

    def assign(self, plan: Plan, config) -> None:
        default = "fp32" if config.precision == "best" else config.precision
        if default not in self.precisions:
            raise BuildError(f"precision {config.precision} is not available on the CPU target "
                             f"(it has {', '.join(self.precisions)}); use --device gpu")
        _check_kernels(plan.layers)
        overrides = resolve_layer_precisions(plan.layers, config.layer_precisions, self.precisions)
        for layer in _all_layers(plan.layers):
            layer.precision = overrides.get(layer.name, default) if _is_float_layer(layer) else "fp32"
            layer.tactic = "cpu.numpy" if layer.precision == "fp32" else f"cpu.numpy.{layer.precision}-emulated"
            layer.tactic_table = [{"tactic": layer.tactic, "config": {}, "ms": None}]


def supported_precisions(device: str) -> list[str]:
    """Precisions a target offers per layer (what a notebook dropdown should list)."""
    if device == "cpu":
        return list(CpuTarget.precisions)
    from .gpu import GpuTarget  # noqa: PLC0415

    return list(GpuTarget.precisions)


def _is_float_layer(layer: Layer) -> bool:
    return any(s.dtype in ("float32", "float16", "bfloat16") for s in layer.output_specs)


def resolve_layer_precisions(layers: list[Layer], overrides: dict[str, str], allowed) -> dict[str, str]:
    """Map per-layer overrides given by layer name or ONNX node name to layer names."""
    by_name: dict[str, str] = {}
    for layer in _all_layers(layers):
        by_name[layer.name] = layer.name
        for n in layer.onnx_nodes:
            by_name.setdefault(n, layer.name)
    result = {}
    for name, prec in overrides.items():
        if name not in by_name:
            raise BuildError(f"layer precision given for {name!r}, which is neither a layer nor an ONNX node of this model")
        if prec not in allowed:
            raise BuildError(f"precision {prec} for {name!r} is not available on this target (it has {', '.join(allowed)})")
        result[by_name[name]] = prec
    return result


def _all_layers(layers: list[Layer]):
    from ...core.liveness import subgraphs_of

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
    from .gpu import GpuTarget  # noqa: PLC0415

    return GpuTarget()
