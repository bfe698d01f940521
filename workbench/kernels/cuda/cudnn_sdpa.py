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
"""

from __future__ import annotations

import numpy as np

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
        gr.validate()
        gr.build_operation_graph()
        gr.create_execution_plans([getattr(cudnn.heur_mode, mode)])
        gr.check_support()
        res = (gr, t, buildable_plans(gr, MAX_PLANS + 1))
        if not res[2]:
            res = "cuDNN sdpa: none of the offered plans builds"
    except Exception as e:
        res = f"cuDNN sdpa: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    _GRAPHS[key] = res
    return res


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


TACTICS = [CudnnSdpa()]
