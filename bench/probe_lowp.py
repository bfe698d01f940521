"""Where an int8 / fp8 GEMM layer's time goes, on the GEMM shapes of BERT-base (batch 32, sequence
128 by default): the fp16 cuBLASLt GEMM next to the quantize kernel alone, cuBLASLt's FP8 GEMM alone
(float16 out, with FAST_ACCUM off and on; e4m3 out with a D scale), its int8 GEMM alone (int32 out),
and the whole ``cublaslt_quant`` layers as the engine runs them. Device time per launch, from CUDA
graphs of 20 launches.

    python3 bench/probe_lowp.py [--m 4096] [--shapes 2304x768,768x768,3072x768,768x3072]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.core import quant  # noqa: E402
from workbench.core.plan import Layer, TensorSpec  # noqa: E402
from workbench.kernels.cuda import cublaslt, cublaslt_quant  # noqa: E402
from workbench.kernels.cuda.device import gpu_info, to_device_bits  # noqa: E402
from workbench.kernels.cuda.events import time_ms  # noqa: E402
from workbench.kernels.cuda.nvrtc import get_function  # noqa: E402

LAUNCHES = 20


def graph_us(fn, stream) -> float:
    """Device microseconds per call of ``fn`` from a captured graph of LAUNCHES calls."""
    fn()
    stream.synchronize()
    stream.begin_capture()
    for _ in range(LAUNCHES):
        fn()
    g = stream.end_capture()
    return time_ms(lambda: g.launch(stream), stream=stream, warmup=2, iters=10) / LAUNCHES * 1e3


def quant_layer(fmt: str, m: int, n: int, k: int, rng, act: str = ""):
    """A quantized FusedGemm (float16 activations, weight [N, K]) with its device constants."""
    x = rng.standard_normal((m, k)).astype(np.float16)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    wq, s_w = quant.quantize_weight(w, fmt, 0 if fmt == "int8" else None)
    a = {"q_format": fmt, "q_input_scale": float(quant.scale_from_amax(4.0, fmt)), "q_input_zero_point": 0,
         "q_weight_scale": s_w, "q_weight_axis": 0 if fmt == "int8" else -1, "q_weight_zero_point": 0,
         "q_weight_const": 1, "transB": 1, **({"activation": act} if act else {})}
    lay = Layer(name=f"gemm_{fmt}", op="FusedGemm", domain="workbench", inputs=["x", "w", "b"], outputs=["y"],
                attrs=a, input_specs=[TensorSpec("x", "float16", [m, k]), TensorSpec("w", quant.ELEMENT[fmt], [n, k]),
                                      TensorSpec("b", "float32", [n])],
                output_specs=[TensorSpec("y", "float16", [m, n])])
    lay.precision = fmt
    consts = {"w": wq, "b": rng.standard_normal(n).astype(np.float32)}
    return lay, consts, x


def best_layer_us(tactic, lay, consts, x, stream, prec) -> tuple[float, dict]:
    import cupy as cp

    gpu = gpu_info()
    why = tactic.supports(lay, prec, gpu)
    if why:
        return float("nan"), {"why": why}
    specs = {s.name: s for s in lay.input_specs}
    dw = {k: cp.asarray(to_device_bits(v, specs[k].dtype)) for k, v in consts.items()}
    xs = cp.asarray(x)
    y = cp.empty(lay.output_specs[0].shape, np.float16)
    best = (float("inf"), {})
    for cfg in tactic.configs(lay, prec, gpu):
        kern = tactic.build(lay, prec, cfg, dw, gpu)
        ws = cp.empty(max(1, kern.workspace_bytes), cp.uint8)
        us = graph_us(lambda: kern.run([xs, dw["w"], dw["b"]], [y], ws, stream), stream)
        if us < best[0]:
            best = (us, {k: v for k, v in cfg.items() if k != "record"})
    return best


def lt_alone_us(m, n, k, ab, d, stream, *, c=None, fast=False, d_scale=False, epilogue=None) -> tuple[float, int]:
    """cuBLASLt's GEMM alone (TN, beta 0): the best of the heuristic's algorithms, and how many."""
    import cupy as cp
    from nvmath import CudaDataType as DT
    from nvmath.bindings import cublas

    lt, handle = cublaslt_quant._lt()
    int8 = ab == DT.CUDA_R_8I
    compute = cublas.ComputeType.COMPUTE_32I if int8 else cublas.ComputeType.COMPUTE_32F
    sdt = np.int32 if int8 else np.float32
    desc = lt.matmul_desc_create(compute, DT.CUDA_R_32I if int8 else DT.CUDA_R_32F)
    put = cublaslt_quant._Gemm._set
    mset, mdt = lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype
    put(mset, mdt, desc, lt.MatmulDescAttribute.TRANSA, cublas.Operation.T)
    put(mset, mdt, desc, lt.MatmulDescAttribute.TRANSB, cublas.Operation.N)
    if fast:
        put(mset, mdt, desc, lt.MatmulDescAttribute.FAST_ACCUM, 1)
    keep = []
    if epilogue:  # with a float16 bias vector where the epilogue takes one
        put(mset, mdt, desc, lt.MatmulDescAttribute.EPILOGUE, getattr(lt.Epilogue, epilogue))
        if "BIAS" in epilogue:
            bias = cp.zeros(n, cp.float16)
            keep.append(bias)
            put(mset, mdt, desc, lt.MatmulDescAttribute.BIAS_DATA_TYPE, DT.CUDA_R_16F)
            put(mset, mdt, desc, lt.MatmulDescAttribute.BIAS_POINTER, bias.data.ptr)
    if d_scale:
        ds = cp.asarray(np.array([0.5], np.float32))
        keep.append(ds)
        put(mset, mdt, desc, lt.MatmulDescAttribute.D_SCALE_POINTER, ds.data.ptr)
    a_l = lt.matrix_layout_create(ab, k, n, k)
    b_l = lt.matrix_layout_create(ab, k, m, k)
    c_l = lt.matrix_layout_create(c if c is not None else d, n, m, n)
    d_l = lt.matrix_layout_create(d, n, m, n)
    pref = lt.matmul_preference_create()
    put(lt.matmul_preference_set_attribute, lt.get_matmul_preference_attribute_dtype, pref,
        lt.MatmulPreferenceAttribute.MAX_WORKSPACE_BYTES, cublaslt_quant._WS_LIMIT)
    heur = np.zeros(cublaslt_quant.MAX_ALGOS, dtype=lt.matmul_heuristic_result_dtype)
    count = np.zeros(1, np.int32)
    try:
        lt.matmul_algo_get_heuristic(handle, desc, a_l, b_l, c_l, d_l, pref, len(heur), heur.ctypes.data,
                                     count.ctypes.data)
    except Exception as e:  # noqa: BLE001
        return float("nan"), f"no algorithm: {type(e).__name__}"
    wa = cp.zeros(n * k, cp.uint8)
    xb = cp.zeros(m * k, cp.uint8)
    out = cp.zeros(m * n * 4, cp.uint8)
    cbuf = cp.zeros(m * n * 4, cp.uint8)  # C (beta 0) apart from D: cuBLASLt's in-place rule wants one type
    ws = cp.empty(cublaslt_quant._WS_LIMIT, cp.uint8)
    alpha, beta = np.ones(1, sdt), np.zeros(1, sdt)
    best = float("inf")
    for i in range(int(count[0])):
        rec = heur[i:i + 1]
        wsz = int(rec[0]["workspace_size"])
        us = graph_us(lambda: lt.matmul(handle, desc, alpha.ctypes.data, wa.data.ptr, a_l, xb.data.ptr, b_l,
                                        beta.ctypes.data, cbuf.data.ptr, c_l, out.data.ptr, d_l, rec.ctypes.data,
                                        ws.data.ptr, wsz, stream.ptr), stream)
        best = min(best, us)
    del keep
    return best, int(count[0])


def quantize_us(m, k, stream) -> float:
    import cupy as cp

    gpu = gpu_info()
    fn = get_function(cublaslt_quant._quantize_source("fp8", "float16", "wb_quant_fp8"), "wb_quant_fp8", gpu.arch,
                      None, {})
    x = cp.asarray(np.random.default_rng(0).standard_normal((m, k)).astype(np.float16))
    q = cp.empty(m * k // 4, cp.uint32)
    grid = max(1, min(-(-(m * k // 4) // 256), gpu.sm_count * 16))
    return graph_us(lambda: fn((grid,), (256,), (x, q, np.float32(0.01), np.int32(0), np.int64(m * k // 4)),
                               stream=stream), stream)


def main(argv=None):
    import cupy as cp
    from nvmath import CudaDataType as DT

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--shapes", default="2304x768,768x768,3072x768,768x3072", help="NxK, comma-separated")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    stream = cp.cuda.Stream(non_blocking=True)
    m = args.m
    cols = ["N x K", "fp16 layer", "quantize", "fp8 f16out", "fp8 fast", "fp8 +bias", "fp8 fast+bias",
            "fp8 gelu+bias", "fp8 e4m3out", "int8 i32out", "fp8 layer", "int8 layer", "fp8 best cfg"]
    print(f"M = {m}, microseconds per launch (graph of {LAUNCHES})")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    tot = np.zeros(len(cols) - 2)
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        lay16, c16, x16 = quant_layer("fp8", m, n, k, rng)
        lay16 = Layer(name="g16", op="FusedGemm", domain="workbench", inputs=["x", "w", "b"], outputs=["y"],
                      attrs={"transB": 1}, input_specs=[TensorSpec("x", "float16", [m, k]),
                                                        TensorSpec("w", "float16", [n, k]),
                                                        TensorSpec("b", "float32", [n])],
                      output_specs=[TensorSpec("y", "float16", [m, n])])
        c16 = {"w": (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float16), "b": c16["b"]}
        f16, _ = best_layer_us(cublaslt.CublasLtGemm(), lay16, c16, x16, stream, "fp16")
        qz = quantize_us(m, k, stream)
        e4, f16o, i8 = DT.CUDA_R_8F_E4M3, DT.CUDA_R_16F, DT.CUDA_R_8I
        g8, _ = lt_alone_us(m, n, k, e4, f16o, stream)
        g8f, _ = lt_alone_us(m, n, k, e4, f16o, stream, fast=True)
        g8b, _ = lt_alone_us(m, n, k, e4, f16o, stream, epilogue="BIAS")
        g8fb, _ = lt_alone_us(m, n, k, e4, f16o, stream, fast=True, epilogue="BIAS")
        g8g, _ = lt_alone_us(m, n, k, e4, f16o, stream, epilogue="GELU_BIAS")
        g8o, _ = lt_alone_us(m, n, k, e4, e4, stream, c=f16o, d_scale=True)
        gi, _ = lt_alone_us(m, n, k, i8, DT.CUDA_R_32I, stream)
        lay8, c8, x8 = quant_layer("fp8", m, n, k, rng)
        l8, cfg8 = best_layer_us(cublaslt_quant.CublasLtQuantGemm("fp8"), lay8, c8, x8, stream, "fp8")
        layi, ci, xi = quant_layer("int8", m, n, k, rng)
        li, _ = best_layer_us(cublaslt_quant.CublasLtQuantGemm("int8"), layi, ci, xi, stream, "int8")
        vals = [f16, qz, g8, g8f, g8b, g8fb, g8g, g8o, gi, l8, li]
        tot += np.nan_to_num(vals)
        print(f"| {n}x{k} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {cfg8} |")
    print("| sum | " + " | ".join(f"{v:.1f}" for v in tot) + " | |")


if __name__ == "__main__":
    main()
