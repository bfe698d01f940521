"""Automatic mixed precision under an accuracy budget: ``BuilderConfig(precision="best",
accuracy_budget=B)`` chooses a precision per layer that minimises latency while the error against
fp32 on held-out inputs stays within B. The builder calls ``search`` for such configs.

1. **Data.** The calibration feeds (``BuilderConfig.calibration``: a ``Calibration`` or a path of
   calibration data; at most ``MAX_FEEDS`` batches, in the order given) are split: every
   ``HELD_OUT_EVERY``-th batch (the 4th, 8th, ...; the last one when there are 2 or 3) is held out,
   the rest is the search part, which also calibrates int8 / fp8 layers. With one batch both parts
   are that batch, and the report says they are not disjoint. Without calibration data (none, or
   only a calibration table) the feeds are ``RANDOM_FEEDS`` seeded random inputs of the model's
   shapes, split the same way. The reference is the fp32 engine's outputs on the same feeds.
2. **Per-layer facts** from one uniform build per precision the target offers
   (``supported_precisions``: int8 / fp8 join by themselves once the CPU runs them; on the GPU
   tf32 and bf16, no faster than fp16 and with no more mantissa bits, only when some layer's
   values reach past fp16's range, since each build's sensitivities cost reference runs): whether the
   layer took that precision (and why not), its latency there -- on the GPU the autotuner's
   measured time of the chosen tactic; on the CPU, which only emulates reduced precision, a roofline
   estimate (``layer_ms``) -- and its sensitivity: the outputs' error with only this layer at that
   precision, measured on ``SENSITIVITY_FEEDS`` search batches (one when it holds
   ``SENSITIVITY_SAMPLES`` samples or more). On the GPU it is measured on the device against the
   fp32 build (``runtime.accuracy_impact``: an fp32 run on the device per layer); on the CPU,
   or where a layer has no counterpart in the fp32 build, it is the ``output_err`` of the accuracy
   report (``runtime.accuracy``) against the fp32 reference kernels, or the layer's added error
   where those downstream runs would take too long. fp16 is ruled out for a layer whose tensors reach
   past ``FP16_MAX / FP16_MARGIN`` (the observed min / max of the calibration table given, else of
   the search part's calibration, made once and also the table every build that quantizes loads;
   weights included). Layers with subgraphs stay fp32. On the GPU an int8 / fp8
   build none of whose layers ran faster than at fp16 is not measured: fp16 keeps more bits, so
   each of its rungs would be dominated (on Hopper cuBLASLt's int8 GEMMs are slower than fp16).
3. **Search** (``mixed_search.py``): start every layer at its cheapest precision; promote the most
   sensitive layers until the error on the search feeds meets the target; when the evaluations
   contradict the additive assumption behind that ordering (promoting more made the error worse)
   or promotion finds nothing, auto_mixed_precision-style segment bisection runs too (at most
   ``BISECT_EVALS`` evaluations: on the GPU each is a build), and the faster result wins.
4. **Check.** The chosen assignment is built for real (per-layer overrides) and its error on the
   held-out feeds must meet B; if not, the search target is tightened and the search repeated
   (``MAX_ROUNDS``); failing that, every layer stays fp32.
5. **End to end** (the GPU). The search ranks candidates by their layers' summed tactic times,
   each timed alone, which overstate and can misorder what a graph replay costs (a layer's
   precision changes its neighbours' reads and writes, Casts and quantize launches included). So
   the result is timed end to end (``fallback.engine_latency``) against every uniform build that
   also meets B on the held-out feeds (fp32 among them), and the fastest is kept (one faster by
   ``TOTAL_MARGIN`` or more replaces the result, built with its precisions as per-layer overrides).
   ``report["end_to_end"]`` holds the times.

The engine's precision table gives every layer's reason; ``engine.reports["mixed_precision"]``
holds the budget, both errors, the split, latencies and the latency-vs-error table of every
candidate tried. Candidates are evaluated on emulating targets (CPU) by assembling the uniform
builds' layers, since there a layer's tactic does not depend on its neighbours; elsewhere each is
built, from the one lowered plan every build of the search shares (``front.py``: the passes run
once per search). Only the final engine is built with the overrides.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Mapping

import numpy as np

from ..core.liveness import subgraphs_of
from ..core.precisions import STORAGE, supported_precisions
from ..dtypes import itemsize
from ..errors import BuildError, WorkbenchError
from ..precision.assign import EMULATED
from ..precision.calibration import Calibration, CalibrationTable, calibrate, from_path
from ..runtime.accuracy import IMPACT_SECONDS, measure
from ..runtime.accuracy_impact import engine_impact
from ..runtime.accuracy_report import Diff
from ..runtime.engine import Engine
from ..runtime.feeds import random_feeds
from .fallback import TOTAL_MARGIN, _first_line, engine_latency
from .mixed_search import DOMINATED, Ladder, Outcome, Rung, bisect, make_ladder, promote, within

HELD_OUT_EVERY = 4
MAX_FEEDS = 64
RANDOM_FEEDS = 8
SENSITIVITY_FEEDS = 2  # search batches each layer's sensitivity is measured on (~n^2/2 layer runs each)
# ... or one, when it holds this many samples (its leading dim) or more: a batch of 8 sequences or
# images already ranks the layers, and each feed costs a reference pass per layer and precision
SENSITIVITY_SAMPLES = 8
EVAL_FEEDS = 4  # search batches each candidate is evaluated on (the held-out check uses all held-out ones)
MAX_ROUNDS = 3
FP16_MAX, FP16_MARGIN = 65504.0, 4.0
# precisions with fp16's mantissa or less and fp32's range: on the GPU (no faster than fp16) only
# worth a uniform build when some layer's values rule fp16 out
WIDE_HALVES = ("tf32", "bf16")
LOW_BITS = ("int8", "fp8")  # fewer mantissa bits than fp16: a rung no faster than fp16 is dominated
SLOWER_THAN_FP16 = ", which keeps more bits"  # the end of such a rung's refusal (left out of reasons)
# the roofline behind the CPU's latency estimate: nominal peaks, fixed so that the same build makes
# the same choice (they rank candidates; they do not predict this machine's times)
NOMINAL_GBPS = 100.0
NOMINAL_GFLOPS = {"fp32": 1000.0, "tf32": 2000.0, "fp16": 2000.0, "bf16": 2000.0, "int8": 4000.0, "fp8": 4000.0}


def search(network, cfg, build) -> Engine:
    """The engine for ``cfg`` (precision "best" with an accuracy budget); ``build(cfg)`` builds one
    engine without a budget (``Builder(cfg).build(network)``)."""
    if getattr(cfg, "profiles", None):
        raise BuildError("an accuracy budget is searched at fixed input shapes: give --shapes, not shape ranges")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="workbench-mixed-") as tmp:
        base = dataclasses.replace(cfg, precision="fp32", accuracy_budget=None, accuracy_metric=None,
                                   layer_precisions={}, progress=False, strict_precision=True,
                                   timing_cache=cfg.timing_cache or os.path.join(tmp, "timing.json"))
        engine = _Search(cfg, base, build, tmp).run()
    engine.build_stats["build_ms"] = (time.perf_counter() - t0) * 1e3  # the whole search, every build in it
    engine.reports["mixed_precision"]["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    return engine


class _Search:
    def __init__(self, cfg, base, build, tmp: str):
        self.tmp = tmp  # the search's own files (timing cache, calibration table)
        self.cfg, self.budget, self.metric = cfg, float(cfg.accuracy_budget), cfg.accuracy_metric
        self.base, self._build = base, build
        self.candidates: list[dict] = []
        self.seconds = {"builds": 0.0, "sensitivities": 0.0}  # where the search's time went (the report)
        self.builds = 0
        self.notes: list[str] = []
        self.bar = _bar(cfg.progress is True)

    def build(self, **changes) -> Engine:
        t0 = time.perf_counter()
        try:
            engine = self._build(dataclasses.replace(self.base, **changes))
        finally:
            self.seconds["builds"] += time.perf_counter() - t0
            self.builds += 1
        what = changes.get("precision") or "fp32"
        self._tick(f"built {what}" + (" with per-layer precisions" if changes.get("layer_precisions") else ""))
        return engine

    def _tick(self, what: str) -> None:
        """One step of the progress bar, which shows what the step was (a search can take minutes)."""
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)

    # ---- the steps -------------------------------------------------------------------------
    def run(self) -> Engine:
        try:
            # candidates that overflow are measured (an infinite error), not warned about
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return self._run()
        finally:
            if self.bar is not None:
                self.bar.close()

    def _run(self) -> Engine:
        data, table = _calibration(self.cfg.calibration)
        self.fp32 = self.build(calibration=None)
        self.backend = self.fp32.backend
        self.search_feeds, self.held_feeds, self.split = _split(data, self.fp32, self.notes)
        if data is not None and len(self.search_feeds):
            # every build of the search calibrates the same plan on the same feeds: the table is
            # made here, once (its minmax part gives the value ranges below), and saved where the
            # builds that quantize load it (one that does not cover a build's plan is remade then)
            part = _part(data, self.search_feeds, cache=os.path.join(self.tmp, "search-calibration.json"))
            self.base = dataclasses.replace(self.base, calibration=part)
            ranges = calibrate(self.fp32.plan, part)
        elif table is not None:
            self.base = dataclasses.replace(self.base, calibration=table)
            ranges = table
        else:
            ranges = calibrate(self.fp32.plan, Calibration(self.search_feeds))
        self.eval_feeds = self.search_feeds[:EVAL_FEEDS]
        self.sens_feeds = self.search_feeds[:1 if _samples(self.search_feeds[0]) >= SENSITIVITY_SAMPLES
                                            else SENSITIVITY_FEEDS]
        self.split.update({"candidates_evaluated_on": len(self.eval_feeds),
                           "sensitivity_measured_on": len(self.sens_feeds)})
        self.ref_search = _outputs(self.fp32, self.eval_feeds)
        self.ref_held = _outputs(self.fp32, self.held_feeds)
        self.names = [l.name for l in self.fp32.layers]
        self.engines = {"fp32": self.fp32}
        self.facts: dict[str, dict] = {n: {} for n in self.names}
        self.refusals: dict[str, dict[str, str]] = {n: {} for n in self.names}
        self.ranges = {n: 0.0 for n in self.names}
        # the values each layer must hold: the observed (min, max) of the table given or made above
        self._apply_ranges(ranges)
        self._uniform_builds()
        self.ladders = self._ladders()
        self._cache: dict[tuple, tuple[float, float]] = {}
        self.assemble = self.backend in EMULATED and all(
            [l.name for l in e.layers] == self.names for e in self.engines.values())
        chosen, engine, held = self._rounds()
        precs = self.precisions(chosen.assignment)
        self.end_to_end: dict = {}
        if self.backend not in EMULATED:
            chosen, engine, held, precs = self._end_to_end(chosen, engine, held, precs)
        return self._finish(chosen, engine, held, precs)

    def _uniform_builds(self) -> None:
        offered = supported_precisions(self.backend)
        wide = [n for n, r in self.ranges.items() if r > FP16_MAX / FP16_MARGIN]
        for p in offered:
            if p in WIDE_HALVES and self.backend not in EMULATED and "fp16" in offered and not wide:
                self.notes.append(f"{p} not tried: on the GPU it runs no faster than fp16 and rounds to no more "
                                  "bits, and no layer's values reach past fp16's range")
                continue
            engine = self.fp32
            if p != "fp32":
                try:
                    engine = self.build(precision=p)
                except WorkbenchError as exc:
                    self.notes.append(f"{p} not tried: {str(exc).splitlines()[0]}")
                    continue
                self.engines[p] = engine
                dominated = self._dominated(engine, p)
                if dominated:
                    rows, impact = {}, True
                else:
                    t0 = time.perf_counter()
                    rows, impact = self._sensitivities(engine, p)
                    self.seconds["sensitivities"] += time.perf_counter() - t0
            else:
                rows, dominated = {}, False
            why = {r["layer"]: r.get("reason", "") for r in engine.reports.get("precision", [])}
            for layer in engine.layers:
                if layer.name not in self.facts:
                    continue  # a Cast the storing target inserted
                if layer.precision != p:
                    self.refusals[layer.name][p] = why.get(layer.name) or f"the target keeps it {layer.precision}"
                    continue
                if dominated:
                    continue  # (its refusal says how much slower than fp16 it ran)
                row = rows.get(layer.name, {})
                sens = 0.0 if p == "fp32" else _finite_or_inf(row.get("output_err" if impact else "added_err"))
                self.facts[layer.name][p] = Rung(p, engine_layer_ms(layer, self.backend), sens)
                if _mask_of(layer) is None:  # (an attention's ref_amax counts its mask: the table's ranges stand)
                    self.ranges[layer.name] = max(self.ranges[layer.name], float(row.get("ref_amax") or 0.0))
            uniform = {l.name: l.precision for l in engine.layers if l.name in self.facts}
            self._record(f"uniform {p}", engine, uniform)

    def _sensitivities(self, engine: Engine, p: str) -> tuple[dict[str, dict], bool]:
        """layer name -> its accuracy row for the uniform ``p`` build, and whether the rows hold the
        outputs' error (``output_err``) rather than only the layer's own (``added_err``). On the
        GPU every layer at ``p`` is measured on the device against the fp32 build
        (``runtime.accuracy_impact``); elsewhere, or where that cannot place a layer, by
        ``runtime.accuracy`` against the fp32 reference kernels."""
        if self.backend not in EMULATED:
            wanted = [l.name for l in engine.layers if l.name in self.facts and l.precision == p]
            try:
                rows = engine_impact(engine, self.fp32, self.sens_feeds, layers=wanted)
            except Exception as exc:  # noqa: BLE001 - the measurement below still stands
                self.notes.append(f"{p}: sensitivities on the device failed ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}); measured against the reference "
                                  "kernels instead")
            else:
                missing = [n for n in wanted if n not in rows]
                if not missing:
                    self._tick(f"measured {p} sensitivities on the device")
                    return rows, True
                self.notes.append(f"{p}: {len(missing)} layer(s) (first {missing[0]!r}) have no counterpart in the "
                                  "fp32 build to measure on the device; measured against the reference kernels instead")
        report = measure(engine, self.sens_feeds, reference=self.fp32,
                         impact=IMPACT_SECONDS)  # over it: each layer's added error
        self._tick(f"measured {p} sensitivities")
        impact = report.engine.get("impact") == "measured"
        if not impact:
            self.notes.append(f"{p}: sensitivities are each layer's added error, not the outputs' "
                              f"error (impact runs {report.engine.get('impact')})")
        return {r["layer"]: r for r in report.layers}, impact

    def _dominated(self, engine: Engine, p: str) -> bool:
        """On the GPU, whether no layer of the uniform ``p`` build (int8 / fp8) ran faster than it
        did at fp16: fp16 keeps more bits, so every such rung would leave its ladder as dominated,
        and its sensitivities (the costly part of a uniform build: reference runs of every layer)
        are not measured. The layers say why in ``refusals``."""
        if self.backend in EMULATED or p not in LOW_BITS:
            return False
        rows = []
        for layer in engine.layers:
            if layer.name not in self.facts or layer.precision != p:
                continue
            half = self.facts[layer.name].get("fp16")
            mine = engine_layer_ms(layer, self.backend)
            if half is None or not half.latency_ms <= mine or not math.isfinite(half.sensitivity) \
                    or self.ranges[layer.name] > FP16_MAX / FP16_MARGIN:
                return False  # (fp16 is no option there: this precision may still be one)
            rows.append((layer.name, mine, half.latency_ms))
        if not rows:
            return False
        for name, mine, half in rows:
            self.refusals[name][p] = f"{mine * 1e3:.1f} us at {p}, no faster than fp16's {half * 1e3:.1f} us" + \
                SLOWER_THAN_FP16
        self.notes.append(f"{p}: sensitivities not measured: none of its {len(rows)} layers ran faster than at "
                          "fp16, which keeps more bits")
        self._tick(f"{p} no faster than fp16")
        return True

    def _apply_ranges(self, table) -> None:
        for layer in self.fp32.layers:  # the table's observed (min, max) of every tensor it has
            mask = _mask_of(layer)
            for spec in list(layer.input_specs) + list(layer.output_specs):
                if spec.name == mask:
                    continue
                seen = table.observed(spec.name) if spec.name in table else None
                if seen is not None:
                    self.ranges[layer.name] = max(self.ranges[layer.name], *(abs(float(v)) for v in seen))

    def _ladders(self) -> list[Ladder]:
        ladders = []
        by_name = {l.name: l for l in self.fp32.layers}
        for name in self.names:
            options = dict(self.facts[name])
            excluded = dict(self.refusals[name])
            if subgraphs_of(by_name[name]):
                options = {"fp32": options["fp32"]}
                excluded["*"] = "layers with subgraphs (If / Loop / Scan) stay fp32"
            if "fp16" in options and self.ranges[name] > FP16_MAX / FP16_MARGIN:
                del options["fp16"]
                excluded["fp16"] = (f"its values reach {self.ranges[name]:.3g}, past fp16's {FP16_MAX:g} / "
                                    f"{FP16_MARGIN:g} (overflow margin)")
            ladders.append(make_ladder(name, list(options.values()), excluded))
        return ladders

    # ---- evaluating candidates ---------------------------------------------------------------
    def precisions(self, assignment: dict[str, int]) -> dict[str, str]:
        return {lad.layer: lad.rungs[assignment[lad.layer]].precision for lad in self.ladders}

    def evaluate(self, assignment: dict[str, int], label: str) -> tuple[float, float]:
        precs = self.precisions(assignment)
        key = tuple(precs[n] for n in self.names)
        if key not in self._cache:
            engine = self._assembled(precs) if self.assemble else self.build(precision="best", layer_precisions=precs)
            error = _error(_outputs(engine, self.eval_feeds), self.ref_search, self.metric)
            self._cache[key] = (error, engine_ms(engine))
            self._record(label, engine, precs, error=error)
            self._tick(f"evaluated {label}")
        return self._cache[key]

    def _assembled(self, precs: dict[str, str]) -> Engine:
        """The engine a build with these per-layer precisions makes on an emulating target."""
        plan = copy.copy(self.fp32.plan)
        plan.constants = dict(plan.constants)
        layers = []
        for pos, layer in enumerate(self.fp32.layers):
            src = self.engines[precs.get(layer.name, "fp32")]
            chosen = src.plan.layers[pos]  # (the uniform builds' layers line up: checked in _run)
            for n in chosen.inputs:
                if n in src.plan.constants:
                    plan.constants[n] = src.plan.constants[n]
            layers.append(chosen)
        plan.layers = layers
        return Engine(plan, self.fp32.target, dict(self.fp32.build_info), {})

    def _record(self, label: str, engine: Engine, precs: dict[str, str], error: float | None = None) -> None:
        if error is None:
            error = _error(_outputs(engine, self.eval_feeds), self.ref_search, self.metric)
        counts: dict[str, int] = {}
        for p in precs.values():
            counts[p] = counts.get(p, 0) + 1
        below = sum(1 for p in precs.values() if p != "fp32")
        self.candidates.append({"candidate": len(self.candidates), "label": label, "error": error,
                                "latency_ms": engine_ms(engine), "layers_below_fp32": below,
                                "within_budget": within(error, self.budget), "precisions": counts})

    # ---- search rounds -------------------------------------------------------------------------
    def _rounds(self):
        target = self.budget
        for _ in range(MAX_ROUNDS):
            outcome = self._search(target)
            if outcome is None:
                break
            precs = self.precisions(outcome.assignment)
            engine = self.build(precision="best", layer_precisions=precs)
            held = _error(_outputs(engine, self.held_feeds), self.ref_held, self.metric)
            self._record(f"{outcome.strategy} result, built (held-out {held:.3g})", engine, precs)
            if within(held, self.budget):
                return outcome, engine, held
            self.notes.append(f"the {outcome.strategy} result met {target:.3g} on the search feeds but not the budget "
                              f"on the held-out ones ({held:.3g}); the target was tightened")
            target *= min(0.5, 0.8 * self.budget / held) if held > 0 and math.isfinite(held) else 0.5
        self.notes.append("no mix of precisions met the budget on the held-out feeds: every layer stays fp32")
        top = {lad.layer: len(lad.rungs) - 1 for lad in self.ladders}
        engine = self.build(precision="best", layer_precisions=self.precisions(top))
        held = _error(_outputs(engine, self.held_feeds), self.ref_held, self.metric)
        return Outcome(top, 0.0, engine_ms(engine), "fallback"), engine, held

    def _search(self, target: float) -> Outcome | None:
        found = promote(self.ladders, self.evaluate, target)
        if found is not None and found.additive:
            return found
        why = "promotion found nothing" if found is None else "promoting more made the error worse"
        self.notes.append(f"segment bisection ran too: {why}")
        other = bisect(self.ladders, self.evaluate, target)
        if other is not None and other.stopped:
            self.notes.append(other.stopped)
        options = [o for o in (found, other) if o is not None]
        return min(options, key=lambda o: (o.latency_ms, o.error)) if options else None

    def _end_to_end(self, outcome: Outcome, engine: Engine, held: float, precs: dict[str, str]):
        """Step 5 of the module doc: the result or the uniform build that meets the budget on the
        held-out feeds and runs fastest end to end; (outcome, engine, held error, precisions)."""
        rivals = []
        for p, uni in self.engines.items():
            mine = {l.name: l.precision for l in uni.layers if l.name in self.facts}
            if mine == precs:
                continue  # (the result is this uniform build)
            err = 0.0 if p == "fp32" else _error(_outputs(uni, self.held_feeds), self.ref_held, self.metric)
            if within(err, self.budget):
                rivals.append((p, uni, mine, err))
        if not rivals:
            return outcome, engine, held, precs
        try:
            best_ms, how = engine_latency(engine)
            timed = {p: engine_latency(uni)[0] for p, uni, _, _ in rivals}
        except (WorkbenchError, MemoryError) as exc:  # the search's result stands, with the reason
            self.notes.append(f"the result was not timed end to end against the uniform builds: {_first_line(exc)}")
            return outcome, engine, held, precs
        self.end_to_end = {"how": how, "result_ms": best_ms, "kept": outcome.strategy,
                           "uniform": {p: {"held_out": err, "ms": timed[p]} for p, _, _, err in rivals}}
        self._tick("timed the result end to end")
        winner = None
        for p, uni, mine, err in rivals:
            if timed[p] < TOTAL_MARGIN * best_ms:
                winner, best_ms = (p, mine), timed[p]
        if winner is None:
            return outcome, engine, held, precs
        p, mine = winner
        built = self.build(precision="best", layer_precisions=mine)
        err = _error(_outputs(built, self.held_feeds), self.ref_held, self.metric)
        self._record(f"uniform {p} precisions, built (held-out {err:.3g})", built, mine)
        if not within(err, self.budget):  # (the same precisions as the uniform build: not expected)
            self.notes.append(f"uniform {p} ran faster end to end, but its build with per-layer precisions missed "
                              f"the budget on the held-out feeds ({err:.3g}): the {outcome.strategy} result stands")
            return outcome, engine, held, precs
        engine, held = built, err
        self.notes.append(f"uniform {p} met the budget on the held-out feeds and ran faster end to end "
                          f"({timed[p]:.4g} ms) than the {outcome.strategy} result "
                          f"({self.end_to_end['result_ms']:.4g} ms): it was kept")
        self.end_to_end["kept"] = f"uniform {p}"
        assignment = {lad.layer: next((i for i, r in enumerate(lad.rungs) if r.precision == mine.get(lad.layer)),
                                      len(lad.rungs) - 1) for lad in self.ladders}
        return Outcome(assignment, held, engine_ms(engine), f"uniform {p}"), engine, held, mine

    # ---- the result ----------------------------------------------------------------------------
    def _finish(self, outcome: Outcome, engine: Engine, held: float, precs: dict[str, str]) -> Engine:
        reasons = {lad.layer: self._reason(lad, outcome, precs[lad.layer]) for lad in self.ladders}
        for row in engine.reports.get("precision", []):
            name = row.get("layer")
            if name in reasons and row.get("precision") == precs.get(name):
                row["reason"] = reasons[name]
        search_err = _error(_outputs(engine, self.eval_feeds), self.ref_search, self.metric)
        below = sum(1 for p in precs.values() if p != "fp32")
        fp32_ms, ms = engine_ms(self.fp32), engine_ms(engine)
        engine.reports["mixed_precision"] = {
            "budget": self.budget, "metric": getattr(self.metric, "__name__", "custom") if self.metric else
            "largest relative L2 error of any output vs fp32", "strategy": outcome.strategy,
            "error": {"search": search_err, "held_out": held},
            "feeds": self.split, "layers": len(precs), "below_fp32": below,
            "fraction_below_fp32": below / len(precs) if precs else 0.0,
            "latency_source": LATENCY_SOURCE[self.backend], "fp32_latency_ms": fp32_ms, "latency_ms": ms,
            "speedup": fp32_ms / ms if ms else None, "candidates": self.candidates, "notes": self.notes,
            "precisions": precs, "builds": self.builds, "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "end_to_end": self.end_to_end,
        }
        engine.build_info["accuracy_budget"] = self.budget
        return engine

    def _reason(self, lad: Ladder, outcome: Outcome, p: str) -> str:
        rung, first = outcome.assignment[lad.layer], lad.rungs[0]
        ruled = "; ".join(f"{q}: {why}" for q, why in lad.excluded.items()
                          if q != p and why != DOMINATED and not why.endswith(SLOWER_THAN_FP16))
        tail = f" (not {ruled})" if ruled else ""
        if outcome.strategy.startswith("uniform "):
            e2e = self.end_to_end
            return (f"accuracy budget: {p}; {outcome.strategy} met the budget and ran faster end to end "
                    f"({e2e['uniform'][outcome.strategy.split()[1]]['ms']:.4g} ms) than the searched mix "
                    f"({e2e['result_ms']:.4g} ms)")
        if len(lad.rungs) == 1:
            return f"accuracy budget: {p}, the only precision worth trying{tail}"
        if outcome.strategy == "fallback":
            return f"accuracy budget: {p}; no mix met the budget on the held-out feeds"
        if rung == 0:
            return f"accuracy budget: {p}, its fastest (outputs' error with only this layer at {p}: " \
                   f"{first.sensitivity:.2e}){tail}"
        if lad.layer in outcome.order:
            return (f"accuracy budget: promoted from {first.precision} to {p} (outputs' error with only this layer "
                    f"at {first.precision}: {first.sensitivity:.2e}; promotion {outcome.order[lad.layer]} in "
                    f"sensitivity order){tail}")
        if outcome.strategy == "bisect" and lad.layer not in outcome.failed:
            return f"accuracy budget: {p}; segment bisection reached its evaluation cap before trying this layer on its own{tail}"
        return f"accuracy budget: {p}; {first.precision} on this layer broke the budget (segment bisection){tail}"


LATENCY_SOURCE = {"gpu": "measured: the autotuner's time of each layer's chosen tactic",
                  "cpu": "estimated: a roofline with nominal peaks (the CPU emulates reduced precision, so its "
                         "own times say nothing about it)"}


# ---------------------------------------------------------------------------- latency
def layer_ms(layer, precision: str) -> float:
    """Roofline estimate of one layer at ``precision``: FLOPs at the precision's nominal rate or
    bytes at the nominal bandwidth (float32 tensors counted in the precision's storage type),
    whichever takes longer. Unknown dims count as 1."""
    store = STORAGE.get(precision, "float32")
    nbytes = 0.0
    for spec in list(layer.input_specs) + list(layer.output_specs):
        if spec.shape is None or spec.dtype in (None, "string"):
            continue
        n = math.prod(d if isinstance(d, int) else 1 for d in spec.shape)
        nbytes += n * itemsize(store if spec.dtype == "float32" else spec.dtype)
    flops = float(layer.flops or 0)
    return 1e3 * max(flops / (NOMINAL_GFLOPS.get(precision, NOMINAL_GFLOPS["fp32"]) * 1e9), nbytes / (NOMINAL_GBPS * 1e9))


def measured_ms(layer) -> float | None:
    """The autotuner's time of the layer's chosen tactic, None where it was not timed."""
    for row in layer.tactic_table or []:
        if row.get("chosen") and isinstance(row.get("ms"), (int, float)):
            return float(row["ms"])
    return None


def engine_layer_ms(layer, backend: str) -> float:
    """A layer's latency: its chosen tactic's measured time on the GPU (the estimate where it was not
    timed), the estimate on the CPU."""
    ms = measured_ms(layer) if backend == "gpu" else None
    return layer_ms(layer, layer.precision) if ms is None else ms


def engine_ms(engine: Engine) -> float:
    return sum(engine_layer_ms(layer, engine.backend) for layer in engine.layers)


# ---------------------------------------------------------------------------- data and errors
def _calibration(cal) -> tuple[Calibration | None, CalibrationTable | None]:
    if isinstance(cal, (str, bytes, os.PathLike)):
        cal = from_path(cal)
    if isinstance(cal, CalibrationTable):
        return None, cal
    return cal, None


def _split(cal: Calibration | None, fp32: Engine, notes: list[str]) -> tuple[list, list, dict]:
    if cal is None:
        feeds = [random_feeds(fp32.inputs, seed=s) for s in range(RANDOM_FEEDS)]
        source = f"{RANDOM_FEEDS} seeded random feeds (no calibration data was given)"
        notes.append("no calibration data: the budget is checked on random inputs; give representative data")
    else:
        feeds = []
        for _, feed in cal.batches(fp32.inputs):
            if not isinstance(feed, Mapping):
                raise BuildError(f"calibration batch {len(feeds)} is a {type(feed).__name__}, not a feed dict")
            feeds.append(dict(feed))
            if len(feeds) == MAX_FEEDS:
                notes.append(f"only the first {MAX_FEEDS} calibration batches were used")
                break
        if not feeds:
            raise BuildError("the calibration data holds no batches; an accuracy budget needs at least one")
        source = f"{len(feeds)} calibration batch(es)"
    n = len(feeds)
    held = [i for i in range(n) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1] or ([n - 1] if n > 1 else [0])
    search = [i for i in range(n) if i not in held] or held
    disjoint = n > 1
    if not disjoint:
        notes.append("one batch only: the held-out check reuses the search batch (give 2 or more batches)")
    split = {"source": source, "total": n, "search": len(search), "held_out": len(held), "disjoint": disjoint,
             "rule": f"batches in the order given; every {HELD_OUT_EVERY}th (the last when there are 2 or 3) "
                     "is held out, the rest searches and calibrates", "held_out_batches": held}
    return [feeds[i] for i in search], [feeds[i] for i in held], split


def _part(data: Calibration, feeds: list, cache: str | None = None) -> Calibration:
    """Calibration with the search part only (held-out batches never calibrate), its table kept in
    ``cache``."""
    return Calibration(feeds, method=data.method, percentile=data.percentile, num_bins=data.num_bins, cache=cache)


def _outputs(engine: Engine, feeds: list[dict]) -> list[dict]:
    ctx = engine.create_context()
    return [ctx.run(f) for f in feeds]


def _error(outs: list[dict], refs: list[dict], metric) -> float:
    """The default error (largest relative L2 error of any output, pooled over the feeds) or the
    mean of the user's metric over the feeds."""
    if metric is not None:
        vals = []
        for out, ref in zip(outs, refs):
            try:
                v = float(metric(out, ref))
            except Exception as exc:  # noqa: BLE001 - the user's callable: one line naming it
                raise BuildError(f"accuracy_metric failed: {type(exc).__name__}: {exc}") from None
            vals.append(v)
        return float(np.mean(vals)) if vals else math.inf
    diffs: dict[str, Diff] = {}
    for out, ref in zip(outs, refs):
        for name, want in ref.items():
            diffs.setdefault(name, Diff()).add(out[name], want)
    errs = [d.rel for d in diffs.values() if d.pairs and not math.isnan(d.rel)]
    return max(errs) if errs else 0.0


def _mask_of(layer) -> str | None:
    """An attention layer's mask tensor: not a value it must hold in its precision (its fills,
    e.g. -3.4e38, stand for minus infinity; fp16 kernels clamp them), so it rules no precision out."""
    if layer.op == "Attention" and len(layer.inputs) > 3 and layer.inputs[3]:
        return layer.inputs[3]
    return None


def _samples(feed: dict) -> int:
    """The samples in a feed: the largest leading (batch) dim of its inputs of rank 2 or more (0
    when there are none)."""
    return max((int(np.shape(v)[0]) for v in feed.values() if np.ndim(v) > 1), default=0)


def _finite_or_inf(x) -> float:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return math.inf
    return float(x)


def _bar(on: bool):
    if not on:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="precision search", unit="step", leave=False)
