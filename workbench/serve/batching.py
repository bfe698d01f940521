"""Rows in, rows out: how requests of any number of rows run through one engine.

Dynamic batching (``workbench serve``) and batch inference (``workbench batch``) both gather rows
from several sources, run them through the engine in as few runs as it allows and hand every
source back exactly its own rows. That logic lives here, without Ray, so it is tested on its own.

An engine is *batched* when dim 0 of every input and every output is one batch dimension: the
same number in all of them (an engine built for a fixed batch B), the same symbolic name (an engine
that takes any batch), or an input range of shape profiles. Rows are then concatenated, cut into
runs of at most the engine's largest batch, a short run is padded up to the batch the engine needs
with copies of one of its real rows (never zeros, which may take another path through a model),
and the outputs are sliced back. An engine whose dim 0 is not shared that way runs every request
on its own, with exactly the engine's input shapes.

Batching is only right when rows do not interact (dim 0 really is the batch). ``rows_interact``
checks that once at load with random rows, so a sequence-first model whose dim 0 happens to be
shared is never batched into wrong answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.numerics import random_inputs, rel_err, tolerance
from ..core.plan import TensorSpec
from ..core.precisions import STORAGE
from ..errors import InputError, WorkbenchError
from ..runtime.validate import check_feeds

DEFAULT_MAX_BATCH = 32  # rows per run when the engine takes any batch and nobody says otherwise


class BatchingError(WorkbenchError, RuntimeError):
    """The engine's outputs do not follow the batch its inputs were given."""


@dataclass(frozen=True)
class BatchLayout:
    """What batching one engine allows.

    ``batched``: dim 0 of every input and output is the batch. ``min_rows`` / ``max_rows``: the
    smallest and largest batch one engine run takes (``max_rows`` None: any); ``fixed``: the engine
    takes exactly that batch (runs are padded to it). ``row_specs``: the engine's inputs with dim 0
    free, what one request is checked against. ``reason``: why the engine is not batched."""

    batched: bool
    min_rows: int = 1
    max_rows: int | None = None
    fixed: int | None = None
    row_specs: tuple[TensorSpec, ...] = ()
    reason: str = ""

    def padded_rows(self, rows: int) -> int:
        """The batch one engine run of ``rows`` real rows is padded to."""
        if self.fixed is not None:
            return self.fixed
        return max(rows, self.min_rows)

    def batch_limit(self, requested: int | None = None) -> int:
        """Rows the batcher gathers before a run: ``requested`` if given, else the engine's largest
        batch (``DEFAULT_MAX_BATCH`` for an engine that takes any)."""
        if not self.batched:
            return 1
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
                raise InputError(f"max_batch must be a positive whole number, got {requested!r}")
            return requested
        return self.max_rows or DEFAULT_MAX_BATCH


def profile_batch_range(engine) -> tuple[int, int] | None:
    """(min, max) of dim 0 over the engine's shape profiles, when every profile gives every input
    the same dim-0 range; None when the engine has no profiles (or they do not range dim 0 alike).

    Profiles are ``[{input name: (min_shape, opt_shape, max_shape)}, ...]`` (``BuilderConfig(profiles=)``),
    read from ``engine.profiles`` or the plan."""
    profiles = getattr(engine, "profiles", None)
    if profiles is None:
        profiles = getattr(getattr(engine, "plan", None), "profiles", None)
    if not profiles:
        return None
    lows, highs = [], []
    for profile in profiles:
        ranges = _profile_ranges(profile)
        if ranges is None:
            return None
        per_input = {(r[0][0], r[-1][0]) for r in ranges.values() if r and r[0] and r[-1]}
        if len(per_input) != 1 or len(ranges) != len(engine.inputs):
            return None
        lo, hi = per_input.pop()
        lows.append(int(lo))
        highs.append(int(hi))
    return min(lows), max(highs)


def _profile_ranges(profile) -> dict | None:
    """{input: (min_shape, opt_shape, max_shape)} of one profile, whatever mapping type holds it."""
    if isinstance(profile, dict):
        items = profile.items()
    elif hasattr(profile, "shapes") and isinstance(profile.shapes, dict):
        items = profile.shapes.items()
    else:
        return None
    out = {}
    for name, triple in items:
        if not isinstance(triple, (list, tuple)) or len(triple) != 3:
            return None
        out[name] = [list(s) if isinstance(s, (list, tuple)) else [] for s in triple]
    return out


def batch_layout(engine) -> BatchLayout:
    """How ``engine`` batches: see the module docstring."""
    specs = list(engine.inputs) + list(engine.outputs)
    if not engine.inputs:
        return BatchLayout(False, reason="the engine has no inputs")
    for spec in specs:
        if spec.shape is None or len(spec.shape) == 0:
            return BatchLayout(False, reason=f"tensor {spec.name!r} has no dim 0 (shape {spec.shape})")
    firsts = {spec.shape[0] for spec in specs}
    if len(firsts) != 1:
        shown = ", ".join(f"{s.name} {s.shape[0]!r}" for s in specs)
        return BatchLayout(False, reason=f"dim 0 differs between inputs and outputs ({shown})")
    dim0 = firsts.pop()
    free = "batch" if not any("batch" in s.shape[1:] for s in engine.inputs) else "rows"
    row_specs = tuple(TensorSpec(s.name, s.dtype, [free, *s.shape[1:]]) for s in engine.inputs)
    ranged = profile_batch_range(engine)
    if ranged is not None:
        lo, hi = ranged
        return BatchLayout(True, min_rows=max(lo, 1), max_rows=hi, row_specs=row_specs)
    if isinstance(dim0, int):
        if dim0 < 1:
            return BatchLayout(False, reason=f"dim 0 is {dim0}")
        return BatchLayout(True, min_rows=dim0, max_rows=dim0, fixed=dim0, row_specs=row_specs)
    return BatchLayout(True, row_specs=row_specs)


def check_request(layout: BatchLayout, engine_inputs, feeds: dict[str, Any]) -> tuple[dict[str, np.ndarray], int]:
    """One request's feeds checked against the engine (names, dtypes, ranks, every dim but the
    batch); returns them with their number of rows (1 for an engine that is not batched).
    Raises InputError naming the input, what it expected and what it got."""
    if not layout.batched:
        return check_feeds(list(engine_inputs), feeds), 1
    feeds = check_feeds(list(layout.row_specs), feeds)
    rows = {int(np.shape(feeds[s.name])[0]) for s in layout.row_specs}
    n = rows.pop()
    if n < 1:
        raise InputError(f"the request has no rows (dim 0 of input {layout.row_specs[0].name!r} is 0)")
    return feeds, n


def split_rows(feeds: dict[str, np.ndarray], rows: int, limit: int) -> list[tuple[dict[str, np.ndarray], int]]:
    """A request of ``rows`` rows as pieces of at most ``limit`` rows (views, no copies)."""
    if rows <= limit:
        return [(feeds, rows)]
    return [({k: v[i: i + limit] for k, v in feeds.items()}, min(limit, rows - i)) for i in range(0, rows, limit)]


def run_rows(ctx, layout: BatchLayout, requests: list[tuple[dict[str, np.ndarray], int]]) -> list[dict[str, np.ndarray]]:
    """Run checked requests ((feeds, rows) from ``check_request``) together; returns each one's
    outputs, exactly its rows. Several engine runs when the rows exceed the engine's batch; requests
    that differ in a free dimension other than the batch (a sequence length) run in separate groups."""
    if not layout.batched:
        return [_own(ctx.run(feeds)) for feeds, _ in requests]
    results: list[dict[str, np.ndarray] | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, (feeds, _) in enumerate(requests):
        key = tuple(tuple(np.shape(feeds[s.name])[1:]) for s in layout.row_specs)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        for i, out in zip(members, _run_group(ctx, layout, [requests[i] for i in members])):
            results[i] = out
    return results  # type: ignore[return-value]


def _run_group(ctx, layout: BatchLayout, requests) -> list[dict[str, np.ndarray]]:
    names = [s.name for s in layout.row_specs]
    total = sum(n for _, n in requests)
    if len(requests) == 1:
        stacked = requests[0][0]
    else:
        stacked = {name: np.concatenate([feeds[name] for feeds, _ in requests]) for name in names}
    step = layout.max_rows or total
    pieces: list[dict[str, np.ndarray]] = []
    for start in range(0, total, step):
        n = min(step, total - start)
        chunk = {name: stacked[name][start: start + n] for name in names}
        pieces.append(_run_padded(ctx, layout, chunk, n))
    joined = pieces[0] if len(pieces) == 1 else {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    results, start = [], 0
    for _, n in requests:
        results.append({k: np.array(v[start: start + n]) for k, v in joined.items()})  # each its own copy
        start += n
    return results


def _run_padded(ctx, layout: BatchLayout, chunk: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    target = layout.padded_rows(n)
    if target > n:  # pad with copies of the last real row
        chunk = {k: np.concatenate([v, np.repeat(v[n - 1: n], target - n, axis=0)]) for k, v in chunk.items()}
    outs = ctx.run(chunk)
    sliced = {}
    for name, value in outs.items():
        value = _host(value)
        if value.ndim == 0 or value.shape[0] != target:
            raise BatchingError(f"output {name!r} has shape {list(value.shape)} for a batch of {target} rows; "
                                "its dim 0 is not the batch")
        sliced[name] = value[:n]
    return sliced


def _engine_tolerance(engine) -> float:
    """Twice the tolerance of the engine's least precise layer: a row computed at another position
    of a batch may round differently there (fp16 tactics), which is not rows interacting."""
    names = {getattr(layer, "precision", None) for layer in getattr(engine, "layers", [])}
    return 2 * max((tolerance(STORAGE.get(p, "float32")) for p in names if p), default=0.0)


def _own(outs: dict) -> dict[str, np.ndarray]:
    return {k: _host(v) for k, v in outs.items()}


def _host(value) -> np.ndarray:
    return np.asarray(value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value)


def rows_interact(ctx, layout: BatchLayout, seed: int = 0) -> str | None:
    """Whether the engine's rows depend on each other or on their position: runs random rows A,
    then other random rows with A's first row moved to position 1, and checks that this row's
    outputs stay the same. Returns what differed, or None (rows independent)."""
    if not layout.batched:
        return None
    n = layout.padded_rows(min(layout.max_rows or 4, 4))
    if n < 2:
        return None  # one row per run: nothing to mix
    specs = [TensorSpec(s.name, s.dtype, [n, *s.shape[1:]]) for s in layout.row_specs]
    if not all(s.dtype and all(isinstance(d, int) for d in s.shape) for s in specs):
        return None  # a dim other than the batch is free: no shape to probe with
    if sum(math.prod(s.shape) for s in specs) > 1 << 24:
        return None
    try:
        first, other = random_inputs(specs, seed=seed), random_inputs(specs, seed=seed + 1)
    except TypeError:
        return None
    for name, value in other.items():
        value[1] = first[name][0]
    base, moved = _own(ctx.run(first)), _own(ctx.run(other))
    loose = _engine_tolerance(ctx.engine)
    for name, value in base.items():
        want, got = value[0], moved[name][1]
        if value.dtype.kind in "fc":
            err = rel_err(got, want)
            bad = err > max(tolerance(str(value.dtype)) * 10, loose, 1e-6)
        else:
            err, bad = float("nan"), not np.array_equal(got, want)
        if bad:
            return f"output {name!r} of a row changes when the other rows or its position change (relative difference {err:.2g})"
    return None
