"""cupy.attention: the last-resort tactic for ``workbench.Attention`` (fp32, odd head dims, masks
neither cuDNN SDPA nor ``nvrtc.attention`` takes): softmax(Q K^T * scale + mask) V with cuBLAS
batched GEMMs in fp32 (through CuPy) and a numerically safe softmax. CuPy refuses cuBLAS calls
during stream capture, so it runs eagerly between captured graph segments.

Mask semantics follow FUSED_OPS.md: "additive" adds the mask to the scores, "boolean" keeps scores
where the mask is true. ``causal`` aligns the triangle to the bottom-right (query i sees keys
<= i + Sk - Sq), like SDPA with a KV cache.
"""

from __future__ import annotations

import numpy as np

from ...core.plan import Layer
from ...ops.fused import FUSED_OPS, qkv_dims, qkv_operands
from .common import ATTENTION_OPS, require_op, require_static
from .device import cupy
from .tactic import BuiltKernel, GpuInfo, TacticBase

SCALE = FUSED_OPS["Attention"].attrs["scale"]  # the op's default


class CupyAttention(TacticBase):
    name = "cupy.attention"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        specs = list(layer.input_specs) + list(layer.output_specs)
        why = require_op(layer, ATTENTION_OPS, "the fused Attention op") or require_static(specs)
        if why:
            return why
        if any(s.dtype not in ("float32", "float16", "bool") for s in specs):
            return "float32/float16 only (CuPy has no bfloat16)"
        try:
            shapes = qkv_dims([s.shape for s in layer.aligned_input_specs()[:3]], layer.attrs)
        except ValueError as e:
            return str(e)
        for i, key in enumerate(("q_layout", "k_layout", "v_layout")):
            lay = layer.attrs.get(key, "bhsd")
            if lay not in ("bhsd", "bshd", "bsd", "bhds") or len(shapes[i]) != len(lay):
                return f"unsupported {key} {lay!r} for shape {shapes[i]}"
        return None

    def configs(self, layer, precision, gpu):
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        cp = cupy()
        a = layer.attrs
        heads = int(a.get("num_heads") or 0) or layer.input_specs[0].shape[1]
        kv = int(a.get("kv_heads") or 0) or heads
        lays = [a.get(k, "bhsd") for k in ("q_layout", "k_layout", "v_layout")]
        out_lay = a.get("out_layout", "bhsd")

        def bhsd(x, lay, h):
            if lay == "bshd":
                return x.transpose(0, 2, 1, 3)
            if lay == "bsd":
                return x.reshape(x.shape[0], x.shape[1], h, -1).transpose(0, 2, 1, 3)
            if lay == "bhds":
                return x.transpose(0, 1, 3, 2)
            return x

        qs, ks, _ = qkv_dims([s.shape for s in layer.aligned_input_specs()[:3]], a)
        d = qs[-1] // heads if lays[0] == "bsd" else qs[-1]
        q = [qs[0], heads, qs[1] if lays[0] in ("bsd", "bshd") else qs[2], d]
        k = [ks[0], kv, ks[-1] if lays[1] == "bhds" else ks[1] if lays[1] in ("bsd", "bshd") else ks[2], d]
        nan_to_zero = bool(a.get("nan_to_zero", 0))
        scale = float(a.get("scale", SCALE))
        kind = a.get("mask_kind", "") or ("additive" if len(layer.inputs) > 3 and layer.inputs[3] else "")
        tri = None
        if a.get("causal", 0):
            sq, sk = q[2], k[2]
            tri = cp.asarray(np.tril(np.ones((sq, sk), bool), k=sk - sq))

        def run(ins, outs, ws, stream):
            qq, kk, vv = (bhsd(x, lay, h).astype(cp.float32)
                          for x, lay, h in zip(qkv_operands(ins, a), lays, (heads, kv, kv)))
            mask = ins[3] if len(ins) > 3 else None
            if kv != heads:
                kk = cp.repeat(kk, heads // kv, axis=1)
                vv = cp.repeat(vv, heads // kv, axis=1)
            s = cp.matmul(qq, kk.swapaxes(-1, -2)) * np.float32(scale)
            if mask is not None:
                s = cp.where(mask.astype(bool), s, -cp.inf) if kind == "boolean" else s + mask.astype(cp.float32)
            if tri is not None:
                s = cp.where(tri, s, -cp.inf)
            s = cp.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            if nan_to_zero:
                s = cp.where(cp.isnan(s), 0.0, s)
            o = cp.matmul(s, vv)
            if out_lay in ("bshd", "bsd"):
                o = o.transpose(0, 2, 1, 3)
            cp.copyto(outs[0], o.reshape(outs[0].shape).astype(outs[0].dtype))

        # CuPy refuses cuBLAS calls during stream capture: this layer runs between graph segments
        return BuiltKernel(run=run, capturable=False)


TACTICS = [CupyAttention()]
