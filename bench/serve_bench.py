"""Serving throughput and latency: one Ray Serve replica of an engine and a load generator, in one
process tree.

Builds (or loads) the engine, starts a local Ray with ``workbench.serve.start`` (one replica: a GPU
for a GPU engine), checks one answer against the engine run directly, then runs ``--clients``
concurrent clients (asyncio + httpx, spread over ``--client-procs`` processes) that send requests of
``--rows`` rows with the binary tensor extension for ``--duration`` seconds, and prints requests/s,
rows/s and latency percentiles as seen by the clients, with the batch sizes the replica formed ,
the replica's own p50 (from the body read to the response, batching wait included) and the
engine's p50 per batch (on the engine thread).

``--via handle`` sends the same requests through a DeploymentHandle from this process instead (no
HTTP: the engine and the batcher alone); ``--floor`` first serves a deployment that only reads the
body and answers a small JSON document, under the same clients and body: what Ray Serve's HTTP
path costs on this machine before any model runs.

    python3 bench/serve_bench.py                                    # ResNet-50 fp16 on the GPU
    python3 bench/serve_bench.py --device cpu --model tiny --duration 5 --clients 8
    python3 bench/serve_bench.py --floor --via both                   # where the time goes
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.core.numerics import rel_err, tolerance  # noqa: E402


# ---- the engine ------------------------------------------------------------------------------

def resnet50_onnx(path: Path) -> str:
    """torchvision ResNet-50 (random seeded weights) exported as bench.py does: input pixel_values,
    dynamic batch."""
    sys.path.insert(0, str(ROOT / "bench"))
    import torch

    from bench import export, models

    make, inputs = models()["resnet50"]
    torch.manual_seed(0)
    export("resnet50", make().eval().cuda(), inputs(1), path)
    return "pixel_values"


def tiny_onnx(path: Path) -> str:
    """A small dense model (x: [N, 64] -> relu(x @ W + b)), dynamic batch."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["input", "W"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["output"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return "input"


def build_engine(args, tmp: Path) -> str:
    """The engine file: ``--engine`` as given, else ``--model`` built with a batch range 1..--max-batch
    (the GPU gets batch buckets), or a fixed batch when the builder has no shape ranges."""
    import workbench as wb

    if args.engine:
        return args.engine
    onnx_path = tmp / f"{args.model}.onnx"
    name = resnet50_onnx(onnx_path) if args.model == "resnet50" else tiny_onnx(onnx_path)
    net = wb.load_onnx(str(onnx_path))
    row = [d for d in next(s for s in net.inputs if s.name == name).shape[1:]]
    lo, hi = [1, *row], [args.max_batch, *row]
    t0 = time.time()
    try:
        cfg = wb.BuilderConfig(device=args.device, precision=args.precision, profiles=[{name: (lo, hi, hi)}])
    except (TypeError, wb.WorkbenchError):  # a builder without shape ranges: one fixed batch
        cfg = wb.BuilderConfig(device=args.device, precision=args.precision, shapes={name: tuple(hi)})
    engine = wb.build(net, cfg)
    path = tmp / f"{args.model}.wbe"
    engine.save(path)
    print(f"built {args.model} {args.precision} for {args.device} in {time.time() - t0:.1f} s", flush=True)
    return str(path)


# ---- the clients ------------------------------------------------------------------------------

def _client_proc(url: str, body: bytes, headers: dict, clients: int, duration: float, queue) -> None:
    import httpx

    async def one(client, stop, lat, fails):
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=body, headers=headers)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            (lat if ok else fails).append((time.perf_counter() - t0) * 1e3)

    async def main():
        lat, fails = [], []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            stop = time.perf_counter() + duration
            await asyncio.gather(*(one(client, stop, lat, fails) for _ in range(clients)))
        return lat, len(fails)

    queue.put(asyncio.run(main()))


def load(url: str, body: bytes, headers: dict, clients: int, procs: int, duration: float) -> tuple[list[float], int, float]:
    """(latencies in ms of the successful requests, failures, wall seconds) of ``clients`` concurrent
    clients over ``procs`` processes."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [ctx.Process(target=_client_proc, args=(url, body, headers, n, duration, queue)) for n in per if n]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    results = [queue.get(timeout=duration + 300) for _ in workers]
    wall = time.perf_counter() - t0
    for w in workers:
        w.join(timeout=30)
    lat = [x for r in results for x in r[0]]
    return lat, sum(r[1] for r in results), wall


async def _handle_load(handle, feeds: dict, clients: int, duration: float) -> tuple[list[float], int, float]:
    """The same as ``load`` through a DeploymentHandle, ``clients`` coroutines in this process."""
    lat, fails = [], [0]
    stop = time.perf_counter() + duration

    async def one():
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await handle.infer.remote(feeds)
                lat.append((time.perf_counter() - t0) * 1e3)
            except Exception:  # noqa: BLE001 - counted, the load goes on
                fails[0] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return lat, fails[0], time.perf_counter() - t0


def floor(body: bytes, headers: dict, args) -> tuple[list[float], int, float]:
    """Client latencies against a deployment that reads the body and answers a small JSON document:
    Ray Serve's HTTP path alone, with the same body and clients (Ray already initialized)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(max_ongoing_requests=args.max_ongoing or max(2 * args.max_batch, 16))
    class Floor:
        async def __call__(self, request: Request):
            return JSONResponse({"bytes": len(await request.body())})

    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Floor.bind(), name="floor", route_prefix="/floor", logging_config={"log_level": "WARNING"})
    url = f"http://127.0.0.1:{args.port}/floor"
    try:
        load(url, body, headers, args.clients, args.client_procs, 2.0)
        return load(url, body, headers, args.clients, args.client_procs, args.duration)
    finally:
        serve.delete("floor")


def _row(label: str, via: str, args, lat, fails, wall, batches=None, replica_p50=float("nan"), engine_p50=float("nan"),
         err=float("nan")) -> dict:
    a = np.asarray(lat)
    rps = a.size / wall
    n_batches = sum(batches.values()) if batches else 0
    mean_batch = sum(int(k) * v for k, v in batches.items()) / n_batches if n_batches else float("nan")
    pct = (lambda q: float(np.percentile(a, q))) if a.size else (lambda q: float("nan"))
    return {"model": label, "device": args.device, "precision": args.precision, "client": via,
            "rows/request": args.rows, "clients": args.clients, "requests/s": rps, "rows/s": rps * args.rows,
            "p50 ms": pct(50), "p90 ms": pct(90), "p99 ms": pct(99), "replica p50 ms": replica_p50, "engine p50 ms/batch": engine_p50,
            "mean batch": mean_batch, "failed": fails, "max err": err}


# ---- main -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--model", choices=["resnet50", "tiny"], default="resnet50")
    ap.add_argument("--engine", help="serve this engine file instead of building --model")
    ap.add_argument("--precision", default=None, help="default: fp16 on the GPU, fp32 on the CPU")
    ap.add_argument("--max-batch", type=int, default=32, help="largest batch of the engine and of a served batch")
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-ongoing", type=int, default=None,
                    help="requests a replica holds at once (default: workbench.serve.deployment's)")
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients")
    ap.add_argument("--client-procs", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 4)))
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load (after a 2 s warm-up)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--json-data", action="store_true", help="send JSON tensors instead of the binary extension")
    ap.add_argument("--via", choices=["http", "handle", "both"], default="http",
                    help="clients over HTTP (the Open Inference Protocol), through a DeploymentHandle, or both")
    ap.add_argument("--floor", action="store_true", help="first measure Ray Serve's HTTP path with a model-less deployment")
    ap.add_argument("--save-engine", help="keep the built engine at this path (serve it again with --engine)")
    ap.add_argument("--results", help="append the table rows to this markdown file")
    args = ap.parse_args(argv)
    args.precision = args.precision or ("fp16" if args.device == "gpu" else "fp32")

    import ray
    import requests

    import workbench as wb
    from workbench.serve import protocol as P

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = build_engine(args, Path(tmp))
        if args.save_engine:
            import shutil

            shutil.copyfile(path, args.save_engine)
        engine = wb.Engine.load(path)
        ray.init(num_cpus=max(2, os.cpu_count() or 2), num_gpus=1 if args.device == "gpu" else 0,
                 include_dashboard=False, log_to_driver=False)
        spec = engine.inputs[0]
        shape = [args.rows, *[d if isinstance(d, int) else 1 for d in spec.shape[1:]]]
        rng = np.random.default_rng(0)
        from workbench.dtypes import to_numpy

        feeds = {spec.name: rng.standard_normal(shape).astype(to_numpy(spec.dtype))}
        body, headers = P.request_body(feeds, binary=not args.json_data, binary_outputs=not args.json_data)
        if args.floor:
            rows_out.append(_row("ray serve floor", "http", args, *floor(body, headers, args)))
        server = wb.serve.start(path, port=args.port, replicas=1, max_batch=args.max_batch,
                                batch_wait_ms=args.batch_wait_ms, max_ongoing_requests=args.max_ongoing)
        try:
            url = f"{server.model_url}/infer"
            r = requests.post(url, data=body, headers=headers, timeout=120)
            got = P.decode_response(r.content, r.headers)
            want = engine.create_context().run(feeds)
            errs = {k: rel_err(got[k], np.asarray(want[k].get() if hasattr(want[k], "get") else want[k])) for k in got}
            tol = max(tolerance(str(v.dtype)) for v in got.values()) or 1e-6
            err = max(errs.values())
            print(f"answer check: relative error {err:.2e} (tolerance {tol:g})", flush=True)
            label = Path(path).stem if args.engine else args.model
            for via in (["http", "handle"] if args.via == "both" else [args.via]):
                handle = server.handle() if via == "handle" else None

                def run(seconds: float, handle=handle):
                    if handle is None:
                        return load(url, body, headers, args.clients, args.client_procs, seconds)
                    return asyncio.run(_handle_load(handle, feeds, args.clients, seconds))

                run(2.0)  # warm-up
                before = requests.get(f"{server.model_url}/stats", timeout=60).json()["model_stats"][0]
                lat, fails, wall = run(args.duration)
                after = requests.get(f"{server.model_url}/stats", timeout=60).json()["model_stats"][0]
                batches = {k: after["batch_sizes"].get(k, 0) - before["batch_sizes"].get(k, 0) for k in after["batch_sizes"]}
                replica_p50 = after["latency_ms"].get("p50", float("nan")) if via == "http" else float("nan")
                engine_p50 = after["engine_ms_per_batch"].get("p50", float("nan"))
                rows_out.append(_row(label, via, args, lat, fails, wall, batches, replica_p50, engine_p50, err))
        finally:
            server.stop()
            ray.shutdown()
    head = "| " + " | ".join(rows_out[0]) + " |"
    rule = "|" + "---|" * len(rows_out[0])
    lines = ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |"
             for row in rows_out]
    print("\n".join([head, rule, *lines]))
    if args.results:
        gpu = _gpu_name() if args.device == "gpu" else "cpu"
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(f"\n### serve_bench {datetime.date.today()} ({gpu}, one replica, {args.duration:g} s, "
                    f"binary={not args.json_data}, {args.client_procs} client processes)\n\n"
                    + "\n".join([head, rule, *lines]) + "\n")
    bad = any(row["failed"] for row in rows_out)
    return 0 if not bad and err <= max(tol * 10, 1e-5) else 1


def _gpu_name() -> str:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception:  # noqa: BLE001
        return "gpu"


if __name__ == "__main__":
    sys.exit(main())
