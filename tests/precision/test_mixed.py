"""Automatic mixed precision under an accuracy budget (workbench.builder.mixed, mixed_search): the
search meets the budget on held-out inputs (checked here independently of the report), leaves most
layers below fp32, keeps layers whose range is past fp16's wider with that reason, takes a user
metric, says how it split the data; the ladders, promotion and segment bisection on made-up error
functions; the config's checks."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

import workbench as wb
from workbench.builder import mixed
from workbench.builder.mixed_search import DOMINATED, Ladder, Rung, bisect, make_ladder, moves_of, promote
from workbench.errors import WorkbenchError
from workbench.precision.calibration import Calibration
from tests.precision import accuracy_models as M
from tests.support.paths import MODELS


def held_out(feeds):
    """The split the search documents: every 4th batch (the last of 2 or 3) is held out."""
    n = len(feeds)
    idx = [i for i in range(n) if i % 4 == 3] or [n - 1]
    return [feeds[i] for i in idx]


def max_rel_err(engine, ref, feeds) -> float:
    """Largest relative L2 error of any output, pooled over ``feeds`` (the default metric)."""
    a, b = engine.create_context(), ref.create_context()
    worst = 0.0
    outs = [(a.run(f), b.run(f)) for f in feeds]
    for name in outs[0][1]:
        num = sum(float(np.sum((o[name].astype(np.float64) - r[name]) ** 2)) for o, r in outs)
        den = sum(float(np.sum(r[name].astype(np.float64) ** 2)) for o, r in outs)
        worst = max(worst, (num / den) ** 0.5)
    return worst


def budgeted(model: bytes, budget: float, feeds, **cfg):
    net = wb.load_onnx(model)
    engine = wb.build(net, wb.BuilderConfig(device="cpu", precision="best", accuracy_budget=budget,
                                            calibration=Calibration(feeds) if feeds is not None else None, **cfg))
    return net, engine


@pytest.mark.parametrize("budget", [1e-3, 4.5e-4])
def test_search_meets_the_budget_on_held_out_inputs(budget, tmp_path):
    feeds = M.feeds(8)
    net, engine = budgeted(M.mlp(), budget, feeds)
    rep = engine.reports["mixed_precision"]
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu"))
    # checked here, on the batches the report says were held out
    assert rep["feeds"]["held_out_batches"] == [3, 7] and rep["feeds"]["disjoint"]
    got = max_rel_err(engine, fp32, held_out(feeds))
    assert got <= budget and rep["error"]["held_out"] == pytest.approx(got, rel=1e-6)
    # below fp32 where it can be: fp16 everywhere meets the looser budget (then every layer is below
    # fp32); the tighter one it breaks, while no single fp16 layer does: a mix of fp16 and fp32
    precs = [l.precision for l in engine.layers]
    uniform16 = max_rel_err(wb.build(net, wb.BuilderConfig(device="cpu", precision="fp16")), fp32, held_out(feeds))
    assert rep["below_fp32"] == sum(p != "fp32" for p in precs) == round(rep["fraction_below_fp32"] * len(precs))
    if uniform16 <= budget:
        assert "fp32" not in precs
    else:
        assert "fp32" in precs and any(p != "fp32" for p in precs)
    assert rep["latency_ms"] < rep["fp32_latency_ms"]
    # every layer's precision with a reason; the candidates' latency-vs-error table
    rows = {r["layer"]: r for r in engine.reports["precision"]}
    assert all(rows[l.name]["reason"].startswith("accuracy budget") for l in engine.layers)
    assert engine.build_info["layer_precisions"] == {l.name: l.precision for l in engine.layers}
    table = rep["candidates"]
    assert {"uniform fp32", "uniform fp16"} <= {c["label"] for c in table}
    assert all(c["latency_ms"] > 0 and c["error"] >= 0 for c in table)
    assert any(c["within_budget"] for c in table) and any(not c["within_budget"] for c in table)
    # the report survives the engine file
    engine.save(tmp_path / "m.wbe")
    loaded = wb.Engine.load(tmp_path / "m.wbe")
    assert loaded.reports["mixed_precision"]["error"]["held_out"] == pytest.approx(got, rel=1e-6)


def test_layers_past_fp16_range_are_kept_wider_with_that_reason():
    # activations reach ~3e4: fp16 could hold them, but not with the 4x margin held-out data needs
    feeds = M.feeds(4)
    _, engine = budgeted(M.mlp(scale=8000), 1e-2, feeds)
    rows = {r["layer"]: r for r in engine.reports["precision"]}
    first = engine.layers[0]
    assert first.precision != "fp16"
    assert "past fp16's 65504" in rows[first.name]["reason"]
    assert max_rel_err(engine, wb.build(wb.load_onnx(M.mlp(scale=8000)), wb.BuilderConfig(device="cpu")),
                       held_out(feeds)) <= 1e-2


def test_sensitivities_fall_back_to_the_added_error_where_impact_runs_cost_too_much(monkeypatch):
    """A model whose downstream reference runs would be over the time budget (a budget no run
    meets, here) is searched with each layer's own added error as its sensitivity, says so, and
    still meets the budget on the held-out batches (the candidates are measured for real)."""
    feeds = M.feeds(8)
    seen = []
    real = mixed.measure

    def spy(*args, **kw):
        report = real(*args, **kw)
        seen.append((kw.get("impact"), report))
        return report

    monkeypatch.setattr(mixed, "IMPACT_SECONDS", 1e-12)
    monkeypatch.setattr(mixed, "measure", spy)
    net, engine = budgeted(M.mlp(), 4.5e-4, feeds)
    rep = engine.reports["mixed_precision"]
    assert seen and all(imp == 1e-12 and r.engine["impact"].startswith("skipped") for imp, r in seen)
    assert any("added error, not the outputs' error" in n and "skipped" in n for n in rep["notes"])
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu"))
    got = max_rel_err(engine, fp32, held_out(feeds))
    assert got <= 4.5e-4 and rep["error"]["held_out"] == pytest.approx(got, rel=1e-6)
    assert 0 < rep["below_fp32"] < len(engine.layers)  # (uniform fp16 breaks this budget: a mix)


@pytest.mark.parametrize("scale,tried", [(1.0, False), (8000, True)])
def test_wide_halves_are_built_only_where_fp16_range_falls_short(monkeypatch, scale, tried):
    """On a storing target (the GPU; the CPU stands in with ``EMULATED`` emptied) bf16, which runs
    no faster than fp16 and keeps fewer bits, gets no uniform build (no sensitivity runs) unless
    some layer's values reach past fp16's range; then it is built and may carry those layers."""
    monkeypatch.setattr(mixed, "EMULATED", ())
    feeds = M.feeds(8)
    _, engine = budgeted(M.mlp(scale=scale), 1e-2, feeds)
    rep = engine.reports["mixed_precision"]
    labels = {c["label"] for c in rep["candidates"]}
    assert {"uniform fp32", "uniform fp16"} <= labels
    skipped = [n for n in rep["notes"] if n.startswith("bf16 not tried")]
    assert ("uniform bf16" in labels) == tried and bool(skipped) != tried, (labels, rep["notes"])
    if not tried:
        assert "past fp16's range" in skipped[0]


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_the_search_calibrates_once_however_many_candidates_it_builds(monkeypatch, method):
    """On a target where every candidate is built (the GPU; the CPU stands in with ``EMULATED``
    emptied) each build quantizes with the search part's ranges: they are computed once and the
    later builds load the table, instead of a reference pass over the feeds per build."""
    from workbench.precision import calibration as C

    calls = []
    real = C._calibrate

    def counted(plan, cal, progress):
        calls.append(cal.method)
        return real(plan, cal, progress)

    monkeypatch.setattr(mixed, "EMULATED", ())
    monkeypatch.setattr(C, "_calibrate", counted)
    feeds = M.feeds(8)
    net = wb.load_onnx(M.mlp())
    engine = wb.build(net, wb.BuilderConfig(device="cpu", precision="best", accuracy_budget=4.5e-4,
                                            calibration=Calibration(feeds, method=method)))
    rep = engine.reports["mixed_precision"]
    built = [c for c in rep["candidates"] if c["label"] not in ("uniform fp32",)]
    assert len(built) > 4  # uniform builds and candidates, each a build here
    # where the time went: every build counted (fp32 and the held-out check's too), the parts within the total
    sec = rep["seconds"]
    assert rep["builds"] >= len(built) + 1 and 0 < sec["builds"] and 0 < sec["sensitivities"]
    assert sec["builds"] + sec["sensitivities"] <= sec["total"]
    # one calibration: the value ranges are the quantization table's observed min / max
    assert calls == [method], calls
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu"))
    got = max_rel_err(engine, fp32, held_out(feeds))
    assert got <= 4.5e-4 and rep["error"]["held_out"] == pytest.approx(got, rel=1e-6)


@pytest.mark.parametrize("batch,measured_on", [(4, 2), (8, 1)])
def test_a_large_batch_measures_the_sensitivities_on_its_own(monkeypatch, batch, measured_on):
    """Each search feed costs the sensitivity measure a reference pass per layer and precision: a
    feed of SENSITIVITY_SAMPLES samples or more is measured alone, smaller ones two at a time."""
    seen = []
    real = mixed.measure

    def counted(engine, feeds, **kw):
        seen.append(len(feeds))
        return real(engine, feeds, **kw)

    monkeypatch.setattr(mixed, "measure", counted)
    _, engine = budgeted(M.mlp(batch=batch), 4.5e-4, M.feeds(8, batch=batch))
    assert seen and set(seen) == {measured_on}
    assert engine.reports["mixed_precision"]["feeds"]["sensitivity_measured_on"] == measured_on


def test_the_progress_bar_says_what_each_step_was(capsys, monkeypatch):
    """A search takes minutes on a large model: its bar names each step (builds, sensitivity
    runs, candidates) as it goes. (Drawn at every step here: this model's steps are faster than
    tqdm's refresh interval.)"""
    real = mixed._bar

    def every_step(on):
        bar = real(on)
        bar.mininterval, bar.miniters = 0, 1
        return bar

    monkeypatch.setattr(mixed, "_bar", every_step)
    budgeted(M.mlp(), 4.5e-4, M.feeds(8), progress=True)
    err = capsys.readouterr().err
    assert "precision search" in err and "built fp16" in err and "measured fp16 sensitivities" in err
    assert "evaluated promote" in err and "built best with per-layer precisions" in err


def test_a_user_metric_replaces_the_default():
    calls = []

    def max_abs(outputs, reference_outputs):
        calls.append(sorted(outputs))
        return float(np.max(np.abs(outputs["y"].astype(np.float64) - reference_outputs["y"])))

    feeds = M.feeds(8)
    net, engine = budgeted(M.mlp(), 2e-3, feeds, accuracy_metric=max_abs)
    rep = engine.reports["mixed_precision"]
    assert calls and all(c == ["y"] for c in calls) and rep["metric"] == "max_abs"
    a, b = engine.create_context(), wb.build(net, wb.BuilderConfig(device="cpu")).create_context()
    direct = float(np.mean([max_abs(a.run(f), b.run(f)) for f in held_out(feeds)]))
    assert rep["error"]["held_out"] == pytest.approx(direct) and direct <= 2e-3


def test_without_data_the_search_uses_random_inputs_and_says_so():
    _, engine = budgeted(M.mlp(), 1e-3, None)
    rep = engine.reports["mixed_precision"]
    assert "random" in rep["feeds"]["source"] and any("random inputs" in n for n in rep["notes"])
    assert rep["error"]["held_out"] <= 1e-3


def test_one_batch_is_used_for_both_parts_and_that_is_said():
    _, engine = budgeted(M.mlp(), 1e-3, M.feeds(1))
    rep = engine.reports["mixed_precision"]
    assert not rep["feeds"]["disjoint"] and any("one batch only" in n for n in rep["notes"])


def test_best_without_a_budget_keeps_its_meaning():
    engine = wb.build(wb.load_onnx(M.mlp()), wb.BuilderConfig(device="cpu", precision="best"))
    assert "mixed_precision" not in engine.reports
    assert all(l.precision == "fp32" for l in engine.layers)  # the CPU's best: emulation only adds rounding


@pytest.mark.parametrize("kw,match", [
    ({"precision": "fp16", "accuracy_budget": 1e-2}, "needs precision 'best'"),
    ({"precision": "best", "accuracy_budget": 0}, "accuracy_budget"),
    ({"precision": "best", "accuracy_budget": -1.0}, "accuracy_budget"),
    ({"precision": "best", "accuracy_budget": float("nan")}, "accuracy_budget"),
    ({"precision": "best", "accuracy_budget": True}, "accuracy_budget"),
    ({"precision": "best", "accuracy_budget": "0.1"}, "accuracy_budget"),
    ({"precision": "best", "accuracy_budget": 1e-2, "accuracy_metric": "l2"}, "accuracy_metric"),
    ({"precision": "best", "accuracy_metric": lambda a, b: 0.0}, "accuracy_metric"),
    ({"precision": "best", "accuracy_budget": 1e-2, "profiles": [{"x": ((1, 32), (4, 32), (8, 32))}]}, "shape ranges"),
])
def test_config_checks(kw, match):
    with pytest.raises(WorkbenchError, match=match):
        wb.BuilderConfig(device="cpu", **kw)


def test_a_failing_metric_is_one_line_naming_it():
    def broken(outputs, reference_outputs):
        raise KeyError("logits")

    with pytest.raises(WorkbenchError, match="accuracy_metric failed: KeyError"):
        budgeted(M.mlp(), 1e-2, M.feeds(2), accuracy_metric=broken)


# ---------------------------------------------------------------------------- the search alone
def ladders_of(sens: list[float]) -> list[Ladder]:
    """One layer per sensitivity: fp16 (1 ms, its sensitivity) or fp32 (2 ms, 0)."""
    return [make_ladder(f"L{i}", [Rung("fp16", 1.0, s), Rung("fp32", 2.0, 0.0)], {}) for i, s in enumerate(sens)]


def additive(ladders, sens, log):
    """Error = the sum of the sensitivities of the layers left in fp16; latency = the sum of rungs'."""
    def evaluate(assignment, label):
        log.append(label)
        err = sum(s for lad, s in zip(ladders, sens) if assignment[lad.layer] == 0)
        return err, sum(lad.rungs[assignment[lad.layer]].latency_ms for lad in ladders)
    return evaluate


def test_make_ladder_keeps_the_pareto_front():
    lad = make_ladder("L", [Rung("fp32", 4.0, 0.0), Rung("fp16", 2.0, 1e-4), Rung("bf16", 2.0, 1e-3),
                            Rung("int8", 1.0, 1e-2), Rung("fp8", 1.0, 5e-2)], {"tf32": "not a matrix op"})
    assert [r.precision for r in lad.rungs] == ["int8", "fp16", "fp32"]
    assert lad.excluded == {"tf32": "not a matrix op", "bf16": DOMINATED, "fp8": DOMINATED}
    # a precision no cheaper than fp32 is not worth a rung
    assert [r.precision for r in make_ladder("L", [Rung("fp32", 1.0, 0.0), Rung("fp16", 1.0, 1e-4)], {}).rungs] == ["fp32"]


def test_promotion_promotes_the_most_sensitive_layers_first():
    sens = [1e-3, 5e-2, 2e-4, 3e-2, 1e-4, 4e-3, 0.0, 2e-3]
    ladders, log = ladders_of(sens), []
    out = promote(ladders, additive(ladders, sens, log), target=5e-3)
    # the fewest promotions: the most sensitive first until what is left sums to <= 5e-3
    left, promoted = sum(sens), set()
    for i in sorted(range(len(sens)), key=lambda i: -sens[i]):
        if left <= 5e-3:
            break
        left -= sens[i]
        promoted.add(f"L{i}")
    assert {n for n, r in out.assignment.items() if r == 1} == promoted and out.error <= 5e-3
    assert out.additive and out.strategy == "promote"
    # doubling, then bisection; then one try per promoted layer to step it back (none can be here)
    searched = [label for label in set(log) if "one rung down" not in label]
    assert len(searched) <= 2 * math.ceil(math.log2(len(sens))) + 2
    assert len(set(log)) - len(searched) == len(promoted)


def test_promotions_the_target_does_not_need_are_stepped_back():
    # the prefix must take L0 (most sensitive per ms) to reach L1, which the target needs; L0's
    # promotion is spare, and it is stepped back
    ladders = [make_ladder("L0", [Rung("fp16", 1.0, 1e-3), Rung("fp32", 1.1, 0.0)], {}),
               make_ladder("L1", [Rung("fp16", 1.0, 8e-3), Rung("fp32", 3.0, 0.0)], {})]
    out = promote(ladders, additive(ladders, [1e-3, 8e-3], []), target=5e-3)
    assert out.assignment == {"L0": 0, "L1": 1} and out.order == {"L1": 2}


def test_moves_rank_by_sensitivity_per_millisecond():
    ladders = [make_ladder("cheap", [Rung("fp16", 1.0, 1e-3), Rung("fp32", 1.5, 0.0)], {}),
               make_ladder("dear", [Rung("fp16", 1.0, 2e-3), Rung("fp32", 5.0, 0.0)], {})]
    assert [m[2] for m in moves_of(ladders)] == ["cheap", "dear"]  # 2e-3/ms beats 5e-4/ms


def test_bisection_runs_when_errors_do_not_add_up():
    # L1 and L4 break the budget only together (each alone measures almost nothing, so the
    # sensitivity order is no guide), and L2's fp16 happens to cancel most of that: promoting L2,
    # the most sensitive alone, makes the error ten times worse
    names = [f"L{i}" for i in range(6)]
    ladders = [make_ladder(n, [Rung("fp16", 1.0, s), Rung("fp32", 2.0, 0.0)], {})
               for n, s in zip(names, [1e-4, 1e-6, 3e-3, 1e-4, 1e-6, 1e-4])]

    def evaluate(a, label):
        low = {n for n in names if a[n] == 0}
        err = 1e-4 * len(low - {"L1", "L2", "L4"}) + (0.05 if {"L1", "L4"} <= low else 0.0)
        if "L2" in low:
            err = abs(err - 0.045)
        return err, sum(2.0 - (a[n] == 0) for n in names)

    target = 1e-3
    found = promote(ladders, evaluate, target)
    assert found is not None and found.error <= target and not found.additive
    out = bisect(ladders, evaluate, target)
    assert out.strategy == "bisect" and out.error <= target
    low = {n for n, r in out.assignment.items() if r == 0}
    assert not {"L1", "L4"} <= low and low >= {"L0", "L3", "L5"} and out.failed <= {"L1", "L2", "L4"}
    # the search runs both when promotion looks non-additive, and keeps the faster
    fake = SimpleNamespace(ladders=ladders, evaluate=evaluate, notes=[])
    best = mixed._Search._search(fake, target)
    assert best.latency_ms == min(found.latency_ms, out.latency_ms) and "bisection" in fake.notes[0]
    # with additive errors it does not
    sens = [1e-3, 2e-3, 3e-3]
    plain = ladders_of(sens)
    fake = SimpleNamespace(ladders=plain, evaluate=additive(plain, sens, []), notes=[])
    assert mixed._Search._search(fake, 2.5e-3).strategy == "promote" and not fake.notes


def test_an_infinite_sensitivity_is_promoted_first():
    ladders = ladders_of([1e-3, math.inf, 1e-2])
    assert moves_of(ladders)[0][2] == "L1"


@pytest.mark.slow
def test_mobilenetv2_search_on_cpu():
    """MobileNetV2 under a budget tighter than fp16 everywhere: met on held-out inputs with most
    layers below fp32."""
    net = wb.load_onnx(os.path.join(MODELS, "mobilenetv2_legacy.onnx"))
    shapes = {"pixel_values": (1, 3, 64, 64)}
    rng = np.random.default_rng(0)
    feeds = [{"pixel_values": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(4)]
    budget = 5e-5
    engine = wb.build(net, wb.BuilderConfig(device="cpu", precision="best", shapes=shapes, autotune=False,
                                            accuracy_budget=budget, calibration=Calibration(feeds)))
    rep = engine.reports["mixed_precision"]
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu", shapes=shapes, autotune=False))
    fp16 = wb.build(net, wb.BuilderConfig(device="cpu", precision="fp16", shapes=shapes, autotune=False))
    got, uniform = max_rel_err(engine, fp32, held_out(feeds)), max_rel_err(fp16, fp32, held_out(feeds))
    print(f"MobileNetV2 (CPU): fp16 everywhere {uniform:.3g}; best under {budget:g}: {got:.3g} held out, "
          f"{rep['below_fp32']}/{rep['layers']} layers below fp32 ({rep['fraction_below_fp32']:.0%}), "
          f"{dict((p, list(rep['precisions'].values()).count(p)) for p in set(rep['precisions'].values()))}")
    assert uniform > budget >= got and rep["fraction_below_fp32"] > 0.5


def test_bisection_stops_at_its_cap_and_keeps_what_passed():
    # every layer fails alone at fp8 but passes at fp16: uncapped, bisection tries each one's middle
    # rung; capped, it stops, the layers it did not reach stay fp32, and the result still meets the
    # target (every accepted step was measured)
    names = [f"L{i}" for i in range(16)]
    ladders = [make_ladder(n, [Rung("fp8", 1.0, 1e-2), Rung("fp16", 2.0, 1e-4), Rung("fp32", 3.0, 0.0)], {})
               for n in names]
    calls = []

    def evaluate(a, label):
        calls.append(label)
        err = sum(1e-2 if a[n] == 0 else (1e-4 if a[n] == 1 else 0.0) for n in names)
        return err, sum(1.0 + a[n] for n in names)

    full = bisect(ladders, evaluate, target=5e-3)
    assert not full.stopped and all(r == 1 for r in full.assignment.values())
    uncapped = len(calls)
    calls.clear()
    cap = uncapped - 9  # every segment, then half of the middle rungs
    capped = bisect(ladders, evaluate, target=5e-3, max_evals=cap)
    assert len(calls) == cap + 1  # the cap, then the result's own evaluation
    assert capped.error <= 5e-3 and "cap" in capped.stopped
    assert sorted(capped.assignment.values()) == [1] * 8 + [2] * 8 and "8 layer(s)" in capped.stopped
    assert capped.latency_ms > full.latency_ms
    # a cap reached inside the segments leaves whole segments at the top rung
    calls.clear()
    early = bisect(ladders, evaluate, target=5e-3, max_evals=3)
    assert len(calls) == 4 and set(early.assignment.values()) == {2} and "16 layer(s)" in early.stopped


def _timed(name, precision, ms):
    return SimpleNamespace(name=name, precision=precision, tactic_table=[{"chosen": True, "ms": ms}])


def test_a_gpu_precision_no_faster_than_fp16_is_not_measured():
    # int8 on Hopper: every GEMM slower than at fp16, so each int8 rung would be dominated; the
    # search skips its sensitivities (reference runs of every layer) and says why per layer
    fake = SimpleNamespace(backend="gpu", notes=[], refusals={"a": {}, "b": {}, "c": {}}, _tick=lambda what: None,
                           ranges={"a": 10.0, "b": 10.0, "c": 10.0},
                           facts={"a": {"fp16": Rung("fp16", 0.010, 1e-4)}, "b": {"fp16": Rung("fp16", 0.020, 1e-4)},
                                  "c": {}})
    slow = SimpleNamespace(layers=[_timed("a", "int8", 0.015), _timed("b", "int8", 0.020), _timed("c", "fp16", 0.001)])
    assert mixed._Search._dominated(fake, slow, "int8")
    assert "no faster than fp16's 10.0 us" in fake.refusals["a"]["int8"] and not fake.refusals["c"]
    assert "int8: sensitivities not measured" in fake.notes[0]
    # one layer faster at int8: measured as usual
    fake.notes.clear()
    fast = SimpleNamespace(layers=[_timed("a", "int8", 0.005), _timed("b", "int8", 0.030)])
    assert not mixed._Search._dominated(fake, fast, "int8") and not fake.notes
    # where fp16 is no option (values past its range, or an infinite error) int8 may still be one
    fake.notes.clear()
    fake.ranges["b"] = 1e6
    assert not mixed._Search._dominated(fake, slow, "int8")
    fake.ranges["b"] = 10.0
    fake.facts["a"]["fp16"] = Rung("fp16", 0.010, float("inf"))
    assert not mixed._Search._dominated(fake, slow, "int8")
    fake.facts["a"]["fp16"] = Rung("fp16", 0.010, 1e-4)
    # emulating targets (CPU latencies are estimates) and the wide halves are always measured
    fake.backend = "cpu"
    assert not mixed._Search._dominated(fake, slow, "int8")
    fake.backend = "gpu"
    assert not mixed._Search._dominated(fake, slow, "bf16")


def test_an_attention_mask_rules_no_precision_out():
    """Padded batches: the attention's additive mask holds -3.4e38 fills (minus infinity, which fp16
    kernels clamp), a value no layer has to hold, so fp16 stays an option for the attention."""
    shapes = {"input_ids": (4, 16), "attention_mask": (4, 16), "token_type_ids": (4, 16)}
    rng = np.random.default_rng(3)
    feeds = []
    for _ in range(4):
        mask = np.ones((4, 16), np.int64)
        mask[:, 11:] = 0  # right padding
        feeds.append({"input_ids": rng.integers(0, 100, (4, 16)), "attention_mask": mask,
                      "token_type_ids": np.zeros((4, 16), np.int64)})
    net = wb.load_onnx(os.path.join(MODELS, "bert_legacy.onnx"))
    engine = wb.build(net, wb.BuilderConfig(device="cpu", precision="best", accuracy_budget=1e-2, shapes=shapes,
                                            calibration=Calibration(feeds)))
    rows = {r["layer"]: r for r in engine.reports["precision"]}
    attention = [l for l in engine.layers if l.op == "Attention"]
    assert attention and all(len(l.inputs) > 3 and l.inputs[3] for l in attention)  # (they read a mask)
    for layer in attention:
        assert "past fp16" not in rows[layer.name]["reason"], rows[layer.name]["reason"]
    assert any(l.precision == "fp16" for l in attention)  # (1e-2 is loose enough for it here)


def _uniform(engine) -> str | None:
    """The one precision of every (non-Cast) layer of ``engine``, None for a mix."""
    precs = {l.precision for l in engine.layers if l.op != "Cast"}
    return precs.pop() if len(precs) == 1 else None


@pytest.mark.parametrize("fastest", ["search", "fp16", "fp32"])
def test_the_result_is_timed_end_to_end_against_the_uniform_builds(monkeypatch, fastest):
    """On the GPU (the CPU stands in with ``EMULATED`` emptied and made-up replay times) the search
    ranks by summed layer times; the result is then timed end to end against every uniform build
    that meets the budget on the held-out feeds, and the fastest is kept, with that reason."""
    timed = []

    def replay(engine):
        timed.append(_uniform(engine))
        times = {None: 1.0, "fp16": 2.0, "fp32": 3.0, None if fastest == "search" else fastest: 0.5}
        return times[_uniform(engine)], "made-up replay times"

    monkeypatch.setattr(mixed, "EMULATED", ())
    monkeypatch.setattr(mixed, "engine_latency", replay)
    feeds = M.feeds(8)
    net, engine = budgeted(M.mlp(), 2e-2, feeds)  # loose: int8 on some layers, fp16 on others
    rep = engine.reports["mixed_precision"]
    e2e = rep["end_to_end"]
    # (the ms below are the made-up values ``replay`` returns, not timings)
    assert e2e["how"] == "made-up replay times" and e2e["result_ms"] == (0.5 if fastest == "search" else 1.0)
    # the rivals: the uniform builds within the budget (int8 / fp8 alone are not), fp32 at no error
    assert set(e2e["uniform"]) == {"fp16", "fp32"} and e2e["uniform"]["fp32"]["held_out"] == 0.0
    assert all(r["held_out"] <= 2e-2 for r in e2e["uniform"].values())
    assert sorted(timed, key=str) == sorted([None, "fp16", "fp32"], key=str)  # each timed once
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu"))
    got = max_rel_err(engine, fp32, held_out(feeds))
    assert got <= 2e-2 and rep["error"]["held_out"] == pytest.approx(got, rel=1e-6)
    rows = {r["layer"]: r for r in engine.reports["precision"]}
    if fastest == "search":
        assert _uniform(engine) is None and e2e["kept"] == rep["strategy"] == "promote"
        assert not any("end to end" in r["reason"] for r in rows.values())
    else:
        assert _uniform(engine) == fastest and e2e["kept"] == rep["strategy"] == f"uniform {fastest}"
        assert rep["precisions"] == {l.name: fastest for l in engine.layers}
        for row in rows.values():
            assert f"uniform {fastest} met the budget and ran faster end to end (0.5 ms) than the searched mix " \
                   "(1 ms)" in row["reason"]
        assert any(n.startswith(f"uniform {fastest} met the budget") for n in rep["notes"])
        assert rep["candidates"][-1]["label"].startswith(f"uniform {fastest} precisions, built")
    from workbench.cli.accuracy import mixed_text

    line = next(x for x in mixed_text(rep).splitlines() if x.startswith("end to end (made-up replay times)"))
    assert f"search result {e2e['result_ms']:.4g} ms;" in line and "uniform fp16 " in line and \
        line.endswith(f"kept: {e2e['kept']}")


def test_a_failed_end_to_end_timing_leaves_the_result_and_says_why(monkeypatch):
    def replay(engine):
        raise wb.WorkbenchError("CUDA graph capture failed\nsecond line")

    monkeypatch.setattr(mixed, "EMULATED", ())
    monkeypatch.setattr(mixed, "engine_latency", replay)
    _, engine = budgeted(M.mlp(), 2e-2, M.feeds(8))
    rep = engine.reports["mixed_precision"]
    assert rep["strategy"] == "promote" and rep["end_to_end"] == {}
    assert "not timed end to end against the uniform builds: CUDA graph capture failed" in rep["notes"][-1]


def test_the_cpu_search_times_nothing_end_to_end(monkeypatch):
    """The CPU's latencies are estimates (it emulates reduced precision): no replay is timed."""
    def replay(engine):
        raise AssertionError("timed on the CPU")

    monkeypatch.setattr(mixed, "engine_latency", replay)
    _, engine = budgeted(M.mlp(), 2e-2, M.feeds(8))
    assert engine.reports["mixed_precision"]["end_to_end"] == {}


def test_the_notebook_shows_the_end_to_end_check(monkeypatch):
    from workbench.ui.precision_tab import auto_html

    monkeypatch.setattr(mixed, "EMULATED", ())
    monkeypatch.setattr(mixed, "engine_latency", lambda e: (0.5 if _uniform(e) == "fp16" else 1.0, "replays <i>"))
    _, engine = budgeted(M.mlp(), 2e-2, M.feeds(8))
    page = auto_html(engine.reports["mixed_precision"])
    assert "end to end (replays &lt;i&gt;): search result 1 ms;" in page and "kept: uniform fp16" in page


def test_a_faster_uniform_build_that_misses_the_budget_when_rebuilt_leaves_the_result(monkeypatch):
    """The uniform build is rebuilt with its precisions as per-layer overrides; should that engine
    miss the budget on the held-out feeds (here the rebuild is made to come out at int8 on every
    layer), the search's result stands and the notes say why."""
    real = mixed._Search.build

    def build(self, **changes):
        lp = changes.get("layer_precisions") or {}
        if lp and set(lp.values()) == {"fp16"}:
            changes = {**changes, "layer_precisions": {k: "int8" for k in lp}}
        return real(self, **changes)

    monkeypatch.setattr(mixed, "EMULATED", ())
    monkeypatch.setattr(mixed._Search, "build", build)
    monkeypatch.setattr(mixed, "engine_latency", lambda e: (0.5 if _uniform(e) == "fp16" else 1.0, "made-up"))
    feeds = M.feeds(8)
    net, engine = budgeted(M.mlp(), 2e-2, feeds)
    rep = engine.reports["mixed_precision"]
    assert rep["strategy"] == "promote" and rep["end_to_end"]["kept"] == "promote"
    assert "missed the budget on the held-out feeds" in rep["notes"][-1]
    fp32 = wb.build(net, wb.BuilderConfig(device="cpu"))
    assert max_rel_err(engine, fp32, held_out(feeds)) <= 2e-2
