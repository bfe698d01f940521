"""Not a test: on the GPU machine, prints build times (cold / warm timing cache), latencies and the
slowest layers for a few models. Usage: python3 -m tests.support.gpu_report [model ...]"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

from tests.support.paths import MODELS
import workbench as wb
from workbench.core.numerics import rel_err
from workbench.demo import embedded_model_path, reference_io


def report(name, precision, cache):
    if name.startswith("light_"):
        path = embedded_model_path(name)
        feeds, exp = reference_io(path)
        exp = dict(zip([None], exp))
        shapes = {}
    else:
        path = os.path.join(MODELS, name + ".onnx")
        d = np.load(path[:-5] + ".npz")
        feeds = {k: d[k] for k in d.files if not k.startswith("output:")}
        exp = {k[7:]: d[k] for k in d.files if k.startswith("output:")}
        shapes = {k: v.shape for k, v in feeds.items()}
    net = wb.load_onnx(path)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        eng = wb.build(net, wb.BuilderConfig(device="gpu", precision=precision, shapes=shapes, timing_cache=cache))
        times.append(time.perf_counter() - t0)
    ctx = eng.create_context()
    outs = ctx.run(feeds)
    errs = [rel_err(outs[s.name], exp.get(s.name, exp.get(None))) for s in eng.outputs if s.name in exp or None in exp]
    df = ctx.profile(feeds, runs=20)
    tactics = {}
    for l in eng.layers:
        tactics[l.tactic] = tactics.get(l.tactic, 0) + 1
    print(f"== {name} {precision}: build cold {times[0]:.2f}s warm {times[1]:.2f}s ({times[0] / times[1]:.1f}x) "
          f"cache {eng.build_stats.get('timing_cache')} | rel err {max(errs) if errs else float('nan'):.2e} | "
          f"e2e {df.attrs['end_to_end_ms']:.3f} ms (graph={df.attrs['cuda_graph']}) sum-of-layers "
          f"{df.attrs['sum_of_layers_ms']:.3f} ms | layers {len(eng.layers)} | tactics {tactics}")
    print(df.sort_values("median_ms", ascending=False).head(6)[["layer", "type", "precision", "tactic", "median_ms"]]
          .to_string(index=False))
    if ctx.graph_error:
        print("graph error:", ctx.graph_error)


if __name__ == "__main__":
    names = sys.argv[1:] or ["light_resnet50", "bert_legacy"]
    with tempfile.TemporaryDirectory() as d:
        for n in names:
            for p in ("fp32", "fp16"):
                try:
                    report(n, p, os.path.join(d, f"{n}-{p}.json"))
                except Exception as exc:
                    print(f"== {n} {p}: FAILED {type(exc).__name__}: {str(exc)[:800]}")
