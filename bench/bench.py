"""workbench vs PyTorch on the GPU: ResNet-50, BERT-base, GPT-2 small, ViT-B/16 (see README.md).

One process: export each model (random seeded weights, no downloads) to ONNX, build workbench
engines, time workbench / torch eager / torch.compile on the same inputs with CUDA events (median
of --runs), print relative errors against torch fp32, ratios and the roofline floor, and append a
markdown table to bench/RESULTS.md.

    python3 bench/bench.py --models resnet50,bert --batches 1,32 --precisions fp16
    python3 bench/bench.py --build-cache-demo
    python3 bench/bench.py --models resnet50 --batches 32 --precisions fp8 --layers 15   # + the slowest layers
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEQ = 128

from workbench.core.numerics import rel_err  # noqa: E402


CLASSIFIERS = ("resnet50", "vit")  # outputs are class logits: the rows give top-1 agreement with torch fp32


def models():
    """name -> (make fp32 eval model on cuda, make inputs(batch) as a dict of torch tensors)."""
    import torch

    def resnet():
        import torchvision

        return torchvision.models.resnet50(weights=None)

    def bert():
        from transformers import BertConfig, BertModel

        return BertModel(BertConfig(), add_pooling_layer=False)

    def gpt2():
        from transformers import GPT2Config, GPT2Model

        return GPT2Model(GPT2Config(n_positions=1024, use_cache=False))

    def vit():  # with the 1000-class head: its top-1 is compared like ResNet-50's
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(ViTConfig(num_labels=1000))

    def image(b):
        return {"pixel_values": torch.randn(b, 3, 224, 224, device="cuda")}

    def ids(b):
        return {"input_ids": torch.randint(0, 30000, (b, SEQ), device="cuda")}

    def ids_mask(b):
        # GPT-2 traced without a mask computes one with aten::diff, which the TorchScript exporter lacks
        return {**ids(b), "attention_mask": torch.ones(b, SEQ, dtype=torch.int64, device="cuda")}

    return {"resnet50": (resnet, image), "bert": (bert, ids), "gpt2": (gpt2, ids_mask), "vit": (vit, image)}


class Wrap:
    """Positional forward over the named inputs returning one tensor (HF models return objects)."""

    def __new__(cls, model, names):
        import torch

        class W(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, *args):
                hf = hasattr(self.m, "config")  # transformers models take keyword inputs
                out = self.m(**dict(zip(names, args))) if hf else self.m(*args)
                return out if isinstance(out, torch.Tensor) else out[0]

        return W().eval().cuda()


def time_torch(fn, runs):
    import torch

    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(runs):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    return statistics.median(ts)


def time_cupy(fn, runs):
    import cupy as cp

    for _ in range(10):
        fn()
    cp.cuda.Device().synchronize()
    ts = []
    s = cp.cuda.get_current_stream()
    for _ in range(runs):
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        e0.record(s)
        fn()
        e1.record(s)
        e1.synchronize()
        ts.append(cp.cuda.get_elapsed_time(e0, e1))
    return statistics.median(ts)


def peak_tflops():
    """Measured fp16 tensor-core peak: a big cuBLAS GEMM through CuPy, random data."""
    import cupy as cp

    n = 8192
    a = cp.random.standard_normal((n, n), dtype=cp.float32).astype(cp.float16)
    b = cp.random.standard_normal((n, n), dtype=cp.float32).astype(cp.float16)
    c = cp.empty((n, n), cp.float16)
    ms = time_cupy(lambda: cp.matmul(a, b, out=c), 20)
    return 2 * n**3 / ms / 1e9


def export(name, model, feeds, path):
    import torch

    names = list(feeds)
    w = Wrap(model, names)
    dyn = {n: {0: "batch"} for n in names}
    dyn["output"] = {0: "batch"}
    with torch.no_grad():
        try:  # the TorchScript exporter first (what the test models use), then the dynamo one
            torch.onnx.export(w, tuple(feeds.values()), str(path), input_names=names, output_names=["output"],
                              dynamic_axes=dyn, opset_version=17, dynamo=False)
        except Exception as e:
            print(f"[{name}] legacy ONNX export failed ({type(e).__name__}: {e}); trying dynamo=True", flush=True)
            batch = torch.export.Dim("batch", max=256)
            torch.onnx.export(w, tuple(feeds.values()), str(path), input_names=names, output_names=["output"],
                              dynamic_shapes={"args": tuple({0: batch} for _ in names)},
                              dynamo=True, external_data=False)


def flops_of(w, args):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        w(*args)
    return fc.get_total_flops()


def time_torch_peers(name, model, names, feeds, half, args):
    """torch eager and torch.compile (reduce-overhead; max-autotune if asked) ms of ``model`` at
    fp16 (``half``) or fp32 with TF32 allowed, on ``feeds``."""
    import copy

    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    m = copy.deepcopy(model)
    if half:
        m = m.half()
    if name == "resnet50":
        m = m.to(memory_format=torch.channels_last)
    tw = Wrap(m, names)
    targs = [v.half() if (half and v.is_floating_point()) else v for v in feeds.values()]
    if name == "resnet50":
        targs = [targs[0].contiguous(memory_format=torch.channels_last)]
    out = {}
    with torch.inference_mode():
        out["eager"] = time_torch(lambda: tw(*targs), args.runs)
        modes = ([] if args.skip_compile else ["reduce-overhead"]) + (["max-autotune"] if args.max_autotune else [])
        for mode in modes:
            try:
                f = torch.compile(tw, mode=mode)
                f(*targs)
                out[mode] = time_torch(lambda: f(*targs), args.runs)
            except Exception as e:
                print(f"[{name} b{len(targs[0])} {'fp16' if half else 'fp32'}] torch.compile {mode} failed: {e}",
                      flush=True)
            torch._dynamo.reset()
    del m, tw
    torch.cuda.empty_cache()
    return out


def run_model(name, args, peak, rows, tmp):
    import cupy as cp
    import torch

    import workbench as wb
    from workbench.builder.fallback import fallback_text
    from workbench.runtime.describe import end_to_end_line

    make, inputs = models()[name]
    torch.manual_seed(0)
    model = make().eval().cuda()
    onnx_path = Path(tmp) / f"{name}.onnx"
    if not onnx_path.exists():  # a --workdir keeps the exports of earlier runs (same seed, same weights)
        t0 = time.time()
        export(name, model, inputs(1), onnx_path)
        print(f"[{name}] exported to ONNX in {time.time() - t0:.0f}s", flush=True)
    for b in args.batches:
        torch.manual_seed(1)
        feeds = inputs(b)
        names = list(feeds)
        w32 = Wrap(model, names)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with torch.inference_mode():
            ref = w32(*feeds.values()).float().cpu().numpy()
            flops = flops_of(w32, list(feeds.values()))
        floor = flops / (peak * 1e9)
        torch_ms: dict[bool, dict] = {}  # torch at fp32 / fp16, timed once per batch and shared by its rows
        for prec in args.precisions:
            row = {"model": name, "batch": b, "precision": prec, "floor": floor}
            half = prec in ("fp16", "int8", "fp8", "best")  # reduced-precision rows are set against torch at fp16
            if half not in torch_ms:
                torch_ms[half] = time_torch_peers(name, model, names, feeds, half, args)
            row.update(torch_ms[half])
            try:
                t0 = time.time()
                shapes = {n: tuple(v.shape) for n, v in feeds.items()}
                cal = None
                if prec in ("int8", "fp8", "best"):  # ranges from 4 random batches like the feeds (ids kept)
                    cal = wb.Calibration([{n: (torch.randn_like(v.float()) if v.is_floating_point() else v).cpu().numpy()
                                           .astype(v.cpu().numpy().dtype) for n, v in feeds.items()} for _ in range(4)])
                engine = wb.build(wb.load_onnx(str(onnx_path)),
                                  wb.BuilderConfig(device="gpu", precision=prec, shapes=shapes,
                                                   timing_cache=args.timing_cache, calibration=cal,
                                                   accuracy_budget=args.budget if prec == "best" else None,
                                                   strict_precision=args.strict_precision,
                                                   progress=prec == "best"))  # (the search's steps, to the log)
                if cal:
                    row["quantized"] = {p: n for p in ("int8", "fp8", "fp16", "fp32")
                                        if (n := sum(1 for l in engine.layers if l.precision == p and l.op != "Cast"))}
                    # tensors written as codes for their quantized readers (no quantize pass there)
                    row["quantized"]["codes"] = sum(1 for l in engine.layers for k in ("q_output_scale", "q_copy_scale")
                                                    if l.attrs.get(k) is not None)
                row["build_s"] = time.time() - t0
                fb = engine.reports.get("precision_fallback")
                if fb:  # int8 / fp8 allowed: which layers measured faster at fp16 (builder/fallback.py)
                    print(f"[{name} b{b} {prec}] {fallback_text(fb)}", flush=True)
                mp = engine.reports.get("mixed_precision")
                if mp:  # what the budgeted search chose, and by which latencies
                    err = mp["error"]
                    print(f"[{name} b{b} best] budget {mp['budget']:g}: search error {err['search']:.3g}, held-out "
                          f"{err['held_out']:.3g}; {mp['below_fp32']}/{mp['layers']} layers below fp32 "
                          f"({mp['strategy']}); {mp['latency_ms']:.4g} ms vs fp32 {mp['fp32_latency_ms']:.4g} ms "
                          f"({mp['latency_source']}); {len(mp['candidates'])} candidates; {mp.get('builds')} builds "
                          f"in {mp['seconds']['builds']:.0f} s, sensitivities {mp['seconds']['sensitivities']:.0f} s, "
                          f"search {mp['seconds']['total']:.0f} s", flush=True)
                    e2e = end_to_end_line(mp)
                    if e2e:
                        print(f"[{name} b{b} best] {e2e}", flush=True)
                    for note in mp["notes"]:
                        print(f"[{name} b{b} best] note: {note}", flush=True)
                ctx = engine.create_context()
                dfeeds = {n: cp.asarray(v.cpu().numpy()) for n, v in feeds.items()}
                out = ctx.run(dfeeds)
                got = cp.asnumpy(next(iter(out.values()))).astype(np.float32)
                row["err"] = rel_err(got, ref)
                if name in CLASSIFIERS:  # top-1 agreement with torch fp32 over the batch
                    row["top1"] = float(np.mean(got.reshape(b, -1).argmax(-1) == ref.reshape(b, -1).argmax(-1)))
                row["workbench"] = time_cupy(lambda: ctx.run(dfeeds), args.runs)
                if hasattr(ctx, "execute"):  # IO binding: inputs written once, execute() only replays
                    for n, v in dfeeds.items():
                        ctx.input_buffer(n)[...] = v
                    row["bound"] = time_cupy(lambda: ctx.execute(), args.runs)
                row["top"], row["graph_ms"], row["segments"], slowest = profile_top(ctx, dfeeds, layers=args.layers)
                for line in slowest:  # printed at once: a run cut short keeps them
                    print(f"  [{name} b{b} {prec}] {line}", flush=True)
                del ctx, engine
            except Exception as e:
                traceback.print_exc(limit=4)
                row["wb_error"] = f"{type(e).__name__}: {str(e)[:120]}"
            rows.append(row)
            print(fmt_row(row), flush=True)
            if row.get("quantized") is not None:
                print(f"[{name} b{b} {prec}] layers per precision: {row['quantized']}", flush=True)
        del feeds


def profile_top(ctx, feeds, n=6, layers=0):
    """(top layers of the per-layer CUDA-event profile, end-to-end graph replay ms, segments, the
    ``layers`` slowest single layers, each with its tactic config and shapes)."""
    try:
        df = ctx.profile(feeds, runs=20)
    except Exception as e:  # the benchmark row stands without it
        return [f"profile failed: {type(e).__name__}: {e}"], None, "", []
    segs = ctx._segments or []
    seg = f"{sum(k == 'graph' for k, _ in segs)} graph / {sum(k == 'eager' for k, _ in segs)} eager segments"
    top = []
    by_type = df.groupby(["type", "tactic"])["median_ms"].agg(["sum", "count"]).sort_values("sum", ascending=False)
    for (typ, tac), r in by_type.head(n).iterrows():
        top.append(f"{typ} x{int(r['count'])} via {tac}: {r['sum']:.3f} ms")
    by_name, slowest = {l.name: l for l in ctx.engine.layers}, []
    consts = ctx.engine.plan.constants
    for _, r in df.sort_values("median_ms", ascending=False).head(layers).iterrows():
        lay = by_name.get(r["layer"])
        if lay is None:
            continue
        acts = [s for name, s in zip(lay.inputs, lay.aligned_input_specs()) if name and name not in consts and s]
        io = lambda specs: ",".join(f"{s.dtype}{list(s.shape or [])}" for s in specs)  # noqa: E731
        cfg = {k: v for k, v in (lay.tactic_config or {}).items() if k != "record"}
        gbs = r["bytes"] / r["median_ms"] / 1e6 if r["median_ms"] else 0.0
        slowest.append(f"{r['median_ms'] * 1e3:7.1f} us  {lay.op} {lay.precision} via {lay.tactic} {cfg} "
                       f"in {io(acts)} out {io(lay.output_specs)} ({gbs:.0f} GB/s) {lay.name}")
    top.append(f"sum of layers {df.attrs['sum_of_layers_ms']:.3f} ms vs graph replay {df.attrs['end_to_end_ms']:.3f} ms; {seg}")
    return top, df.attrs["end_to_end_ms"], seg, slowest


def fmt(v, nd=3):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def fmt_row(r):
    wbms, ro = r.get("workbench"), r.get("reduce-overhead")
    ratio_e = wbms / r["eager"] if wbms and r.get("eager") else None
    ratio_c = wbms / ro if wbms and ro else None
    return (f"| {r['model']} | {r['batch']} | {r['precision']} | {fmt(wbms)} | {fmt(r.get('bound'))} | "
            f"{fmt(r.get('graph_ms'))} | "
            f"{fmt(r.get('eager'))} | {fmt(ro)} | "
            f"{fmt(r.get('max-autotune'))} | {fmt(ratio_e, 2)} | {fmt(ratio_c, 2)} | {fmt(r['floor'], 4)} | "
            f"{fmt(r.get('err'), 5) if 'err' in r else r.get('wb_error', '-')} | {fmt(r.get('top1'), 3)} | "
            f"{fmt(r.get('build_s'), 1)} |")


HEADER = ("| model | batch | precision | workbench ms | wb bound ms | wb graph replay ms | torch eager ms | "
          "torch.compile reduce-overhead ms | max-autotune ms | wb/eager | wb/compile | roofline floor ms | "
          "rel err vs torch fp32 | top-1 agree | build s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def build_cache_demo(tmp):
    """ResNet-50 build time with an empty and then a warm timing cache."""
    import torch

    import workbench as wb

    make, inputs = models()["resnet50"]
    torch.manual_seed(0)
    path = Path(tmp) / "resnet50.onnx"
    if not path.exists():
        export("resnet50", make().eval().cuda(), inputs(1), path)
    cache = Path(tmp) / "timing.cache"
    cache.unlink(missing_ok=True)
    from workbench.builder.targets.gpu import clear_process_caches

    times = []
    for label in ("empty", "warm"):
        clear_process_caches()  # what a new process would start with: only the timing-cache file helps
        t0 = time.time()
        eng = wb.build(wb.load_onnx(str(path)), wb.BuilderConfig(device="gpu", precision="fp16",
                                                                 shapes={"pixel_values": (1, 3, 224, 224)},
                                                                 timing_cache=str(cache)))
        times.append(time.time() - t0)
        st = eng.build_stats
        passes = st.get("passes") or {}
        pass_ms = sum(v for v in passes.values() if isinstance(v, (int, float))) if isinstance(passes, dict) else 0
        print(f"ResNet-50 fp16 b1 build with {label} timing cache: {times[-1]:.1f} s (tactics "
              f"{st.get('tactics_ms', 0) / 1e3:.1f} s, passes {pass_ms / 1e3:.1f} s, nvrtc compiles "
              f"{st.get('nvrtc_compiles')}, cache {st.get('timing_cache')})", flush=True)
    return f"ResNet-50 fp16 build: empty timing cache {times[0]:.1f} s, warm {times[1]:.1f} s " \
           f"({times[0] / max(times[1], 1e-9):.1f}x)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,bert,gpt2,vit")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--precisions", default="fp16,tf32")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--strict-precision", action="store_true",
                    help="int8 / fp8 rows: every layer that can take the precision keeps it (default: fp16 where "
                         "the autotuner measured it faster)")
    ap.add_argument("--budget", type=float, default=1e-2, help="accuracy budget of the 'best' rows (vs fp32)")
    ap.add_argument("--max-autotune", action="store_true", help="also time torch.compile max-autotune (slow)")
    ap.add_argument("--build-cache-demo", action="store_true")
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile peer (quick workbench-only runs)")
    ap.add_argument("--timing-cache", default=None)
    ap.add_argument("--layers", type=int, default=0, metavar="N",
                    help="also list each row's N slowest layers (tactic config, shapes, GB/s)")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--workdir", default=None, help="where the ONNX files go (default: a temp dir)")
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.precisions = args.precisions.split(",")
    import cupy as cp

    tmp = args.workdir or tempfile.mkdtemp(prefix="wb_bench_")
    os.makedirs(tmp, exist_ok=True)
    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    peak = peak_tflops()
    print(f"GPU {gpu}; measured fp16 GEMM peak {peak:.0f} TFLOP/s", flush=True)
    lines = []
    if args.build_cache_demo:
        lines.append(build_cache_demo(tmp))
    rows = []
    if args.models:
        print(HEADER, flush=True)
        for name in args.models.split(","):
            try:
                run_model(name, args, peak, rows, tmp)
            except Exception:
                traceback.print_exc()
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    with open(args.results, "a") as f:
        f.write(f"\n## {date} on {gpu} (fp16 GEMM peak measured {peak:.0f} TFLOP/s)\n\n")
        for line in lines:
            f.write(f"- {line}\n")
        if rows:
            f.write(HEADER + "\n" + "\n".join(fmt_row(r) for r in rows) + "\n")
            f.write("\nPer-layer profile (CUDA events per layer, summed by op and tactic; top entries):\n\n")
            for r in rows:
                if r.get("top"):
                    f.write(f"- {r['model']} b{r['batch']} {r['precision']}: " + "; ".join(r["top"]) + "\n")
    print("\n".join([HEADER] + [fmt_row(r) for r in rows] + lines))
    for r in rows:
        for t in r.get("top") or []:
            print(f"  {r['model']} b{r['batch']} {r['precision']}: {t}")


if __name__ == "__main__":
    main()
