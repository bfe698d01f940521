"""workbench vs onnxruntime on the CPU: latency per model at 1 and 2 threads, in one process.

Models: (a) onnx's light models (the architectures shipped inside the onnx package, whose weights
are made at load by ConstantOfShape: here replaced by seeded random initializers so both runtimes
see real weights) and (b) the small exporter models of tests/models (legacy export of each variant;
``--all-exporter`` adds every export). Both runtimes get the same inputs (the light models: a
seeded normal image; the exporter models: their saved inputs); fp32.

Per model and thread count: workbench builds with ``BuilderConfig(device="cpu", threads=T)`` and
runs with ``create_context(threads=T)``; onnxruntime runs with ``intra_op_num_threads=T``,
``inter_op_num_threads=1`` and every graph optimization. Timing is interleaved: ``--rounds`` rounds,
each a median of ``--runs`` calls of workbench then of onnxruntime; a runtime's time is the minimum
of its round medians (other work on a shared machine only adds time); "noise" is the largest round
median over the smallest, per runtime. Also printed: the relative error of workbench's outputs
against onnxruntime's and the geometric mean of the ratios per model set and thread count.

``python bench/cpu_bench.py [--threads 1,2] [--rounds 5] [--runs 10] [--models NAME,...]
[--append bench/RESULTS.md]``
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import onnx
import onnxruntime as ort
from onnx import numpy_helper

import workbench as wb
from tests.support.exporter_models import load_io, manifest, model_path
from workbench.core.numerics import random_array, rel_err
from workbench.demo import embedded_model_path

LIGHT = ["light_bvlc_alexnet", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_resnet50",
         "light_shufflenet", "light_squeezenet", "light_vgg19", "light_zfnet512"]


def light_model(name: str, seed: int = 0) -> tuple[bytes, dict[str, np.ndarray]]:
    """The light model with its ConstantOfShape weights and weight-like graph inputs made seeded
    random initializers (scaled by 1/sqrt(fan-in) so activations stay finite through deep nets;
    1-D parameters in [0.5, 1.5]), and a random input image."""
    model = onnx.load(embedded_model_path(name))
    g = model.graph
    rng = np.random.default_rng(seed)
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def weight(shape):
        if len(shape) <= 1:  # biases and batch-norm parameters: positive, so variances are valid
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)

    keep_nodes, new_inits = [], []
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in inits[node.input[0]])
            new_inits.append(numpy_helper.from_array(weight(shape), node.output[0]))
        else:
            keep_nodes.append(node)
    feeds, keep_inputs = {}, []
    for inp in g.input:
        if inp.name in inits:
            continue
        shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
        if len(shape) == 4 and shape[0] == 1:  # the image
            feeds[inp.name] = random_array("float32", shape, rng)
            keep_inputs.append(inp)
        else:  # biases and other parameters fed as inputs by the light models
            new_inits.append(numpy_helper.from_array(weight(shape), inp.name))
    used = {i for n in keep_nodes for i in n.input}
    del g.node[:]
    g.node.extend(keep_nodes)
    del g.input[:]
    g.input.extend(keep_inputs)
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    return model.SerializeToString(), feeds


def exporter_models(every: bool) -> list[str]:
    names, seen = [], set()
    for m in manifest():
        key = (m["family"], m.get("variant"), m.get("attn_implementation"))
        if every or (m["exporter"] == "legacy" and key not in seen and "sdpa" not in m["name"]):
            names.append(m["name"])
            seen.add(key)
    return names


def median_ms(fn, runs: int) -> float:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def bench_one(label: str, model: bytes, feeds: dict, threads: int, rounds: int, runs: int) -> dict:
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    t0 = time.perf_counter()
    engine = wb.build(wb.load_onnx(model), wb.BuilderConfig(device="cpu", threads=threads, shapes=shapes))
    build_s = time.perf_counter() - t0
    ctx = engine.create_context(threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = sess.run(names, feeds)
    got = ctx.run(feeds)
    err = max(rel_err(got[n], w) for n, w in zip(names, want))
    for _ in range(2):  # warm-up
        ctx.run(feeds)
        sess.run(names, feeds)
    wb_t, ort_t = [], []
    for _ in range(rounds):
        wb_t.append(median_ms(lambda: ctx.run(feeds), runs))
        ort_t.append(median_ms(lambda: sess.run(names, feeds), runs))
    return {"model": label, "threads": threads, "wb": min(wb_t), "ort": min(ort_t), "ratio": min(wb_t) / min(ort_t),
            "wb_noise": max(wb_t) / min(wb_t), "ort_noise": max(ort_t) / min(ort_t), "err": err, "build_s": build_s}


def geomean(xs):
    return float(np.exp(np.mean(np.log(xs)))) if xs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", default="", help="comma-separated subset (light_* or exporter names)")
    ap.add_argument("--all-exporter", action="store_true", help="every exporter model, not one per variant")
    ap.add_argument("--append", default="", help="append the table to this markdown file")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    sets = {"light": LIGHT, "exporter": exporter_models(args.all_exporter)}
    only = set(filter(None, args.models.split(",")))
    rows = []
    header = "| set | model | threads | workbench ms | onnxruntime ms | ratio | wb noise | ort noise | rel err | build s |"
    print(header)
    print("|---" * 10 + "|")
    for set_name, names in sets.items():
        for name in names:
            if only and name not in only:
                continue
            if set_name == "light":
                model, feeds = light_model(name)
            else:
                with open(model_path(name), "rb") as f:
                    model = f.read()
                feeds = load_io(name)[0]
            for t in threads:
                try:
                    r = bench_one(name, model, feeds, t, args.rounds, args.runs)
                except Exception as exc:  # noqa: BLE001 - a failing model is a row, the others still run
                    print(f"| {set_name} | {name} | {t} | failed: {type(exc).__name__}: {str(exc)[:120]} |", flush=True)
                    continue
                r["set"] = set_name
                rows.append(r)
                print(f"| {set_name} | {name} | {t} | {r['wb']:.3f} | {r['ort']:.3f} | {r['ratio']:.2f}x | "
                      f"{r['wb_noise']:.2f} | {r['ort_noise']:.2f} | {r['err']:.1e} | {r['build_s']:.1f} |", flush=True)
    summary = ["", "| set | threads | models | geomean workbench / onnxruntime |", "|---|---|---|---|"]
    for set_name in list(sets) + ["all"]:
        for t in threads:
            rs = [r["ratio"] for r in rows if r["threads"] == t and (set_name == "all" or r["set"] == set_name)]
            if rs:
                summary.append(f"| {set_name} | {t} | {len(rs)} | {geomean(rs):.2f}x |")
    print("\n".join(summary))
    if args.append:
        table = [header, "|---" * 10 + "|"] + [
            f"| {r['set']} | {r['model']} | {r['threads']} | {r['wb']:.3f} | {r['ort']:.3f} | {r['ratio']:.2f}x | "
            f"{r['wb_noise']:.2f} | {r['ort_noise']:.2f} | {r['err']:.1e} | {r['build_s']:.1f} |" for r in rows]
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(f"\n## {datetime.date.today().isoformat()}, CPU: workbench vs onnxruntime {ort.__version__} "
                    f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, fp32, "
                    f"min over {args.rounds} rounds of median of {args.runs} runs, interleaved)\n\n")
            f.write("\n".join(table + summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
