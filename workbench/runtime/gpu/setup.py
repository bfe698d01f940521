"""Loading a GPU engine onto the device: the arena and its tensor views (at the plan's arena
offsets), input buffers, weights converted to each consumer's type (uploaded once per name and
type, shared by the kernels and the runs), and every layer's kernel rebuilt from the plan's
``layer.tactic`` + ``layer.tactic_config`` and the cubins ``layer.binaries`` names (no autotuning,
no compilation). Nothing here reads a report section."""

from __future__ import annotations

import math

from ...errors import EngineCompatibilityError, EngineFormatError
from ...kernels.cuda.device import cupy, gpu_info, storage_dtype, to_device_bits
from ...kernels.cuda.sources import load_sources, source_of


def place_tensors(engine, arena=None, constants: dict | None = None) -> tuple[dict, dict]:
    """(buffers, constants): ``buffers`` maps every layer output to its view of the arena (the
    arena itself under ``"__arena__"``) and every graph input to its persistent buffer (zeros until
    written: valid token ids and masks, so a warm-up or capture before the first run reads sane
    data); ``constants`` maps (name, element type) to the weight on the device, once per pair.

    The buckets of one engine (``gpu/bucketed.py``) pass one ``arena`` (a CuPy uint8 array at
    least as large as this plan's) and one ``constants`` dict: their activations share the bytes,
    their weights are uploaded once."""
    cp = cupy()
    plan = engine.plan
    offsets = plan.arena.offsets
    arena_bytes = int(plan.arena.bytes)
    if arena is None:
        arena = cp.empty(max(arena_bytes, 1), cp.uint8)
    elif arena.nbytes < arena_bytes:
        raise EngineFormatError(f"the shared arena has {arena.nbytes} bytes; this plan needs {arena_bytes}")
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
        buffers[spec.name] = cp.zeros(tuple(spec.shape), storage_dtype(spec.dtype))
    buffers["__arena__"] = arena
    wanted = [(name, spec.dtype) for layer in plan.layers
              for name, spec in zip(layer.inputs, layer.aligned_input_specs()) if name in plan.constants]
    wanted += [(spec.name, spec.dtype) for spec in plan.outputs if spec.name in plan.constants]
    constants = {} if constants is None else constants
    for name, dtype in wanted:
        if (name, dtype) not in constants:
            constants[(name, dtype)] = cp.asarray(to_device_bits(plan.constants[name], dtype))
    return buffers, constants


def build_kernels(engine, constants: dict) -> list:
    """Every layer's BuiltKernel, from its recorded tactic, config and stored cubins; ``constants``
    are the device weights of :func:`place_tensors`."""
    primary, fallback, unavailable = load_sources()
    by_name = {t.name: t for t in primary + fallback}
    gpu = gpu_info()
    plan = engine.plan
    kernels = []
    for layer in plan.layers:
        tactic = by_name.get(layer.tactic)
        if tactic is None:
            why = _why_missing(layer.tactic, unavailable)
            raise EngineCompatibilityError(f"layer {layer.name!r} uses tactic {layer.tactic!r}, unavailable here "
                                           f"({why}) — rebuild the engine on this machine")
        weights = {name: constants[(name, spec.dtype)]
                   for name, spec in zip(layer.inputs, layer.aligned_input_specs()) if name in plan.constants}
        binaries = {kernel: engine.blobs[blob] for kernel, blob in layer.binaries.items()}
        kernels.append(tactic.build(layer, layer.precision, layer.tactic_config, weights, gpu, binaries=binaries))
    return kernels


def direct_casts(engine, kernels: list) -> dict[str, tuple[int, int]]:
    """graph input -> (layer index, input position) where the input's only reader is a capturable
    kernel that may read it straight from the caller's array (``reads_inputs_directly``: a Cast,
    possibly to channels-last) and reads nothing else but constants: ``run`` launches that kernel
    on the caller's array instead of copying the input into its buffer first."""
    inputs = {s.name for s in engine.inputs}
    readers: dict[str, list] = {}
    for i, layer in enumerate(engine.layers):
        for pos, n in enumerate(layer.inputs):
            if n in inputs:
                readers.setdefault(n, []).append((i, pos))
    outs = {s.name for s in engine.outputs}
    consts = engine.plan.constants
    direct = {}
    for name, rs in readers.items():
        if len(rs) != 1 or name in outs:
            continue
        i, pos = rs[0]
        layer = engine.layers[i]
        if not kernels[i].reads_inputs_directly or not kernels[i].capturable:
            continue
        if any(n and n != name and n not in consts for n in layer.inputs):
            continue
        direct[name] = (i, pos)
    # run first, the casts must be the first layers: the memory plan may give a later layer's
    # output the bytes of a tensor that dies before it
    first = {i for i, _ in direct.values()}
    prefix = 0
    while prefix in first:
        prefix += 1
    return {n: v for n, v in direct.items() if v[0] < prefix}


def _why_missing(tactic: str, unavailable: dict[str, str]) -> str:
    """Why ``tactic`` is not in the registry here: the source that provides it
    (``sources.PROVIDES``) failed to load, with its reason, or no source of this workbench has it
    (a loaded source always brings every tactic it declares)."""
    source = source_of(tactic)
    if source in unavailable:
        return f"its source {source} is unavailable: {unavailable[source]}"
    return "no GPU tactic source of this workbench provides it"
