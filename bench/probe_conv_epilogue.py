"""What each part of a fused convolution's epilogue costs in cuDNN, at fp16 and fp8 e4m3, on
ResNet-50's convolution shapes (channels-last, batch 32 by default), and how far the plan cuDNN's
heuristics rank first is from the fastest plan it offers.

The variants are the graphs ``cudnn.conv`` (fp16) and ``cudnn.conv_fp8`` build, taken apart: the
per-channel scale, bias, ReLU, a residual (float16 or e4m3 codes with a scale), and an e4m3 output
(multiplied by 1 / scale, with or without the clamp to +-448 before cuDNN's conversion, or as a copy
next to a float16 output). Each plan of the heuristic modes given (``--modes``: A then B by default;
at most ``--plans``) is timed as a CUDA-graph replay of ``LAUNCHES`` launches (no host launch cost), median of 5
replays.

    python3 bench/probe_conv_epilogue.py [--n 32] [--plans 8] [--shapes 0,1,2,6] [--variants a,b] [--detail]

The ``gemm ...`` variants time a 1x1 stride-1 convolution as what it is on channels-last
buffers, an [N*H*W, C] x [C, K] GEMM: cuBLASLt's FP8 GEMM (``cublaslt_quant._Gemm``, FAST_ACCUM
on, each algorithm of its heuristic) with its RELU_BIAS epilogue, a float16 residual as C (beta
1), writing float16 or e4m3 codes; ``gemm f16 addmm`` is torch's float16 addmm (cuBLAS, bias only)
for scale. Each GEMM's output is checked against float32 on the same codes (``--detail`` prints
the relative error), so a wrong epilogue order shows.

Prints one table of microseconds per launch (the fastest plan; in brackets the plan ranked first,
where slower), then the fastest plan's engine per cell.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

# (C, H, W, K, kernel, stride): the distinct conv shapes of ResNet-50's four stages
SHAPES = [(64, 56, 56, 64, 3, 1), (256, 56, 56, 64, 1, 1), (64, 56, 56, 256, 1, 1), (128, 28, 28, 128, 3, 1),
          (512, 28, 28, 128, 1, 1), (256, 14, 14, 256, 3, 1), (1024, 14, 14, 256, 1, 1), (512, 7, 7, 512, 3, 1),
          (128, 56, 56, 128, 3, 2), (64, 56, 56, 64, 1, 1), (128, 28, 28, 512, 1, 1), (256, 14, 14, 1024, 1, 1),
          (512, 7, 7, 2048, 1, 1), (2048, 7, 7, 512, 1, 1)]
LAUNCHES = 20
FP8_MAX = 448.0
# name -> (io, residual: None / "f16" / "f8", output: "f16" / "f8" / "f8 noclamp" / "f16+f8")
VARIANTS = {
    "fp16 b+relu": ("f16", None, "f16"),
    "fp16 b+res+relu": ("f16", "f16", "f16"),
    "fp8 ->f16": ("f8", None, "f16"),
    "fp8 ->f8": ("f8", None, "f8"),
    "fp8 ->f8 noclamp": ("f8", None, "f8 noclamp"),
    "fp8 ->f16+f8": ("f8", None, "f16+f8"),
    "fp8 res16 ->f16": ("f8", "f16", "f16"),
    "fp8 res8 ->f16": ("f8", "f8", "f16"),
    "fp8 res16 ->f16+f8": ("f8", "f16", "f16+f8"),
}
# name -> (residual, output) of the 1x1 convolution as a cuBLASLt FP8 GEMM; "addmm": torch float16
GEMM_VARIANTS = {
    "gemm fp8 ->f16": (False, "f16"),
    "gemm fp8 ->f8": (False, "f8"),
    "gemm fp8 res16 ->f16": (True, "f16"),
    "gemm fp8 res16 ->f8": (True, "f8"),
    "gemm f16 addmm": (False, "addmm"),
}


def nhwc(dims):
    n, c, h, w = dims
    return [c * h * w, 1, w * c, c]


def build(cudnn, handle, n, shape, variant, max_plans, modes=("A", "B")):
    """(graph, tensors, output dims, [(plan index, name)]) of one variant."""
    D = cudnn.data_type
    io_s, res, out = VARIANTS[variant]
    io = D.HALF if io_s == "f16" else D.FP8_E4M3
    c, h, w, k, r, s = shape
    pad = r // 2
    ho = (h + 2 * pad - r) // s + 1
    yd = [n, k, ho, ho]
    one = [1, 1, 1, 1]
    gr = cudnn.pygraph(io_data_type=io, intermediate_data_type=D.FLOAT, compute_data_type=D.FLOAT, handle=handle)
    t = {"X": gr.tensor(name="X", dim=[n, c, h, w], stride=nhwc([n, c, h, w]), data_type=io),
         "W": gr.tensor(name="W", dim=[k, c, r, r], stride=nhwc([k, c, r, r]), data_type=io)}
    y = gr.conv_fprop(image=t["X"], weight=t["W"], padding=[pad, pad], stride=[s, s], dilation=[1, 1],
                      compute_data_type=D.FLOAT)
    if io_s == "f8":
        y.set_data_type(D.FLOAT)
        t["S"] = gr.tensor(name="S", dim=[1, k, 1, 1], stride=[k, 1, k, k], data_type=D.FLOAT)
        y = gr.mul(a=y, b=t["S"], compute_data_type=D.FLOAT)
    t["B"] = gr.tensor(name="B", dim=[1, k, 1, 1], stride=[k, 1, k, k], data_type=io if io_s == "f16" else D.FLOAT)
    y = gr.add(a=y, b=t["B"], compute_data_type=D.FLOAT)
    if res:
        t["Z"] = gr.tensor(name="Z", dim=yd, stride=nhwc(yd), data_type=D.HALF if res == "f16" else D.FP8_E4M3)
        z = t["Z"]
        if res == "f8":
            t["SZ"] = gr.tensor(name="SZ", dim=one, stride=one, data_type=D.FLOAT)
            z = gr.mul(a=z, b=t["SZ"], compute_data_type=D.FLOAT)
        y = gr.add(a=y, b=z, compute_data_type=D.FLOAT)
    y = gr.relu(input=y)
    codes = None
    if out != "f16":
        t["SY"] = gr.tensor(name="SY", dim=one, stride=one, data_type=D.FLOAT)
        codes = gr.mul(a=y, b=t["SY"], compute_data_type=D.FLOAT)
        if out != "f8 noclamp":
            codes = gr.relu(input=codes, lower_clip=-FP8_MAX, upper_clip=FP8_MAX)
        if out != "f16+f8":
            y, codes = codes, None
    y.set_output(True).set_dim(yd).set_stride(nhwc(yd)).set_data_type(D.HALF if out in ("f16", "f16+f8")
                                                                      else D.FP8_E4M3)
    t["Y"] = y
    if codes is not None:
        codes.set_output(True).set_dim(yd).set_stride(nhwc(yd)).set_data_type(D.FP8_E4M3)
        t["YC"] = codes
    gr.validate()
    gr.build_operation_graph()
    gr.create_execution_plans([getattr(cudnn.heur_mode, m) for m in modes])
    gr.check_support()
    plans = []
    for i in range(gr.get_execution_plan_count()):
        if len(plans) >= max_plans:
            break
        try:
            gr.build_plan_at_index(i)
            plans.append((i, gr.get_plan_name_at_index(i)))
        except Exception:  # noqa: BLE001 - a plan that does not build is skipped
            continue
    return gr, t, yd, plans


def replay_us(torch, launch, stream) -> float:
    """Median us per launch of ``launch()`` as a CUDA-graph replay of LAUNCHES launches."""
    with torch.cuda.stream(stream):
        launch()
        stream.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=stream):
            for _ in range(LAUNCHES):
                launch()
        g.replay()
        stream.synchronize()
        out = []
        for _ in range(5):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            g.replay()
            b.record(stream)
            b.synchronize()
            out.append(a.elapsed_time(b) / LAUNCHES * 1e3)
    return statistics.median(out)


def time_gemm(torch, n, shape, variant, stream, max_algos) -> tuple[list, float]:
    """([(us, algorithm name)] per algorithm, relative error of the first) of a 1x1 convolution as
    a GEMM (``GEMM_VARIANTS``)."""
    c, h, w, k, r, s = shape
    if (r, s) != (1, 1):
        raise ValueError("a GEMM stands for 1x1 stride-1 convolutions only")
    m = n * h * w
    res, out = GEMM_VARIANTS[variant]
    dev = "cuda"
    x = torch.randn(m, c, device=dev)
    wt = torch.randn(k, c, device=dev) / c ** 0.5
    bias = (torch.randn(k, device=dev) * 0.1).half()
    if out == "addmm":
        x16, w16 = x.half(), wt.half().t()
        y = torch.empty(m, k, device=dev, dtype=torch.float16)
        return [(replay_us(torch, lambda: torch.addmm(bias, x16, w16, out=y), stream), "cuBLAS")], 0.0
    from workbench.kernels.cuda import cublaslt_quant as Q

    xq, wq = x.to(torch.float8_e4m3fn), wt.mul(16).to(torch.float8_e4m3fn)
    cres = torch.randn(m, k, device=dev).half()
    coded = out == "f8"
    d = torch.empty(m, k, device=dev, dtype=torch.float8_e4m3fn if coded else torch.float16)
    gm = Q._Gemm("fp8", m, k, c, direct="RELU_BIAS", coded=coded, fast=True, residual=res)
    gm.alpha = np.array([1 / 16], np.float32)
    gm.set_bias(bias.data_ptr())
    d_scale = 0.5
    if coded:
        gm.d_scale.fill(d_scale)
    ws = torch.empty(32 << 20, dtype=torch.uint8, device=dev)
    lt, hd = gm.lt, gm.handle
    cptr = cres.data_ptr() if res else d.data_ptr()
    times, err = [], float("nan")
    for i in range(min(max_algos, len(gm.records))):
        algo = gm.records.ctypes.data + i * gm.records.itemsize
        wsz = int(gm.records[i]["workspace_size"])

        def launch(algo=algo, wsz=wsz):
            lt.matmul(hd, gm.desc, gm.alpha.ctypes.data, wq.data_ptr(), gm.a_l, xq.data_ptr(), gm.b_l,
                      gm.beta.ctypes.data, cptr, gm.c_l, d.data_ptr(), gm.d_l, algo, ws.data_ptr() if wsz else 0,
                      wsz, stream.cuda_stream)
        times.append((replay_us(torch, launch, stream), f"algo #{i}"))
        if i == 0:
            want = torch.relu(xq.float() @ wq.float().t() / 16 + (cres.float() if res else 0) + bias.float())
            got = d.float() / d_scale if coded else d.float()
            err = float((got - want).norm() / want.norm())
    return times, err


def time_plan(torch, cudnn, handle, gr, t, index, stream) -> float:
    """Median us per launch of plan ``index`` as a CUDA-graph replay of LAUNCHES launches."""
    dev = "cuda"
    pack = {}
    for key, tens in t.items():
        dims = list(tens.get_dim())
        dt = {cudnn.data_type.HALF: torch.float16, cudnn.data_type.FLOAT: torch.float32,
              cudnn.data_type.FP8_E4M3: torch.float8_e4m3fn}[tens.get_data_type()]
        v = torch.randn(dims, device=dev) * (0.01 if key in ("S", "SZ", "SY", "B") else 1.0)
        pack[tens] = v.to(dt).contiguous(memory_format=torch.channels_last) if len(dims) == 4 and dims[1] > 1 \
            else v.to(dt)
    ws = torch.empty(max(1, gr.get_workspace_size_plan_at_index(index)), dtype=torch.uint8, device=dev)

    def launch():
        cudnn.set_stream(handle, stream.cuda_stream)
        gr.execute_plan_at_index(pack, ws, index, handle=handle)
    return replay_us(torch, launch, stream)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--plans", type=int, default=8, help="plans timed per graph (heuristic order)")
    ap.add_argument("--shapes", default="0,1,2,6", help="indices into SHAPES")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(list(VARIANTS) + list(GEMM_VARIANTS)))
    ap.add_argument("--modes", default="A,B", help="cuDNN heuristic modes whose plans are timed, in order")
    ap.add_argument("--detail", action="store_true", help="also print every plan's time, in heuristic order")
    args = ap.parse_args(argv)
    import cudnn
    import torch

    handle = cudnn.create_handle()
    stream = torch.cuda.Stream()
    names = [v for v in args.variants.split(",") if v]
    print(f"cuDNN {cudnn.backend_version()} on {torch.cuda.get_device_name()}, batch {args.n}, channels-last; "
          f"us per launch, CUDA-graph replay: fastest plan [plan ranked first, where slower] (plans timed)")
    print("| C x H x W -> K, kernel / stride | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    reasons, engines = {}, []
    for si in [int(i) for i in args.shapes.split(",")]:
        shape = SHAPES[si]
        cells, eng = [], []
        for name in names:
            try:
                if name in GEMM_VARIANTS:
                    if shape[4:] != (1, 1):
                        cells.append("-")
                        eng.append("-")
                        continue
                    times, err = time_gemm(torch, args.n, shape, name, stream, args.plans)
                    if args.detail:
                        print(f"  {shape} {name}: rel err {err:.2e}; " + ", ".join(
                            f"#{r} {n} {us:.1f}" for r, (us, n) in enumerate(times)), flush=True)
                    best = min(times)
                    cells.append(f"{best[0]:.1f}" + (f" [{times[0][0]:.1f}]" if times[0][0] > best[0] * 1.02 else "")
                                 + f" ({len(times)})")
                    eng.append(best[1])
                    continue
                gr, t, _, plans = build(cudnn, handle, args.n, shape, name, args.plans, args.modes.split(","))
                times = []
                for i, pname in plans:
                    try:
                        times.append((time_plan(torch, cudnn, handle, gr, t, i, stream), pname))
                    except Exception as e:  # noqa: BLE001
                        reasons.setdefault(f"{name} (run)", str(e).strip().splitlines()[0][:160])
                if args.detail:  # printed at once: a probe cut short keeps what it measured
                    print(f"  {shape} {name}: " + ", ".join(f"#{r} {n} {us:.1f}" for r, (us, n) in enumerate(times)),
                          flush=True)
                if not times:
                    cells.append("no plan ran")
                    eng.append("-")
                    continue
                best = min(times)
                first = times[0][0]
                cells.append(f"{best[0]:.1f}" + (f" [{first:.1f}]" if first > best[0] * 1.02 else "")
                             + f" ({len(times)})")
                eng.append(best[1].split("_k")[0])
            except Exception as e:  # noqa: BLE001 - cuDNN's reason is the result
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                reasons.setdefault(name, msg)
                cells.append("refused")
                eng.append("-")
        c, h, w, k, r, s = shape
        label = f"{c}x{h}x{w} -> {k}, {r}x{r} / {s}"
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        engines.append((label, eng))
    print("\nfastest plan's engine:")
    for label, eng in engines:
        print(f"- {label}: " + ", ".join(f"{n}={e}" for n, e in zip(names, eng)))
    for name, msg in reasons.items():
        print(f"- {name}: {msg}")


if __name__ == "__main__":
    main()
