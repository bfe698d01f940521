"""On a GPU machine: what CUPTI reports for a replayed CuPy graph, and the replay profile of
workbench engines against their end-to-end replay time (the numbers behind the acceptance table).

    python3 -m tests.explore.replay_check --probe                 # raw CUPTI records of a tiny graph
    python3 -m tests.explore.replay_check --small                 # test models + light ResNet-50
    python3 -m tests.explore.replay_check --models resnet50,bert --batches 1,32

Prints, per engine: replay span, the per-layer sum (layers + gaps), the event-timed end-to-end
median and their ratio. Not a test (no assertions on time); the gpu-marked tests in this folder
check the bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def probe() -> None:
    """A two-kernel CuPy graph and a memcpy under CUPTI: the callback data and record fields."""
    from cupti import cupti as api
    import cupy as cp

    from workbench.runtime.cupti import _graph_data

    for name in ("get_version",):
        try:
            print(name, getattr(api, name)())
        except Exception as exc:  # noqa: BLE001
            print(name, "failed", exc)
    events, records = [], []

    def cb(userdata, domain, cbid, data):
        info = (int(domain), int(cbid), type(data).__name__)
        if len(events) < 3:
            print("callback data attrs:", info, [a for a in dir(data) if not a.startswith("_")][:40])
        try:
            gd = _graph_data(api, data)
            orig = api.get_graph_node_id(gd.original_node) if gd.original_node else None
            events.append(info + (api.get_graph_node_id(gd.node), orig, gd.node_type))
        except Exception as exc:  # noqa: BLE001
            events.append(info + (f"err {exc!r}",))

    def requested():
        return 8 * 2**20, 0

    def completed(acts):
        for a in acts:
            d = {"kind": api.ActivityKind(a.kind).name}
            for f in ("name", "start", "end", "graph_id", "graph_node_id", "source_graph_id", "source_graph_node_id",
                      "correlation_id", "stream_id", "bytes", "external_id", "external_kind", "cbid"):
                if hasattr(a, f):
                    d[f] = getattr(a, f)
            d["type"] = type(a).__name__
            records.append(d)

    sub = api.subscribe(cb, None)
    api.enable_callback(1, sub, api.CallbackDomain.RESOURCE, api.CallbackIdResource.GRAPHNODE_CREATED)
    api.enable_callback(1, sub, api.CallbackDomain.RESOURCE, api.CallbackIdResource.GRAPHNODE_CLONED)
    api.activity_register_callbacks(requested, completed)
    for k in ("CONCURRENT_KERNEL", "MEMCPY", "MEMSET", "EXTERNAL_CORRELATION", "DRIVER"):
        api.activity_enable(getattr(api.ActivityKind, k))
    s = cp.cuda.Stream(non_blocking=True)
    x = cp.ones(1 << 20, cp.float32)
    y = cp.empty_like(x)
    with s:
        z = x * 2 + 1
        s.synchronize()
        s.begin_capture()
        cp.multiply(x, 2, out=y)
        cp.add(y, 1, out=z)
        y.data.copy_from_device_async(z.data, z.nbytes, s)
        g = s.end_capture()
        print("graph type", type(g).__name__, [a for a in dir(g) if not a.startswith("_")])
        g.launch(s)
        s.synchronize()
        t0 = api.get_timestamp()
        g.launch(s)
        s.synchronize()
        t1 = api.get_timestamp()
        api.activity_push_external_correlation_id(api.ExternalCorrelationKind.CUSTOM0, 7)
        cp.multiply(x, 3, out=y)
        api.activity_pop_external_correlation_id(api.ExternalCorrelationKind.CUSTOM0)
        s.synchronize()
    api.activity_flush_all(1)
    print("window", t0, t1)
    for e in events:
        print("resource", e)
    for r in records:
        if r["kind"] != "DRIVER" or r.get("cbid") is None or len(records) < 60:
            print("record", r)
    for k in ("CONCURRENT_KERNEL", "MEMCPY", "MEMSET", "EXTERNAL_CORRELATION", "DRIVER"):
        api.activity_disable(getattr(api.ActivityKind, k))
    api.unsubscribe(sub)


def report(label: str, engine, feeds, runs: int = 20, force_eager: int | None = None) -> dict:
    """Replay and events profiles of ``engine``: the sums against the end-to-end time."""
    import warnings

    from workbench.runtime.profile import format_profile, kernel_table, layer_rows

    ctx = engine.create_context()
    if force_eager is not None:
        ctx._eager_only.add(force_eager)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        df = ctx.profile(feeds, runs=runs)
        took = time.perf_counter() - t
    for w in caught:
        print("warning:", w.message)
    a = df.attrs
    print(format_profile(df, top=8))
    if a.get("mode") == "replay":
        kt = kernel_table(df)
        multi = kt.groupby("layer").size()
        print(f"kernels per layer: max {int(multi.max()) if len(multi) else 0}, layers with >1: {int((multi > 1).sum())}; "
              f"eager layers: {a.get('eager_layers')}")
        if force_eager is not None:
            name = engine.layers[force_eager].name
            row = df[df.layer == name].iloc[0]
            print(f"forced-eager layer {name!r}: {row.kernels} kernels, {row.median_ms:.4f} ms")
        unatt = df[df.layer == "(unattributed)"]
        if len(unatt):
            print("UNATTRIBUTED", float(unatt.median_ms.iloc[0]))
        zero = layer_rows(df)[layer_rows(df).kernels == 0]
        if len(zero):
            print(f"{len(zero)} layers without kernels: {list(zero.layer)[:5]} types {sorted(set(zero.type))}")
    out = {"label": label, "mode": a.get("mode"), "e2e": a["end_to_end_ms"], "sum": a["sum_of_layers_ms"],
           "span": a.get("replay_ms", float("nan")), "gaps": a.get("gaps_ms", float("nan")), "s": took}
    out["ratio"] = out["sum"] / out["e2e"]
    print("RESULT", out)
    return out


def small() -> list[dict]:
    import workbench as wb
    from tests.support.exporter_models import load_io, model_path
    from workbench.demo import embedded_model_path, reference_io

    rows = []
    for name in ("resnet_legacy", "bert_legacy"):
        inputs, _ = load_io(name)
        for prec in ("fp16",):
            try:
                eng = wb.build(wb.load_onnx(model_path(name)), wb.BuilderConfig(
                    device="gpu", precision=prec, shapes={k: v.shape for k, v in inputs.items()}))
                rows.append(report(f"{name} {prec}", eng, inputs))
                rows.append(report(f"{name} {prec} eager layer 1", eng, inputs, force_eager=1))
            except Exception:  # noqa: BLE001
                traceback.print_exc()
    try:
        path = embedded_model_path("light_resnet50")
        feeds, _ = reference_io(path)
        eng = wb.build(wb.load_onnx(path), wb.BuilderConfig(device="gpu", precision="fp16"))
        rows.append(report("light_resnet50 fp16", eng, feeds))
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    return rows


def big(names: list[str], batches: list[int], precision: str) -> list[dict]:
    """The bench models (bench/bench.py's definitions, random weights) at each batch."""
    import torch

    import workbench as wb
    from bench.bench import export, models

    rows = []
    table = models()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            make, inputs = table[name]
            model = make().cuda().eval()
            path = os.path.join(tmp, f"{name}.onnx")
            export(name, model, inputs(1), path)
            del model
            torch.cuda.empty_cache()
            for b in batches:
                feeds = {k: v.cpu().numpy() for k, v in inputs(b).items()}
                try:
                    t = time.perf_counter()
                    eng = wb.build(wb.load_onnx(path), wb.BuilderConfig(
                        device="gpu", precision=precision, shapes={k: v.shape for k, v in feeds.items()}))
                    print(f"built {name} b{b} in {time.perf_counter() - t:.1f} s")
                    rows.append(report(f"{name} b{b} {precision}", eng, feeds))
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--probe", action="store_true")
    p.add_argument("--small", action="store_true")
    p.add_argument("--models", default="")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--precision", default="fp16")
    args = p.parse_args(argv)
    rows = []
    if args.probe:
        try:
            probe()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    if args.small:
        rows += small()
    if args.models:
        rows += big(args.models.split(","), [int(b) for b in args.batches.split(",")], args.precision)
    if rows:
        print("\n| engine | mode | end-to-end ms (events) | replay span ms | layers + gaps ms | gaps ms | sum / end-to-end |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['label']} | {r['mode']} | {r['e2e']:.4f} | {r['span']:.4f} | {r['sum']:.4f} | {r['gaps']:.4f} "
                  f"| {r['ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    np.random.seed(0)
    sys.exit(main())
