"""The two sides ``runtime/accuracy.py`` steps layer by layer: the fp32 reference of a plan (its
layers on the reference kernels, bound by the CPU executor) and the engine itself, on the CPU (its
own kernels, bound without reused buffers so a layer can run twice) or on the GPU (an eager
context, one layer at a time, every output copied to the host)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..core import quant
from ..core.liveness import subgraphs_of
from ..core.plan import Layer, Plan, Subgraph, TensorSpec
from ..core.precisions import HALF, STORAGE
from ..errors import InputError, WorkbenchError
from .context import LayerError
from .cpu import PlanExecutor, Scope

REFERENCE_TACTIC = "cpu.numpy"
GPU_CAST_PREFIX = "wb_cast:"  # Cast layers the GPU builder inserts at storage-type boundaries


# ---------------------------------------------------------------------------- the reference plan
def reference_plan(plan: Plan, weights: Plan | None = None) -> Plan:
    """The same layers, every one at fp32 on the reference kernels: storage types a GPU build
    lowered go back to float32, the Cast layers it inserted become identities, and an int8 / fp8
    layer multiplies by float weights -- ``weights``' own layer where that plan (an fp32 build of
    the same model) has the same layers in the same order, else its stored weight dequantized
    (``core.quant.float_weight``, which leaves the weight's rounding out of the comparison)."""
    ref = copy.copy(plan)
    ref.constants = dict(plan.constants)
    same = weights is not None and [l.name for l in weights.layers] == [l.name for l in plan.layers]
    layers = []
    for i, layer in enumerate(plan.layers):
        own = layer
        if layer.precision in quant.FORMATS:
            if same:
                layer = weights.layers[i]
                ref.constants.update((n, weights.constants[n]) for n in layer.inputs if n in weights.constants)
            else:
                layer = _dequantized(layer, ref.constants)
        layers.append(_with_copy_of(_reference_layer(layer), own))
    ref.layers = layers
    return ref


def _with_copy_of(ref: Layer, own: Layer) -> Layer:
    """The reference of a quantized layer that also writes a copy of codes (``q_copy_scale``: an
    fp8 convolution's block output) writes that copy too, as float32 values (``runtime.cpu``)."""
    scale = own.attrs.get("q_copy_scale")
    if own.precision not in quant.FORMATS or scale is None:
        return ref
    copy_spec = own.output_specs[-1]
    ref.attrs = {**ref.attrs, "q_copy_scale": scale}
    ref.outputs = list(ref.outputs[:1]) + [own.outputs[-1]]
    ref.output_specs = list(ref.output_specs[:1]) + [_widened(copy_spec, copy_spec.dtype)]
    return ref


def _dequantized(layer: Layer, constants: dict) -> Layer:
    """A quantized layer reading its weight as the float32 values it stands for, without ``q_`` attrs."""
    out = copy.copy(layer)
    out.attrs = quant.strip_attrs(layer.attrs)
    w = layer.inputs[1] if len(layer.inputs) > 1 else ""
    if layer.attrs.get("q_weight_const") and w in constants:
        name = f"{w}/fp32-reference"
        constants[name] = quant.float_weight(layer.attrs, np.asarray(constants[w]))
        out.inputs = [name if pos == 1 else n for pos, n in enumerate(layer.inputs)]
        specs = layer.aligned_input_specs()
        out.input_specs = [TensorSpec(name, "float32", s.shape) if pos == 1 else s
                           for pos, s in enumerate(specs) if s is not None]
    return out


def _reference_layer(layer: Layer) -> Layer:
    ref = copy.copy(layer)
    ref.precision, ref.tactic, ref.tactic_config, ref.binaries = "fp32", REFERENCE_TACTIC, {}, {}
    store = STORAGE.get(layer.precision) if layer.precision in HALF else None
    if store is not None:  # a storing target's lowered tensors: float32 in the reference
        ref.input_specs = [_widened(s, store) for s in layer.input_specs]
        ref.output_specs = [_widened(s, store) for s in layer.output_specs]
    if any(quant.is_coded(s) for s in layer.input_specs + layer.output_specs):  # codes: float32 values
        ref.input_specs = [_widened(s, s.dtype) if quant.is_coded(s) else s for s in ref.input_specs]
        ref.output_specs = [_widened(s, s.dtype) if quant.is_coded(s) else s for s in ref.output_specs]
    if layer.op == "Cast" and layer.name.startswith(GPU_CAST_PREFIX):
        ref.op, ref.domain, ref.attrs = "Identity", "", {}
        ref.output_specs = [TensorSpec(s.name, "float32" if s.dtype in ("float16", "bfloat16") else s.dtype, s.shape)
                            for s in layer.output_specs]
    if subgraphs_of(layer):
        ref.attrs = {k: _reference_attr(v) for k, v in layer.attrs.items()}
    elif layer.precision in quant.FORMATS:  # (only there: "q_" starts other attributes too, e.g. q_layout)
        ref.attrs = quant.strip_attrs(layer.attrs)
    return ref


def _widened(spec: TensorSpec, store: str) -> TensorSpec:
    return TensorSpec(spec.name, "float32" if spec.dtype == store else spec.dtype, spec.shape)


def _reference_attr(value):
    if isinstance(value, Subgraph):
        return Subgraph(value.inputs, value.outputs, [_reference_layer(l) for l in value.layers], value.constants,
                        value.name)
    if isinstance(value, list):
        return [_reference_attr(v) for v in value]
    return value

# ---------------------------------------------------------------------------- running
def feed_list(feeds) -> Iterable[dict]:
    """One feed dict, or an iterable of them (consumed lazily)."""
    if isinstance(feeds, Mapping):
        return [dict(feeds)]
    if isinstance(feeds, (str, bytes, np.ndarray)) or not isinstance(feeds, Iterable):
        raise InputError(f"feeds must be a dict of input name -> array or an iterable of such dicts, "
                         f"got {type(feeds).__name__}")
    return feeds


class Stepper:
    """Runs one layer of a plan at a time over a value table (a CPU executor's bound kernels)."""

    def __init__(self, plan: Plan, seed: int):
        self.ex = PlanExecutor(plan, rng=np.random.default_rng(seed), reuse=False)

    def call(self, i: int, args: list, values: dict) -> list:
        ex, layer = self.ex, self.ex.layers[i]
        ctx = ex.contexts[i]
        if subgraphs_of(layer):
            scope = Scope(values)
            ctx.run_subgraph = lambda sub, ins: ex.run_subgraph(sub, ins, scope)
        try:
            return list(ex.kernels[i](ctx, list(args), layer.attrs))[:len(layer.outputs)]
        except WorkbenchError:
            raise
        except Exception as exc:
            raise LayerError(f"layer {layer.name!r} ({layer.op}; ONNX nodes: {', '.join(layer.onnx_nodes)}) "
                             f"failed: {exc}") from exc
        finally:
            ctx.run_subgraph = None


class CpuSide:
    """The engine's side on the CPU: the engine's own kernels over their own value table."""

    def __init__(self, engine, seed: int):
        self.plan = engine.plan
        self.step = Stepper(engine.plan, seed)

    def start(self, feeds: dict) -> None:
        self.values = dict(self.plan.constants)
        self.values.update(feeds)

    def value(self, name: str):
        return self.values.get(name) if name else None

    def run(self, i: int) -> list:
        layer = self.plan.layers[i]
        outs = self.step.call(i, [self.values[n] if n else None for n in layer.inputs], self.values)
        for name, v in zip(layer.outputs, outs):
            if name:
                self.values[name] = v
        return outs

    def run_on(self, i: int, args: list, values: dict) -> list:
        return self.step.call(i, args, values)

    def free(self, name: str) -> None:
        self.values.pop(name, None)

    def finish(self) -> None:
        self.values = {}


class GpuSide:
    """The engine's side on the GPU: an eager context (no CUDA graphs) run one layer at a time,
    every output copied to the host right after its layer (the arena reuses bytes later)."""

    def __init__(self, engine):
        self.plan = engine.plan
        self.ctx = engine.create_context(cuda_graph=False)
        self.host: dict[str, Any] = {}

    def start(self, feeds: dict) -> None:
        self.host = dict(feeds)
        with self.ctx.stream:
            self.ctx._load_inputs(feeds)

    def value(self, name: str):
        if not name:
            return None
        if name in self.host:
            return self.host[name]
        return self.plan.constants.get(name)

    def run(self, i: int) -> list:
        layer = self.plan.layers[i]
        outs = self._run(i)
        for name, v in zip(layer.outputs, outs):
            if name:
                self.host[name] = v
        return outs

    def run_on(self, i: int, args: list, values: dict) -> list:
        """Layer ``i`` alone on ``args`` (written into its input buffers, which are restored after,
        like its outputs, so the engine's own run goes on unchanged). Every copy runs on the
        context's stream, in order with the layer."""
        layer, stream = self.plan.layers[i], self.ctx.stream
        ins, outs = self.ctx._io[i]
        specs = layer.aligned_input_specs()
        acts = [(pos, buf) for pos, (name, buf) in enumerate(zip(layer.inputs, ins))
                if name and buf is not None and name not in self.plan.constants]
        with stream:  # inputs first, outputs last: restored in that order (an output may reuse an input's bytes)
            saved = [(buf, buf.copy()) for _, buf in acts] + [(b, b.copy()) for b in outs if b is not None]
        layouts = layer.attrs.get("in_layouts") or []
        try:
            for pos, buf in acts:
                nhwc = pos < len(layouts) and layouts[pos] == "nhwc"
                write_device(buf, args[pos], specs[pos], nhwc, stream)
            return self._run(i)
        finally:
            with stream:
                for buf, keep in saved:
                    buf[...] = keep
            stream.synchronize()

    def _run(self, i: int) -> list:
        layer = self.plan.layers[i]
        with self.ctx.stream:
            self.ctx._run_layer(i)
        self.ctx.stream.synchronize()
        layouts = layer.attrs.get("out_layouts") or []
        specs = {s.name: s for s in layer.output_specs}
        result = []
        for k, (name, buf) in enumerate(zip(layer.outputs, self.ctx._io[i][1])):
            nhwc = k < len(layouts) and layouts[k] == "nhwc"
            result.append(None if buf is None else read_device(buf, specs.get(name), nhwc, self.ctx.stream))
        return result

    def free(self, name: str) -> None:
        self.host.pop(name, None)

    def finish(self) -> None:
        self.host = {}


def read_device(buf, spec: TensorSpec | None, nhwc: bool, stream) -> np.ndarray:
    """A device tensor on the host in its logical (NCHW) order and element type; a tensor of
    quantization codes as the float32 values they stand for."""
    from ..kernels.cuda.device import from_device_bits  # noqa: PLC0415 - GPU engines only

    host = buf.get(stream=stream)
    stream.synchronize()
    dtype = spec.dtype if spec is not None else None
    host = from_device_bits(host, dtype) if dtype else host
    if quant.is_coded(spec):
        host = quant.decode(host, spec)
    if nhwc and host.ndim == 4:
        n, c, h, w = host.shape
        host = host.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(host)


def write_device(buf, value, spec: TensorSpec | None, nhwc: bool, stream) -> None:
    """A host value into a device buffer, in the buffer's storage type and layout (a tensor of
    quantization codes: the value's codes)."""
    from ..kernels.cuda.device import to_device_bits  # noqa: PLC0415 - GPU engines only

    host = np.asarray(value)
    if quant.is_coded(spec):
        host = quant.encode(host, spec)
    dtype = spec.dtype if spec is not None else None
    host = to_device_bits(host, dtype) if dtype else host
    if nhwc and host.ndim == 4:
        host = host.transpose(0, 2, 3, 1)
    buf.set(np.ascontiguousarray(host).reshape(buf.shape).view(buf.dtype), stream=stream)

