"""The fused ``Attention`` op through cudnn-frontend ``sdpa`` (flash attention, inference).

O = softmax(scale * Q K^T + mask [+ causal]) V per (batch, head); Q [B, H, Sq, D], K/V
[B, Hkv, Skv, D] (GQA when Hkv < H: cuDNN shares each K/V head among H/Hkv query heads).

* Layouts (FUSED_OPS.md): Q, K, V each "bhsd" | "bshd" | "bsd" ([B, S, H*D], split by
  ``num_heads`` / ``kv_heads``), K also "bhds" (a stored K^T); ``out_layout`` "bhsd" | "bshd" |
  "bsd". cuDNN reads strides, so the optimizer's absorbed transposes cost no copy, and packed
  Q/K/V (``qkv_columns``: column ranges of the merged projection's output) are read in place.
* causal: aligned to the end (query i sees keys j <= i + Skv - Sq): cuDNN's top-left mask when
  Sq == Skv, its bottom-right one otherwise. ``causal_fill`` is treated as -inf.
* Rows whose every key is masked: masks are clamped at -30000 (finite in fp16), so such a row
  gets a softmax of its raw scores; the reference gives NaN (zeros with ``nan_to_zero``) or a
  uniform row. Rows with at least one visible key agree.
* mask_kind "additive": the mask tensor (broadcastable to [B, H, Sq, Skv]) is cuDNN's bias input,
  broadcast dims given stride 0. "boolean" (True = attend): converted at run into an additive
  bias (0 / -30000) in the workspace by one elementwise kernel.
* fp16/bf16 only (cuDNN's SDPA has no fp32 path): fp32/tf32 are declined with that reason.
Configs: the plans cuDNN's heuristic (mode A) offers, by name; engine load rebuilds that plan.

``cudnn.sdpa_fp8``: an fp8 attention layer (``core.quant.attention_fp8``) through cudnn-frontend's
``sdpa_fp8`` (Hopper or newer): Q, K and V are read as e4m3 codes -- the producer's codes of the
layer's own scales, or float16 / float32 quantized first by one quantize launch per tensor (packed
Q/K/V: once) into the workspace; descale Q / K / V are those scales, the softmax's probabilities are
stored as e4m3 with scale ``1 / P_SCALE`` (descale ``P_SCALE``), and O is written as e4m3 with scale
``1 / q_result_scale`` (Hopper's fp8 SDPA writes fp8 only): straight into the output where the
readers take codes (``q_output_scale``, equal to ``q_result_scale``), else into the workspace and
dequantized into the float16 / float32 output by one launch. No mask (no bias input); causal only
over square scores (top-left); head dims multiples of 16 up to 256; 16-byte aligned operands. The
amax outputs the graph must have go to a device buffer of the kernel, unread.
"""

from __future__ import annotations

import numpy as np

from ...core import quant
from ...core.plan import Layer
from ...ops.fused import FUSED_OPS
from .common import IO_DTYPE, as_device, has_input, np_dtype, ptr, require_cupy, static_shape, stream_ctx, stream_ptr
from .cudnn_common import Launcher, buildable_plans, cudnn_dtype, handle, plan_index, require_cudnn
from .layer_io import attention_operands, mask_view
from .tactic import BuiltKernel, GpuInfo, TacticBase

MAX_PLANS = 2
_GRAPHS: dict = {}
NEG = -30000.0  # a masked score: finite in fp16 (exp underflows to 0), so no NaN for empty rows
SCALE = FUSED_OPS["Attention"].attrs["scale"]  # the op's default


def _problem(layer: Layer, precision: str):
    ops = attention_operands(layer)
    if isinstance(ops, str):
        return ops
    if precision not in ("fp16", "bf16"):
        return f"cuDNN SDPA runs fp16/bf16 only, not {precision}"
    (q, qs), (k, ks), (v, vs), (o, os_) = (ops["views"][n] for n in "qkvo")
    heads, kv = ops["heads"], ops["kv"]
    if q[1] != heads or k[1] != kv or v[1] != kv:
        return f"head counts: Q {q}, K {k}, V {v} vs num_heads {heads}, kv_heads {kv}"
    if q[1] % k[1]:
        return f"{q[1]} query heads are not a multiple of {k[1]} key/value heads"
    if q[3] % 8 or v[3] % 8 or max(q[3], v[3]) > 256:
        return f"head dims {q[3]}/{v[3]}: cuDNN wants multiples of 8 up to 256"
    at = layer.attrs
    kind = str(at.get("mask_kind", "") or "")
    mask, mst = None, None
    if has_input(layer, 3):
        if kind not in ("additive", "boolean"):
            kind = "boolean" if layer.aligned_input_specs()[3].dtype == "bool" else "additive"
        view = mask_view(static_shape(layer, 3), (q[0], q[1], q[2], k[2]))
        if isinstance(view, str):
            return view
        mask, mst = view
    # rows whose every key is masked: cuDNN (finite -30000 bias) gives a softmax over the raw scores
    # where the reference gives NaN (nan_to_zero: zeros) or a uniform row; see the module doc
    off = ops["offsets"]
    if any(off[n] * 2 % 16 for n in "qkv"):
        return f"packed Q/K/V at element offsets {[off[n] for n in 'qkv']}: cuDNN wants 16-byte aligned operands"
    return dict(q=tuple(q), k=tuple(k), v=tuple(v), o=tuple(o), st={"q": qs, "k": ks, "v": vs, "o": os_, "m": mst},
                off=tuple(off[n] for n in "qkv"),
                causal=bool(int(at.get("causal", 0))), kind=kind if mask else "", mask=mask,
                scale=float(at.get("scale", SCALE)), precision=precision)


def _graph(p: dict, mode: str = "A"):
    key = (tuple(sorted((k, str(v)) for k, v in p.items())), mode)
    if key in _GRAPHS:
        return _GRAPHS[key]
    import cudnn  # noqa: PLC0415

    io = cudnn_dtype(IO_DTYPE[p["precision"]])
    sq, skv = p["q"][2], p["k"][2]
    try:
        gr = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                           compute_data_type=cudnn.data_type.FLOAT, handle=handle())
        t = {n: gr.tensor(name=n.upper(), dim=list(p[n]), stride=list(p["st"][n]), data_type=io)
             for n in ("q", "k", "v")}
        kw = {}
        if p["mask"] is not None:
            ms = p["mask"]
            # batch/head broadcast is native (dim 1); a broadcast query dim is stride 0 on a full dim
            dims = [ms[0], ms[1], sq, skv]
            t["mask"] = gr.tensor(name="BIAS", dim=dims, stride=list(p["st"]["m"]), data_type=io)
            kw["bias"] = t["mask"]
        if p["causal"]:  # FUSED_OPS.md: aligned to the end (query i sees keys j <= i + Skv - Sq)
            kw["use_causal_mask" if sq == skv else "use_causal_mask_bottom_right"] = True
        o, _ = gr.sdpa(name="sdpa", q=t["q"], k=t["k"], v=t["v"], is_inference=True, attn_scale=p["scale"], **kw)
        o.set_output(True).set_dim(list(p["o"])).set_stride(list(p["st"]["o"])).set_data_type(io)
        t["o"] = o
        res = _planned(gr, t, [getattr(cudnn.heur_mode, mode)], "cuDNN sdpa")
    except Exception as e:
        res = _failed("cuDNN sdpa", e)
    _GRAPHS[key] = res
    return res


def _planned(gr, t: dict, modes: list, what: str):
    """(graph, tensors, buildable plans) of a defined graph, or why none builds."""
    gr.validate()
    gr.build_operation_graph()
    gr.create_execution_plans(modes)
    gr.check_support()
    plans = buildable_plans(gr, MAX_PLANS + 1)
    return (gr, t, plans) if plans else f"{what}: none of the offered plans builds"


def _failed(what: str, e: Exception) -> str:
    return f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


class CudnnSdpa(TacticBase):
    name = "cudnn.sdpa"
    supports_cost = 1  # validates a cuDNN graph

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        why = _problem(layer, precision)
        if isinstance(why, str):
            return why
        why = require_cupy() or require_cudnn()
        if why:
            return why
        want = IO_DTYPE[precision]
        for s in list(layer.input_specs[:3]) + list(layer.output_specs[:1]):
            if s.dtype not in (None, want):
                return f"tensor {s.name!r} is {s.dtype}, precision {precision} wants {want}"
        res = _graph(_problem(layer, precision))
        return res if isinstance(res, str) else None

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        res = _graph(_problem(layer, precision))
        return [] if isinstance(res, str) else [{"plan": n, "index": i} for i, n in res[2][:MAX_PLANS]]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cudnn  # noqa: PLC0415

        p = _problem(layer, precision)
        res = _graph(p)
        if isinstance(res, str):
            raise RuntimeError(res)
        gr, t, plans = res
        index = plan_index(plans, config, layer)
        ws = int(gr.get_workspace_size_plan_at_index(index))
        ws = -(-ws // 256) * 256
        io = IO_DTYPE[precision]
        mask_const = weights.get(layer.inputs[3]) if p["mask"] is not None else None
        conv = None
        mask_bytes = 0
        if p["mask"] is not None:
            import cupy as cp  # noqa: PLC0415

            ms = p["mask"]
            if mask_const is not None:  # a constant mask: converted once, here
                m = cp.asarray(mask_const)
                if p["kind"] == "boolean":
                    m = cp.where(m.astype(bool), 0.0, NEG)
                m = cp.maximum(m.astype(cp.float32), NEG)
                mask_const = as_device(m.astype(cp.float32), io).reshape(ms)
            else:
                in_dt = layer.aligned_input_specs()[3].dtype
                if p["kind"] == "boolean" or in_dt not in (None, io):
                    # convert the runtime mask into the workspace (after cuDNN's own region)
                    mask_bytes = int(ms[0] * ms[1] * ms[2] * ms[3]) * 2
                    # clamped: a float32 finfo.min fill must not become -inf (NaN rows) in half
                    expr = ("y = m ? (T)0 : (T)(%r)" % NEG if p["kind"] == "boolean"
                            else "y = (T)fmaxf((float)m, %r)" % NEG)
                    conv = cp.ElementwiseKernel("M m", "T y", expr, "wb_sdpa_mask")
        out_dt = np_dtype(io)
        off_bytes = [o * np.dtype(out_dt).itemsize for o in p["off"]]  # packed Q/K/V: where each operand starts
        h = handle()
        order = ["q", "k", "v"] + (["mask"] if "mask" in t else []) + ["o"]
        launch = Launcher(gr, index, {n: t[n] for n in order})

        def run(inputs, outputs, workspace, stream):
            cudnn.set_stream(h, stream_ptr(stream))
            ptrs = [ptr(inputs[i]) + off_bytes[i] for i in range(3)]
            if "mask" in t:
                if mask_const is not None:
                    ptrs.append(ptr(mask_const))
                elif conv is not None:
                    import cupy as cp  # noqa: PLC0415

                    mem = cp.cuda.UnownedMemory(ptr(workspace) + ws, mask_bytes, workspace)
                    dst = cp.ndarray(p["mask"], out_dt, cp.cuda.MemoryPointer(mem, 0))
                    src = inputs[3].reshape(p["mask"])
                    with stream_ctx(stream):
                        conv(src if p["kind"] != "boolean" else src.astype(bool, copy=False), dst)
                    ptrs.append(dst.data.ptr)
                else:
                    ptrs.append(ptr(inputs[3]))
            ptrs.append(ptr(outputs[0]))
            launch(ptrs, ptr(workspace), h)

        return BuiltKernel(run=run, workspace_bytes=ws + mask_bytes, info={"fast_launch": launch.raw is not None},
                           keepalive=(gr, mask_const, launch))


_CODE = quant.ELEMENT["fp8"]
_SCALES = ("DQ", "DK", "DV", "DS", "SS", "SO")


def _fp8_problem(layer: Layer):
    """The fp8 SDPA problem of ``layer`` (``_problem``'s, plus how each operand is read and the
    output written), or why cuDNN's fp8 SDPA cannot run it."""
    from ..reference.quantized import check_attention  # noqa: PLC0415

    why = check_attention(layer, "fp8")
    if why:
        return why
    p = _problem(layer, "fp16")
    if isinstance(p, str):
        return p
    if p["mask"] is not None:
        return "cuDNN's fp8 SDPA takes no mask (no bias input)"
    if p["causal"] and p["q"][2] != p["k"][2]:
        return "cuDNN's fp8 SDPA on Hopper is causal only over as many queries as keys"
    if any(d % 16 or d > 256 for d in (p["q"][3], p["v"][3])):
        return f"head dims {p['q'][3]}/{p['v'][3]}: cuDNN's fp8 SDPA wants multiples of 16 up to 256"
    if any(o % 16 for o in p["off"]):
        return f"packed Q/K/V at byte offsets {list(p['off'])}: cuDNN wants 16-byte aligned operands"
    a = layer.attrs
    specs = layer.aligned_input_specs()
    reads, scale_of = [], {}
    for pos, key in enumerate(("q_input_scale", "q_key_scale", "q_value_scale")):
        spec, scale = specs[pos], np.float32(a[key])
        if spec.dtype == _CODE:
            if not quant.is_coded(spec) or np.float32(spec.scale) != scale:
                return f"{'QKV'[pos]} codes of scale {spec.scale}, not the layer's {float(scale)}"
            reads.append("codes")
        elif spec.dtype in ("float16", "float32"):
            if scale_of.setdefault(layer.inputs[pos], scale) != scale:
                return "packed Q/K/V with different scales"
            n = int(np.prod(static_shape(layer, pos)))
            if n % 4:
                return f"{'QKV'[pos]} of {n} elements: the quantize launch takes multiples of 4"
            reads.append(spec.dtype)
        else:
            return f"{'QKV'[pos]} is {spec.dtype}, not codes, float16 or float32"
    y, out_scale = layer.output_specs[0], a.get("q_output_scale")
    if y.dtype == _CODE:
        if out_scale is None or np.float32(out_scale) != np.float32(a["q_result_scale"]) \
                or not quant.is_coded(y) or np.float32(y.scale) != np.float32(out_scale):
            return f"an output of codes of scale {y.scale}, not the layer's result scale {a['q_result_scale']}"
        out = "codes"
    elif out_scale is not None:
        return f"q_output_scale on a {y.dtype} output"
    elif y.dtype in ("float16", "float32"):
        out = y.dtype
    else:
        return f"output {y.dtype}: cuDNN's fp8 SDPA writes e4m3, dequantized into float16 / float32 only"
    return {**p, "precision": "fp8", "reads": tuple(reads), "out": out}


def _fp8_graph(p: dict):
    key = ("fp8", tuple(sorted((k, str(v)) for k, v in p.items() if k not in ("reads", "out"))))
    if key in _GRAPHS:
        return _GRAPHS[key]
    import cudnn  # noqa: PLC0415

    D = cudnn.data_type
    one = [1, 1, 1, 1]
    try:
        gr = cudnn.pygraph(io_data_type=D.FP8_E4M3, intermediate_data_type=D.FLOAT, compute_data_type=D.FLOAT,
                           handle=handle())
        t = {n: gr.tensor(name=n.upper(), dim=list(p[n]), stride=list(p["st"][n]), data_type=D.FP8_E4M3)
             for n in ("q", "k", "v")}
        t.update({n: gr.tensor(name=n, dim=one, stride=one, data_type=D.FLOAT) for n in _SCALES})
        kw = dict(q=t["q"], k=t["k"], v=t["v"], descale_q=t["DQ"], descale_k=t["DK"], descale_v=t["DV"],
                  descale_s=t["DS"], scale_s=t["SS"], scale_o=t["SO"], attn_scale=float(p["scale"]),
                  use_causal_mask=bool(p["causal"]), name="sdpa_fp8")
        try:
            o, _, amax_s, amax_o = gr.sdpa_fp8(generate_stats=False, **kw)
        except TypeError:  # a frontend before generate_stats
            o, _, amax_s, amax_o = gr.sdpa_fp8(is_inference=True, **kw)
        o.set_output(True).set_dim(list(p["o"])).set_stride(list(p["st"]["o"])).set_data_type(D.FP8_E4M3)
        t["o"] = o
        for n, x in (("AS", amax_s), ("AO", amax_o)):
            x.set_output(True).set_dim(one).set_stride(one).set_data_type(D.FLOAT)
            t[n] = x
        res = _planned(gr, t, [cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK], "cuDNN sdpa_fp8")
    except Exception as e:
        res = _failed("cuDNN sdpa_fp8", e)
    _GRAPHS[key] = res
    return res


def dequantize_source(out_dt: str, name: str) -> str:
    """e4m3 codes -> float16 / float32 values ``code * scale`` (``core.quant.dequantize``: the
    code's exact value times the scale, rounded once in float32), one element per thread."""
    from . import cuda_prelude as P  # noqa: PLC0415

    return (P.PRELUDE + f'extern "C" __global__ void {name}(const unsigned char* __restrict__ q, '
            f"{P.storage(out_dt)}* __restrict__ y, float scale, long long n) {{\n"
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; "
            "i += (long long)gridDim.x * blockDim.x) {\n"
            "    unsigned short pair = q[i];\n    unsigned int h2;\n"
            '    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(pair));\n'
            "    float v = __fmul_rn(wb_h2f((unsigned short)(h2 & 0xffff)), scale);\n"
            f"    y[i] = {P.store(out_dt, 'v')};\n  }}\n}}\n")


class CudnnSdpaFp8(TacticBase):
    """``cudnn.sdpa_fp8``: see the module doc."""

    name = "cudnn.sdpa_fp8"
    formats = ("fp8",)
    writes_codes = ("output",)
    supports_cost = 1  # validates a cuDNN graph

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if precision != "fp8":
            return "runs fp8 attention only"
        if gpu is not None and gpu.sm < 90:
            return f"cuDNN's fp8 SDPA needs sm_90 or newer ({gpu.arch})"
        why = require_cupy() or require_cudnn()
        if why:
            return why
        p = _fp8_problem(layer)
        if isinstance(p, str):
            return p
        res = _fp8_graph(p)
        return res if isinstance(res, str) else None

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        res = _fp8_graph(_fp8_problem(layer))
        return [] if isinstance(res, str) else [{"plan": n, "index": i} for i, n in res[2][:MAX_PLANS]]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cudnn  # noqa: PLC0415
        import cupy as cp  # noqa: PLC0415

        from .cublaslt_quant import QuantizeLaunch  # noqa: PLC0415
        from .nvrtc import get_function  # noqa: PLC0415

        p = _fp8_problem(layer)
        if isinstance(p, str):
            raise ValueError(p)
        res = _fp8_graph(p)
        if isinstance(res, str):
            raise RuntimeError(res)
        gr, t, plans = res
        index = plan_index(plans, config, layer)
        a = layer.attrs
        f32 = np.float32
        result = f32(a["q_result_scale"])
        vals = np.zeros((8, 4), np.float32)  # one 16-byte slot each (cuDNN's default tensor alignment)
        vals[:6, 0] = [a["q_input_scale"], a["q_key_scale"], a["q_value_scale"], quant.P_SCALE,
                       f32(1.0) / f32(quant.P_SCALE), f32(1.0) / result]
        dev = cp.asarray(vals)
        fixed = [dev.data.ptr + 16 * i for i in range(8)]  # the six scales, then the two amax outputs
        out: dict[str, bytes] = {}
        align, offset = 256, 0
        launches = []  # (input position, quantize launch, workspace offset): once per tensor
        where: list[int | None] = []  # per Q / K / V: the workspace offset of its codes, None: read in place
        placed: dict[str, int] = {}
        for pos, read in enumerate(p["reads"]):
            name = layer.inputs[pos]
            if read != "codes" and name not in placed:
                n = int(np.prod(static_shape(layer, pos)))
                q = QuantizeLaunch("fp8", read, n, a[("q_input_scale", "q_key_scale", "q_value_scale")[pos]], 0, gpu,
                                   binaries, out, name=f"wb_quant_fp8_{read}")
                launches.append((pos, q, offset))
                placed[name] = offset
                offset += -(-q.bytes // align) * align
            where.append(None if read == "codes" else placed[name])
        dequant = None
        if p["out"] != "codes":
            n_out = int(np.prod(static_shape(layer, 0, out=True)))
            fname = f"wb_dequant_fp8_{p['out']}"
            dequant = (get_function(dequantize_source(p["out"], fname), fname, gpu.arch, binaries, out), n_out,
                       offset, max(1, min(-(-n_out // 256), gpu.sm_count * 16)))
            offset += -(-n_out // align) * align
        ws = -(-int(gr.get_workspace_size_plan_at_index(index)) // align) * align
        h = handle()
        order = ["q", "k", "v", *_SCALES, "o", "AS", "AO"]
        launch = Launcher(gr, index, {n: t[n] for n in order})

        def run(inputs, outputs, workspace, stream):
            base = -(-ptr(workspace) // align) * align
            for pos, q, off in launches:
                q(inputs[pos], base + off, stream)
            srcs = [ptr(inputs[i]) if where[i] is None else base + where[i] for i in range(3)]
            o_ptr = ptr(outputs[0]) if dequant is None else base + dequant[2]
            cudnn.set_stream(h, stream_ptr(stream))
            launch([srcs[i] + p["off"][i] for i in range(3)] + fixed[:6] + [o_ptr] + fixed[6:], base + offset, h)
            if dequant is not None:
                fn, n, off, grid = dequant
                fn((grid,), (256,), (np.uint64(base + off), outputs[0], result, np.int64(n)), stream=stream)

        return BuiltKernel(run=run, workspace_bytes=align + offset + ws, binaries=out,
                           info={"fast_launch": launch.raw is not None, "quantize_launches": len(launches),
                                 "dequantize": dequant is not None},
                           keepalive=(gr, dev, launch))


TACTICS = [CudnnSdpa(), CudnnSdpaFp8()]
