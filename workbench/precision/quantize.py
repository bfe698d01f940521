"""Quantization placement: which layers of a build run at int8 / fp8, with which scales, and why
every other layer does not (one precision-table row each). A step of precision assignment
(``assign.py`` asks ``Placement.decide`` first for every layer), on the lowered plan.

Rules (TensorRT's explicit-quantization rules, as modelopt places Q/DQ for it):

* the inputs of Conv / ConvTranspose / Gemm / MatMul and of the fused FusedConv / FusedGemm are
  quantized: the activation per tensor (``q_input_scale``), the constant weight once, here, at
  build, per output channel for int8 and per tensor for fp8 (``core/quant.py``), stored as an
  int8 / float8e4m3fn plan constant in place of the float one;
* the residual input of an Add fused into a convolution (FusedConv's ``Z``) is quantized too, so
  the GPU can read it in 8 bits inside the convolution's epilogue;
* weighted-op outputs are not quantized: the next layer quantizes what it reads;
* everything else stays in higher precision (fp32 on the CPU; ``FALLBACK``): Softmax, the norms,
  attention (its internals: a MatMul of two activations too), pointwise layers, pooling;
* a layer is quantized only if every operand has a range (``calibration.amax``), an int32
  accumulator cannot overflow (``quant.int32_safe``) and a tactic of the target runs it.

Explicit quantization (a Q/DQ model, ``passes/qdq.py``): a tensor whose Q/DQ pair was folded into
its readers carries the model's scale, zero point and format; a layer reading such tensors is
quantized with them whatever the build precision (the model states its precision, as TensorRT's
strongly typed networks do), its weight with the model's own scales. Where that cannot be (a
per-layer override to a float precision, a format the target lacks, an operand the model left in
float) the layer runs in float and the model's rounding is kept exactly: a QuantizeLinear /
DequantizeLinear layer pair in front of it (``Placement.finish``).

May import: ``core``, ``dtypes``, ``errors`` and this package (``calibration``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..core import quant
from ..core.liveness import subgraphs_of
from ..core.plan import Layer, Plan, TensorSpec
from ..core.precisions import supported_precisions
from ..errors import BuildError

# the precision a layer of an int8 / fp8 build runs at when it is not quantized
FALLBACK = {"cpu": "fp32", "gpu": "fp16"}
NORMS = frozenset({"LayerNorm", "SkipLayerNorm", "RMSNorm", "LayerNormalization", "RMSNormalization",
                   "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
                   "MeanVarianceNormalization"})
SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
ATTENTION = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})
# tolerance for a weight with no Q/DQ record to count as already on its grid (float32 round-off)
_ON_GRID = 1e-6


@dataclass
class QuantSources:
    """Where scales come from: a calibration table (``.amax(name)``, ``.method``) and the explicit
    quantization of a Q/DQ model (``passes.qdq.explicit_quantization``): ``activations`` tensor ->
    {"scale", "zero_point" (int8 domain), "format"}; ``weights`` constant -> {"scale", "axis",
    "format"}."""

    calibration: object | None = None
    activations: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)

    @property
    def explicit(self) -> bool:
        return bool(self.activations or self.weights)


def requested_formats(config) -> set[str]:
    """The int8 / fp8 precisions a build asks for (its precision or any per-layer override)."""
    asked = {config.precision, *dict(config.layer_precisions).values()}
    return asked & set(quant.FORMATS)


def prepare_quantization(plan: Plan, config, device: str, explicit: dict | None = None,
                         progress: bool = False) -> QuantSources | None:
    """The scales a build quantizes with, or None when nothing may be quantized. Calibrates (the
    fp32 lowered plan, ``precision.calibration.calibrate``) only when a layer may be quantized
    from calibration: the build asks for int8 / fp8 on a target that runs it and some quantizable
    layer is not covered by the model's own Q/DQ. Without calibration data such a build is a
    BuildError, unless the model carries Q/DQ (its other layers then stay in float, with a
    reason)."""
    explicit = explicit or {}
    sources = QuantSources(None, dict(explicit.get("activations", {})), dict(explicit.get("weights", {})))
    formats = requested_formats(config) & set(supported_precisions(device))
    if not formats:
        return sources if sources.explicit else None
    attention = "fp8" in formats  # the fused attention is quantized at fp8 from calibration only
    if not any((quant.kind_of(l) or (attention and quant.fused_attention(l))) and not _covered(l, sources)
               for l in plan.layers):
        return sources
    cal = getattr(config, "calibration", None)
    if cal is None:
        if sources.explicit:
            return sources
        raise BuildError(f"precision {min(formats)} needs calibration data: pass --calib PATH (an .npz of "
                         "inputs or a folder of them), or BuilderConfig(calibration=...)")
    from .calibration import calibrate

    sources.calibration = calibrate(plan, cal, progress=progress)
    return sources


def _covered(layer: Layer, sources: QuantSources) -> bool:
    return bool(layer.inputs) and layer.inputs[0] in sources.activations


def _amax_of(table, name: str) -> float | None:
    if table is None or not name:
        return None
    a = table.amax(name)
    return None if a is None or not np.isfinite(a) else float(a)


class Placement:
    """Decides int8 / fp8 placement layer by layer (``decide``), then keeps the model's rounding in
    front of the layers that read an explicitly quantized tensor in float (``finish``)."""

    def __init__(self, plan: Plan, sources: QuantSources | None, device: str):
        self.plan = plan
        self.sources = sources or QuantSources()
        self.device = device
        self.allowed = set(supported_precisions(device))
        self.fallback = FALLBACK.get(device, "fp32")
        self.top = {id(l) for l in plan.layers}
        self.pending: list[tuple[Layer, int, dict]] = []  # (layer, input position, explicit params)
        self.weights: dict[tuple, tuple[str, np.ndarray, np.ndarray]] = {}  # key -> (name, values, scales), shared
        self.replaced: set[str] = set()  # float constants whose quantized copy replaced them somewhere
        table = self.sources.calibration
        self.method = getattr(table, "method", None)

    # ------------------------------------------------------------------ per layer

    def decide(self, layer: Layer, want: str, why: str, supports) -> tuple[str, str, bool]:
        """(precision, reason, final): final is True when the layer was quantized here; otherwise
        the assigner goes on with (precision, reason) as the request (a fallback or the layer's
        own request unchanged)."""
        kind = quant.kind_of(layer)
        explicit = self._explicit_inputs(layer, kind)
        floating = want if want not in quant.FORMATS else self.fallback
        if id(layer) not in self.top:
            if want in quant.FORMATS:
                return self.fallback, f"layers of subgraph bodies stay in {self.fallback}", False
            return want, why, False
        if explicit:
            return self._explicit(layer, kind, explicit, want, why, floating, supports)
        if want not in quant.FORMATS:
            return want, why, False
        if want not in self.allowed:
            return want, why, False  # the assigner refuses it with the target's list
        attention = quant.fused_attention(layer) and want == "fp8"
        if kind is None and not attention:
            return self.fallback, self._rule_reason(layer, want), False
        if self.sources.calibration is None:
            return self.fallback, f"no calibration ranges: {want} needs calibration data (pass --calib)", False
        if attention:
            ok, text = self._attention(layer, supports)
            return (want, text, True) if ok else (self.fallback, text, False)
        if kind == "gemm" and not self._const(layer, 1):
            return (self.fallback, f"{layer.op} of two activations (attention-style) stays in {self.fallback} by rule",
                    False)
        ok, text = self._quantize(layer, kind, want, {}, supports)
        return (want, text, True) if ok else (self.fallback, text, False)

    def _explicit(self, layer, kind, explicit, want, why, floating, supports):
        fmts = sorted({p["format"] for p in explicit.values()})
        fmt = fmts[0]
        if len(fmts) > 1:
            reason = f"the model quantizes its inputs to different formats ({', '.join(fmts)})"
        elif want not in quant.FORMATS and why.startswith("override"):
            reason = f"{why}: runs {want}"
        elif fmt not in self.allowed:
            reason = f"the model quantizes it to {fmt}, which the {self.device.upper()} target does not run"
        else:
            ok, text = self._quantize(layer, kind, fmt, explicit, supports)
            if ok:
                return fmt, text, True
            reason = text
        self.pending += [(layer, pos, p) for pos, p in explicit.items()]
        return floating, f"{reason}; the model's Q/DQ rounding of its inputs is kept in front of it", False

    def _rule_reason(self, layer: Layer, want: str) -> str:
        fb = self.fallback
        if layer.op in SOFTMAX:
            return f"{layer.op} kept in {fb} by rule"
        if layer.op in NORMS:
            return f"{layer.op} kept in {fb} by rule: norms stay in higher precision"
        if quant.fused_attention(layer):
            return f"{layer.op} runs in {fb}: attention has an fp8 form (Q, K, V and the softmax in e4m3), no {want} one"
        if layer.op in ATTENTION:
            return f"{layer.op} kept in {fb} by rule: attention internals stay in higher precision"
        return f"{layer.op} runs in {fb}: {want} is placed on the inputs of Conv / ConvTranspose / Gemm / MatMul only"

    def _explicit_inputs(self, layer: Layer, kind: str | None) -> dict[int, dict]:
        """Input position -> the model's Q/DQ parameters, for the positions a layer quantizes."""
        acts = self.sources.activations
        if kind is None or not acts:
            return {}
        positions = [0, 1] if kind == "gemm" else [0, 3] if layer.op == "FusedConv" else [0]
        out = {}
        for pos in positions:
            name = layer.inputs[pos] if pos < len(layer.inputs) else ""
            if name and name in acts and name not in self.plan.constants:
                out[pos] = acts[name]
        return out

    def _const(self, layer: Layer, pos: int) -> bool:
        return pos < len(layer.inputs) and layer.inputs[pos] in self.plan.constants

    def _activation(self, layer, pos, fmt, explicit, what) -> tuple[dict | None, str]:
        """(scale, zero point, where from) of an activation operand, or (None, why not)."""
        name = layer.inputs[pos]
        spec = layer.aligned_input_specs()[pos]
        if spec is None or spec.dtype != "float32":
            return None, f"{what} {name!r} is {spec.dtype if spec else 'untyped'}, not float32"
        if explicit:
            p = explicit.get(pos)
            if p is None:
                return None, f"the model leaves {what} {name!r} in float (no Q/DQ on it)"
            return {"scale": float(np.float32(p["scale"])), "zero_point": int(p["zero_point"]), "from": "Q/DQ"}, ""
        amax = _amax_of(self.sources.calibration, name)
        if amax is None:
            return None, f"no calibration range for {what} {name!r}"
        s = float(quant.scale_from_amax(amax, fmt))
        return {"scale": s, "zero_point": 0, "from": f"{self.method or 'calibration'} amax {amax:.4g}"}, ""

    def _weight(self, layer, fmt, explicit) -> tuple[tuple | None, str]:
        """(quantized constant name, values, scales, axis, how) of a constant weight, or (None, why)."""
        name = layer.inputs[1]
        w = self.plan.constants[name]
        if w.dtype != np.float32:
            return None, f"weights {name!r} are {w.dtype}, not float32"
        axis = quant.weight_axis(layer, w.ndim)
        record = self.sources.weights.get(name)
        scale, how = None, ""
        if record is not None and record.get("format") == fmt:
            rs = np.asarray(record["scale"], np.float32).reshape(-1)
            raxis = record.get("axis")
            if rs.size == 1 or (raxis is not None and axis is not None and raxis % w.ndim == axis):
                scale, axis = rs, (axis if rs.size > 1 else None)
                how = "the model's weight scales"
        if scale is None and explicit:
            # a Q/DQ model whose weight lost its record on the way (merged, transposed): quantize
            # it only if it already sits on the grid of its own scales, i.e. nothing changes
            ax = axis if fmt == "int8" else None
            q, s = quant.quantize_weight(w, fmt, ax)
            back = quant.dequantize(q, s, 0, ax if s.size > 1 else None)
            if not np.allclose(back, w, rtol=_ON_GRID, atol=0):
                return None, f"weights {name!r} carry no Q/DQ in the model and are not on an {fmt} grid"
            axis, how = ax, "weights already on their grid"
        elif scale is None:
            axis = axis if fmt == "int8" else None  # fp8: one scale per weight (cuBLASLt's scalar scale_b)
        key = (name, fmt, axis, None if scale is None else scale.tobytes())
        if key not in self.weights:
            q, s = quant.quantize_weight(w, fmt, axis, scale=scale)
            new = f"{name}/{fmt}"
            n = 1
            while new in self.plan.constants or any(v[0] == new for v in self.weights.values()):
                n += 1
                new = f"{name}/{fmt}#{n}"
            self.weights[key] = (new, _frozen(q), s)
        new, q, s = self.weights[key]
        how = how or ("per output channel" if s.size > 1 else "per tensor")
        return (new, q, s, axis if s.size > 1 else None, how), ""

    def _reduction(self, layer, kind, q) -> int | None:
        if kind == "conv":
            return int(np.prod(q.shape[1:]))
        if kind == "conv_transpose":
            return int(q.shape[0] // max(int(layer.attrs.get("group", 1)), 1) * np.prod(q.shape[2:]))
        if q is not None:
            trans_b = layer.op != "MatMul" and int(layer.attrs.get("transB", 0))
            return int(q.shape[-1] if trans_b else q.shape[-2]) if q.ndim >= 2 else int(q.shape[0])
        a = layer.aligned_input_specs()[0]
        trans_a = layer.op != "MatMul" and int(layer.attrs.get("transA", 0))
        d = a.shape[-2 if trans_a else -1] if a is not None and a.shape else None
        return d if isinstance(d, int) else None

    def _quantize(self, layer: Layer, kind: str, fmt: str, explicit: dict, supports) -> tuple[bool, str]:
        """Quantize ``layer`` at ``fmt`` if it can be: (True, placement reason) with the layer
        changed, or (False, why not) with the layer untouched."""
        x, why = self._activation(layer, 0, fmt, explicit, "input")
        if x is None:
            return False, why
        attrs = dict(layer.attrs)
        inputs = list(layer.inputs)
        new_const = None
        attrs.update({"q_format": fmt, "q_input_scale": x["scale"], "q_input_zero_point": x["zero_point"]})
        if self._const(layer, 1):
            got, why = self._weight(layer, fmt, explicit)
            if got is None:
                return False, why
            new_const, q, s, axis, how = got
            attrs.update({"q_weight_scale": s, "q_weight_axis": -1 if axis is None else int(axis),
                          "q_weight_zero_point": 0, "q_weight_const": 1})
            inputs[1] = new_const
            b_max = float(np.abs(q.astype(np.float64)).max()) if q.size else 0.0
            wtext = f"weights {how} ({s.size} scale{'s' if s.size > 1 else ''})"
        else:
            if kind != "gemm":
                return False, f"weights {layer.inputs[1]!r} are not a constant"
            b, why = self._activation(layer, 1, fmt, explicit, "input")
            if b is None:
                return False, why
            q = None
            attrs.update({"q_weight_scale": np.array([b["scale"]], np.float32), "q_weight_axis": -1,
                          "q_weight_zero_point": b["zero_point"], "q_weight_const": 0})
            b_max = quant.value_range(fmt, b["zero_point"])
            wtext = f"second input scale {b['scale']:.4g} ({b['from']})"
        # the residual: int8 adds it as 8 bits (TensorRT's int8 residual add); a calibrated fp8
        # layer adds its float value (only a Q/DQ model quantizes an fp8 residual)
        if layer.op == "FusedConv" and len(inputs) > 3 and inputs[3] and (fmt == "int8" or explicit):
            z, _ = self._activation(layer, 3, fmt, explicit, "residual")
            if z is not None:
                attrs.update({"q_residual_scale": z["scale"], "q_residual_zero_point": z["zero_point"]})
        attrs["q_source"] = "qdq" if explicit else f"calibration:{self.method or 'unknown'}"
        k = self._reduction(layer, kind, q)
        if fmt == "int8" and k is not None and not quant.int32_safe(k, quant.value_range(fmt, x["zero_point"]), b_max):
            return False, f"{k} products per output could overflow an int32 accumulator"
        trial = copy.copy(layer)
        trial.attrs, trial.inputs = attrs, inputs
        trial.input_specs = self._specs(layer, inputs, fmt)
        if not supports(trial, fmt):
            return False, f"no {self.device.upper()} tactic runs {layer.op} at {fmt}"
        if new_const is not None:
            self.plan.constants[new_const] = q
            self.replaced.add(layer.inputs[1])
        layer.attrs, layer.inputs, layer.input_specs = trial.attrs, trial.inputs, trial.input_specs
        src = "the model's Q/DQ" if explicit else f"{self.method or 'calibration'} calibration"
        extra = "; residual quantized" if "q_residual_scale" in attrs else ""
        return True, (f"{fmt} ({src}): input {inputs[0]!r} scale {x['scale']:.4g}, {wtext}{extra}")

    def _attention(self, layer: Layer, supports) -> tuple[bool, str]:
        """The fused Attention at fp8 (``core.quant.attention_fp8``) if it can be: Q, K and V per
        tensor with their calibrated scales, its result rounded with its output's; no mask (cuDNN's
        fp8 SDPA has no bias input) and a causal mask only over square scores."""
        a = layer.attrs
        if len(layer.inputs) > 3 and layer.inputs[3]:
            return False, "fp8 attention takes no mask input (cuDNN's fp8 SDPA has no bias)"
        if int(a.get("causal", 0)) and not quant.square_scores(layer):
            return False, "fp8 attention is causal only over as many queries as keys"
        got = []
        for pos, what in enumerate(("Q", "K", "V")):
            if self._const(layer, pos):
                return False, f"{what} {layer.inputs[pos]!r} is a constant"
            x, why = self._activation(layer, pos, "fp8", {}, what)
            if x is None:
                return False, why
            got.append(x)
        amax = _amax_of(self.sources.calibration, layer.outputs[0] if layer.outputs else "")
        if amax is None:
            return False, f"no calibration range for the output {layer.outputs[0] if layer.outputs else ''!r}"
        out = float(quant.scale_from_amax(amax, "fp8"))
        trial = copy.copy(layer)
        trial.attrs = {**a, "q_format": "fp8", "q_input_scale": got[0]["scale"], "q_input_zero_point": 0,
                       "q_key_scale": got[1]["scale"], "q_value_scale": got[2]["scale"], "q_result_scale": out,
                       "q_source": f"calibration:{self.method or 'unknown'}"}
        if not supports(trial, "fp8"):
            return False, f"no {self.device.upper()} tactic runs {layer.op} at fp8"
        layer.attrs = trial.attrs
        return True, (f"fp8 ({self.method or 'calibration'} calibration): Q/K/V scales "
                      f"{got[0]['scale']:.4g}/{got[1]['scale']:.4g}/{got[2]['scale']:.4g}, softmax in e4m3, "
                      f"result scale {out:.4g} (amax {amax:.4g})")

    def _specs(self, layer: Layer, inputs: list[str], fmt: str) -> list[TensorSpec]:
        specs = []
        for pos, spec in enumerate(layer.aligned_input_specs()):
            if spec is None:
                continue
            if inputs[pos] != layer.inputs[pos]:
                spec = TensorSpec(inputs[pos], quant.ELEMENT[fmt], spec.shape)
            specs.append(spec)
        return specs

    # ------------------------------------------------------------------ after every layer

    def finish(self) -> list[dict]:
        """Q/DQ layer pairs in front of the layers left in float that read an explicitly quantized
        tensor (one pair per tensor, shared), float weights no layer reads any more dropped;
        returns one precision-table row per inserted layer."""
        rows: list[dict] = []
        made: dict[str, str] = {}
        after: dict[int, list[Layer]] = {}
        producer = {o: i for i, l in enumerate(self.plan.layers) for o in l.outputs if o}
        for layer, pos, p in self.pending:
            t = layer.inputs[pos]
            if t not in made:
                made[t] = self._fake_quant(t, p, producer, after, rows)
            _rename_input(layer, pos, made[t])
        if after:
            layers = list(after.get(-1, []))
            for i, layer in enumerate(self.plan.layers):
                layers.append(layer)
                layers.extend(after.get(i, []))
            self.plan.layers = layers
        self._drop_unread()
        return rows

    def _fake_quant(self, t: str, p: dict, producer: dict, after: dict, rows: list) -> str:
        fmt, zp = p["format"], int(p["zero_point"])
        spec = self.plan.tensors.get(t) or next((s for s in self.plan.inputs if s.name == t), None)
        shape = spec.shape if spec is not None else None
        elem = quant.ELEMENT[fmt]
        scale_name, zp_name, q_name, fq_name = f"{t}/q_scale", f"{t}/q_zero_point", f"{t}/{fmt}", f"{t}/qdq"
        self.plan.constants[scale_name] = _frozen(np.array(p["scale"], np.float32))
        self.plan.constants[zp_name] = _frozen(np.zeros((), quant.E4M3) if fmt == "fp8" else np.array(zp, np.int8))
        q = Layer(name=f"wb_quantize:{t}", op="QuantizeLinear", inputs=[t, scale_name, zp_name], outputs=[q_name],
                  input_specs=[TensorSpec(t, "float32", shape), TensorSpec(scale_name, "float32", []),
                               TensorSpec(zp_name, elem, [])],
                  output_specs=[TensorSpec(q_name, elem, shape)], **_inserted())
        dq = Layer(name=f"wb_dequantize:{t}", op="DequantizeLinear", inputs=[q_name, scale_name, zp_name],
                   outputs=[fq_name], input_specs=[TensorSpec(q_name, elem, shape), TensorSpec(scale_name, "float32", []),
                                                   TensorSpec(zp_name, elem, [])],
                   output_specs=[TensorSpec(fq_name, "float32", shape)], **_inserted())
        self.plan.tensors[q_name] = TensorSpec(q_name, elem, shape)
        self.plan.tensors[fq_name] = TensorSpec(fq_name, "float32", shape)
        after.setdefault(producer.get(t, -1), []).extend([q, dq])
        why = f"inserted: keeps the model's {fmt} Q/DQ rounding of {t!r} for a layer that reads it in float"
        rows += [{"layer": l.name, "op": l.op, "requested": "", "precision": "fp32", "reason": why} for l in (q, dq)]
        return fq_name

    def _drop_unread(self) -> None:
        if not self.replaced:
            return
        read = {s.name for s in self.plan.outputs}
        stack = [self.plan.layers]
        while stack:  # subgraph bodies read enclosing constants by name too
            for l in stack.pop():
                read.update(l.inputs)
                stack += [sub.layers for sub in subgraphs_of(l)]
        for name in self.replaced:
            if name not in read:
                self.plan.constants.pop(name, None)


def _rename_input(layer: Layer, pos: int, name: str) -> None:
    """Point input ``pos`` of ``layer`` at tensor ``name`` (its spec follows)."""
    idx = sum(1 for n in layer.inputs[:pos] if n)
    layer.inputs[pos] = name
    if idx < len(layer.input_specs):
        old = layer.input_specs[idx]
        layer.input_specs[idx] = TensorSpec(name, old.dtype, old.shape)


def _inserted() -> dict:
    """The fields of a layer the precision step inserts (fp32, no ONNX node of its own)."""
    return {"domain": "", "opset": 21, "onnx_nodes": [], "onnx_ops": [], "precision": "fp32"}


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
