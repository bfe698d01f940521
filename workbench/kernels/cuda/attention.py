"""Attention tactics without cuDNN: ``nvrtc.attention`` (below: one generated, capturable kernel for
every precision, layout, mask, causal form and GQA; the choice at fp32/tf32 and wherever cuDNN SDPA
declines a layer) and ``cupy.attention``, the last resort.

cupy.attention: fallback for ``workbench.Attention`` when cuDNN SDPA cannot take a layer (fp32,
odd head dims, masks it does not support): softmax(Q K^T * scale + mask) V with cuBLAS batched
GEMMs in fp32 (through CuPy) and a numerically safe softmax. CuPy refuses cuBLAS calls
during stream capture, so it runs eagerly between captured graph segments.

Mask semantics follow FUSED_OPS.md: "additive" adds the mask to the scores, "boolean" keeps scores
where the mask is true. ``causal`` aligns the triangle to the bottom-right (query i sees keys
<= i + Sk - Sq), like SDPA with a KV cache.
"""

from __future__ import annotations

import numpy as np

from ...core.plan import Layer
from .device import cupy
from .layer_io import attention_view as _logical
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
        for i, key in enumerate(("q_layout", "k_layout", "v_layout")):
            lay = layer.attrs.get(key, "bhsd")
            if lay not in ("bhsd", "bshd", "bsd", "bhds") or len(layer.input_specs[i].shape) != len(lay):
                return f"unsupported {key} {lay!r} for shape {layer.input_specs[i].shape}"
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

        qs = layer.input_specs[0].shape
        d = qs[-1] // heads if lays[0] == "bsd" else qs[-1]
        q = [qs[0], heads, qs[1] if lays[0] in ("bsd", "bshd") else qs[2], d]
        ks = layer.input_specs[1].shape
        k = [ks[0], kv, ks[-1] if lays[1] == "bhds" else ks[1] if lays[1] in ("bsd", "bshd") else ks[2], d]
        nan_to_zero = bool(a.get("nan_to_zero", 0))
        scale = float(a.get("scale") or 1.0 / np.sqrt(d))
        kind = a.get("mask_kind", "") or ("additive" if len(layer.inputs) > 3 and layer.inputs[3] else "")
        tri = None
        if a.get("causal", 0):
            sq, sk = q[2], k[2]
            tri = cp.asarray(np.tril(np.ones((sq, sk), bool), k=sk - sq))

        def run(ins, outs, ws, stream):
            qq, kk, vv = (bhsd(x, lay, h).astype(cp.float32) for x, lay, h in zip(ins[:3], lays, (heads, kv, kv)))
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


# ------------------------------------------------------------------------------ nvrtc.attention
#
# One generated flash-attention-style kernel, capturable in a CUDA graph, fp32 math throughout
# (so fp32 with TF32 off is exact to fp32 rounding, and tf32/fp16/bf16 are at least as accurate as
# asked). Grid (ceil(Sq / BQ), H, B); a block of NW warps owns BQ = NW * ROWS query rows, each warp
# ROWS of them. Per tile of BK = 32 keys the block stages K (float4 rows, padded: conflict-free) and
# V in shared memory; lane j scores key j against the warp's rows, the online softmax keeps a
# running max and per-lane partial sums, and P.V accumulates with lane = output column (a shuffle
# broadcasts p_j). Every tensor is addressed through element strides of its logical [B, H, S, D]
# view, so the layouts of FUSED_OPS.md ("bhsd", "bshd", "bsd", K "bhds"; out "bhsd"/"bshd"/"bsd"),
# GQA (K/V head h // (H / Hkv)) and a mask broadcast to [B, H, Sq, Sk] (stride 0 on broadcast dims)
# cost no copy. Causal is aligned to the end (query i sees keys j <= i + Sk - Sq); with ``causal_fill``
# absent the tiles above the diagonal are skipped, with a finite fill f their score is
# scale * q.k + f (the mask not added), as the reference computes. A row with no visible key gives
# NaN (the reference's 0/0), or zeros with ``nan_to_zero``.

NV_BK = 32  # keys per tile: one per lane
SMEM_MAX = 48 * 1024  # static shared memory per block
NV_CONFIGS = [(4, 4), (4, 2), (8, 2), (8, 4)]  # (warps, rows per warp)
_FLOAT = ("float32", "float16", "bfloat16")
_RANK = {"bhsd": 4, "bshd": 4, "bsd": 3, "bhds": 4}


def _nv_problem(layer: Layer, precision: str):
    if layer.key != ("workbench", "Attention"):
        return "not an Attention layer"
    from .cublas import IO_DTYPE, has_input, in_specs, static_shape  # noqa: PLC0415

    want = IO_DTYPE.get(precision)
    at = layer.attrs
    lay = {n: str(at.get(f"{n}_layout", "bhsd") or "bhsd") for n in "qkv"}
    lay["o"] = str(at.get("out_layout", "bhsd") or "bhsd")
    for n, v in lay.items():
        if v not in _RANK or (v == "bhds" and n != "k"):
            return f"{n}_layout {v!r} is not one this kernel reads"
    specs = in_specs(layer)
    shapes = [static_shape(layer, i) for i in range(3)] + [static_shape(layer, 0, out=True)]
    for s, n in zip(shapes, "qkvo"):
        if s is None or len(s) != _RANK[lay[n]]:
            return f"{n.upper()} of shape {s} does not match layout {lay[n]!r} (static shapes needed)"
    dts = [specs[i].dtype for i in range(3)] + [layer.output_specs[0].dtype]
    for d, n in zip(dts, "qkvo"):
        if d not in _FLOAT:
            return f"{n.upper()} is {d}: float32/float16/bfloat16 only"
        if want is not None and d != want:
            return f"{n.upper()} is {d}, precision {precision} wants {want}"
    heads = int(at.get("num_heads") or 0) or (shapes[0][1] if lay["q"] == "bhsd" else shapes[0][2] if lay["q"] == "bshd" else 0)
    if not heads:
        return "num_heads is needed for the bsd layout"
    kv_attr = int(at.get("kv_heads") or 0) or heads
    if any(shapes[i][-1] % h for i, h in ((0, heads), (1, kv_attr), (2, kv_attr), (3, heads)) if lay["qkvo"[i]] == "bsd"):
        return "hidden size is not a multiple of the head count"
    (q, qs), (k, ks), (v, vs) = (_logical(s, lay[n], h) for s, n, h in zip(shapes[:3], "qkv", (heads, kv_attr, kv_attr)))
    o, os_ = _logical(shapes[3], lay["o"], heads)
    if q[1] != heads or k[1] != v[1] or k[1] == 0 or heads % k[1]:
        return f"head counts: Q {q}, K {k}, V {v}, num_heads {heads}"
    if q[0] != k[0] or k[:3] != v[:3] or q[3] != k[3]:
        return f"inconsistent Q {q}, K {k}, V {v}"
    if o != [q[0], q[1], q[2], v[3]]:
        return f"output {shapes[3]} ({lay['o']}) is not [B, H, Sq, Dv] = {[q[0], q[1], q[2], v[3]]}"
    kind, mask, mst, mdt = "", None, [0, 0, 0, 0], None
    if has_input(layer, 3):
        mdt = specs[3].dtype
        kind = str(at.get("mask_kind", "") or "") or ("boolean" if mdt == "bool" else "additive")
        if kind not in ("additive", "boolean"):
            return f"mask_kind {kind!r}"
        if mdt not in ("float32", "float16", "bfloat16", "bool"):
            return f"mask of type {mdt}"
        ms = static_shape(layer, 3)
        if ms is None or len(ms) > 4:
            return "mask must be static and of rank <= 4"
        ms = (1,) * (4 - len(ms)) + tuple(ms)
        full = (q[0], q[1], q[2], k[2])
        if any(a not in (1, b) for a, b in zip(ms, full)):
            return f"mask {ms} does not broadcast to {full}"
        acc = 1
        for i in range(3, -1, -1):
            mst[i] = 0 if ms[i] == 1 else acc
            acc *= ms[i]
        mask = ms
    fill = at.get("causal_fill", None) if int(at.get("causal", 0) or 0) else None
    fill = float(fill) if fill is not None and np.isfinite(float(fill)) else None
    return dict(q=q, k=k, v=v, o=o, st={"q": qs, "k": ks, "v": vs, "o": os_, "m": mst}, kind=kind, mask=mask,
                dt={"q": dts[0], "k": dts[1], "v": dts[2], "o": dts[3], "m": mdt},
                causal=bool(int(at.get("causal", 0) or 0)), fill=fill, nan_to_zero=bool(int(at.get("nan_to_zero", 0) or 0)),
                scale=float(at.get("scale", 1.0)))


def _d4(d: int) -> int:
    return -(-d // 4) * 4


def _smem(p: dict, warps: int, rows: int) -> int:
    d4, dv = _d4(p["q"][3]), p["v"][3]
    return 4 * (warps * rows * d4 + NV_BK * (d4 + 4) + NV_BK * dv)


def _nv_source(p: dict, warps: int, rows: int, name: str) -> str:
    from . import cuda_prelude as P  # noqa: PLC0415

    d, dv = p["q"][3], p["v"][3]
    d4, nv = _d4(d), -(-dv // 32)
    dt = p["dt"]
    st = {n: P.storage(dt[n]) for n in "qkvo"}
    excl = p["causal"] and p["fill"] is None  # keys above the diagonal never count: skip their tiles
    params = [f"{st['o']}* __restrict__ o", f"const {st['q']}* __restrict__ q", f"const {st['k']}* __restrict__ k",
              f"const {st['v']}* __restrict__ v"]
    if p["mask"] is not None:
        params.append(f"const {P.storage(dt['m'])}* __restrict__ mk")
    params += ["int Sq", "int Sk", "int rep", "int off", "float scale"]
    params += [f"long long {n}{a}" for n in "qkvom" for a in "bhsd"]
    mask_code = ""
    if p["mask"] is not None:
        mval = P.load(dt["m"], "mk[(long long)b * mb + (long long)h * mh + (long long)qc * ms + (long long)j * md]")
        mask_code = (f"x += (float)({mval});" if p["kind"] == "additive" else f"if (!({mval})) x = WB_NEG_INF;")
    causal_code = ""
    if p["causal"]:
        outside = "WB_NEG_INF" if p["fill"] is None else f"(raw + ({p['fill']!r}f))"
        causal_code = f"if (j > qc + off) x = {outside};"
    empty = "0.0f" if p["nan_to_zero"] else "__int_as_float(0x7fc00000)"
    bq = warps * rows
    return P.PRELUDE + f"""
#define WB_NEG_INF __int_as_float(0xff800000)
#define D {d}
#define D4 {d4}
#define DV {dv}
#define NV {nv}
#define BK {NV_BK}
#define ROWS {rows}
#define BQ {bq}
#define NT {warps * 32}
extern "C" __global__ void __launch_bounds__(NT) {name}({", ".join(params)}) {{
  __shared__ __align__(16) float sQ[BQ][D4];
  __shared__ __align__(16) float sK[BK][D4 + 4];
  __shared__ float sV[BK][DV];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.z, h = blockIdx.y, hk = h / rep, q0 = blockIdx.x * BQ;
  const {st['q']}* qp = q + (long long)b * qb + (long long)h * qh;
  const {st['k']}* kp = k + (long long)b * kb + (long long)hk * kh;
  const {st['v']}* vp = v + (long long)b * vb + (long long)hk * vh;
  for (int i = threadIdx.x; i < BQ * D4; i += NT) {{
    int r = i / D4, dd = i - r * D4, qi = q0 + r;
    sQ[r][dd] = (qi < Sq && dd < D) ? {P.load(dt['q'], 'qp[(long long)qi * qs + (long long)dd * qd]')} : 0.0f;
  }}
  float m[ROWS], l[ROWS], acc[ROWS][NV];
  #pragma unroll
  for (int rr = 0; rr < ROWS; ++rr) {{
    m[rr] = WB_NEG_INF; l[rr] = 0.0f;
    #pragma unroll
    for (int i = 0; i < NV; ++i) acc[rr][i] = 0.0f;
  }}
  const int wrow0 = q0 + warp * ROWS;
  int kend = Sk;
  {"{ int last = min(q0 + BQ, Sq) - 1 + off + 1; kend = min(Sk, last); }" if excl else ""}
  for (int k0 = 0; k0 < kend; k0 += BK) {{
    __syncthreads();
    for (int i = threadIdx.x; i < BK * D4; i += NT) {{
      int jj = i / D4, dd = i - jj * D4, kj = k0 + jj;
      sK[jj][dd] = (kj < Sk && dd < D) ? {P.load(dt['k'], 'kp[(long long)kj * ks + (long long)dd * kd]')} : 0.0f;
    }}
    for (int i = threadIdx.x; i < BK * DV; i += NT) {{
      int jj = i / DV, dd = i - jj * DV, kj = k0 + jj;
      sV[jj][dd] = kj < Sk ? {P.load(dt['v'], 'vp[(long long)kj * vs + (long long)dd * vd]')} : 0.0f;
    }}
    __syncthreads();
    if (wrow0 >= Sq) continue;
    {"if (k0 > wrow0 + ROWS - 1 + off) continue;" if excl else ""}
    float s[ROWS];
    #pragma unroll
    for (int rr = 0; rr < ROWS; ++rr) s[rr] = 0.0f;
    const float4* kr = reinterpret_cast<const float4*>(&sK[lane][0]);
    #pragma unroll 4
    for (int c = 0; c < D4 / 4; ++c) {{
      const float4 kv4 = kr[c];
      #pragma unroll
      for (int rr = 0; rr < ROWS; ++rr) {{
        const float4 qv = reinterpret_cast<const float4*>(&sQ[warp * ROWS + rr][0])[c];
        s[rr] = fmaf(qv.x, kv4.x, s[rr]); s[rr] = fmaf(qv.y, kv4.y, s[rr]);
        s[rr] = fmaf(qv.z, kv4.z, s[rr]); s[rr] = fmaf(qv.w, kv4.w, s[rr]);
      }}
    }}
    const int j = k0 + lane;
    float pr[ROWS];
    #pragma unroll
    for (int rr = 0; rr < ROWS; ++rr) {{
      const int qi = wrow0 + rr;
      const int qc = qi < Sq ? qi : Sq - 1;
      const float raw = s[rr] * scale;
      float x = raw;
      if (j >= Sk) x = WB_NEG_INF;
      else {{ {mask_code} {causal_code} }}
      float mx = x;
      #pragma unroll
      for (int o2 = 16; o2 > 0; o2 >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
      const float mn = fmaxf(m[rr], mx);
      const float pj = mn == WB_NEG_INF ? 0.0f : __expf(x - mn);
      const float corr = mn == WB_NEG_INF ? 1.0f : __expf(m[rr] - mn);
      m[rr] = mn; l[rr] = l[rr] * corr + pj; pr[rr] = pj;
      #pragma unroll
      for (int i = 0; i < NV; ++i) acc[rr][i] *= corr;
    }}
    #pragma unroll 8
    for (int jj = 0; jj < BK; ++jj) {{
      float vv[NV];
      #pragma unroll
      for (int i = 0; i < NV; ++i) {{ int dd = lane + 32 * i; vv[i] = (dd < DV) ? sV[jj][dd] : 0.0f; }}
      #pragma unroll
      for (int rr = 0; rr < ROWS; ++rr) {{
        const float pb = __shfl_sync(0xffffffffu, pr[rr], jj);
        #pragma unroll
        for (int i = 0; i < NV; ++i) acc[rr][i] = fmaf(pb, vv[i], acc[rr][i]);
      }}
    }}
  }}
  #pragma unroll
  for (int rr = 0; rr < ROWS; ++rr) {{
    float lt = l[rr];
    #pragma unroll
    for (int o2 = 16; o2 > 0; o2 >>= 1) lt += __shfl_xor_sync(0xffffffffu, lt, o2);
    const int qi = wrow0 + rr;
    if (qi >= Sq) continue;
    const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
    #pragma unroll
    for (int i = 0; i < NV; ++i) {{
      int dd = lane + 32 * i;
      if (dd >= DV) continue;
      const float val = lt > 0.0f ? acc[rr][i] * inv : {empty};
      o[(long long)b * ob + (long long)h * oh + (long long)qi * os + (long long)dd * od] = {P.store(dt['o'], 'val')};
    }}
  }}
}}
"""


class NvrtcAttention:
    name = "nvrtc.attention"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        p = _nv_problem(layer, precision)
        if isinstance(p, str):
            return p
        if precision in ("fp16", "bf16"):  # cuDNN's flash attention stays the fp16/bf16 choice where it runs
            try:
                from .cudnn_sdpa import CudnnSdpa  # noqa: PLC0415

                if CudnnSdpa().supports(layer, precision, gpu) is None:
                    return "cuDNN SDPA runs this layer (preferred at fp16/bf16)"
            except Exception:  # noqa: BLE001 - no cuDNN: this kernel runs it
                pass
        if not self._configs(p):
            return f"head dims {p['q'][3]}/{p['v'][3]}: the tiles exceed {SMEM_MAX // 1024} KB of shared memory"
        return None

    @staticmethod
    def _configs(p: dict) -> list[dict]:
        sq = p["q"][2]
        out = []
        for w, r in NV_CONFIGS:
            if _smem(p, w, r) > SMEM_MAX or (w * r > 16 and sq <= 16):
                continue
            out.append({"warps": w, "rows": r})
        return out[:3]

    def configs(self, layer, precision, gpu):
        return self._configs(_nv_problem(layer, precision))

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        from .nvrtc import get_function  # noqa: PLC0415

        p = _nv_problem(layer, precision)
        if isinstance(p, str):
            raise ValueError(p)
        w, r = int(config.get("warps", 4)), int(config.get("rows", 4))
        out: dict[str, bytes] = {}
        fn = get_function(_nv_source(p, w, r, "wb_attention"), "wb_attention", gpu.arch, binaries, out)
        b, h, sq, _ = p["q"]
        hk, sk = p["k"][1], p["k"][2]
        grid = (-(-sq // (w * r)), h, b)
        scal = [np.int32(sq), np.int32(sk), np.int32(h // hk), np.int32(sk - sq), np.float32(p["scale"])]
        scal += [np.int64(x) for n in "qkvom" for x in p["st"][n]]
        has_mask = p["mask"] is not None

        def run(inputs, outputs, workspace, stream):
            args = [outputs[0], inputs[0], inputs[1], inputs[2]] + ([inputs[3]] if has_mask else []) + scal
            fn(grid, (w * 32,), tuple(args), stream=stream)

        return BuiltKernel(run=run, binaries=out)


TACTICS = [NvrtcAttention(), CupyAttention()]
