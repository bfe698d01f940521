"""nvrtc.pool: MaxPool / AveragePool (2-D) and GlobalAveragePool / GlobalMaxPool as generated
kernels, for NCHW and channels-last (NHWC) storage.

The layout of the input and of the output come from the layer's attrs ``in_layouts`` /
``out_layouts`` (set by the GPU target's layout assignment, ``builder/layout.py``; absent: NCHW),
and may differ. Windows: one thread per output element, in the output's storage order (channels
fastest for NHWC, so a warp reads 32 consecutive channels of one pixel). Shapes, strides, pads and
dilations are compile-time constants. Average pooling divides by the count of window positions
inside the input (``count_include_pad=0``) or inside the padded input (``=1``), never counting
ceil_mode overhang, as ONNX does. Global pools: NHWC, one thread per (n, c) looping over pixels
(coalesced across c); NCHW, one warp per (n, c) with a shuffle reduction. fp32 accumulation.
"""

from __future__ import annotations

import math

import numpy as np

from ...core.plan import Layer
from ...ops.geometry import window_attrs
from . import cuda_prelude as P
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

WINDOW = ("MaxPool", "AveragePool")
GLOBAL = ("GlobalAveragePool", "GlobalMaxPool")
DTYPES = ("float32", "float16", "bfloat16")


def layouts(layer: Layer) -> tuple[str, str]:
    ins, outs = layer.attrs.get("in_layouts") or [], layer.attrs.get("out_layouts") or []
    return (ins[0] if ins and ins[0] else "nchw"), (outs[0] if outs and outs[0] else "nchw")


def _window_params(layer: Layer):
    a = layer.attrs
    xs, ys = layer.input_specs[0].shape, layer.output_specs[0].shape
    if len(xs) != 4:
        return "only 2-D pooling ([N, C, H, W]) is generated"
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "", None):
        return "auto_pad pooling is left to other tactics"
    if len(layer.outputs) > 1 and layer.outputs[1]:
        return "MaxPool indices output is not produced here"
    k = list(a["kernel_shape"])
    st, dil, pads = window_attrs(a, 2)
    return dict(N=xs[0], C=xs[1], H=xs[2], W=xs[3], OH=ys[2], OW=ys[3], KH=k[0], KW=k[1], SH=st[0], SW=st[1],
                DH=dil[0], DW=dil[1], PT=pads[0], PL=pads[1], PB=pads[2], PR=pads[3],
                INCL=int(a.get("count_include_pad", 0)))


def _window_source(layer: Layer, prm: dict, name: str) -> str:
    xin, yout = layouts(layer)
    dx, dy = layer.input_specs[0].dtype, layer.output_specs[0].dtype
    is_max = layer.op == "MaxPool"
    defs = "".join(f"#define {k} {v}\n" for k, v in prm.items())
    if yout == "nhwc":
        dec = "int c = i % C; int t = i / C; int ow = t % OW; t /= OW; int oh = t % OH; int n = t / OH;"
    else:
        dec = "int ow = i % OW; int t = i / OW; int oh = t % OH; t /= OH; int c = t % C; int n = t / C;"
    idx = "((n * H + ih) * W + iw) * C + c" if xin == "nhwc" else "((n * C + c) * H + ih) * W + iw"
    acc0 = "WB_NEG_INF" if is_max else "0.0f"
    upd = "acc = wb_fmax(acc, v);" if is_max else "acc += v;"
    count = ""
    fin = "acc"
    if not is_max:
        count = ("if (INCL ? (ih >= -PT && ih < H + PB && iw >= -PL && iw < W + PR)"
                 " : (ih >= 0 && ih < H && iw >= 0 && iw < W)) ++cnt;")
        fin = "acc / (float)(cnt > 0 ? cnt : 1)"
    return (P.PRELUDE + "#define WB_NEG_INF __int_as_float(0xff800000)\n" + defs +
            f'extern "C" __global__ void {name}({P.storage(dy)}* __restrict__ y, const {P.storage(dx)}* __restrict__ x, int total) {{\n'
            "  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {\n"
            f"    {dec}\n"
            f"    float acc = {acc0}; int cnt = 0;\n"
            "    #pragma unroll\n"
            "    for (int kh = 0; kh < KH; ++kh) {\n"
            "      int ih = oh * SH - PT + kh * DH;\n"
            "      #pragma unroll\n"
            "      for (int kw = 0; kw < KW; ++kw) {\n"
            "        int iw = ow * SW - PL + kw * DW;\n"
            f"        {count}\n"
            "        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;\n"
            f"        float v = {P.load(dx, 'x[' + idx + ']')};\n"
            f"        {upd}\n"
            "      }\n    }\n"
            f"    y[i] = {P.store(dy, fin)};\n"
            "  }\n}\n")


def _global_source(layer: Layer, name: str) -> tuple[str, int, int]:
    """(source, threads per output, outputs)."""
    xs = layer.input_specs[0].shape
    n, c, hw = xs[0], xs[1], math.prod(xs[2:])
    xin, _ = layouts(layer)
    dx, dy = layer.input_specs[0].dtype, layer.output_specs[0].dtype
    is_max = layer.op == "GlobalMaxPool"
    acc0 = "WB_NEG_INF" if is_max else "0.0f"
    comb = "acc = wb_fmax(acc, v);" if is_max else "acc += v;"
    fin = "acc" if is_max else f"acc * {1.0 / hw!r}f"
    head = (P.PRELUDE + "#define WB_NEG_INF __int_as_float(0xff800000)\n"
            f"#define C {c}\n#define HW {hw}\n#define NC {n * c}\n")
    sig = f'extern "C" __global__ void {name}({P.storage(dy)}* __restrict__ y, const {P.storage(dx)}* __restrict__ x) {{\n'
    if xin == "nhwc":
        body = ("  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= NC) return;\n"
                "  int n = i / C, c = i % C; const long long base = (long long)n * HW * C + c;\n"
                f"  float acc = {acc0};\n"
                "  #pragma unroll 4\n"
                f"  for (int p = 0; p < HW; ++p) {{ float v = {P.load(dx, 'x[base + (long long)p * C]')}; {comb} }}\n"
                f"  y[i] = {P.store(dy, fin)};\n}}\n")
        return head + sig + body, 1, n * c
    red = "wb_fmax(acc, o)" if is_max else "acc + o"
    body = ("  int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31; if (w >= NC) return;\n"
            "  const long long base = (long long)w * HW;\n"
            f"  float acc = {acc0};\n"
            f"  for (int p = lane; p < HW; p += 32) {{ float v = {P.load(dx, 'x[base + p]')}; {comb} }}\n"
            f"  for (int s = 16; s > 0; s >>= 1) {{ float o = __shfl_xor_sync(0xffffffffu, acc, s); acc = {red}; }}\n"
            f"  if (lane == 0) y[w] = {P.store(dy, fin)};\n}}\n")
    return head + sig + body, 32, n * c


class PoolTactic(TacticBase):
    name = "nvrtc.pool"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if layer.domain or layer.op not in WINDOW + GLOBAL:
            return f"{layer.op} is not a pooling op"
        x, y = layer.input_specs[0], layer.output_specs[0]
        if not (x.is_static and y.is_static) or x.dtype not in DTYPES or y.dtype not in DTYPES:
            return "needs static float32/float16/bfloat16 tensors"
        if layer.op in WINDOW:
            prm = _window_params(layer)
            if isinstance(prm, str):
                return prm
            if math.prod(y.shape) >= 2**31 or math.prod(x.shape) >= 2**31:
                return "tensor too large for 32-bit indexing"
        elif len(x.shape) < 3 or (len(x.shape) != 4 and layouts(layer)[0] == "nhwc"):
            return "global pooling wants [N, C, spatial...] (NHWC: rank 4)"
        return None

    def configs(self, layer, precision, gpu):
        return [{"block": 256, "layout": "/".join(layouts(layer))}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        out: dict[str, bytes] = {}
        block = int(config.get("block", 256))
        if layer.op in WINDOW:
            src = _window_source(layer, _window_params(layer), "wb_pool")
            fn = get_function(src, "wb_pool", gpu.arch, binaries, out)
            total = int(math.prod(layer.output_specs[0].shape))
            grid = max(1, min((total + block - 1) // block, gpu.sm_count * 16))

            def run(inputs, outputs, workspace, stream):
                fn((grid,), (block,), (outputs[0], inputs[0], np.int32(total)), stream=stream)
        else:
            src, per, n_out = _global_source(layer, "wb_gpool")
            fn = get_function(src, "wb_gpool", gpu.arch, binaries, out)
            block = 128
            grid = max(1, (n_out * per + block - 1) // block)

            def run(inputs, outputs, workspace, stream):
                fn((grid,), (block,), (outputs[0], inputs[0]), stream=stream)

        return BuiltKernel(run=run, binaries=out)


TACTICS = [PoolTactic()]
