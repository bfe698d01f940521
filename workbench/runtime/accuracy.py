"""Per-layer accuracy: an engine against an fp32 reference of its own plan, layer by layer.

``measure(engine, feeds)`` (also ``Engine.accuracy``) steps two copies of the engine's plan side by
side on the same inputs: the engine's layers with their own precisions and tactics, and a
reference of the same layers on the fp32 reference kernels (``accuracy_sides.reference_plan``).
Nothing is fused, split or marked to observe them: every layer's outputs are already tensors of the
plan, so the engine measured is the engine that runs. For every layer (report columns):

* ``rel_err`` / ``max_abs_err`` / ``cosine``: the engine's output against the reference output
  (the error accumulated up to and including this layer);
* ``added_err`` / ``added_max_abs``: the layer alone, at its precision, on the *reference* inputs
  against the reference output -- the error this layer adds by itself (local);
* ``output_err``: the graph outputs' error when only this layer runs at its precision (its local
  output fed to the reference downstream) -- how much of the end-to-end error it causes;
* ``inherited_err``: the engine's inputs of the layer against the reference inputs;
* ``nonfinite`` / ``local_nonfinite`` / ``ref_nonfinite``: NaN/Inf counts; ``first_nonfinite`` is
  the first layer in plan order whose output holds a non-finite value where the reference has a
  number (so every layer before it was finite: it produced them);
* ``ref_amax``: the largest magnitude among the layer's float tensors in the reference run.

Errors are relative L2 norms over the finite elements, pooled over every output of the layer and
every feed (``sqrt(sum ||got - want||^2) / sqrt(sum ||want||^2)``); as in ``core.numerics.rel_err``
a disagreement on which elements are finite makes the error infinite. ``output_err`` is the largest
over the graph outputs. Layers of If / Loop / Scan bodies are reported as their enclosing layer.

Cost: three kernel calls per layer (reference, engine, engine on reference inputs) plus, for
``output_err``, a run of the layers downstream of each layer (about n^2/2 layer calls per feed;
``impact=False`` skips it). The reference keeps every activation of one feed while ``impact`` is on.
Those downstream runs are reference (CPU) kernels: on a large model at a large batch they cost
minutes per feed (BERT-base at batch 32: about n/2 = 100 reference passes of a second each). So
``impact`` may be a time budget in seconds: after the first feed's ordinary pass, the downstream
runs' cost is estimated from that pass's measured reference times (layer ``j`` runs once for every
changed layer before it that it depends on), and where the estimate is over the budget no feed
gets them: ``output_err`` is NaN and the report's ``engine["impact"]`` says why.
"""

from __future__ import annotations

import time
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.liveness import last_uses_of, layer_reads
from ..errors import InputError, WorkbenchError
from .accuracy_report import AccuracyReport, Diff, LayerStats, amax, host_values
from .accuracy_sides import CpuSide, GpuSide, Stepper, feed_list, reference_plan
from .validate import check_feeds

__all__ = ["AccuracyReport", "measure"]

_clock = time.perf_counter  # times the reference calls (the impact estimate)
# the budget the interactive callers (the precision search, the notebook's Measure) give the
# downstream runs, in seconds per feed
IMPACT_SECONDS = 20.0


def measure(engine, feeds, *, local: bool = True, impact: bool | float = True, reference=None, seed: int = 0,
            progress: bool = False, memory_budget: int | None = None) -> AccuracyReport:
    """Per-layer accuracy of ``engine`` on ``feeds`` (a feed dict or an iterable of them, each
    checked like ``run``'s) against an fp32 reference of its plan (see the module doc).
    ``local=False`` skips the layer-alone runs (no ``added_err`` / ``output_err``); ``impact=False``
    skips only ``output_err``; ``impact=<seconds>`` (a number) runs it only where the first feed's
    estimate of its cost per feed is within that budget (module doc). ``reference``: an fp32 engine
    of the same model with the same layers (e.g. its fp32 build), whose float weights the reference
    of int8 / fp8 layers uses (without it their stored weights are dequantized). ``progress``: a
    tqdm bar over the feeds."""
    plan = engine.plan
    if getattr(plan, "buckets", None):
        raise WorkbenchError("per-layer accuracy of an engine built for shape ranges (buckets) is not supported; "
                             "build one with fixed shapes (--shapes) to measure it")
    ref_step = Stepper(reference_plan(plan, reference.plan if reference is not None else None), seed)
    side = GpuSide(engine) if engine.backend == "gpu" else CpuSide(engine, seed)
    if isinstance(impact, bool) or impact is None:
        budget = None
    else:
        budget, impact = float(impact), True
        if not budget > 0:
            raise InputError(f"impact: a time budget in seconds must be positive, got {budget}")
    walk = _Walk(plan, ref_step, side, local, bool(impact) and local, budget)
    bar = _bar(progress)
    # overflow to inf / NaN is what the report counts and locates, not a warning to print
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        count = _feed_all(engine, feeds, walk, bar, side, memory_budget)
    if count == 0:
        raise InputError("no feeds given: pass a feed dict or an iterable of at least one")
    return _report(engine, walk, count, local, walk.impact)


def _feed_all(engine, feeds, walk, bar, side, memory_budget) -> int:
    count = 0
    try:
        for n, raw in enumerate(feed_list(feeds)):
            if not isinstance(raw, Mapping):
                raise InputError(f"feed {n} is a {type(raw).__name__}; each feed is a dict of input name -> array")
            walk.feed(check_feeds(engine.inputs, dict(raw), memory_budget=memory_budget), n)
            count += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        side.finish()
    return count


class _Walk:
    """The per-layer statistics of one engine, fed one feed at a time."""

    def __init__(self, plan, ref_step: Stepper, side, local: bool, impact: bool, budget: float | None = None):
        self.plan, self.ref_step, self.side, self.local, self.impact = plan, ref_step, side, local, impact
        self.budget = budget  # seconds per feed the downstream runs may take (None: no limit)
        self.impact_note = "measured" if impact else "not asked"
        self.layers = plan.layers
        outputs = [s.name for s in plan.outputs]
        self.stats = [LayerStats(outputs) for _ in self.layers]
        self.out_stats = {name: Diff() for name in outputs}
        last = last_uses_of(self.layers, outputs)
        produced = {o for l in self.layers for o in l.outputs if o}
        self.free_after: list[list[str]] = [[] for _ in self.layers]
        for name, idx in last.items():
            if name in produced and idx < len(self.layers):
                self.free_after[idx].append(name)
        self.reads = [set(layer_reads(l)) for l in ref_step.ex.layers]

    def feed(self, feeds: dict, index: int) -> None:
        plan, side, consts = self.plan, self.side, self.plan.constants
        ref_layers = self.ref_step.ex.layers
        ref: dict[str, Any] = dict(self.ref_step.ex.plan.constants)
        ref.update(feeds)
        side.start(feeds)
        local_outs: list[list | None] = [None] * len(self.layers)
        ref_s = [0.0] * len(self.layers)  # each reference call's seconds (the impact estimate)
        for i, layer in enumerate(self.layers):
            st = self.stats[i]
            ref_in = [ref[n] if n else None for n in ref_layers[i].inputs]
            t0 = _clock()
            ref_out = self.ref_step.call(i, ref_in, ref)
            ref_s[i] = _clock() - t0
            for name, v in zip(layer.outputs, ref_out):
                if name:
                    ref[name] = v
            # the engine's layer on reference activations, with its own weights (int8 ones too)
            args = [None if not n else consts[n] if n in consts else ref[n] for n in layer.inputs]
            for name in layer.inputs:
                if name and name not in consts:
                    st.inp.add(side.value(name), ref[name])
            for name, got, want in zip(layer.outputs, side.run(i), ref_out):
                if name:
                    if st.out.add(got, want) and st.first_bad is None:  # a NaN/Inf where the reference has a number
                        st.first_bad = (index, name)
            if self.local:
                loc = side.run_on(i, args, ref)
                for name, got, want in zip(layer.outputs, loc, ref_out):
                    if name:
                        st.local.add(got, want)
                if self.impact:
                    local_outs[i] = loc
            st.ref_amax = max(st.ref_amax, amax(ref_in), amax(ref_out))
            for name in self.free_after[i]:
                side.free(name)
                if not self.impact:  # the impact runs read every reference activation afterwards
                    ref.pop(name, None)
        for spec in plan.outputs:
            self.out_stats[spec.name].add(side.value(spec.name), ref.get(spec.name))
        if self.impact and self.budget is not None and index == 0:
            cost = self._impact_cost(ref_s, local_outs)
            if cost > self.budget:
                self.impact = False
                self.impact_note = (f"skipped: the downstream reference runs would take about {cost:.3g} s per feed "
                                    f"(from this feed's reference pass of {sum(ref_s):.3g} s), over the "
                                    f"{self.budget:g} s budget")
        if self.impact:
            for i, loc in enumerate(local_outs):
                if loc is not None:
                    self._impact(i, loc, ref)

    def _impact_cost(self, ref_s: list[float], local_outs: list) -> float:
        """Seconds the downstream runs of this feed would take: layer ``j`` runs once for every
        earlier layer with local outputs whose values can reach it (an upper bound: a layer whose
        local output equals the reference changes nothing)."""
        reach: list[int] = []  # bit k: layer k (with local outputs) reaches this layer
        made: dict[str, int] = {}
        for j, layer in enumerate(self.ref_step.ex.layers):
            deps = 0
            for name in self.reads[j]:
                k = made.get(name)
                if k is not None:
                    deps |= reach[k] | ((1 << k) if local_outs[k] is not None else 0)
            reach.append(deps)
            for name in layer.outputs:
                if name:
                    made[name] = j
        return sum(ref_s[j] * bin(reach[j]).count("1") for j in range(len(reach)))

    def _impact(self, i: int, loc: list, ref: dict) -> None:
        """The graph outputs with layer ``i``'s local outputs fed to the reference downstream."""
        layer, st = self.layers[i], self.stats[i]
        changed = {n: _like(v, ref.get(n)) for n, v in zip(layer.outputs, loc) if n and not _same(v, ref.get(n))}
        if changed:
            values = ChainMap(changed, ref)
            for j in range(i + 1, len(self.layers)):
                if self.reads[j].isdisjoint(changed):
                    continue
                later = self.ref_step.ex.layers[j]
                outs = self.ref_step.call(j, [values[n] if n else None for n in later.inputs], values)
                changed.update((n, v) for n, v in zip(later.outputs, outs) if n)
        for name, diff in st.impact.items():
            diff.add(changed.get(name, ref.get(name)), ref.get(name))


def _like(value, ref):
    """``value`` in ``ref``'s element type (a GPU layer's fp16 output fed to the fp32 reference)."""
    if isinstance(value, np.ndarray) and isinstance(ref, np.ndarray) and value.dtype != ref.dtype:
        return value.astype(ref.dtype)
    return value


def _same(a, b) -> bool:
    if a is b:
        return True
    x, y = host_values(a), host_values(b)
    return x is not None and y is not None and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)


def _report(engine, walk: _Walk, feeds: int, local: bool, impact: bool) -> AccuracyReport:
    rows, first = [], None
    nan = float("nan")
    for i, (layer, st) in enumerate(zip(engine.plan.layers, walk.stats)):
        rows.append({
            "index": i, "layer": layer.name, "op": layer.op, "precision": layer.precision, "tactic": layer.tactic,
            "output_err": st.impact_err if impact else nan,
            "added_err": st.local.rel if local else nan,
            "inherited_err": st.inp.rel if st.inp.pairs else 0.0,
            "rel_err": st.out.rel, "max_abs_err": st.out.max_abs_err, "cosine": st.out.cosine,
            "added_max_abs": st.local.max_abs_err if local else nan,
            "nonfinite": st.out.nonfinite, "local_nonfinite": st.local.nonfinite, "ref_nonfinite": st.out.ref_nonfinite,
            "ref_amax": st.ref_amax, "onnx_nodes": list(layer.onnx_nodes), "onnx_ops": list(layer.onnx_ops)})
        if first is None and st.first_bad is not None:
            first = {"index": i, "layer": layer.name, "tensor": st.first_bad[1], "feed": st.first_bad[0],
                     "op": layer.op, "precision": layer.precision, "onnx_nodes": list(layer.onnx_nodes)}
    outs = {name: {"rel_err": d.rel, "max_abs_err": d.max_abs_err, "cosine": d.cosine, "nonfinite": d.nonfinite}
            for name, d in walk.out_stats.items()}
    info = {"backend": engine.backend, "layers": len(engine.plan.layers),
            "precision": engine.build_info.get("precision"), "path": engine.path, "impact": walk.impact_note}
    return AccuracyReport(rows, outs, first, feeds, info)


def _bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(desc="accuracy", unit="feed", leave=False)
