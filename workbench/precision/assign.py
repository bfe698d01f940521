"""Precision assignment, one assigner for both targets: which precision each layer runs at.

Each layer is asked for a precision (a per-layer override by layer or ONNX node name, else the
build's; "best" is the target's best, ``BEST``), then kept there only if

* it has float32 tensors at all (reduced precision changes float32 math and storage only),
* for fp16 / bf16: its op is safe in half precision (``ops.schema.HALF_SAFE``: float inputs and
  outputs of one type, no large sums of squares, nothing shape-like) and a tactic of the target
  runs it at that precision (``supports``),
* for tf32: its op is a matrix op (``ops.schema.MATRIX_OPS``); tf32 changes nothing else,

otherwise it stays fp32 and the precision table says why.

The GPU target stores a layer's float32 tensors in the layer's precision (``STORAGE``: math stays
fp32 inside the kernels; an int8 / fp8 layer's activations in the fallback's, fp16) and needs Cast layers where a producer's storage type differs from what a
consumer or a graph output needs (``casts.py``); where int8 / fp8 layers read a tensor it stores the
codes themselves where it can (``quantized_boundaries``). The CPU target emulates: tensors stay float32 and
the layer's tactic rounds its inputs and outputs to the precision (``kernels/reference/tactics.py``).
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import numpy as np

from ..core.liveness import layer_reads, subgraphs_of
from ..core.plan import Layer, Plan, TensorSpec
from ..core.precisions import HALF, STORAGE, TARGET_PRECISIONS, supported_precisions
from ..core.quant import fused_attention, operand_scale
from ..core.quant import ELEMENT as QUANT_ELEMENT
from ..core.quant import FORMATS as QUANT_FORMATS
from ..errors import BuildError
from ..ops.schema import FLOAT32_INPUTS, HALF_SAFE, MATRIX_OPS
from .casts import insert_casts
from .quantize import Placement, QuantSources

# what "best" means per target: on the GPU fp16 wherever a layer can (tensor cores, half the bytes
# moved); on the CPU emulation only adds rounding to fp32 math, so fp32 is both fastest and exact
BEST = {"cpu": "fp32", "gpu": "fp16"}
# targets that emulate reduced precision around fp32 kernels instead of storing tensors in it
EMULATED = ("cpu",)


def all_layers(layers: list[Layer]) -> Iterator[Layer]:
    """Every layer, those of If / Loop / Scan bodies included (depth first, in plan order)."""
    for layer in layers:
        yield layer
        for sub in subgraphs_of(layer):
            yield from all_layers(sub.layers)


def resolve_layer_precisions(layers: list[Layer], overrides: dict[str, str], allowed) -> dict[str, str]:
    """Check per-layer overrides (given by layer or ONNX node name) and map them to layer names: a
    name of neither, or a precision outside ``allowed``, is a BuildError."""
    by_name: dict[str, str] = {}
    for layer in all_layers(layers):
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


def requested_precision(layer: Layer, config, device: str) -> tuple[str, str]:
    """(precision, why) asked for this layer: a per-layer override by layer or ONNX node name, else
    the build's precision ("best" is ``BEST[device]``)."""
    over = config.layer_precisions
    for name in [layer.name, *layer.onnx_nodes]:
        if name and name in over:
            p = over[name]
            return (BEST[device] if p == "best" else p), f"override for {name!r}"
    p = config.precision
    return (BEST[device] if p == "best" else p), "build precision"


def _check_default(config, device: str, allowed: list[str]) -> None:
    want = BEST[device] if config.precision == "best" else config.precision
    if want in allowed:
        return
    elsewhere = [d for d, ps in TARGET_PRECISIONS.items() if d != device and want in ps]
    hint = f"; use --device {elsewhere[0]}" if elsewhere else ""
    raise BuildError(f"precision {config.precision} is not available on the {device.upper()} target "
                     f"(it has {', '.join(allowed)}){hint}")


def _is_f32(spec: TensorSpec | None) -> bool:
    return spec is not None and spec.dtype == "float32"


def assign_precisions(plan: Plan, config, device: str, supports: Callable[[Layer, str], bool],
                      quant: QuantSources | None = None) -> list[dict]:
    """Set ``layer.precision`` for every layer (``device``: "cpu" or "gpu"); on a storing target also
    the storage dtypes and the Cast layers at the boundaries. ``supports(layer, precision)``: whether
    a tactic of the target runs ``layer`` (its specs as they would be stored) at ``precision``.
    ``quant``: the scales int8 / fp8 layers may use (``quantize.prepare_quantization``); int8 / fp8
    placement (``quantize.Placement``) decides first for every layer.
    Returns the precision table: one row per layer, plus one per inserted cast."""
    allowed = supported_precisions(device)
    emulated = device in EMULATED
    _check_default(config, device, allowed)
    resolve_layer_precisions(plan.layers, config.layer_precisions, [*allowed, "best"])
    # a storing target assigns top-level layers only: the casts a lowered tensor needs are placed in
    # the top-level plan, so layers of subgraph bodies keep fp32
    layers = list(all_layers(plan.layers)) if emulated else plan.layers
    if not emulated:
        for layer in layers:  # own spec objects: lowering a layer must not retype a shared spec
            layer.input_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in layer.input_specs]
            layer.output_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in layer.output_specs]
    rows: list[dict] = []
    placement = Placement(plan, quant, device)
    place_supports = supports if emulated else _or_stored(supports, placement.fallback)
    for layer in layers:
        want, why = requested_precision(layer, config, device)
        ask, ask_why, placed = placement.decide(layer, want, why, place_supports)
        got, reason = (ask, ask_why) if placed else _decide(layer, ask, ask_why, device, supports, emulated)
        if got in HALF and not emulated:
            _lower(layer, STORAGE[got])
        elif placed and got in QUANT_FORMATS and not emulated:
            _quantized_io(layer, got, placement.fallback, supports)
        layer.precision = got
        rows.append({"layer": layer.name, "op": layer.op, "requested": want, "precision": got, "reason": reason})
    rows += placement.finish()
    if not emulated:
        notes = dict(quantized_boundaries(plan, supports))
        for row in rows:
            if row["layer"] in notes:
                row["reason"] += f"; {notes[row['layer']]}"
        rows += insert_casts(plan)
    return rows


def quantized_boundaries(plan: Plan, supports) -> list[tuple[str, str]]:
    """On a storing target, layers write codes for the int8 / fp8 layers that read their output
    (``core/quant.py``, "Quantized tensors between layers"), so the readers lose their quantize
    pass. The readers: quantized layers of one format, each reading the tensor as a quantized
    operand (``core.quant.operand_scale``: the first; an fp8 attention's Q, K and V, the packed
    tensor at all three) with one scale and no zero point.

    * Only such readers, and not a graph output: the producer writes the tensor as codes
      (``q_output_scale``; a quantized producer only when it is of the readers' format).
    * Float readers too (or a graph output): the producer also writes a copy of codes, its new
      last output ``<tensor>/<element type>`` (``q_copy_scale``), which the quantized readers
      read instead (a float producer, or a quantized one of the readers' format: an fp8
      convolution whose block output the next block reads both ways).

    Only where a tactic runs the producer and every reader so (``supports``). Returns (producer,
    note) per such tensor, for the producer's row of the precision table."""
    readers: dict[str, list[tuple[Layer, int]]] = {}
    for layer in plan.layers:
        for pos, name in enumerate(layer.inputs):
            if name:
                readers.setdefault(name, []).append((layer, pos))
        if subgraphs_of(layer):  # a tensor a body captures is never coded
            for name in set(layer_reads(layer)) - set(layer.inputs):
                readers.setdefault(name, []).append((layer, -1))
    graph_outputs = {s.name for s in plan.outputs}
    notes = []
    for layer in plan.layers:
        if not layer.outputs or not layer.outputs[0] or any(k in layer.attrs for k in ("q_output_scale", "q_copy_scale")):
            continue
        name = layer.outputs[0]
        users = readers.get(name, [])
        quantized = [(u, pos) for u, pos in users if pos >= 0 and operand_scale(u, pos) is not None]
        if not quantized:
            continue
        fmt = quantized[0][0].precision
        scales = {operand_scale(u, pos) for u, pos in quantized}
        if len(scales) != 1 or any(u.precision != fmt for u, _ in quantized):
            continue
        scale = scales.pop()
        whole = len(quantized) == len(users) and name not in graph_outputs
        if not np.isfinite(scale) or scale <= 0:
            continue
        if layer.precision in QUANT_FORMATS and layer.attrs.get("q_format") != fmt:
            continue  # a quantized layer writes codes of its own format
        code = QUANT_ELEMENT[fmt]
        target = name if whole else f"{name}/{code}"
        producer = _spec_copy(layer)
        if whole:
            producer.attrs = {**layer.attrs, "q_output_scale": scale}
            _code(producer.output_specs[0], code, scale)
        else:
            producer.attrs = {**layer.attrs, "q_copy_scale": scale}
            producer.outputs = [*layer.outputs, target]
            y = layer.output_specs[0]
            producer.output_specs.append(TensorSpec(target, code, None if y.shape is None else list(y.shape), scale))
        at: dict[int, tuple[Layer, list[int]]] = {}  # reader -> the positions it reads the codes at
        for u, pos in quantized:
            at.setdefault(id(u), (u, []))[1].append(pos)
        trials = []
        for u, positions in at.values():
            t = _spec_copy(u)
            specs = t.aligned_input_specs()
            for pos in positions:
                _code(specs[pos], code, scale)
                specs[pos].name = target
            t.inputs = [target if pos in positions else n for pos, n in enumerate(u.inputs)]
            trials.append(t)
        if not supports(producer, producer.precision) or not all(supports(t, fmt) for t in trials):
            continue
        layer.attrs, layer.outputs, layer.output_specs = producer.attrs, producer.outputs, producer.output_specs
        for (u, _), t in zip(at.values(), trials):
            u.inputs, u.input_specs = t.inputs, t.input_specs
        how = f"writes {name} as {code} codes" if whole else f"also writes {name} as {code} codes ({target})"
        notes.append((layer.name, f"{how} (scale {scale:.6g}) for {', '.join(u.name for u, _ in at.values())}: "
                                  "no quantize pass between them"))
    return notes


def _code(spec: TensorSpec, dtype: str, scale: float) -> None:
    spec.dtype, spec.scale = dtype, scale


def _decide(layer: Layer, want: str, why: str, device: str, supports, emulated: bool) -> tuple[str, str]:
    """(precision, reason) for one layer asked for ``want`` (see the module doc)."""
    if want in HALF:
        if not any(_is_f32(s) for s in layer.input_specs + layer.output_specs):
            return "fp32", "no float32 tensors"
        if layer.op not in HALF_SAFE:
            return "fp32", f"{layer.op} is kept in fp32 (not safe or not meaningful in half precision)"
        trial = layer if emulated else _lowered_copy(layer, STORAGE[want])
        if not supports(trial, want):
            return "fp32", f"no {device.upper()} tactic runs {layer.op} in {want}"
    elif want == "tf32" and layer.op not in MATRIX_OPS:
        return "fp32", "tf32 only changes matrix ops"
    return want, why


def _or_stored(supports, fallback: str):
    """``supports`` for int8 / fp8 placement on a storing target: a tactic runs the layer with its
    float32 activations, or with them in the fallback's storage, which ``_quantized_io`` then
    gives them (cuDNN's fp8 convolution writes float16, not necessarily float32)."""
    if fallback not in HALF:
        return supports

    def ask(layer: Layer, precision: str) -> bool:
        if supports(layer, precision):
            return True
        return precision in QUANT_FORMATS and supports(_stored(layer, fallback), precision)

    return ask


def _quantized_io(layer: Layer, precision: str, fallback: str, supports) -> None:
    """On a storing target an int8 / fp8 layer reads its input activations (a FusedConv's residual
    too) and writes its output in the storage of the layers around it (``fallback``: fp16 on the
    GPU) where a tactic runs it so: the Cast layers a float32 boundary would need are not there.
    Weights, scales and bias keep their types."""
    if fallback not in HALF:
        return
    if supports(_stored(layer, fallback), precision):
        _lower_activation(layer, STORAGE[fallback])


def _stored(layer: Layer, fallback: str) -> Layer:
    """A copy of a quantized layer with its activations in the fallback's storage."""
    trial = _spec_copy(layer)
    _lower_activation(trial, STORAGE[fallback])
    return trial


def _lower_activation(layer: Layer, dtype: str) -> None:
    """The activations: the first input, a FusedConv's residual (input 3), an attention's Q, K and
    V (inputs 0 to 2), the output."""
    specs = layer.aligned_input_specs()
    acts = [0, 3] if layer.op == "FusedConv" else [0, 1, 2] if fused_attention(layer) else [0]
    for spec in [specs[i] for i in acts if i < len(specs) and specs[i] is not None] + list(layer.output_specs[:1]):
        if _is_f32(spec):
            spec.dtype = dtype


def _spec_copy(layer: Layer) -> Layer:
    """A copy of ``layer`` with specs of its own (retyping them leaves the layer as it is)."""
    trial = copy.copy(layer)
    trial.input_specs = [TensorSpec(s.name, s.dtype, s.shape, s.scale) for s in layer.input_specs]
    trial.output_specs = [TensorSpec(s.name, s.dtype, s.shape, s.scale) for s in layer.output_specs]
    return trial


def _lowered_copy(layer: Layer, dtype: str) -> Layer:
    trial = _spec_copy(layer)
    _lower(trial, dtype)
    return trial


def _lower(layer: Layer, dtype: str) -> None:
    """Store the layer's float32 tensors in ``dtype`` (inputs ONNX types float32-only excepted)."""
    keep = FLOAT32_INPUTS.get(layer.op, set())
    for pos, spec in enumerate(layer.aligned_input_specs()):
        if _is_f32(spec) and pos not in keep:
            spec.dtype = dtype
    for spec in layer.output_specs:
        if _is_f32(spec):
            spec.dtype = dtype
