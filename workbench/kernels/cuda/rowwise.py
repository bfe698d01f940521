"""nvrtc.rowwise: one thread block per row, fp32 accumulation, warp-shuffle reductions.

LayerNorm / SkipLayerNorm / RMSNorm (workbench domain), ONNX LayerNormalization /
RMSNormalization, and Softmax / LogSoftmax over contiguous trailing axes (online max+sum in one
pass, a second pass writes). The block size is the autotuned parameter; for the normalizations
also the vector width (``vec``: 2 to 8 consecutive values per load and store, up to 16 bytes,
where the row length allows), with the row held in registers either way.
"""

from __future__ import annotations

import math

import numpy as np

from ...core import quant
from ...core.plan import Layer
from . import cuda_prelude as P
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

_REDUCE = r"""
#define WB_NEG_INF __int_as_float(0xff800000)
__device__ __forceinline__ float wb_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float wb_block_sum(float v, float* sh) {
  v = wb_warp_sum(v);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = (threadIdx.x < (blockDim.x >> 5)) ? sh[threadIdx.x] : 0.0f;
  if (w == 0) { t = wb_warp_sum(t); if (lane == 0) sh[0] = t; }
  __syncthreads();
  return sh[0];
}
__device__ __forceinline__ void wb_online(float& m, float& s, float m2, float s2) {
  float mx = fmaxf(m, m2);
  if (mx == WB_NEG_INF) { m = mx; s = 0.0f; return; }
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx); m = mx;
}
"""

NORMS = {("workbench", "LayerNorm"), ("", "LayerNormalization"), ("workbench", "SkipLayerNorm"),
         ("workbench", "RMSNorm"), ("", "RMSNormalization")}
SOFTMAX = {("", "Softmax"), ("", "LogSoftmax")}


def _rows_cols(layer: Layer) -> tuple[int, int] | None:
    x = layer.input_specs[0]
    if not x.is_static or not x.shape:
        return None
    shape = x.shape
    if layer.key in SOFTMAX:
        axis = layer.attrs.get("axis", -1 if layer.opset >= 13 else 1)
        axis = axis + len(shape) if axis < 0 else axis
        if layer.opset >= 13 and axis != len(shape) - 1:
            return None
    elif layer.attrs.get("channels_first"):
        return None
    else:
        axis = layer.attrs.get("axis", -1)
        axis = axis + len(shape) if axis < 0 else axis
    cols = math.prod(shape[axis:])
    return math.prod(shape[:axis]), cols


def _norm_params(layer: Layer, dt: dict, codes: dict | None):
    """What both norm kernels take: (skip, rms, have: input name -> present, has_sum, the codes'
    format of Y ("output") and of the copy ("copy"), the kernel's parameter list)."""
    skip = layer.op == "SkipLayerNorm"
    rms = layer.op in ("RMSNorm", "RMSNormalization")
    # input positions: X, [skip], scale, [bias], [add_bias]
    names = ["x", "skip", "scale", "bias", "add_bias"] if skip else ["x", "scale", "bias"]
    have = {nm: i < len(layer.inputs) and bool(layer.inputs[i]) for i, nm in enumerate(names)}
    has_sum = _has_sum(layer)
    coded, copy = (codes or {}).get("output"), (codes or {}).get("copy")
    params = [f"{'unsigned char' if coded else P.storage(dt['y'])}* __restrict__ y"]
    if has_sum:
        params.append(f"{P.storage(dt['sum'])}* __restrict__ ysum")
    if copy:
        params.append("unsigned char* __restrict__ yq")
    params += [f"const {P.storage(dt[nm])}* __restrict__ {nm}" for nm in names if have[nm]]
    params += ["int cols", "float eps", "float oscale"]
    return skip, rms, have, has_sum, coded, copy, params


def _norm_source(layer: Layer, dt: dict, name: str, vpt: int = 0, codes: dict | None = None) -> str:
    """``codes`` (``quant.coded_outputs``): Y written as codes ("output"), or Y and a copy of codes
    ("copy", parameter ``yq``), both with scale ``oscale``: the codes of the float32 result."""
    skip, rms, have, has_sum, coded, copy, params = _norm_params(layer, dt, codes)

    def ld(nm, idx):
        return P.load(dt[nm], f"{nm}[{idx}]")

    val = ld("x", "r * cols + c")
    if skip:
        val = f"({val} + {ld('skip', 'r * cols + c')}" + (f" + {ld('add_bias', 'c')}" if have["add_bias"] else "") + ")"
    out = f"(v - mean) * rstd * {ld('scale', 'c')}" + (f" + {ld('bias', 'c')}" if have["bias"] else "")
    writes = [f"    ysum[r * cols + c] = {P.store(dt['sum'], 'v')};"] if has_sum else []
    if coded:
        writes.append(f"    y[r * cols + c] = {P.encode(coded, out, 'oscale')};")
    elif copy:
        writes += [f"    {{ float o = {out}; y[r * cols + c] = {P.store(dt['y'], 'o')};",
                   f"      yq[r * cols + c] = {P.encode(copy, 'o', 'oscale')}; }}"]
    else:
        writes.append(f"    y[r * cols + c] = {P.store(dt['y'], out)};")
    head = P.PRELUDE + (P.codes(coded or copy) if coded or copy else "") + _REDUCE
    if vpt:  # one pass over memory: the row stays in registers (VPT values per thread)
        lines = ["  __shared__ float sh[32];", "  long long r = blockIdx.x;", "  float acc = 0.0f;", f"  float vals[{vpt}];",
                 f"  #pragma unroll\n  for (int j = 0; j < {vpt}; ++j) {{ int c = threadIdx.x + j * blockDim.x;"
                 f" float v = c < cols ? {val} : 0.0f; vals[j] = v; acc += v; }}"]
        if not rms:
            lines += ["  float mean = wb_block_sum(acc, sh) / cols;", "  acc = 0.0f;",
                      f"  #pragma unroll\n  for (int j = 0; j < {vpt}; ++j) {{ int c = threadIdx.x + j * blockDim.x;"
                      " if (c < cols) { float d = vals[j] - mean; acc += d * d; } }"]
        else:
            lines += ["  const float mean = 0.0f;", "  acc = 0.0f;",
                      f"  #pragma unroll\n  for (int j = 0; j < {vpt}; ++j) acc += vals[j] * vals[j];"]
        lines += ["  float rstd = rsqrtf(wb_block_sum(acc, sh) / cols + eps);",
                  f"  #pragma unroll\n  for (int j = 0; j < {vpt}; ++j) {{ int c = threadIdx.x + j * blockDim.x;"
                  " if (c >= cols) continue; float v = vals[j];"]
        lines += writes + ["  }"]
        return head + f'extern "C" __global__ void {name}({", ".join(params)}) {{\n' + "\n".join(lines) + "\n}\n"
    lines = ["  __shared__ float sh[32];", "  long long r = blockIdx.x;", "  float acc = 0.0f;"]
    if not rms:
        lines += [f"  for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += {val};",
                  "  float mean = wb_block_sum(acc, sh) / cols;", "  acc = 0.0f;",
                  f"  for (int c = threadIdx.x; c < cols; c += blockDim.x) {{ float d = {val} - mean; acc += d * d; }}"]
    else:
        lines += ["  const float mean = 0.0f;",
                  f"  for (int c = threadIdx.x; c < cols; c += blockDim.x) {{ float d = {val}; acc += d * d; }}"]
    lines += ["  float rstd = rsqrtf(wb_block_sum(acc, sh) / cols + eps);",
              "  for (int c = threadIdx.x; c < cols; c += blockDim.x) {",
              f"    float v = {val};"]
    lines += writes + ["  }"]
    return head + f'extern "C" __global__ void {name}({", ".join(params)}) {{\n' + "\n".join(lines) + "\n}\n"


_WORD = {4: "unsigned int", 8: "uint2", 16: "uint4"}  # a vector load / store of that many bytes
_LANES = {4: ["{t}"], 8: ["{t}.x", "{t}.y"], 16: ["{t}.x", "{t}.y", "{t}.z", "{t}.w"]}
_ITEM = {"float32": 4, "float16": 2, "bfloat16": 2}


def _vec_io(dtype: str, vec: int) -> str:
    """Device functions loading ``vec`` consecutive ``dtype`` values into floats and storing floats
    back, in loads of up to 16 bytes (the caller keeps them aligned: rows of a multiple of ``vec``)."""
    item = _ITEM[dtype]
    nbytes = min(vec * item, 16)
    per, word = nbytes // item, _WORD[nbytes]
    ld, st = [], []
    for k in range(vec // per):
        ld.append(f"  {{ {word} t = reinterpret_cast<const {word}*>(p)[{k}];")
        st.append(f"  {{ {word} t;")
        for lane, expr in enumerate(_LANES[nbytes]):
            w = expr.format(t="t")
            i = k * per + lane * (4 // item)
            if item == 4:
                ld.append(f"    o[{i}] = __uint_as_float({w});")
                st.append(f"    {w} = __float_as_uint(v[{i}]);")
            else:
                ld.append(f"    o[{i}] = {P.load(dtype, f'(unsigned short)({w} & 0xffffu)')}; "
                          f"o[{i + 1}] = {P.load(dtype, f'(unsigned short)({w} >> 16)')};")
                st.append(f"    {w} = (unsigned int){P.store(dtype, f'v[{i}]')} | "
                          f"((unsigned int){P.store(dtype, f'v[{i + 1}]')} << 16);")
        ld.append("  }")
        st.append(f"    reinterpret_cast<{word}*>(p)[{k}] = t; }}")
    name = f"{dtype}_{vec}"
    return (f"__device__ __forceinline__ void wb_ld_{name}(const {P.storage(dtype)}* p, float* o) {{\n"
            + "\n".join(ld) + "\n}\n"
            f"__device__ __forceinline__ void wb_st_{name}({P.storage(dtype)}* p, const float* v) {{\n"
            + "\n".join(st) + "\n}\n")


def _vec_codes(fmt: str, vec: int) -> str:
    """A device function storing the codes of ``vec`` floats (``vec`` bytes, one aligned store)."""
    word = {2: "unsigned short", 4: "unsigned int", 8: "uint2"}[vec]
    lines = [f"__device__ __forceinline__ void wb_stq_{vec}(unsigned char* p, const float* v, float s) {{"]
    if vec == 8:
        parts = [" | ".join(f"((unsigned int){P.encode(fmt, f'v[{4 * h + i}]', 's')} << {8 * i})" for i in range(4))
                 for h in range(2)]
        lines.append(f"  uint2 t; t.x = {parts[0]}; t.y = {parts[1]}; *reinterpret_cast<uint2*>(p) = t;")
    else:
        bits = " | ".join(f"((unsigned int){P.encode(fmt, f'v[{i}]', 's')} << {8 * i})" for i in range(vec))
        lines.append(f"  *reinterpret_cast<{word}*>(p) = ({word})({bits});")
    return "\n".join(lines) + "\n}\n"


def _norm_source_vec(layer: Layer, dt: dict, name: str, vpt: int, vec: int, codes: dict | None = None) -> str:
    """``_norm_source``'s one-pass kernel with vector loads and stores: each thread takes ``vpt``
    runs of ``vec`` consecutive values (``cols`` a multiple of ``vec``)."""
    skip, rms, have, has_sum, coded, copy, params = _norm_params(layer, dt, codes)
    types = {dt[nm] for nm, on in have.items() if on} | ({dt["y"]} if not coded else set()) | ({dt["sum"]} if has_sum else set())
    head = P.PRELUDE + (P.codes(coded or copy) + _vec_codes(coded or copy, vec) if coded or copy else "") + _REDUCE
    head += "".join(_vec_io(t, vec) for t in sorted(types))

    def ld(nm, at, into):
        return f"float {into}[{vec}]; wb_ld_{dt[nm]}_{vec}({nm} + {at}, {into});"

    loop = f"  #pragma unroll\n  for (int j = 0; j < {vpt}; ++j) {{ int c = (threadIdx.x + j * blockDim.x) * {vec};"
    add = [ld("x", "base + c", "a")]
    if skip:
        add += [ld("skip", "base + c", "b"), f"for (int e = 0; e < {vec}; ++e) a[e] = a[e] + b[e];"]
        if have["add_bias"]:
            add += [ld("add_bias", "c", "ab"), f"for (int e = 0; e < {vec}; ++e) a[e] = a[e] + ab[e];"]
    lines = ["  __shared__ float sh[32];", "  const long long base = (long long)blockIdx.x * cols;",
             "  float acc = 0.0f;", f"  float vals[{vpt}][{vec}];",
             loop + f" if (c < cols) {{ {' '.join(add)} for (int e = 0; e < {vec}; ++e) {{ vals[j][e] = a[e];"
             f" acc += a[e]; }} }} else {{ for (int e = 0; e < {vec}; ++e) vals[j][e] = 0.0f; }} }}"]
    if not rms:
        lines += ["  float mean = wb_block_sum(acc, sh) / cols;", "  acc = 0.0f;",
                  loop + f" if (c < cols) {{ for (int e = 0; e < {vec}; ++e) {{ float d = vals[j][e] - mean;"
                  " acc += d * d; } } }"]
    else:
        lines += ["  const float mean = 0.0f;", "  acc = 0.0f;",
                  loop + f" if (c < cols) {{ for (int e = 0; e < {vec}; ++e) acc += vals[j][e] * vals[j][e]; }} }}"]
    body = [ld("scale", "c", "g")] + ([ld("bias", "c", "bb")] if have["bias"] else [])
    out = f"(vals[j][e] - mean) * rstd * g[e]" + (" + bb[e]" if have["bias"] else "")
    body.append(f"float o[{vec}]; for (int e = 0; e < {vec}; ++e) o[e] = {out};")
    if has_sum:
        body.append(f"wb_st_{dt['sum']}_{vec}(ysum + base + c, vals[j]);")
    if coded:
        body.append(f"wb_stq_{vec}(y + base + c, o, oscale);")
    else:
        body.append(f"wb_st_{dt['y']}_{vec}(y + base + c, o);")
        if copy:
            body.append(f"wb_stq_{vec}(yq + base + c, o, oscale);")
    lines += ["  float rstd = rsqrtf(wb_block_sum(acc, sh) / cols + eps);",
              loop + " if (c >= cols) continue;", *[f"    {b}" for b in body], "  }"]
    return head + f'extern "C" __global__ void {name}({", ".join(params)}) {{\n' + "\n".join(lines) + "\n}\n"


def _vec_widths(layer: Layer, cols: int) -> list[int]:
    """Vector widths the norm kernel may use: a multiple of ``cols``, at most 16 bytes of its
    widest type, codes stored 2 / 4 / 8 at a time."""
    items = [_ITEM.get(s.dtype) for s in layer.input_specs + layer.output_specs if s.name and not quant.is_coded(s)]
    if None in items:
        return []
    widest = max(items, default=4)
    return [v for v in (8, 4, 2) if cols % v == 0 and v * widest <= 16 and v * min(items) >= 4]


def _has_sum(layer: Layer) -> bool:
    """Whether a SkipLayerNorm writes its ``sum`` output (X + skip [+ add_bias])."""
    outs = quant.op_outputs(layer)
    return layer.op == "SkipLayerNorm" and len(outs) > 1 and bool(outs[1])


def _softmax_source(layer: Layer, dt: dict, name: str) -> str:
    log = layer.op == "LogSoftmax"
    x = P.load(dt["x"], "x[r * cols + c]")
    out = "(v - m - __logf(s))" if log else "__expf(v - m) / s"
    return (P.PRELUDE + _REDUCE + f'extern "C" __global__ void {name}({P.storage(dt["y"])}* __restrict__ y, '
            f'const {P.storage(dt["x"])}* __restrict__ x, int cols, float eps) {{\n'
            "  __shared__ float shm[32]; __shared__ float shs[32];\n"
            "  long long r = blockIdx.x; float m = WB_NEG_INF, s = 0.0f;\n"
            f"  for (int c = threadIdx.x; c < cols; c += blockDim.x) wb_online(m, s, {x}, 1.0f);\n"
            "  for (int o = 16; o > 0; o >>= 1) { float m2 = __shfl_xor_sync(0xffffffffu, m, o);"
            " float s2 = __shfl_xor_sync(0xffffffffu, s, o); wb_online(m, s, m2, s2); }\n"
            "  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;\n"
            "  if (lane == 0) { shm[w] = m; shs[w] = s; }\n  __syncthreads();\n"
            "  if (w == 0) { m = lane < (blockDim.x >> 5) ? shm[lane] : WB_NEG_INF; s = lane < (blockDim.x >> 5) ? shs[lane] : 0.0f;\n"
            "    for (int o = 16; o > 0; o >>= 1) { float m2 = __shfl_xor_sync(0xffffffffu, m, o);"
            " float s2 = __shfl_xor_sync(0xffffffffu, s, o); wb_online(m, s, m2, s2); }\n"
            "    if (lane == 0) { shm[0] = m; shs[0] = s; } }\n  __syncthreads();\n  m = shm[0]; s = shs[0];\n"
            f"  for (int c = threadIdx.x; c < cols; c += blockDim.x) {{ float v = {x}; y[r * cols + c] = {P.store(dt['y'], out)}; }}\n"
            "}\n")


class RowwiseTactic(TacticBase):
    name = "nvrtc.rowwise"
    writes_codes = ("output", "copy")  # the normalizations: Y as codes, or Y and a copy of codes

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.key not in NORMS | SOFTMAX:
            return f"{layer.op} is not a row-wise normalization or softmax"
        codes = quant.coded_outputs(layer)
        if isinstance(codes, str):
            return codes
        if (codes["output"] or codes["copy"]) and layer.key not in NORMS:
            return "writes codes from the normalizations only"
        if (codes["output"] or codes["copy"]) == "fp8" and gpu is not None and gpu.sm < 89:
            return f"e4m3 codes need sm_89 or newer ({gpu.arch})"
        floats = layer.input_specs + [s for s in layer.output_specs if s.name and not quant.is_coded(s)]
        if not all(s.is_static and s.dtype in ("float32", "float16", "bfloat16") for s in floats):
            return "needs static float32/float16/bfloat16 inputs"
        if layer.key in (("", "LayerNormalization"), ("", "RMSNormalization")) and any(quant.op_outputs(layer)[1:]):
            return "mean / inv_std_dev outputs are not produced by this kernel"
        rc = _rows_cols(layer)
        if rc is None:
            return "normalized axes are not the contiguous trailing axes"
        cols = rc[1]
        if layer.key in NORMS:
            x = layer.input_specs[0]
            params = [s for i, s in enumerate(layer.input_specs) if s.name and not (i == 0 or (layer.op == "SkipLayerNorm" and i == 1))]
            if any(math.prod(s.shape) != cols for s in params):
                return "scale / bias must cover exactly the normalized axes"
            if layer.op == "SkipLayerNorm" and layer.input_specs[1].shape != x.shape:
                return "skip input must have the shape of X"
        return None

    def configs(self, layer, precision, gpu):
        cols = _rows_cols(layer)[1]
        out = [{"block": b} for b in (128, 256, 512, 1024) if b <= max(128, 2 * cols)][:3]
        if layer.key in NORMS:  # vector loads: a block of whole warps takes the row in 1, 2 or 4 runs
            for vec in _vec_widths(layer, cols)[:2]:
                blocks = {min(1024, 32 * -(-cols // (vec * runs * 32))) for runs in (1, 2, 4)}
                out += [{"block": b, "vec": vec} for b in sorted(blocks) if -(-cols // (vec * b)) <= 16]
        return out

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        rows, cols = _rows_cols(layer)
        has_sum = _has_sum(layer)
        dt = {"y": layer.output_specs[0].dtype}
        if has_sum:
            dt["sum"] = layer.output_specs[1].dtype
        names = (["x", "skip", "scale", "bias", "add_bias"] if layer.op == "SkipLayerNorm"
                 else ["x"] if layer.key in SOFTMAX else ["x", "scale", "bias"])
        for nm, spec in zip(names, layer.aligned_input_specs()):
            if spec is not None:
                dt[nm] = spec.dtype
        block = int(config.get("block", 256))
        vpt = -(-cols // block)
        codes = quant.coded_outputs(layer) if layer.key in NORMS else {}
        vec = int(config.get("vec", 1))
        if layer.key in SOFTMAX:
            src = _softmax_source(layer, dt, "wb_rowwise")
        elif vec > 1:
            if vec not in _vec_widths(layer, cols):
                raise ValueError(f"vector width {vec} does not fit {cols} columns of {sorted(set(dt.values()))}")
            src = _norm_source_vec(layer, dt, "wb_rowwise", -(-cols // (vec * block)), vec, codes)
        else:  # rows of up to 16 values per thread are kept in registers: one read of X (and skip)
            src = _norm_source(layer, dt, "wb_rowwise", vpt if vpt <= 16 else 0, codes)
        out: dict[str, bytes] = {}
        fn = get_function(src, "wb_rowwise", gpu.arch, binaries, out)
        eps = np.float32(layer.attrs.get("epsilon", 1e-5))
        oscale = np.float32(codes.get("scale") or 1.0)
        copy = bool(codes.get("copy"))
        tail = [np.int32(cols), eps] + ([oscale] if layer.key in NORMS else [])

        def run(inputs, outputs, workspace, stream):
            outs = [outputs[0]] + ([outputs[1]] if has_sum else []) + ([outputs[-1]] if copy else [])
            args = outs + [x for x in inputs if x is not None] + tail
            fn((rows,), (block,), tuple(args), stream=stream)

        return BuiltKernel(run=run, binaries=out)


TACTICS = [RowwiseTactic()]
