"""The search half of automatic mixed precision (``mixed.py`` runs it): each layer's ladder of
precisions, and the two ways to climb them until an assignment meets an error target.

A layer's *ladder* lists the precisions worth trying for it, cheapest first: every precision the
target ran it at in a uniform build (plus fp32), minus those its value range rules out, minus any
that is no cheaper than a more accurate one (Pareto: along the ladder latency rises and the
layer's sensitivity -- the outputs' error with only this layer at that precision -- falls). Rung 0
is where the search starts; the top rung is fp32 (sensitivity 0).

* ``promote``: sensitivity-ordered promotion. Every step up a ladder is a *move*, ranked by the
  sensitivity it removes per millisecond it adds (``moves_of``: most sensitive first where costs
  are equal). Candidate k applies the first k moves;
  k is found by doubling, then bisection, for the fewest moves whose error meets the target; moves
  of the prefix the target does not need are then stepped back, largest latency saving first. Exact
  when errors add up (promoting more never hurts); ``additive`` says whether the evaluations looked so.
* ``bisect``: onnxconverter-common's auto_mixed_precision segment bisection over the layers in plan
  order: everything starts at its top rung; the largest untested segment is moved to rung 0 on top
  of what already passed; a segment that fails is halved, a single layer that fails stays up (its
  middle rungs, if any, are then tried one by one). It assumes nothing about additivity. Every
  assignment it has accepted meets the target, so it can stop at any point: after
  ``BISECT_EVALS`` evaluations it keeps what has passed so far (the untested layers stay at their
  top rung) and says so in ``Outcome.stopped``.

``evaluate(assignment) -> (error, latency_ms)``; an assignment maps layer name -> rung index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


UNDO_TRIES = 16  # evaluations spent stepping spare promotions back down
BISECT_EVALS = 64  # evaluations segment bisection may spend (on the GPU each is a build)
DOMINATED = "no faster than a more accurate precision of this layer"


@dataclass
class Rung:
    precision: str
    latency_ms: float
    sensitivity: float  # outputs' error with only this layer at this precision (0 for fp32)


@dataclass
class Ladder:
    layer: str
    rungs: list[Rung]
    excluded: dict[str, str] = field(default_factory=dict)  # precision -> why it is not on the ladder


def make_ladder(layer: str, options: list[Rung], excluded: dict[str, str]) -> Ladder:
    """The Pareto ladder of ``options`` (fp32 among them): cheapest first, each rung strictly more
    accurate than every cheaper one; a precision dropped as dominated is noted in ``excluded``."""
    ordered = sorted(options, key=lambda r: (r.latency_ms, _num(r.sensitivity), r.precision != "fp32"))
    rungs: list[Rung] = []
    excluded = dict(excluded)
    for r in ordered:
        if rungs and not _num(r.sensitivity) < min(_num(k.sensitivity) for k in rungs):
            continue  # no more accurate than a cheaper rung
        rungs.append(r)
    kept = {r.precision for r in rungs}
    for r in ordered:
        if r.precision not in kept:
            excluded.setdefault(r.precision, DOMINATED)
    # more accurate rungs cost more: the cheapest rung first, fp32 (sensitivity 0) last
    return Ladder(layer, rungs, excluded)


def _num(x: float) -> float:
    return math.inf if x is None or math.isnan(x) else x


def within(error: float, target: float) -> bool:
    """``error <= target``; NaN never is."""
    return error <= target


@dataclass
class Outcome:
    assignment: dict[str, int]
    error: float
    latency_ms: float
    strategy: str
    order: dict[str, int] = field(default_factory=dict)  # layer -> rank of its first promotion (promote)
    failed: set[str] = field(default_factory=set)  # layers whose rung 0 broke the budget (bisect)
    additive: bool = True
    stopped: str = ""  # why the search ended before it had tried everything (bisect's evaluation cap)


Evaluate = Callable[[dict[str, int], str], tuple[float, float]]


def moves_of(ladders: list[Ladder]) -> list[tuple[float, int, str, int]]:
    """Every step up a ladder as (priority, plan position, layer, new rung), highest priority first.
    The priority is the sensitivity the step removes per millisecond it costs (the greedy order of
    a knapsack: with equal costs, simply the most sensitive layers first); an infinite sensitivity
    (non-finite outputs) goes first."""
    moves = []
    for pos, lad in enumerate(ladders):
        for r in range(len(lad.rungs) - 1):
            a, b = lad.rungs[r], lad.rungs[r + 1]
            gain = _num(a.sensitivity) - _num(b.sensitivity) if math.isfinite(_num(a.sensitivity)) else math.inf
            moves.append((gain / max(b.latency_ms - a.latency_ms, 1e-9), pos, lad.layer, r + 1))
    moves.sort(key=lambda m: (-m[0], m[1], m[3]))
    return moves


def promote(ladders: list[Ladder], evaluate: Evaluate, target: float) -> Outcome | None:
    """Sensitivity-ordered promotion (see the module doc); None if even every move fails."""
    moves = moves_of(ladders)
    start = {lad.layer: 0 for lad in ladders}

    def after(k: int) -> dict[str, int]:
        a = dict(start)
        for _, _, layer, rung in moves[:k]:
            a[layer] = max(a[layer], rung)
        return a

    seen: dict[int, float] = {}

    def err(k: int) -> float:
        if k not in seen:
            seen[k] = evaluate(after(k), f"promote {k} of {len(moves)}")[0]
        return seen[k]

    if within(err(0), target):
        lo = hi = 0
    else:
        lo, k, hi = 0, 1, None
        while k < len(moves):
            if within(err(k), target):
                hi = k
                break
            lo, k = k, k * 2
        if hi is None:
            if not within(err(len(moves)), target):
                return None
            hi = len(moves)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if within(err(mid), target):
                hi = mid
            else:
                lo = mid
    assignment = _undo_spare(ladders, after(hi), start, evaluate, target)
    error, latency = evaluate(assignment, "promote result")
    order: dict[str, int] = {}
    for rank, (_, _, layer, _) in enumerate(moves[:hi]):
        if assignment[layer] > 0:
            order.setdefault(layer, rank + 1)
    return Outcome(assignment, error, latency, "promote", order=order, additive=_monotone(seen))


def _undo_spare(ladders: list[Ladder], assignment: dict[str, int], start: dict[str, int], evaluate: Evaluate,
                target: float) -> dict[str, int]:
    """The prefix takes every move ranked above the last one it needs, some of which the target
    does not: step layers back down, the largest latency saving first, while the error stays within
    the target (at most ``UNDO_TRIES`` evaluations)."""
    by_name = {lad.layer: lad for lad in ladders}
    tries = 0
    while tries < UNDO_TRIES:
        steps = sorted(((by_name[n].rungs[r].latency_ms - by_name[n].rungs[r - 1].latency_ms, n)
                        for n, r in assignment.items() if r > start[n]), reverse=True)
        for saving, name in steps:
            if tries >= UNDO_TRIES or saving <= 0:
                return assignment
            trial = dict(assignment, **{name: assignment[name] - 1})
            tries += 1
            if within(evaluate(trial, f"promote: {name} one rung down")[0], target):
                assignment = trial
                break
        else:
            return assignment
    return assignment


def _monotone(seen: dict[int, float]) -> bool:
    """Whether more promotions never made the error clearly worse (a sign the errors add up)."""
    ks = sorted(seen)
    for a, b in zip(ks, ks[1:]):
        ea, eb = _num(seen[a]), _num(seen[b])
        if eb > 1.5 * ea and eb - ea > 1e-12:
            return False
    return True


def bisect(ladders: list[Ladder], evaluate: Evaluate, target: float,
           max_evals: int = BISECT_EVALS) -> Outcome | None:
    """Segment bisection (see the module doc); None if the all-top assignment fails."""
    names = [lad.layer for lad in ladders]
    top = {lad.layer: len(lad.rungs) - 1 for lad in ladders}
    low: set[str] = set()
    failed: set[str] = set()
    spent = 0

    def trial(extra) -> dict[str, int]:
        return {n: 0 if (n in low or n in extra) else top[n] for n in names}

    def passes(assignment: dict[str, int], label: str) -> bool:
        nonlocal spent
        spent += 1
        return within(evaluate(assignment, label)[0], target)

    segments = [(0, len(names))] if names else []
    while segments and spent < max_evals:
        segments.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        a, b = segments.pop(0)
        seg = set(names[a:b])
        if passes(trial(seg), f"bisect {b - a} layer(s) from #{a}"):
            low |= seg
        elif b - a == 1:
            failed |= seg
        else:
            m = (a + b) // 2
            segments += [(a, m), (m, b)]
    assignment = trial(set())
    by_name = {lad.layer: lad for lad in ladders}
    middle = [(name, r) for name in names if name in failed for r in range(1, len(by_name[name].rungs) - 1)]
    done: set[str] = set()
    skipped = sum(b - a for a, b in segments)  # layers of segments never tried (the cap)
    for name, r in middle:  # a layer whose cheapest rung failed may still take a middle one
        if name in done:
            continue
        if spent >= max_evals:
            skipped += 1
            continue
        t = dict(assignment, **{name: r})
        if passes(t, f"bisect {name} at rung {r}"):
            assignment = t
            done.add(name)
    error, latency = evaluate(assignment, "bisect result")
    if not within(error, target):
        return None
    stopped = (f"segment bisection stopped at its cap of {max_evals} evaluations: {skipped} layer(s) or rung(s) "
               "left untried kept their more accurate precision") if skipped else ""
    return Outcome(assignment, error, latency, "bisect", failed=failed, stopped=stopped)
