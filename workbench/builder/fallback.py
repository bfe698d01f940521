"""int8 / fp8 builds on the GPU keep a layer at the low precision only where it is faster there.

A precision of "int8" or "fp8" *allows* that precision, as TensorRT's INT8 / FP8 builder flags do:
TensorRT times each layer at every precision the build allows and keeps the fastest. Here the
precision pass places every layer that can take int8 / fp8 there (``precision/quantize.py``), and
this step then compares it against fp16 with the autotuner's own times:

1. the build at the low precision, all of it placed (the *placed* engine);
2. a build at fp16 with the same timing cache: each layer's time at fp16;
3. the layers whose fp16 time beats their low-precision time (its quantize launches included) by
   more than ``MARGIN`` are pinned at fp16 and the build is made again;
4. that engine is kept only if it runs faster end to end than the placed one (``TOTAL_MARGIN``,
   timed on random inputs: per-layer times, each taken alone, overstate what a graph replay of
   them costs); a
   layer's precision also changes what its neighbours read and write: codes or float16, so moving
   one can cost a neighbour a quantize launch). If not, the half of those layers with the largest
   savings is tried, then its half (``TRIES`` builds at most); else the placed engine stays.
   Either way ``engine.reports["precision_fallback"]`` says what was compared and tried.

``BuilderConfig(strict_precision=True)`` skips this (every layer that can take the precision keeps
it, for measuring a precision's numerics or speed as such); so do CPU builds, where int8 / fp8 are
emulated for their numerics and their latencies are estimates, and layers named in
``layer_precisions``. The timing cache makes steps 2 and 3 cheap where the first build timed the
same layers: without one given, the builds share a temporary one; calibration runs once, its
table shared the same way; the passes run once too (the builds share one lowered plan,
``front.py``). Layers whose tactic was not timed (one candidate) are not compared.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time

from ..errors import WorkbenchError
from ..precision.calibration import Calibration
from ..runtime.describe import fallback_text  # noqa: F401 - the CLI and bench print it from here
from ..runtime.engine import Engine
from .progress import STAGES

LOW = ("int8", "fp8")
MARGIN = 0.95  # fp16 must be at least 5% faster than the layer's low-precision time: timing noise
TOTAL_MARGIN = 0.99  # a try must cut the engine's time by 1%
REPLAY_RUNS = 50  # end-to-end runs (median) that time each engine of this step on the GPU
TRIES = 3  # builds with layers moved: all of them, then the half with the largest savings, then its half


def applies(cfg, device: str) -> bool:
    """Whether ``Builder.build`` runs this step for ``cfg`` on ``device`` (shape ranges never reach
    it: their buckets are built strict, ``profile_build._inner``)."""
    return device == "gpu" and cfg.precision in LOW and not cfg.strict_precision and cfg.autotune


def build_fastest(cfg, build, measure=None) -> Engine:
    """The engine for ``cfg`` (int8 / fp8 on the GPU, not strict): see the module doc. ``build(cfg)``
    builds one engine as asked (``Builder(cfg).build(network)``); ``measure(engine) -> (ms, how)``
    times one (default ``engine_latency``)."""
    measure = measure or engine_latency
    t0 = time.perf_counter()
    steps = _Steps(cfg.progress)
    try:
        with tempfile.TemporaryDirectory(prefix="workbench-fallback-") as tmp:
            strict = dataclasses.replace(cfg, strict_precision=True, progress=False,
                                         timing_cache=cfg.timing_cache or os.path.join(tmp, "timing.json"),
                                         calibration=_calibrated_once(cfg.calibration, tmp))
            placed = build(dataclasses.replace(strict, progress=steps.first()))
            steps.tick("placed build")
            pinned = set(cfg.layer_precisions)  # a layer or ONNX node name the user set stays as set
            low = [l for l in placed.layers if l.precision == cfg.precision and l.op != "Cast"
                   and not pinned & {l.name, *getattr(l, "onnx_nodes", ())}]
            report: dict = {"precision": cfg.precision, "margin": MARGIN, "compared": len(low), "layers": [],
                            "kept": "placed"}
            engine = placed
            half = None
            if low:
                # the user's other pins stay; pins to int8 / fp8 would need the calibration dropped here
                pins16 = {k: v for k, v in cfg.layer_precisions.items() if v not in LOW}
                try:
                    half = build(dataclasses.replace(strict, precision="fp16", calibration=None,
                                                     layer_precisions=pins16))
                except WorkbenchError as exc:  # the placed engine stands; the report says why
                    report["error"] = f"the fp16 build to compare with failed: {_first_line(exc)}"
                steps.tick("fp16 build")
            if half is not None:
                slower = slower_layers(low, half, cfg.precision)
                report["layers"], report["tries"] = slower, []
                moves = slower
                if slower:  # (an engine is timed only when there is something to compare it with)
                    try:
                        best_ms, report["measure"] = measure(placed)
                        report["total_ms"] = {"placed": best_ms}
                    except (WorkbenchError, MemoryError) as exc:  # the placed engine stands
                        report["error"] = f"timing the placed engine failed: {_first_line(exc)}"
                        moves = []
                while moves and len(report["tries"]) < TRIES:
                    pins = {**cfg.layer_precisions, **{row["layer"]: "fp16" for row in moves}}
                    try:
                        alt = build(dataclasses.replace(strict, layer_precisions=pins))
                        ms = measure(alt)[0]
                    except (WorkbenchError, MemoryError) as exc:  # the best engine so far stands (and
                        # CuPy's out-of-memory error is a MemoryError)
                        report["tries"].append({"layers": len(moves), "error": _first_line(exc)})
                        break
                    finally:
                        steps.tick(f"{len(moves)} layer(s) at fp16")
                    report["tries"].append({"layers": len(moves), "total_ms": ms})
                    if ms < TOTAL_MARGIN * best_ms:
                        engine, best_ms, report["kept"] = alt, ms, "with_fallback"
                        report["moved"] = [r["layer"] for r in moves]
                        report["total_ms"]["with_fallback"] = ms
                        _explain(alt, moves, cfg)
                        break
                    moves = moves[:len(moves) // 2]  # the half with the largest savings
    finally:
        steps.close()
    engine.build_info["layer_precisions"] = dict(cfg.layer_precisions)  # as asked: the pins are this step's
    engine.build_info["strict_precision"] = False
    engine.reports["precision_fallback"] = report
    engine.build_stats = {**engine.build_stats, "build_ms": (time.perf_counter() - t0) * 1e3}
    return engine


def engine_latency(engine: Engine) -> tuple[float, str]:
    """(ms, how): on the GPU the median end-to-end time of ``REPLAY_RUNS`` runs on random inputs
    (what a caller of ``run`` waits: the layers' own times, timed one by one while autotuning, add
    up to more than a replay of them); elsewhere the layers' summed times."""
    from .mixed import engine_ms  # noqa: PLC0415 - the latency helpers of the budgeted search

    if engine.backend != "gpu":
        return engine_ms(engine), "summed layer times"
    from ..runtime.feeds import random_feeds  # noqa: PLC0415
    from ..runtime.profile import latency_ms  # noqa: PLC0415

    return latency_ms(engine, random_feeds(engine.inputs, seed=0), REPLAY_RUNS), \
        f"end to end, median of {REPLAY_RUNS} runs"


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _calibrated_once(calibration, tmp: str):
    """Calibration data that every build of this step can share: the first build that calibrates
    writes its table to a file in ``tmp`` and the others load it (so an iterator is read once)."""
    if isinstance(calibration, Calibration) and calibration.cache is None:
        shared = copy.copy(calibration)
        shared.cache = os.path.join(tmp, "calibration.json")
        return shared
    return calibration


class _Steps:
    """Progress over the builds of this step: the placed build reports its stages to a callable
    (all but its "done", sent once at the end); ``progress=True`` shows one bar of builds."""

    def __init__(self, progress):
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm  # noqa: PLC0415

            self.bar = tqdm(desc="int8 / fp8 vs fp16", unit="build", leave=False)

    def first(self):
        if self.callback is None:
            return False
        cb = self.callback
        return lambda stage, index, count: None if stage == "done" else cb(stage, index, count)

    def tick(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.callback is not None:
            self.callback("done", len(STAGES), len(STAGES))
        if self.bar is not None:
            self.bar.close()


def slower_layers(low: list, half: Engine, precision: str) -> list[dict]:
    """The layers of ``low`` (at ``precision`` in the placed engine) whose fp16 time in ``half`` is
    under ``MARGIN`` times their own, each as {layer, <precision>_ms, fp16_ms}, largest saving first.
    Only the autotuner's measured times count: a layer not timed in either build is left alone
    (a NaN time compares false)."""
    from .mixed import measured_ms  # noqa: PLC0415 - the latency helpers of the budgeted search

    at16 = {l.name: l for l in half.layers if l.precision == "fp16"}
    rows = []
    for layer in low:
        other = at16.get(layer.name)
        t_low, t16 = measured_ms(layer), measured_ms(other) if other is not None else None
        if t_low is not None and t16 is not None and t16 < MARGIN * t_low:
            rows.append({"layer": layer.name, f"{precision}_ms": t_low, "fp16_ms": t16})
    rows.sort(key=lambda r: r["fp16_ms"] - r[f"{precision}_ms"])
    return rows


def _explain(engine: Engine, moved: list[dict], cfg) -> None:
    """The precision table's rows of the layers this step moved to fp16: why, and what was asked."""
    by = {r["layer"]: r for r in moved}
    p = cfg.precision
    for row in engine.reports.get("precision", []):
        r = by.get(row.get("layer"))
        if r is not None and row.get("precision") == "fp16":
            row["reason"] = (f"{p} allowed, fp16 measured faster here: {r['fp16_ms'] * 1e3:.1f} us vs "
                             f"{r[p + '_ms'] * 1e3:.1f} us at {p} (BuilderConfig.strict_precision keeps {p})")
            if "requested" in row:
                row["requested"] = p  # the build asked for p; the pin was this step's
