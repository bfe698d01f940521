"""``workbench run``: run an engine once for its outputs, benchmark it like trtexec (warm-up,
iterations or a duration, latency percentiles, throughput) and, with ``--compare onnxruntime``,
validate it like Polygraphy against the model it was built from.

All timing goes through the execution context's own measurement (``ctx.time_end_to_end``: host
timer on the CPU, CUDA events on the GPU), the same routine ``profile`` uses.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

from ..core.budget import default_memory_budget
from ..core.numerics import host
from ..core.plan import TensorSpec
from .common import (
    CliError,
    check_destination,
    fmt_err,
    fmt_ms,
    fmt_rate,
    json_number,
    load_engine,
    load_feeds,
    print_json,
    printable,
    write_npz,
)

EXIT_MISMATCH = 1
_MAX_BATCH = 100_000  # timed runs asked of the context at once while filling --duration


def context_options(args, config_cls=None) -> dict:
    """Options for ``create_context`` (or ``BuilderConfig`` when ``config_cls`` is given) from the
    command line: only those the user set, so that everything else keeps the library's default."""
    opts = {}
    for name in ("threads", "memory_budget"):
        if getattr(args, name, None) is not None:
            opts[name] = getattr(args, name)
    if config_cls is None and getattr(args, "device", "auto") != "auto":
        opts["device"] = args.device
    return opts


def random_run_feeds(engine, shapes_text: str | None, seed: int, budget: int | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs of the engine's shapes; ``--shapes`` fills in dynamic dimensions."""
    from ..dtypes import to_numpy
    from ..runtime.feeds import random_feeds

    shapes = {}
    if shapes_text is not None:
        from ..builder import parse_shapes  # the one --shapes syntax (the builder's)

        shapes = parse_shapes(shapes_text)
    names = [s.name for s in engine.inputs]
    for name in shapes:
        if name not in names:
            raise CliError(f"--shapes names {name!r}, which is not an input of the engine (inputs: "
                           f"{', '.join(map(repr, names))})")
    budget = budget or default_memory_budget()
    specs = []
    for spec in engine.inputs:
        if spec.name not in shapes:
            specs.append(spec)
            continue
        shape = shapes[spec.name]
        if spec.shape is not None:
            if len(shape) != len(spec.shape):
                raise CliError(f"--shapes gives input {spec.name!r} rank {len(shape)}; the engine's input has rank "
                               f"{len(spec.shape)} ({spec.shape})")
            for axis, (want, got) in enumerate(zip(spec.shape, shape)):
                if isinstance(want, int) and want != got:
                    raise CliError(f"--shapes gives input {spec.name!r} {got} on axis {axis}; the engine fixes it "
                                   f"to {want} ({spec.shape})")
        nbytes = math.prod(shape) * (to_numpy(spec.dtype).itemsize if spec.dtype else 1)
        if nbytes > budget:
            raise CliError(f"--shapes: random input {spec.name!r} of shape {list(shape)} needs {nbytes:,} bytes; "
                           f"the memory budget is {budget:,} bytes")
        specs.append(dataclasses.replace(spec, shape=list(shape)) if isinstance(spec, TensorSpec)
                     else TensorSpec(spec.name, spec.dtype, list(shape)))
    return random_feeds(specs, seed=seed)


def benchmark(ctx, feeds, iterations: int, warmup: int, duration_s: float) -> list[float]:
    """Milliseconds of at least ``iterations`` timed runs, more until they add up to ``duration_s``."""
    for _ in range(warmup):
        ctx.run(feeds)
    samples = list(ctx.time_end_to_end(feeds, iterations))
    goal_ms = duration_s * 1e3
    while sum(samples) < goal_ms:
        mean = max(sum(samples) / len(samples), 1e-6)
        more = int(min(max(math.ceil((goal_ms - sum(samples)) / mean), 1), _MAX_BATCH))
        samples.extend(ctx.time_end_to_end(feeds, more))
    return samples


def latency_stats(samples: list[float]) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    mean = float(a.mean())
    return {"runs": int(a.size), "min_ms": float(a.min()), "mean_ms": mean, "median_ms": float(np.median(a)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "total_ms": float(a.sum()), "throughput_per_s": 1e3 / mean if mean > 0 else float("inf")}


def _describe(arr: np.ndarray) -> dict:
    d = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    if arr.size and arr.dtype.kind in "fiub":
        with np.errstate(all="ignore"):
            d["mean"] = json_number(arr.astype(np.float64).mean())
    return d


def cmd_run(args) -> int:
    if args.inputs and args.shapes is not None:
        raise CliError("give either --inputs (the feeds) or --shapes (shapes of random inputs), not both")
    if args.model and not args.compare:
        raise CliError("--model only names the model for --compare; add --compare onnxruntime")
    out_path = None
    if args.outputs:
        out_path = args.outputs if args.outputs.endswith(".npz") else args.outputs + ".npz"  # as np.savez names it
        check_destination(out_path, "outputs")
    engine = load_engine(args.engine)
    model = None
    if args.compare:
        from .compare import source_model

        model = source_model(engine, args.engine, args.model)
    if args.inputs:
        feeds, origin = load_feeds(args.inputs, engine.inputs, args.memory_budget), f"from {args.inputs}"
    else:
        feeds, origin = random_run_feeds(engine, args.shapes, args.seed, args.memory_budget), f"random (seed {args.seed})"
    ctx = engine.create_context(**context_options(args))
    outs = {k: host(v) for k, v in ctx.run(feeds).items()}
    samples = benchmark(ctx, feeds, args.iterations, args.warmup, args.duration)
    stats = latency_stats(samples)
    report = {"engine": args.engine, "device": ctx.device, "note": ctx.profile_note,
              "inputs": {k: {**_describe(np.asarray(v)), "origin": origin} for k, v in feeds.items()},
              "outputs": {k: _describe(v) for k, v in outs.items()},
              "warmup": args.warmup, "latency": stats}
    if args.compare:
        from .compare import compare_outputs, run_onnxruntime

        ref, version = run_onnxruntime(model, feeds, args.threads)
        rows = compare_outputs(outs, ref, args.atol, args.rtol)
        report["compare"] = {"runtime": "onnxruntime", "version": version, "model": model, "atol": args.atol,
                             "rtol": args.rtol, "passed": all(r["passed"] for r in rows),
                             "outputs": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows}}
    if out_path:
        write_npz(out_path, outs, "outputs")
        report["outputs_file"] = out_path
    if args.json:
        print_json(_json_ready(report))
    else:
        _print_report(report)
    return EXIT_MISMATCH if "compare" in report and not report["compare"]["passed"] else 0


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float):
        return json_number(obj)
    return obj


def _print_report(r: dict) -> None:
    first = next(iter(r["inputs"].values()), {})
    print(f"engine {printable(r['engine'])} on {r['device']}; inputs {first.get('origin', '(none)')}:")
    for name, d in r["inputs"].items():
        print(f"  input  {printable(name)}: {d['dtype']} {d['shape']}")
    for name, d in r["outputs"].items():
        mean = f"  mean {d['mean']:.6g}" if isinstance(d.get("mean"), float) else ""
        print(f"  output {printable(name)}: {d['dtype']} {d['shape']}{mean}")
    s = r["latency"]
    print(f"latency over {s['runs']:,} runs (after {r['warmup']} warm-up): min {fmt_ms(s['min_ms'])}, "
          f"mean {fmt_ms(s['mean_ms'])}, median {fmt_ms(s['median_ms'])}, p90 {fmt_ms(s['p90_ms'])}, "
          f"p99 {fmt_ms(s['p99_ms'])}")
    print(f"throughput {fmt_rate(s['throughput_per_s'])} inferences/s (one stream, {fmt_ms(s['total_ms'])} timed)")
    if "compare" in r:
        c = r["compare"]
        print(f"compared with onnxruntime {c['version']} running {printable(c['model'])} "
              f"(atol {c['atol']:g}, rtol {c['rtol']:g}):")
        for name, o in c["outputs"].items():
            verdict = "OK" if o["passed"] else f"MISMATCH ({o['problem']})"
            print(f"  {printable(name)}: max abs {fmt_err(o['max_abs'])}, max rel {fmt_err(o['max_rel'])}  {verdict}")
        bad = sum(1 for o in c["outputs"].values() if not o["passed"])
        print("PASSED" if c["passed"] else f"FAILED: {bad} of {len(c['outputs'])} outputs differ", file=sys.stdout)
    if "outputs_file" in r:
        print(f"wrote {len(r['outputs'])} outputs to {printable(r['outputs_file'])}")
