"""Which low-precision convolution graphs cuDNN (through cudnn-frontend) plans on this GPU, and
what they cost, on ResNet-50's convolution shapes (batch 32 by default, NHWC): fp16 conv + bias +
ReLU (what ``cudnn.conv`` runs today) next to int8 conv (int32 compute) writing int32, int8 conv
with a float scale / bias / ReLU epilogue writing float16 or int8, and fp8 e4m3 conv writing
float16. For each graph: whether it validates and how many plans build, or cuDNN's reason; the
best plan's time per launch (device time of 20 launches between CUDA events, host launch cost
included).

    python3 bench/probe_conv_lowp.py [--n 32]
"""

from __future__ import annotations

import argparse

# (C, H, W, K, kernel, stride): the distinct conv shapes of ResNet-50's four stages
SHAPES = [(64, 56, 56, 64, 3, 1), (256, 56, 56, 64, 1, 1), (64, 56, 56, 256, 1, 1), (128, 28, 28, 128, 3, 1),
          (512, 28, 28, 128, 1, 1), (256, 14, 14, 256, 3, 1), (1024, 14, 14, 256, 1, 1), (512, 7, 7, 512, 3, 1)]
LAUNCHES = 20


def variants(cudnn):
    D = cudnn.data_type
    # name -> (io type of X / W, conv compute type, epilogue, output type)
    return {"fp16 +bias+relu": (D.HALF, D.FLOAT, True, D.HALF),
            "int8 -> int32": (D.INT8, D.INT32, False, D.INT32),
            "int8 +scale+bias+relu -> fp16": (D.INT8, D.INT32, True, D.HALF),
            "int8 +scale+bias+relu -> int8": (D.INT8, D.INT32, True, D.INT8),
            "fp8 +scale+bias+relu -> fp16": (D.FP8_E4M3, D.FLOAT, True, D.HALF)}


def build(cudnn, handle, n, shape, io, compute, epilogue, out):
    c, h, w, k, r, s = shape
    pad = r // 2
    gr = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT, compute_data_type=compute,
                       handle=handle)
    x = gr.tensor(name="X", dim=[n, c, h, w], stride=[c * h * w, 1, w * c, c], data_type=io)
    wt = gr.tensor(name="W", dim=[k, c, r, r], stride=[c * r * r, 1, r * c, c], data_type=io)
    y = gr.conv_fprop(image=x, weight=wt, padding=[pad, pad], stride=[s, s], dilation=[1, 1], compute_data_type=compute)
    t = {"X": x, "W": wt}
    if epilogue:
        y.set_data_type(cudnn.data_type.FLOAT if compute == cudnn.data_type.FLOAT else cudnn.data_type.INT32)
        if io != cudnn.data_type.HALF:
            t["S"] = gr.tensor(name="S", dim=[1, k, 1, 1], stride=[k, 1, k, k], data_type=cudnn.data_type.FLOAT)
            y = gr.mul(a=y, b=t["S"], compute_data_type=cudnn.data_type.FLOAT)
        t["B"] = gr.tensor(name="B", dim=[1, k, 1, 1], stride=[k, 1, k, k], data_type=cudnn.data_type.FLOAT)
        y = gr.bias(input=y, bias=t["B"])
        y = gr.relu(input=y)
    ho = (h + 2 * pad - r) // s + 1
    y.set_output(True).set_data_type(out).set_dim([n, k, ho, ho]).set_stride([k * ho * ho, 1, ho * k, k])
    t["Y"] = y
    gr.validate()
    gr.build_operation_graph()
    gr.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    gr.check_support()
    gr.build_plans(cudnn.build_plan_policy.ALL)
    return gr, t, (n, k, ho, ho)


def time_plan(torch, cudnn, handle, gr, t, n, shape, io, out, yshape) -> float:
    c, h, w, k, r, _ = shape
    tdt = {cudnn.data_type.HALF: torch.float16, cudnn.data_type.INT8: torch.int8,
           cudnn.data_type.FP8_E4M3: torch.float8_e4m3fn, cudnn.data_type.INT32: torch.int32}
    dev = "cuda"

    def rand(shape_, dt):
        v = torch.randn(shape_, device=dev)
        return (v * 20).clamp(-127, 127).to(dt) if dt == torch.int8 else v.to(dt)

    pack = {t["X"]: rand((n, h, w, c), tdt[io]), t["W"]: rand((k, r, r, c), tdt[io]),
            t["Y"]: torch.empty(yshape[0], yshape[2], yshape[3], yshape[1], dtype=tdt[out], device=dev)}
    for key in ("S", "B"):
        if key in t:
            pack[t[key]] = torch.rand(k, device=dev) * 0.01
    best = float("inf")
    for i in range(gr.get_execution_plan_count()):
        try:
            ws = torch.empty(gr.get_workspace_size_plan_at_index(i), dtype=torch.uint8, device=dev)
            gr.execute_plan_at_index(pack, ws, i, handle=handle)
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(LAUNCHES):
                gr.execute_plan_at_index(pack, ws, i, handle=handle)
            b.record()
            b.synchronize()
            best = min(best, a.elapsed_time(b) / LAUNCHES * 1e3)
        except Exception:
            continue
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args(argv)
    import cudnn
    import torch

    handle = cudnn.create_handle()
    kinds = variants(cudnn)
    print(f"cuDNN {cudnn.backend_version()} on {torch.cuda.get_device_name()}, batch {args.n}, NHWC; us per launch")
    print("| C x H x W -> K, kernel / stride | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    reasons = {}
    for shape in SHAPES:
        cells = []
        for name, (io, compute, epi, out) in kinds.items():
            try:
                gr, t, yshape = build(cudnn, handle, args.n, shape, io, compute, epi, out)
                us = time_plan(torch, cudnn, handle, gr, t, args.n, shape, io, out, yshape)
                cells.append(f"{us:.1f} ({gr.get_execution_plan_count()} plans)" if us < float("inf") else "no plan ran")
            except Exception as e:
                msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                reasons.setdefault(name, msg)
                cells.append("refused")
        c, h, w, k, r, s = shape
        print(f"| {c}x{h}x{w} -> {k}, {r}x{r} / {s} | " + " | ".join(cells) + " |", flush=True)
    for name, msg in reasons.items():
        print(f"- {name}: {msg}")


if __name__ == "__main__":
    main()
