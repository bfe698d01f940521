"""Layout assignment for GPU engines: which 4-D activations are stored channels-last (NHWC).

cuDNN's tensor-core convolutions run 2-3.5x faster on NHWC buffers. After precision assignment,
a 4-D half-precision activation is stored NHWC when its producer and every consumer can work
on it channels-last:

* FusedConv / Conv (2-D, run by ``cudnn.conv``): X, the residual Z and Y each in its own layout
  (cuDNN reads strides), so the stem conv reads the NCHW graph input and writes NHWC; an fp8
  conv's copy of codes (``q_copy_scale``) in Y's;
* MaxPool / AveragePool / GlobalAveragePool / GlobalMaxPool (``nvrtc.pool``: input and output
  layouts independent);
* elementwise layers (``nvrtc.pointwise``: Pointwise programs, Add, Relu, Cast, ...) whose inputs
  all have the output's shape or are scalars: they index flat, so they are layout-agnostic as long
  as all their full-size tensors share one layout (they are grouped so).

The logical shape stays N, C, H, W everywhere (the memory plan, the profile and the report see
the ONNX shapes); only the storage order changes. Graph inputs and outputs, constants, tensors with
one pixel (1x1 spatial: both orders are the same bytes) and anything read by another kind of layer
(Flatten, Reshape, Gemm, Concat, ...) stay NCHW, so no layout-conversion layer is needed: the
layers at a boundary convert while they compute (a conv writing NHWC from an NCHW input, a pool
or global pool reading NHWC and writing NCHW, and a one-input elementwise layer that reads a graph
input -- the fp16 engine's input Cast -- writing NHWC, so the stem conv reads channels-last). Only groups that touch a convolution are converted,
and only fp16/bf16 layers and fp8 convolutions (``cudnn.conv_fp8``, float16 or codes around
it; fp32/tf32 engines stay NCHW). Each conv so marked is checked against
cuDNN (a validated graph with those strides); a conv cuDNN refuses puts its tensors back to NCHW,
except an fp8 conv: cuDNN plans those with a channels-last output only, so one refused keeps the
layouts it has (NCHW stated explicitly) and the GPU target plans it again at fp16
(``layout_refusals``, ``targets/gpu.assign_with_layouts``).

Result: layers that touch an NHWC tensor get attrs ``channels_last = 1``, ``in_layouts`` and
``out_layouts`` (one entry per input / output: "nhwc", "nchw", or "" for non-4-D or absent), which
tactics read and the report shows; tactics that cannot honour them (generic, cupy.ops,
cublas.im2col_conv) decline such layers.
"""

from __future__ import annotations

import math
import os

from ..core.precisions import HALF

CONV = {("workbench", "FusedConv"), ("", "Conv")}
POOL = {("", "MaxPool"), ("", "AveragePool"), ("", "GlobalAveragePool"), ("", "GlobalMaxPool")}


def _rank4(spec) -> bool:
    return spec is not None and spec.is_static and spec.shape is not None and len(spec.shape) == 4


def _conv_tactic(layer, by_name):
    """The cuDNN tactic that runs this conv layer: ``cudnn.conv_fp8`` for fp8 layers (float16 or
    codes in and out), else ``cudnn.conv``."""
    return by_name.get("cudnn.conv_fp8" if layer.precision == "fp8" else "cudnn.conv")


def _kind(layer, by_name, gpu) -> str | None:
    if layer.precision not in HALF and not (layer.precision == "fp8" and layer.key in CONV):
        return None
    specs = layer.aligned_input_specs()
    if layer.key in CONV:
        conv = _conv_tactic(layer, by_name)
        if conv is None or not specs or not _rank4(specs[0]) or not _rank4(layer.output_specs[0]):
            return None
        return "conv"
    if layer.key in POOL:
        pool = by_name.get("nvrtc.pool")
        if pool is None or not _rank4(specs[0]):
            return None
        try:
            return "pool" if pool.supports(layer, layer.precision, gpu) is None else None
        except Exception:
            return None
    pw = by_name.get("nvrtc.pointwise")
    if pw is None or len(layer.output_specs) < 1 or not _rank4(layer.output_specs[0]):
        return None
    try:
        if pw.supports(layer, layer.precision, gpu) is not None:
            return None
    except Exception:
        return None
    out_shape = list(layer.output_specs[0].shape)
    for s in list(specs) + list(layer.output_specs):
        if s is None or not s.name:
            continue
        if not s.is_static or (list(s.shape) != out_shape and math.prod(s.shape) != 1):
            return None  # a broadcast operand: its index math assumes NCHW
    return "pw"


class _DSU:
    def __init__(self):
        self.p: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.p.setdefault(a, a)
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.p[ra] = rb


def _candidates(plan, kinds) -> tuple[set[str], _DSU, dict]:
    """4-D activations that some layer kind could store NHWC, their groups, and per tensor
    whether it touches a conv."""
    fixed = {s.name for s in plan.inputs} | {s.name for s in plan.outputs} | set(plan.constants)
    ok: dict[str, bool] = {}
    conv_touch: dict[str, bool] = {}
    dsu = _DSU()

    def see(name, spec, kind, role_ok):
        if not name or spec is None or not _rank4(spec) or math.prod(spec.shape[2:]) == 1 or name in fixed:
            return
        ok[name] = ok.get(name, True) and kind is not None and role_ok
        conv_touch[name] = conv_touch.get(name, False) or kind == "conv"
        dsu.find(name)

    for layer, kind in zip(plan.layers, kinds):
        specs = layer.aligned_input_specs()
        for pos, (name, spec) in enumerate(zip(layer.inputs, specs)):
            role = kind == "pw" or (kind == "conv" and pos in (0, 3)) or (kind == "pool" and pos == 0)
            see(name, spec, kind, role)
        for pos, spec in enumerate(layer.output_specs):
            # a conv's second output is its copy of codes (q_copy_scale): stored as Y is
            see(spec.name, spec, kind, pos == 0 or kind == "pw" or (kind == "conv" and pos == 1))
        # tensors a layer needs in one layout: a pointwise layer's full-size operands; conv Z and Y
        if kind == "pw":
            pairs = [(n, s) for n, s in zip(list(layer.inputs) + [o.name for o in layer.output_specs],
                                            list(specs) + list(layer.output_specs))
                     if n and s is not None and s.shape is not None and math.prod(s.shape) > 1]
            full = [n for n, _ in pairs if n in ok]
            outs = {o.name for o in layer.output_specs}
            if _converter(layer, pairs, full, fixed, outs):
                continue  # e.g. the input Cast: reads the NCHW graph input, may write NHWC
            for a, b in zip(full, full[1:]):
                dsu.union(a, b)
            if len(full) < len(pairs):  # a full-size operand that must stay NCHW (graph input, constant)
                for n in full:
                    ok[n] = False
        if kind == "conv" and len(layer.inputs) > 3 and layer.inputs[3] in ok and layer.output_specs[0].name in ok:
            dsu.union(layer.inputs[3], layer.output_specs[0].name)
        if kind == "conv" and len(layer.output_specs) > 1 and all(s.name in ok for s in layer.output_specs[:2]):
            dsu.union(layer.output_specs[0].name, layer.output_specs[1].name)
    return ok, dsu, conv_touch


def _converter(layer, pairs, full, fixed, outs) -> bool:
    """A one-input elementwise layer (Cast, ...) that reads a graph input (stored NCHW) and whose
    single output may be stored NHWC: ``nvrtc.pointwise`` converts the layout while it computes,
    so the stem conv runs channels-last. ``WB_INPUT_NHWC=0`` turns this off."""
    if os.environ.get("WB_INPUT_NHWC", "1") == "0" or len(pairs) != 2 or len(layer.output_specs) != 1:
        return False
    (a, _), (b, _) = pairs
    return a in fixed and a not in outs and full == [b] and b in outs


def _nhwc_set(ok, dsu, conv_touch, banned_groups) -> set[str]:
    groups: dict[str, list[str]] = {}
    for t in ok:
        groups.setdefault(dsu.find(t), []).append(t)
    out = set()
    for root, members in groups.items():
        if root in banned_groups:
            continue
        if all(ok[m] for m in members) and any(conv_touch[m] for m in members):
            out.update(members)
    return out


def _mark(layer, nhwc: set[str], constants, explicit: bool = False) -> bool:
    """Set the layer's layout attrs (none where it touches no NHWC tensor, unless ``explicit``:
    an fp8 conv, whose tactic reads no layouts as "not assigned yet"); True if it touches one."""
    specs = layer.aligned_input_specs()
    ins = ["nhwc" if n in nhwc else ("nchw" if _rank4(s) and n not in constants else "")
           for n, s in zip(layer.inputs, specs)]
    outs = ["nhwc" if s.name in nhwc else ("nchw" if _rank4(s) else "") for s in layer.output_specs]
    for key in ("channels_last", "in_layouts", "out_layouts"):
        layer.attrs.pop(key, None)
    if "nhwc" not in ins + outs:
        if explicit:
            layer.attrs["in_layouts"], layer.attrs["out_layouts"] = ins, outs
        return False
    layer.attrs["channels_last"] = 1
    layer.attrs["in_layouts"] = ins
    layer.attrs["out_layouts"] = outs
    return True


def assign_layouts(plan, by_name: dict, gpu) -> list[dict]:
    """Mark channels-last tensors on ``plan``'s layers (see the module doc); returns report rows,
    one per layer that touches an NHWC tensor."""
    kinds = [_kind(layer, by_name, gpu) for layer in plan.layers]
    if "conv" not in kinds:
        return []
    ok, dsu, conv_touch = _candidates(plan, kinds)
    banned: set[str] = set()
    nhwc: set[str] = set()
    for _ in range(8):  # a conv cuDNN refuses in these layouts sends its groups back to NCHW
        nhwc = _nhwc_set(ok, dsu, conv_touch, banned)
        refused = False
        for layer, kind in zip(plan.layers, kinds):
            marked = _mark(layer, nhwc, plan.constants, explicit=layer.key in CONV and layer.precision == "fp8")
            if kind == "conv" and marked:
                try:
                    why = _conv_tactic(layer, by_name).supports(layer, layer.precision, gpu)
                except Exception as exc:
                    why = f"{type(exc).__name__}: {exc}"
                if why is not None and layer.precision != "fp8":  # (an fp8 conv is re-planned: layout_refusals)
                    for n in list(layer.inputs) + [s.name for s in layer.output_specs]:
                        if n in nhwc:
                            banned.add(dsu.find(n))
                    refused = True
        if not refused:
            break
    rows = []
    for layer in plan.layers:
        if layer.attrs.get("channels_last"):
            rows.append({"layer": layer.name, "op": layer.op, "in_layouts": list(layer.attrs["in_layouts"]),
                         "out_layouts": list(layer.attrs["out_layouts"])})
    return rows


def layout_refusals(plan, by_name: dict, gpu) -> dict[str, str]:
    """fp8 convolutions whose tactic (``cudnn.conv_fp8``) refuses the layouts they ended with, by
    layer name -> reason. Precision placement checks an fp8 convolution channels-last, the layout
    it is given wherever its tensors can be; one whose output chain must stay NCHW (it reaches a
    graph output, or a layer that reads NCHW only) has no fp8 plan in cuDNN and is re-planned at
    the fallback precision by the GPU target."""
    out = {}
    tactic = by_name.get("cudnn.conv_fp8")
    for layer in plan.layers:
        if tactic is None or layer.key not in CONV or layer.precision != "fp8":
            continue
        try:
            why = tactic.supports(layer, layer.precision, gpu)
        except Exception as exc:  # noqa: BLE001 - the reason is what matters here
            why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            ins, outs = layer.attrs.get("in_layouts") or [], layer.attrs.get("out_layouts") or []
            out[layer.name] = f"{why} (layouts in {ins or 'nchw'}, out {outs or 'nchw'})"
    return out
