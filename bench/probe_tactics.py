"""Per-tactic timings on the GPU: cuDNN conv layouts (NCHW vs channels-last buffers) on ResNet-50
shapes, cuBLASLt vs cuBLAS GEMMs on BERT shapes, and each tactic's host cost per launch.

    python3 bench/probe_tactics.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.core.numerics import random_array  # noqa: E402
from workbench.core.plan import Layer, TensorSpec  # noqa: E402
from workbench.kernels.cuda import cublas, cublaslt, cudnn_conv, cudnn_sdpa  # noqa: E402
from workbench.kernels.cuda.device import gpu_info  # noqa: E402
from workbench.kernels.cuda.events import time_ms  # noqa: E402


def layer(op, dom, ins, out, attrs, dt="float16"):
    return Layer(name=op, op=op, domain=dom, inputs=[n for n, _ in ins], outputs=["y"], attrs=attrs,
                 input_specs=[TensorSpec(n, dt, list(s)) for n, s in ins], output_specs=[TensorSpec("y", dt, list(out))])


def bench(t, lay, prec, feeds, weights, label):
    import cupy as cp

    gpu = gpu_info()
    why = t.supports(lay, prec, gpu)
    if why:
        print(f"{label:44s} {t.name:20s} unsupported: {why}")
        return
    dt = np.float16 if prec == "fp16" else np.float32
    dw = {k: cp.asarray(v) for k, v in weights.items()}
    ins = [cp.asarray(feeds[n]).astype(dt) if n in feeds else dw.get(n) for n in lay.inputs]
    y = cp.empty(lay.output_specs[0].shape, dt)
    s = cp.cuda.Stream(non_blocking=True)
    t0 = time.time()
    cfgs = t.configs(lay, prec, gpu)
    res = []
    for c in cfgs:
        tb = time.time()
        k = t.build(lay, prec, c, dw, gpu)
        bt = time.time() - tb
        ws = cp.empty(max(1, k.workspace_bytes), cp.uint8)
        ms = time_ms(lambda: k.run(ins, [y], ws, s), stream=s, warmup=3, iters=20)
        # host cost per launch: 200 launches without waiting
        s.synchronize()
        th = time.perf_counter()
        for _ in range(200):
            k.run(ins, [y], ws, s)
        host_us = (time.perf_counter() - th) / 200 * 1e6
        s.synchronize()
        # device time from a captured graph of 20 launches (events when the tactic cannot be captured)
        gms = ms
        if k.capturable:
            s.begin_capture()
            for _ in range(20):
                k.run(ins, [y], ws, s)
            g = s.end_capture()
            gms = time_ms(lambda: g.launch(s), stream=s, warmup=2, iters=10) / 20
        res.append((gms, ms, host_us, bt, dict(c, fast=k.info.get("fast_launch"))))
    res.sort(key=lambda r: r[0])
    print(f"{label:44s} {t.name:20s} {len(cfgs)} cfgs in {time.time() - t0:.1f}s; best graph {res[0][0]*1e3:.1f} us "
          f"(events {res[0][1]*1e3:.1f} us, host {res[0][2]:.1f} us/launch, build {res[0][3]*1e3:.0f} ms) "
          f"{ {k: v for k, v in res[0][4].items() if k != 'blob'} }; worst {res[-1][0]*1e3:.1f} us")


def main():
    rng = np.random.default_rng(0)
    convs = [] if "--gemm-only" in sys.argv else [(32, 64, 56, 64, 3, 1), (32, 256, 56, 64, 1, 1), (32, 128, 28, 128, 3, 1), (32, 512, 7, 2048, 1, 1),
             (1, 64, 56, 64, 3, 1), (1, 3, 224, 64, 7, 2)]
    for n, c, hw, m, k, st in convs:
        pad = k // 2
        o = (hw + 2 * pad - k) // st + 1
        for cl in (0, 1):
            lay = layer("FusedConv", "workbench", [("x", (n, c, hw, hw)), ("w", (m, c, k, k)), ("b", (m,))],
                        (n, m, o, o), {"pads": [pad] * 4, "strides": [st, st], "kernel_shape": [k, k],
                                       "activation": "Relu", "channels_last": cl,
                                       **({"in_layouts": ["nhwc", "", ""], "out_layouts": ["nhwc"]} if cl else {})})
            w = {"w": random_array("float32", (m, c, k, k), rng) * 0.05, "b": random_array("float32", (m,), rng)}
            label = f"conv n{n} c{c} {hw}x{hw} m{m} k{k} s{st} {'CL' if cl else 'NCHW'}"
            bench(cudnn_conv.CudnnConv(), lay, "fp16", {"x": random_array("float32", (n, c, hw, hw), rng)}, w, label)
    for m, kk, nn in [(128, 768, 768), (128, 768, 3072), (4096, 768, 3072), (4096, 3072, 768)]:
        lay = layer("FusedGemm", "workbench", [("a", (m, kk)), ("b", (kk, nn)), ("c", (nn,))], (m, nn),
                    {"activation": "GeluTanh"})
        w = {"b": random_array("float32", (kk, nn), rng) * 0.03, "c": random_array("float32", (nn,), rng)}
        for t in (cublaslt.CublasLtGemm(), cublas.CublasGemm()):
            bench(t, lay, "fp16", {"a": random_array("float32", (m, kk), rng)}, w, f"gemm+bias+gelu {m}x{kk}x{nn}")
    if "--gemm-only" in sys.argv:
        return
    for b in (1, 32):
        lay = layer("Attention", "workbench", [("q", (b, 12, 128, 64)), ("k", (b, 12, 128, 64)), ("v", (b, 12, 128, 64))],
                    (b, 12, 128, 64), {"scale": 0.125, "causal": 0})
        f = {n: random_array("float32", (b, 12, 128, 64), rng) for n in "qkv"}
        bench(cudnn_sdpa.CudnnSdpa(), lay, "fp16", f, {}, f"sdpa b{b} h12 s128 d64")


if __name__ == "__main__":
    main()
