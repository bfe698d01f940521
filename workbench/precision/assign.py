"""Precision assignment for the GPU target.

A layer at fp16 / bf16 stores every float32 tensor it reads or writes in that type (math stays fp32
inside the kernels); tf32 and fp32 layers store float32. Graph inputs and outputs keep their
declared dtypes: where a producer's storage type differs from what a consumer (or the graph output)
needs, a Cast layer is inserted right after the producer and recorded. Constants are not cast by
layers: the runtime uploads each constant in the type its consumers read (saturating, so that a
float32 -3.4e38 mask fill becomes -65504 rather than -inf in fp16).

Only ops whose float inputs and outputs all share one type and whose math is safe with half
storage (LOWERABLE) are lowered; the rest stay fp32 (e.g. Cast, Range, CumSum, large-sum
reductions of squares, anything shape-like). A lowered layer must also have a tactic at that
precision (``supports``), otherwise it stays fp32 and the report says why.
"""

from __future__ import annotations

from typing import Callable

from ..dtypes import ONNX_CODES
from ..core.plan import Layer, Plan, TensorSpec
from ..errors import BuildError

from ..core.precisions import STORAGE
from ..ops.schema import FLOAT32_INPUTS, HALF_SAFE as LOWERABLE, MATRIX_OPS


def requested_precision(layer: Layer, config) -> tuple[str, str]:
    """(precision, why) asked for this layer: a per-layer override by layer or ONNX node name, else
    the build's precision ("best" means fp16 wherever a layer can)."""
    over = config.layer_precisions
    for name in [layer.name, *layer.onnx_nodes]:
        if name and name in over:
            p = over[name]
            return ("fp16" if p == "best" else p), f"override for {name!r}"
    p = config.precision
    return ("fp16" if p == "best" else p), "build precision"


def _is_f32(spec: TensorSpec | None) -> bool:
    return spec is not None and spec.dtype == "float32"


def assign_precisions(plan: Plan, config, supports: Callable[[Layer, str], bool]) -> list[dict]:
    """Set ``layer.precision`` and storage dtypes for every top-level layer, insert Cast layers,
    and return the precision table (one row per layer, plus one per inserted cast)."""
    # names in layer_precisions must be layers or ONNX nodes of this model: the CPU target's
    # resolver checks them the same way, so a typo is an error on both targets
    from ..builder.targets import resolve_layer_precisions  # noqa: PLC0415

    resolve_layer_precisions(plan.layers, config.layer_precisions,
                             ("fp32", "tf32", "fp16", "bf16", "int8", "fp8", "best"))
    rows: list[dict] = []
    for layer in plan.layers:  # own spec objects: lowering a layer must not retype a shared spec
        layer.input_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in layer.input_specs]
        layer.output_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in layer.output_specs]
    for layer in plan.layers:
        want, why = requested_precision(layer, config)
        if want in ("int8", "fp8"):
            raise BuildError(f"precision {want} is not implemented by the GPU target yet (layer {layer.name!r}); "
                             "use fp32, tf32, fp16, bf16 or best")
        floats = [s for s in layer.input_specs + layer.output_specs if _is_f32(s)]
        got, reason = want, why
        if want in ("fp16", "bf16"):
            if not floats:
                got, reason = "fp32", "no float32 tensors"
            elif layer.op not in LOWERABLE:
                got, reason = "fp32", f"{layer.op} is kept in fp32 (not safe or not meaningful in half precision)"
            else:
                trial = _lowered_copy(layer, STORAGE[want])
                if not supports(trial, want):
                    got, reason = "fp32", f"no GPU tactic runs {layer.op} in {want}"
        elif want == "tf32" and layer.op not in MATRIX_OPS:
            got, reason = "fp32", "tf32 only changes matrix ops"
        if got in ("fp16", "bf16"):
            _lower(layer, STORAGE[got])
        layer.precision = got
        rows.append({"layer": layer.name, "op": layer.op, "requested": want, "precision": got, "reason": reason})
    rows += _insert_casts(plan)
    return rows


def _lowered_copy(layer: Layer, dtype: str) -> Layer:
    import copy

    trial = copy.copy(layer)
    trial.input_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in layer.input_specs]
    trial.output_specs = [TensorSpec(s.name, s.dtype, s.shape) for s in layer.output_specs]
    _lower(trial, dtype)
    return trial


def _lower(layer: Layer, dtype: str) -> None:
    keep = FLOAT32_INPUTS.get(layer.op, set())
    present = [i for i, n in enumerate(layer.inputs) if n]
    for pos, spec in zip(present, layer.input_specs):
        if _is_f32(spec) and pos not in keep:
            spec.dtype = dtype
    for spec in layer.output_specs:
        if _is_f32(spec):
            spec.dtype = dtype


def _insert_casts(plan: Plan) -> list[dict]:
    """Make every consumer read its tensor in the dtype it expects, adding Cast layers."""
    home: dict[str, str] = {s.name: s.dtype for s in plan.inputs}
    producer: dict[str, int] = {}
    for i, layer in enumerate(plan.layers):
        for spec in layer.output_specs:
            if spec.name:
                home[spec.name] = spec.dtype
                producer[spec.name] = i
                plan.tensors[spec.name] = TensorSpec(spec.name, spec.dtype, spec.shape)
    declared_out = {s.name: s.dtype for s in plan.outputs}
    casts: dict[tuple[str, str], str] = {}  # (tensor, dtype) -> name of the cast result
    after: dict[int, list[Layer]] = {}  # producer index (-1: graph input) -> casts to place after it
    rows = []

    def cast_of(t: str, need: str, out_name: str | None = None) -> str:
        key = (t, need)
        if key in casts:
            return casts[key]
        src = plan.tensors.get(t) or next((s for s in plan.inputs if s.name == t), None)
        shape = src.shape if src is not None else None
        name = out_name or f"{t}/{need}"
        cast = Layer(name=f"wb_cast:{t}->{need}", op="Cast", domain="", opset=19, inputs=[t], outputs=[name],
                     attrs={"to": ONNX_CODES[need]}, onnx_nodes=[], onnx_ops=[],
                     precision="fp16" if "float16" in (need, home[t]) else "bf16" if "bfloat16" in (need, home[t]) else "fp32",
                     input_specs=[TensorSpec(t, home[t], shape)], output_specs=[TensorSpec(name, need, shape)])
        after.setdefault(producer.get(t, -1), []).append(cast)
        plan.tensors[name] = TensorSpec(name, need, shape)
        casts[key] = name
        rows.append({"layer": cast.name, "op": "Cast", "requested": "", "precision": cast.precision,
                     "reason": f"inserted: {t} is {home[t]}, a consumer needs {need}"})
        return name

    # graph outputs keep their declared dtype: the producer writes a renamed tensor, a cast restores it
    for name, want in declared_out.items():
        if name in producer and home.get(name) != want and want is not None:
            low = f"{name}/{home[name]}"
            layer = plan.layers[producer[name]]
            layer.outputs = [low if o == name else o for o in layer.outputs]
            for spec in layer.output_specs:
                if spec.name == name:
                    spec.name = low
            for other in plan.layers[producer[name] + 1:]:
                other.inputs = [low if n == name else n for n in other.inputs]
                for spec in other.input_specs:
                    if spec.name == name:
                        spec.name = low
            home[low] = home.pop(name)
            producer[low] = producer.pop(name)
            plan.tensors[low] = plan.tensors.pop(name)
            plan.tensors[low].name = low
            cast_of(low, want, out_name=name)
    for layer in plan.layers:
        present = [i for i, n in enumerate(layer.inputs) if n]
        for pos, spec in zip(present, layer.input_specs):
            t = layer.inputs[pos]
            if t in plan.constants or t not in home or spec.dtype is None or home[t] == spec.dtype:
                continue
            new = cast_of(t, spec.dtype)
            layer.inputs[pos] = new
            spec.name = new
    if after:
        layers = list(after.get(-1, []))
        for i, layer in enumerate(plan.layers):
            layers.append(layer)
            layers.extend(after.get(i, []))
        plan.layers = layers
    return rows
