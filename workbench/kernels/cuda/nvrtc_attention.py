"""nvrtc.attention: one generated flash-attention-style kernel for ``workbench.Attention``,
capturable in a CUDA graph, for every precision, layout, mask, causal form and GQA: the choice at
fp32/tf32 and wherever cuDNN SDPA declines a layer (at fp16/bf16 cuDNN's flash attention is
preferred where it runs).

fp32 math throughout (so fp32 with TF32 off is exact to fp32 rounding, and tf32/fp16/bf16 are at
least as accurate as asked). Grid (ceil(Sq / BQ), H, B); a block of NW warps owns BQ = NW * ROWS
query rows, each warp ROWS of them. Per tile of BK = 32 keys the block stages K (float4 rows,
padded: conflict-free) and V in shared memory; lane j scores key j against the warp's rows, the
online softmax keeps a running max and per-lane partial sums, and P.V accumulates with lane =
output column (a shuffle broadcasts p_j). Every tensor is addressed through element strides of its
logical [B, H, S, D] view, so the layouts of FUSED_OPS.md ("bhsd", "bshd", "bsd", K "bhds"; out
"bhsd"/"bshd"/"bsd"), GQA (K/V head h // (H / Hkv)) and a mask broadcast to [B, H, Sq, Sk] (stride 0
on broadcast dims) cost no copy. Causal is aligned to the end (query i sees keys j <= i + Sk - Sq);
with ``causal_fill`` absent the tiles above the diagonal are skipped, with a finite fill f their
score is scale * q.k + f (the mask not added), as the reference computes. A row with no visible key
gives NaN (the reference's 0/0), or zeros with ``nan_to_zero``.
"""

from __future__ import annotations

import numpy as np

from ...core.plan import Layer
from ...ops.fused import FUSED_OPS
from . import cuda_prelude as P
from .common import IO_DTYPE, has_input, np_dtype, ptr, static_shape
from .cudnn_sdpa import CudnnSdpa
from .layer_io import attention_operands, mask_view
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

SCALE = FUSED_OPS["Attention"].attrs["scale"]  # the op's default
NV_BK = 32  # keys per tile: one per lane
SMEM_MAX = 48 * 1024  # static shared memory per block
NV_CONFIGS = [(4, 4), (4, 2), (8, 2), (8, 4)]  # (warps, rows per warp)
_FLOAT = ("float32", "float16", "bfloat16")


def _nv_problem(layer: Layer, precision: str):
    ops = attention_operands(layer)
    if isinstance(ops, str):
        return ops
    want = IO_DTYPE.get(precision)
    at = layer.attrs
    specs = layer.aligned_input_specs()
    dts = [specs[i].dtype for i in range(3)] + [layer.output_specs[0].dtype]
    for d, n in zip(dts, "qkvo"):
        if d not in _FLOAT:
            return f"{n.upper()} is {d}: float32/float16/bfloat16 only"
        if want is not None and d != want:
            return f"{n.upper()} is {d}, precision {precision} wants {want}"
    (q, qs), (k, ks), (v, vs), (o, os_) = (ops["views"][n] for n in "qkvo")
    heads = ops["heads"]
    if q[1] != heads or k[1] != v[1] or k[1] == 0 or heads % k[1]:
        return f"head counts: Q {q}, K {k}, V {v}, num_heads {heads}"
    kind, mask, mst, mdt = "", None, [0, 0, 0, 0], None
    if has_input(layer, 3):
        mdt = specs[3].dtype
        kind = str(at.get("mask_kind", "") or "") or ("boolean" if mdt == "bool" else "additive")
        if kind not in ("additive", "boolean"):
            return f"mask_kind {kind!r}"
        if mdt not in ("float32", "float16", "bfloat16", "bool"):
            return f"mask of type {mdt}"
        view = mask_view(static_shape(layer, 3), (q[0], q[1], q[2], k[2]))
        if isinstance(view, str):
            return view
        mask, mst = view
    fill = at.get("causal_fill", None) if int(at.get("causal", 0) or 0) else None
    fill = float(fill) if fill is not None and np.isfinite(float(fill)) else None
    return dict(q=q, k=k, v=v, o=o, st={"q": qs, "k": ks, "v": vs, "o": os_, "m": mst}, kind=kind, mask=mask,
                off=[ops["offsets"][n] for n in "qkv"],
                dt={"q": dts[0], "k": dts[1], "v": dts[2], "o": dts[3], "m": mdt},
                causal=bool(int(at.get("causal", 0) or 0)), fill=fill, nan_to_zero=bool(int(at.get("nan_to_zero", 0) or 0)),
                scale=float(at.get("scale", SCALE)))


def _d4(d: int) -> int:
    return -(-d // 4) * 4


def _smem(p: dict, warps: int, rows: int) -> int:
    d4, dv = _d4(p["q"][3]), p["v"][3]
    return 4 * (warps * rows * d4 + NV_BK * (d4 + 4) + NV_BK * dv)


def _nv_source(p: dict, warps: int, rows: int, name: str) -> str:
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


class NvrtcAttention(TacticBase):
    name = "nvrtc.attention"
    supports_cost = 1  # at fp16/bf16 it asks cudnn.sdpa, which validates a cuDNN graph

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        p = _nv_problem(layer, precision)
        if isinstance(p, str):
            return p
        if precision in ("fp16", "bf16"):  # cuDNN's flash attention stays the fp16/bf16 choice where it runs
            try:
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

        # packed Q/K/V (qkv_columns): each operand starts at its column of the one tensor
        off_bytes = [o * np.dtype(np_dtype(p["dt"][n])).itemsize for o, n in zip(p["off"], "qkv")]
        packed = any(off_bytes)

        def run(inputs, outputs, workspace, stream):
            qkv = ([np.uint64(ptr(x) + o) for x, o in zip(inputs[:3], off_bytes)] if packed else list(inputs[:3]))
            args = [outputs[0], *qkv] + ([inputs[3]] if has_mask else []) + scal
            fn(grid, (w * 32,), tuple(args), stream=stream)

        return BuiltKernel(run=run, binaries=out)


TACTICS = [NvrtcAttention()]
