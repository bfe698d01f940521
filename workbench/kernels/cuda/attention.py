"""cupy.attention: fallback for ``workbench.Attention`` when cuDNN SDPA cannot take a layer (fp32,
odd head dims, masks it does not support): softmax(Q K^T * scale + mask) V with cuBLAS batched
GEMMs in fp32 (through CuPy) and a numerically safe softmax. Capturable: it only allocates
temporaries, which come from the context's private graph pool.

Mask semantics follow FUSED_OPS.md: "additive" adds the mask to the scores, "boolean" keeps scores
where the mask is true. ``causal`` aligns the triangle to the bottom-right (query i sees keys
<= i + Sk - Sq), like SDPA with a KV cache.
"""

from __future__ import annotations

import numpy as np

from ...engine.plan import Layer
from .device import cupy
from .tactic import BuiltKernel, GpuInfo


class CupyAttention:
    name = "cupy.attention"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.key != ("workbench", "Attention"):
            return "not an Attention layer"
        specs = list(layer.input_specs) + list(layer.output_specs)
        if not all(s.is_static for s in specs):
            return "needs static shapes"
        if any(s.dtype not in ("float32", "float16", "bool") for s in specs):
            return "float32/float16 only (CuPy has no bfloat16)"
        if any(len(s.shape) != 4 for s in layer.input_specs[:3]):
            return "Q/K/V must be [batch, heads, seq, head_dim]"
        return None

    def configs(self, layer, precision, gpu):
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        cp = cupy()
        q, k = layer.input_specs[0].shape, layer.input_specs[1].shape
        heads, kv = q[1], k[1]
        scale = float(layer.attrs.get("scale") or 1.0 / np.sqrt(q[3]))
        kind = layer.attrs.get("mask_kind", "") or ("additive" if len(layer.inputs) > 3 and layer.inputs[3] else "")
        tri = None
        if layer.attrs.get("causal", 0):
            sq, sk = q[2], k[2]
            tri = cp.asarray(np.tril(np.ones((sq, sk), bool), k=sk - sq))

        def run(ins, outs, ws, stream):
            qq, kk, vv = (x.astype(cp.float32) for x in ins[:3])
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
            cp.copyto(outs[0], cp.matmul(s, vv).reshape(outs[0].shape).astype(outs[0].dtype))

        return BuiltKernel(run=run)


TACTICS = [CupyAttention()]
