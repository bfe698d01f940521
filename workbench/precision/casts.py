"""Cast insertion at storage-type boundaries (GPU engines).

After precision assignment a tensor is stored in its producer's type (``home``), while each
consumer reads the type its own precision stores. Where they differ, a Cast layer is inserted right
after the producer (one per tensor and type, shared by every consumer that needs it) and recorded
in the precision table. Graph inputs and outputs keep their declared dtypes: a graph output whose
producer stores another type is written under a renamed tensor and cast back to its name.
Constants are never cast by layers: the runtime uploads each constant in the type its consumers
read (saturating, so that a float32 -3.4e38 mask fill becomes -65504 rather than -inf in fp16).
"""

from __future__ import annotations

from ..core.plan import Layer, Plan, TensorSpec
from ..dtypes import ONNX_CODES


def insert_casts(plan: Plan) -> list[dict]:
    """Make every consumer read its tensor in the dtype it expects, adding Cast layers; returns one
    precision-table row per inserted cast."""
    home: dict[str, str] = {s.name: s.dtype for s in plan.inputs}
    producer: dict[str, int] = {}
    for i, layer in enumerate(plan.layers):
        for spec in layer.output_specs:
            if spec.name:
                home[spec.name] = spec.dtype
                producer[spec.name] = i
                plan.tensors[spec.name] = TensorSpec(spec.name, spec.dtype, spec.shape, spec.scale)
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
        for pos, spec in enumerate(layer.aligned_input_specs()):
            t = layer.inputs[pos]
            if spec is None or t in plan.constants or t not in home or spec.dtype is None or home[t] == spec.dtype:
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
