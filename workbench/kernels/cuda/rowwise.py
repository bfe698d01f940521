"""nvrtc.rowwise: one thread block per row, fp32 accumulation, warp-shuffle reductions.

LayerNorm / SkipLayerNorm / RMSNorm (workbench domain), ONNX LayerNormalization /
RMSNormalization, and Softmax / LogSoftmax over contiguous trailing axes (online max+sum in one
pass, a second pass writes). The block size is the autotuned parameter.
"""

from __future__ import annotations

import math

import numpy as np

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


def _norm_source(layer: Layer, dt: dict, name: str, vpt: int = 0) -> str:
    op = layer.op
    skip = op == "SkipLayerNorm"
    rms = op in ("RMSNorm", "RMSNormalization")
    n_in = [bool(n) for n in layer.inputs]
    # input positions: X, [skip], scale, [bias], [add_bias]
    if skip:
        names = ["x", "skip", "scale", "bias", "add_bias"]
    else:
        names = ["x", "scale", "bias"]
    have = {nm: (i < len(n_in) and n_in[i]) for i, nm in enumerate(names)}
    has_sum = skip and len(layer.outputs) > 1 and bool(layer.outputs[1])
    params = [f"{P.storage(dt['y'])}* __restrict__ y"]
    if has_sum:
        params.append(f"{P.storage(dt['y'])}* __restrict__ ysum")
    for nm in names:
        if have[nm]:
            params.append(f"const {P.storage(dt[nm])}* __restrict__ {nm}")
    params += ["int cols", "float eps"]

    def ld(nm, idx):
        return P.load(dt[nm], f"{nm}[{idx}]")

    val = ld("x", "r * cols + c")
    if skip:
        val = f"({val} + {ld('skip', 'r * cols + c')}" + (f" + {ld('add_bias', 'c')}" if have["add_bias"] else "") + ")"
    out = f"(v - mean) * rstd * {ld('scale', 'c')}" + (f" + {ld('bias', 'c')}" if have["bias"] else "")
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
        if has_sum:
            lines.append(f"    ysum[r * cols + c] = {P.store(dt['y'], 'v')};")
        lines += [f"    y[r * cols + c] = {P.store(dt['y'], out)};", "  }"]
        return (P.PRELUDE + _REDUCE + f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
                + "\n".join(lines) + "\n}\n")
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
    if has_sum:
        lines.append(f"    ysum[r * cols + c] = {P.store(dt['y'], 'v')};")
    lines += [f"    y[r * cols + c] = {P.store(dt['y'], out)};", "  }"]
    return (P.PRELUDE + _REDUCE + f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
            + "\n".join(lines) + "\n}\n")


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

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.key not in NORMS | SOFTMAX:
            return f"{layer.op} is not a row-wise normalization or softmax"
        if not all(s.is_static and s.dtype in ("float32", "float16", "bfloat16") for s in layer.input_specs + layer.output_specs if s.name):
            return "needs static float32/float16/bfloat16 inputs"
        if layer.key in (("", "LayerNormalization"), ("", "RMSNormalization")) and any(layer.outputs[1:]):
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
        return [{"block": b} for b in (128, 256, 512, 1024) if b <= max(128, 2 * cols)][:3]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        rows, cols = _rows_cols(layer)
        dt = {"y": layer.output_specs[0].dtype}
        names = (["x", "skip", "scale", "bias", "add_bias"] if layer.op == "SkipLayerNorm"
                 else ["x"] if layer.key in SOFTMAX else ["x", "scale", "bias"])
        for nm, spec in zip(names, layer.aligned_input_specs()):
            if spec is not None:
                dt[nm] = spec.dtype
        block = int(config.get("block", 256))
        vpt = -(-cols // block)
        if layer.key in SOFTMAX:
            src = _softmax_source(layer, dt, "wb_rowwise")
        else:  # rows of up to 16 values per thread are kept in registers: one read of X (and skip)
            src = _norm_source(layer, dt, "wb_rowwise", vpt if vpt <= 16 else 0)
        out: dict[str, bytes] = {}
        fn = get_function(src, "wb_rowwise", gpu.arch, binaries, out)
        block = int(config.get("block", 256))
        eps = np.float32(layer.attrs.get("epsilon", 1e-5))
        has_sum = layer.op == "SkipLayerNorm" and len(layer.outputs) > 1 and bool(layer.outputs[1])

        def run(inputs, outputs, workspace, stream):
            outs = [outputs[0]] + ([outputs[1]] if has_sum else [])
            args = outs + [x for x in inputs if x is not None] + [np.int32(cols), eps]
            fn((rows,), (block,), tuple(args), stream=stream)

        return BuiltKernel(run=run, binaries=out)


TACTICS = [RowwiseTactic()]
