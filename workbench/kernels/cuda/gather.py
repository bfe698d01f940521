"""nvrtc.gather: ONNX Gather (embedding lookups) as one generated row-copy kernel.

``out[o, j, :] = data[o, idx[j], :]`` with ``o`` over the dims before ``axis``, ``j`` over the
index tensor and ``:`` the contiguous row after ``axis``. One thread block per output row; each
thread copies 16-byte (or the widest that divides the row and the pointers) words, so the copy is
coalesced and vectorized. Negative indices wrap (ONNX); an index out of range is clamped, never read
out of bounds. No temporaries and no host work: the layer is captured into the engine's CUDA graph.
"""

from __future__ import annotations

import math

import numpy as np

from ...core.plan import Layer
from .common import require_nchw, require_op, require_static
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

WORD = {16: "wb_v16", 8: "unsigned long long", 4: "unsigned int", 2: "unsigned short", 1: "unsigned char"}
V16 = "struct alignas(16) wb_v16 { unsigned int w[4]; };\n"  # no headers: our own 16-byte word
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}


def source(word: int, index_type: str) -> str:
    t, it = WORD[word], ("long long" if index_type == "int64" else "int")
    return (V16 + f'extern "C" __global__ void wb_gather({t}* __restrict__ out, const {t}* __restrict__ data, '
            f"const {it}* __restrict__ idx, long long rows, long long n_idx, long long axis_len, int row_words) {{\n"
            "  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {\n"
            "    long long j = r % n_idx, o = r / n_idx;\n"
            "    long long k = (long long)idx[j];\n"
            "    if (k < 0) k += axis_len;\n"
            "    k = k < 0 ? 0 : (k >= axis_len ? axis_len - 1 : k);\n"
            f"    const {t}* src = data + (o * axis_len + k) * row_words;\n"
            f"    {t}* dst = out + r * row_words;\n"
            "    for (int v = threadIdx.x; v < row_words; v += blockDim.x) dst[v] = src[v];\n"
            "  }\n}\n")


def geometry(layer: Layer):
    ds, ish = list(layer.input_specs[0].shape), list(layer.input_specs[1].shape)
    axis = int(layer.attrs.get("axis", 0))
    axis = axis + len(ds) if axis < 0 else axis
    outer = math.prod(ds[:axis])
    inner = math.prod(ds[axis + 1:])
    return axis, outer, ds[axis], math.prod(ish), inner


class GatherTactic(TacticBase):
    name = "nvrtc.gather"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        why = require_op(layer, {("", "Gather")}, "Gather") or require_nchw(layer)
        if why:
            return why
        specs = list(layer.input_specs[:2]) + [layer.output_specs[0]]
        if len(specs) < 3 or require_static(specs):
            return "needs static shapes"
        if specs[1].dtype not in ("int32", "int64"):
            return f"indices of type {specs[1].dtype}"
        if specs[0].dtype not in _ITEMSIZE or specs[0].dtype != specs[2].dtype:
            return f"data of type {specs[0].dtype}"
        axis, outer, n, nidx, inner = geometry(layer)
        if n == 0 or inner == 0 or nidx == 0:
            return "empty tensor"
        if inner * _ITEMSIZE[specs[0].dtype] >= 2**31:
            return "row too long"
        return None

    def configs(self, layer, precision, gpu):
        return [{"block": 128}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        axis, outer, n, nidx, inner = geometry(layer)
        row_bytes = inner * _ITEMSIZE[layer.input_specs[0].dtype]
        word = next(w for w in (16, 8, 4, 2, 1) if row_bytes % w == 0)
        out: dict[str, bytes] = {}
        # one cubin per word size: the run picks a narrower one if a pointer is less aligned
        fns = {}
        for w in sorted({word, 1}, reverse=True):
            got: dict[str, bytes] = {}
            name = f"wb_gather_{w}"
            src = source(w, layer.input_specs[1].dtype).replace("wb_gather(", f"{name}(")
            fns[w] = get_function(src, name, gpu.arch, binaries, got)
            out.update(got)
        rows = outer * nidx
        words = {w: row_bytes // w for w in fns}
        block_of = {w: int(min(max(32, -(-words[w] // 32) * 32), int(config.get("block", 128)))) for w in fns}
        grid = int(min(rows, 2**31 - 1))

        def run(inputs, outputs, workspace, stream):
            d, ix, y = inputs[0], inputs[1], outputs[0]
            w = next(w for w in fns if d.data.ptr % w == 0 and y.data.ptr % w == 0)
            fns[w]((grid,), (block_of[w],), (y, d, ix, np.int64(rows), np.int64(nidx), np.int64(n),
                                             np.int32(words[w])), stream=stream)

        return BuiltKernel(run=run, binaries=out)


MAX_SPLIT = 8


def split_source(word: int, n_out: int) -> str:
    """Split along an axis: output k's row r is the words [off_k, off_k + len_k) of input row r."""
    t = WORD[word]
    outs = ", ".join(f"{t}* __restrict__ y{k}" for k in range(n_out))
    lens = ", ".join(f"int l{k}" for k in range(n_out))
    body = "".join(f"    if (k == {k}) {{ dst = y{k}; len = l{k}; }} else if (k < {k}) {{}} else off += l{k};\n"
                   for k in range(n_out))
    return (V16 + f'extern "C" __global__ void wb_split(const {t}* __restrict__ x, {outs}, {lens}, long long rows, '
            "int row_words) {\n"
            "  int k = blockIdx.y;\n"
            f"  {t}* dst = 0; int len = 0; int off = 0;\n"
            + body +
            "  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {\n"
            f"    const {t}* src = x + r * row_words + off;\n"
            "    for (int v = threadIdx.x; v < len; v += blockDim.x) dst[r * len + v] = src[v];\n"
            "  }\n}\n")


class SplitTactic(TacticBase):
    """nvrtc.split: every output of a Split in one launch, 16-byte words where the sizes allow."""

    name = "nvrtc.split"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        outs = list(layer.output_specs)
        why = (require_op(layer, {("", "Split")}, "Split") or require_nchw(layer)
               or require_static(layer.input_specs[:1] + outs, "needs static shapes and a numeric type"))
        if why:
            return why
        if layer.input_specs[0].dtype not in _ITEMSIZE:
            return "needs static shapes and a numeric type"
        if not 1 <= len(outs) <= MAX_SPLIT or not all(o.name for o in outs):
            return f"{len(outs)} outputs (1..{MAX_SPLIT}, all used)"
        return None

    def configs(self, layer, precision, gpu):
        return [{"block": 128}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        x = layer.input_specs[0]
        shape = list(x.shape)
        axis = int(layer.attrs.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        isz = _ITEMSIZE[x.dtype]
        inner = math.prod(shape[axis + 1:]) * isz
        seg = [o.shape[axis] * inner for o in layer.output_specs]
        rows = math.prod(shape[:axis])
        word = next(w for w in (16, 8, 4, 2, 1) if all(b % w == 0 for b in seg))
        out: dict[str, bytes] = {}
        n_out = len(seg)
        fns = {}
        for w in sorted({word, 1}, reverse=True):
            name = f"wb_split_{w}_{n_out}"
            fns[w] = get_function(split_source(w, n_out).replace("wb_split(", f"{name}("), name, gpu.arch, binaries, out)
        grid = (int(max(1, min(rows, 65535))), n_out)
        lens = {w: [np.int32(b // w) for b in seg] for w in fns}
        blocks = {w: int(min(max(32, -(-max(seg) // w // 32) * 32), int(config.get("block", 128)))) for w in fns}

        def run(inputs, outputs, workspace, stream):
            ptrs = [inputs[0].data.ptr] + [o.data.ptr for o in outputs]
            w = next(w for w in fns if all(p % w == 0 for p in ptrs))
            fns[w](grid, (blocks[w],), (inputs[0], *outputs, *lens[w], np.int64(rows),
                                         np.int32(sum(seg) // w)), stream=stream)

        return BuiltKernel(run=run, binaries=out)


TACTICS = [GatherTactic(), SplitTactic()]
