"""int8 / fp8 builds on the GPU keep a layer at the low precision only where it is faster there.

A precision of "int8" or "fp8" *allows* that precision, as TensorRT's INT8 / FP8 builder flags do:
TensorRT times each layer at every precision the build allows and keeps the fastest. Here the
precision pass places every layer that can take int8 / fp8 there (``precision/quantize.py``), and
this step then compares it against fp16 with the autotuner's own times:

1. the build at the low precision, all of it placed (the *placed* engine);
2. a build at fp16 with the same timing cache: each layer's time at fp16;
3. the layers whose fp16 time beats their low-precision time (its quantize launches included) by
   more than ``MARGIN`` are pinned at fp16 and the build is made again;
4. that engine is kept only if its layers' times add up to less than the placed engine's (a
   layer's precision also changes what its neighbours read and write: codes or float16, so moving
   one can cost a neighbour a quantize launch). If not, the half of those layers with the largest
   savings is tried, then its half (``TRIES`` builds at most); else the placed engine stays.
   Either way ``engine.reports["precision_fallback"]`` says what was compared and tried.

``BuilderConfig(strict_precision=True)`` skips this (every layer that can take the precision keeps
it, for measuring a precision's numerics or speed as such); so do CPU builds, where int8 / fp8 are
emulated for their numerics and their latencies are estimates, and layers named in
``layer_precisions``. The timing cache makes steps 2 and 3 cheap where the first build timed the
same layers: without one given, the three builds share a temporary one.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

from ..errors import WorkbenchError
from ..runtime.describe import fallback_text  # noqa: F401 - the CLI and bench print it from here
from ..runtime.engine import Engine

LOW = ("int8", "fp8")
MARGIN = 0.95  # fp16 must be at least 5% faster than the layer's low-precision time: timing noise
TRIES = 3  # builds with layers moved: all of them, then the half with the largest savings, then its half


def applies(cfg, device: str) -> bool:
    return device == "gpu" and cfg.precision in LOW and not cfg.strict_precision and not cfg.profiles


def build_fastest(cfg, build) -> Engine:
    """The engine for ``cfg`` (int8 / fp8 on the GPU, not strict): see the module doc. ``build(cfg)``
    builds one engine as asked (``Builder(cfg).build(network)``)."""
    from .mixed import engine_ms  # noqa: PLC0415 - the latency helpers of the budgeted search

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="workbench-fallback-") as tmp:
        cache = cfg.timing_cache or os.path.join(tmp, "timing.json")
        strict = dataclasses.replace(cfg, strict_precision=True, timing_cache=cache)
        placed = build(strict)
        pinned = set(cfg.layer_precisions)  # a layer or ONNX node name the user set stays as set
        low = [l for l in placed.layers if l.precision == cfg.precision and l.op != "Cast"
               and not pinned & {l.name, *getattr(l, "onnx_nodes", ())}]
        report: dict = {"precision": cfg.precision, "margin": MARGIN, "layers": [], "kept": "placed"}
        engine = placed
        half = None
        if low:
            try:
                half = build(dataclasses.replace(strict, precision="fp16", calibration=None))
            except WorkbenchError as exc:  # the placed engine stands; the report says why nothing was compared
                report["error"] = f"the fp16 build to compare with failed: {str(exc).splitlines()[0]}"
        if half is not None:
            slower = slower_layers(low, half, cfg.precision)
            report["layers"], report["tries"] = slower, []
            best_ms = engine_ms(placed)
            report["total_ms"] = {"placed": best_ms}
            moves = slower
            while moves and len(report["tries"]) < TRIES:
                pins = {**cfg.layer_precisions, **{row["layer"]: "fp16" for row in moves}}
                alt = build(dataclasses.replace(strict, layer_precisions=pins))
                ms = engine_ms(alt)
                report["tries"].append({"layers": len(moves), "total_ms": ms})
                if ms < best_ms:
                    engine, best_ms, report["kept"], report["moved"] = alt, ms, "with_fallback", [r["layer"] for r in moves]
                    report["total_ms"]["with_fallback"] = ms
                    _explain(alt, moves, cfg)
                    break
                moves = moves[:len(moves) // 2]  # the half with the largest savings
    engine.build_info["layer_precisions"] = dict(cfg.layer_precisions)  # as asked: the pins are this step's
    engine.reports["precision_fallback"] = report
    engine.build_stats = {**engine.build_stats, "build_ms": (time.perf_counter() - t0) * 1e3}
    return engine


def slower_layers(low: list, half: Engine, precision: str) -> list[dict]:
    """The layers of ``low`` (at ``precision`` in the placed engine) whose fp16 time in ``half`` is
    under ``MARGIN`` times their own, each as {layer, <precision>_ms, fp16_ms}, largest saving first."""
    from .mixed import engine_layer_ms  # noqa: PLC0415

    at16 = {l.name: l for l in half.layers if l.precision == "fp16"}
    rows = []
    for layer in low:
        other = at16.get(layer.name)
        if other is None:
            continue
        t_low, t16 = engine_layer_ms(layer, "gpu"), engine_layer_ms(other, "gpu")
        if t16 < MARGIN * t_low:
            rows.append({"layer": layer.name, f"{precision}_ms": t_low, "fp16_ms": t16})
    rows.sort(key=lambda r: r["fp16_ms"] - r[f"{precision}_ms"])
    return rows


def _explain(engine: Engine, slower: list[dict], cfg) -> None:
    """The precision table's reason for each layer this step moved to fp16."""
    by = {r["layer"]: r for r in slower}
    p = cfg.precision
    for row in engine.reports.get("precision", []):
        r = by.get(row.get("layer"))
        if r is not None and row.get("precision") == "fp16":
            row["reason"] = (f"{p} allowed, fp16 measured faster here: {r['fp16_ms'] * 1e3:.1f} us vs "
                             f"{r[p + '_ms'] * 1e3:.1f} us at {p} (BuilderConfig.strict_precision keeps {p})")

