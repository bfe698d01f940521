"""Batch buckets on the GPU: BERT-base (seq 128) built once for batch 1..32 vs static engines and
torch.compile(dynamic=True).

One process: export BERT-base (random seeded weights, dynamic batch, as ``bench.py`` does), build
one engine with a shape range (``BuilderConfig(profiles=[{input_ids: ((1, 128), (8, 128), (32,
128))}])``: vLLM-like buckets 1, 2, 4, 8, 16, 24, 32, each a static plan with its own tuned tactics
and CUDA graphs), then for every batch in ``--batches`` time

* the bucketed engine (the batch is padded up to its bucket, outputs cut back),
* a static engine built for the bucket size that batch lands in, run at that size,
* torch.compile(dynamic=True) at the batch itself (compiled once, warmed up at every size),

with CUDA events (median of ``--runs``, CuPy / torch tensors already on the device), and print a
markdown table (``--results FILE`` appends it there too). The relative error column compares the
bucketed engine's rows with torch fp32.

    python3 bench/buckets.py --batches 1,3,8,17,32 --precision fp16
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench import SEQ, Wrap, export, models, time_cupy, time_torch  # noqa: E402
from workbench.core.numerics import rel_err  # noqa: E402

HEADER = ("| batch | bucket | bucketed ms | static (bucket size) ms | bucketed / static | torch.compile dynamic ms | "
          "bucketed / compile | rel err vs torch fp32 |\n|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,3,8,17,32")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile peer")
    ap.add_argument("--timing-cache", default=None, help="timing cache shared by every build (faster reruns)")
    ap.add_argument("--results", default=None, help="also append the table to this markdown file")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]

    import cupy as cp
    import torch

    import workbench as wb

    make, inputs = models()["bert"]
    torch.manual_seed(0)
    model = make().eval().cuda()
    tmp = Path(tempfile.mkdtemp(prefix="wb_buckets_"))
    onnx_path = tmp / "bert.onnx"
    export("bert", model, inputs(1), onnx_path)
    net = wb.load_onnx(str(onnx_path))
    name = net.inputs[0].name

    t0 = time.time()
    profile = {name: ((1, SEQ), (8, SEQ), (args.max_batch, SEQ))}
    bucketed = wb.build(net, wb.BuilderConfig(device="gpu", precision=args.precision, profiles=[profile],
                                              timing_cache=args.timing_cache, progress=True))
    build_s = time.time() - t0
    sizes = [b.batch for b in bucketed.plan.buckets]
    print(f"bucketed build {build_s:.1f} s for buckets {sorted(sizes)}:", flush=True)
    for b in bucketed.build_stats["buckets"]:
        print(f"  bucket {b['shapes'][name]}: {b['build_ms'] / 1e3:.1f} s", flush=True)
    ctx = bucketed.create_context()

    statics = {}
    rows = []
    for n in batches:
        torch.manual_seed(1)
        feeds = inputs(n)
        dfeeds = {k: cp.asarray(v.cpu().numpy()) for k, v in feeds.items()}
        bucket = bucketed.plan.buckets[ctx.select(dfeeds)].batch
        row = {"batch": n, "bucket": bucket}
        with torch.inference_mode():
            ref = Wrap(model, list(feeds))(*feeds.values()).float().cpu().numpy()
        out = ctx.run(dfeeds)
        row["err"] = rel_err(cp.asnumpy(next(iter(out.values()))).astype(np.float32), ref)
        row["bucketed"] = time_cupy(lambda f=dfeeds: ctx.run(f), args.runs)
        if bucket not in statics:
            t1 = time.time()
            eng = wb.build(net, wb.BuilderConfig(device="gpu", precision=args.precision, shapes={name: (bucket, SEQ)},
                                                 timing_cache=args.timing_cache))
            statics[bucket] = eng.create_context()
            print(f"static engine for batch {bucket} built in {time.time() - t1:.1f} s", flush=True)
        sctx = statics[bucket]
        padded = {k: cp.concatenate([v, cp.repeat(v[-1:], bucket - n, axis=0)]) for k, v in dfeeds.items()}
        sctx.run(padded)
        row["static"] = time_cupy(lambda c=sctx, f=padded: c.run(f), args.runs)
        rows.append(row)
        print(fmt_row(row), flush=True)
        del feeds

    if not args.skip_compile:
        import copy

        m = copy.deepcopy(model)
        if args.precision == "fp16":
            m = m.half()
        compiled = torch.compile(Wrap(m, [name]), dynamic=True)
        with torch.inference_mode():
            for row in rows:
                torch.manual_seed(1)
                targs = list(inputs(row["batch"]).values())
                try:
                    compiled(*targs)
                    row["compile"] = time_torch(lambda a=targs: compiled(*a), args.runs)
                except Exception as exc:  # noqa: BLE001 - the table stands without the peer
                    print(f"torch.compile(dynamic=True) failed at batch {row['batch']}: {exc}", flush=True)

    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    title = (f"BERT-base seq {SEQ} {args.precision}, one engine for batch 1..{args.max_batch} "
             f"(buckets {sorted(sizes)}, built in {build_s:.0f} s) on {gpu}, median of {args.runs} runs")
    table = "\n".join([HEADER] + [fmt_row(r) for r in rows])
    print(f"\n{title}\n\n{table}")
    if args.results:
        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(args.results, "a") as f:
            f.write(f"\n## {date}: bench/buckets.py\n\n{title}\n\n{table}\n")
    return 0


def fmt(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def fmt_row(r: dict) -> str:
    b, s, c = r.get("bucketed"), r.get("static"), r.get("compile")
    return (f"| {r['batch']} | {r['bucket']} | {fmt(b)} | {fmt(s)} | {fmt(b / s if b and s else None, 2)} | "
            f"{fmt(c)} | {fmt(b / c if b and c else None, 2)} | {fmt(r.get('err'), 5)} |")


if __name__ == "__main__":
    sys.exit(main())
