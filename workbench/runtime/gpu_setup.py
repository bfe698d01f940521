"""Loading a GPU engine onto the device: the arena and its tensor views, input buffers, weights
converted to each consumer's type (uploaded once), and every layer's kernel rebuilt from the
engine's recorded tactic + config and stored cubins (no autotuning, no compilation)."""

from __future__ import annotations

import math

from ..errors import EngineCompatibilityError, EngineFormatError


def place_tensors(engine):
    import cupy as cp  # noqa: PLC0415

    from ..kernels.cuda.device import storage_dtype, to_device_bits

    plan = engine.plan
    mem = engine.reports.get("memory") or {}
    offsets = mem.get("offsets") or {}
    arena_bytes = int(mem.get("arena_bytes", 0))
    arena = cp.empty(max(arena_bytes, 1), cp.uint8)
    buffers = {}
    for layer in plan.layers:
        for spec in layer.output_specs:
            if not spec.name:
                continue
            if spec.name not in offsets:
                raise EngineFormatError(f"tensor {spec.name!r} has no place in the memory plan (dynamic shape?)")
            dt = storage_dtype(spec.dtype)
            n = math.prod(spec.shape)
            off = int(offsets[spec.name])
            if off < 0 or off + n * dt.itemsize > arena_bytes:
                raise EngineFormatError(f"tensor {spec.name!r} lies outside the arena")
            buffers[spec.name] = arena[off:off + n * dt.itemsize].view(dt).reshape(tuple(spec.shape))
    for spec in plan.inputs:
        buffers[spec.name] = cp.empty(tuple(spec.shape), storage_dtype(spec.dtype))
    buffers["__arena__"] = arena
    constants = {}
    for layer in plan.layers:
        specs = iter(layer.input_specs)
        for name in layer.inputs:
            spec = next(specs) if name else None
            if name in plan.constants and (name, spec.dtype) not in constants:
                constants[(name, spec.dtype)] = cp.asarray(to_device_bits(plan.constants[name], spec.dtype))
    for spec in plan.outputs:
        if spec.name in plan.constants and (spec.name, spec.dtype) not in constants:
            constants[(spec.name, spec.dtype)] = cp.asarray(to_device_bits(plan.constants[spec.name], spec.dtype))
    return buffers, constants


def build_kernels(engine, kernel_map: dict[int, dict[str, bytes]]):
    from ..kernels.cuda.device import gpu_info
    from ..kernels.cuda.sources import load_sources
    from ..builder.targets.gpu import selected_config
    from ..kernels.cuda.layer_io import aligned_inputs

    primary, fallback, unavailable = load_sources()
    by_name = {t.name: t for t in primary + fallback}
    gpu = gpu_info()
    plan = engine.plan
    import cupy as cp  # noqa: PLC0415

    from ..kernels.cuda.device import to_device_bits

    kernels = []
    dev_weights: dict = {}
    for i, layer in enumerate(plan.layers):
        tactic = by_name.get(layer.tactic)
        if tactic is None:
            src = layer.tactic.split(".")[0]
            why = next((r for k, r in unavailable.items() if src in k), "no such tactic in this workbench")
            raise EngineCompatibilityError(f"layer {layer.name!r} uses tactic {layer.tactic!r}, unavailable here "
                                           f"({why}) — rebuild the engine on this machine")
        weights = {}
        for name, spec in zip(layer.inputs, aligned_inputs(layer)):
            if name and name in plan.constants:
                key = (name, spec.dtype)
                if key not in dev_weights:
                    dev_weights[key] = cp.asarray(to_device_bits(plan.constants[name], spec.dtype))
                weights[name] = dev_weights[key]
        kernels.append(tactic.build(layer, layer.precision, selected_config(layer), weights, gpu,
                                    binaries=kernel_map.get(i, {})))
    return kernels
