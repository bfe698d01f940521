"""Shape ranges at run time: which profile a run's input shapes fall in (or a one-line error naming
the input, its shape and the range), which bucket runs them, and the context that runs an engine
built as buckets.

An engine with profiles (``plan.profiles``: {input: [min, opt, max]} each) takes any shapes that lie
inside one profile, the first that holds them unless ``ctx.set_profile(i)`` chose one. An engine
with buckets (``plan.buckets``, see ``builder/profiles.py``) runs each set of shapes on the smallest
bucket that holds them: every dim equal to the bucket's, except the batch (the leading dim of every
input and output, where the bucket has a ``batch``), which may be smaller -- the inputs are padded
up to the bucket's batch by repeating their last row, and the outputs are cut back to the batch
given. A shape inside the range whose other dims (sequence, image size) were not built is refused
with an error that names the values that were.

``BucketedContext`` is the CPU form (each bucket a ``CpuExecutionContext``, padding on the host);
``gpu/bucketed.py`` is the GPU one (one arena, one stream, CUDA graphs captured per bucket).
``batch_inputs`` / ``default_batches`` give a plan's batch range and the batch sizes worth timing
(``explore.latency_vs_batch``, the Profile tab).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.plan import Bucket, Plan, TensorSpec
from ..errors import InputError, ShapeError, WorkbenchError
from .context import ExecutionContext
from .validate import check_feeds


class ShapeRangeError(InputError, ShapeError):
    """A run's input shape lies outside the engine's shape ranges, or inside them but on a value no
    bucket was built for; the message names the input, its shape and the range."""


# --------------------------------------------------------------------------- profiles


def _fmt(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def fmt_range(r) -> str:
    lo, opt, hi = r
    return f"{_fmt(lo)}..{_fmt(hi)} (opt {_fmt(opt)})"


def feed_shapes(plan: Plan, feeds: dict) -> dict[str, tuple[int, ...]]:
    """The shapes of the feeds that are arrays of the plan's inputs (others are left to ``check_feeds``)."""
    shapes = {}
    for spec in plan.inputs:
        shape = getattr(feeds.get(spec.name) if isinstance(feeds, dict) else None, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            shapes[spec.name] = shape
    return shapes


def _outside(r, shape) -> bool:
    lo, _, hi = r
    return len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi))


def check_profile_index(plan: Plan, index) -> int | None:
    """``index`` if the engine has that profile (None: any profile); else a one-line WorkbenchError."""
    if index is None:
        return None
    n = len(plan.profiles)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < max(n, 1):
        have = f"profiles 0..{n - 1}" if n else "no shape ranges (one profile, 0, of its own shapes)"
        raise WorkbenchError(f"set_profile({index!r}): this engine has {have}")
    return index


def select_profile(plan: Plan, shapes: dict[str, tuple[int, ...]], active: int | None = None) -> int | None:
    """The profile that holds ``shapes`` (``active``: only that one), or None for an engine without
    profiles. A ShapeRangeError names the input, its shape and the range(s) it misses."""
    profiles = plan.profiles
    if not profiles:
        return None
    order = [active] if active is not None else range(len(profiles))
    names = [s.name for s in plan.inputs]  # the model's order (a saved engine's dicts come back sorted)
    misses = {}
    for p in order:
        bad = next((n for n in names if n in profiles[p] and n in shapes and _outside(profiles[p][n], shapes[n])), None)
        if bad is None:
            return p
        misses[p] = bad
    # name the input every profile refuses, else the one the first profile refuses
    name = next((n for n in misses.values() if all(n == m for m in misses.values())), next(iter(misses.values())))
    shape = shapes[name]
    rank = len(profiles[next(iter(misses))][name][0])
    what = f"rank {len(shape)}, expected rank {rank}" if len(shape) != rank else "outside"
    if len(misses) == 1:
        p = next(iter(misses))
        where = f"profile {p}'s range {fmt_range(profiles[p][name])}" + (" (set_profile)" if active is not None else "")
        if what == "outside":
            return _raise(f"input {name!r} has shape {_fmt(shape)}, outside {where}")
        return _raise(f"input {name!r} has shape {_fmt(shape)} ({what}); {where}")
    ranges = "; ".join(f"profile {p} {fmt_range(profiles[p][name])}" for p in misses)
    return _raise(f"input {name!r} has shape {_fmt(shape)}, which no profile holds ({what if what != 'outside' else 'outside each'}): {ranges}")


def _raise(message: str):
    raise ShapeRangeError(message)


def check_ranges(plan: Plan, feeds: dict, active: int | None = None) -> int | None:
    """The profile the feeds fall in (None without profiles); a ShapeRangeError otherwise."""
    if not plan.profiles:
        return None
    return select_profile(plan, feed_shapes(plan, feeds), active)


def opt_specs(plan: Plan, profile: int = 0, which: int = 1) -> list[TensorSpec]:
    """The plan's inputs at profile ``profile``'s opt shapes (``which``: 0 min, 1 opt, 2 max), for
    random feeds; inputs the profile does not shape keep their own spec."""
    if not plan.profiles:
        return list(plan.inputs)
    ranges = plan.profiles[profile]
    return [TensorSpec(s.name, s.dtype, list(ranges[s.name][which])) if s.name in ranges else s for s in plan.inputs]


# --------------------------------------------------------------------------- the batch range

# the largest default batch of an engine whose batch dim is symbolic without a range
UNBOUNDED_DEFAULT = 32


def batch_inputs(plan: Plan, profile: int = 0) -> tuple[list[str], int, int]:
    """(inputs whose leading dim is the batch, smallest batch, largest batch) of ``profile``; a static
    plan's batch is its inputs' common leading dim."""
    if plan.profiles:
        ranges = plan.profiles[profile]
        names = [n for n, (lo, _, hi) in ranges.items() if len(lo) and lo[0] != hi[0]]
        if names:
            lo = max(ranges[n][0][0] for n in names)
            hi = min(ranges[n][2][0] for n in names)
            return names, lo, hi
        # the profile fixes every leading dim: the one batch of its opt shapes
        led = {n: r[1][0] for n, r in ranges.items() if len(r[1])}
        sizes = set(led.values())
        if len(sizes) != 1:
            raise InputError(f"profile {profile} fixes the inputs' leading dims to different sizes "
                             f"({_ranges_text(ranges)}); no single batch size to sweep")
        b = sizes.pop()
        return sorted(led), b, b
    led = {s.name: s.shape[0] for s in plan.inputs if s.shape}
    dynamic = sorted(n for n, d in led.items() if not isinstance(d, int))
    if dynamic:  # a symbolic batch (a CPU engine built without shapes): any batch, the rest must be static
        for s in plan.inputs:
            if s.name in dynamic and not all(isinstance(d, int) for d in list(s.shape)[1:]):
                raise InputError(f"input {s.name!r} has shape {list(s.shape)} with dynamic dims past the batch and "
                                 "the engine has no shape range; build with --min/--opt/--max-shapes "
                                 "(BuilderConfig(profiles=...)) to sweep batch sizes")
        return dynamic, 1, UNBOUNDED_DEFAULT
    sizes = set(led.values())
    if len(sizes) != 1:
        raise InputError(f"the inputs' leading dims differ ({led}); no single batch size to sweep")
    b = sizes.pop()
    return sorted(led), b, b


def default_batches(plan: Plan, profile: int = 0) -> list[int]:
    """The buckets' batch sizes in the profile's range and the range's ends; powers of two across the
    range where there are no buckets."""
    _, lo, hi = batch_inputs(plan, profile)
    picks = {lo, hi}
    buckets = [b.batch for b in plan.buckets if b.batch is not None and profile in b.profiles]
    if buckets:
        picks.update(b for b in buckets if lo <= b <= hi)
    else:
        p = 1
        while p <= hi:
            if p >= lo:
                picks.add(p)
            p *= 2
    return sorted(picks)


def _ranges_text(ranges: dict) -> str:
    return ", ".join(f"{n}: {'x'.join(map(str, lo))}..{'x'.join(map(str, hi))}" for n, (lo, _, hi) in ranges.items())


# --------------------------------------------------------------------------- buckets


def bucket_engine(engine, bucket: Bucket):
    """An Engine of one bucket's static plan (the parent's constants, blobs, target and options)."""
    from .engine import Engine  # noqa: PLC0415 - engine.py imports the contexts

    plan = Plan(inputs=bucket.plan.inputs, outputs=bucket.plan.outputs, layers=bucket.plan.layers,
                constants=engine.plan.constants, tensors=bucket.plan.tensors, arena=bucket.plan.arena,
                options=engine.plan.options)
    sub = Engine(plan, engine.target, engine.build_info, {}, engine.blobs)
    sub.path = engine.path
    return sub


class Router:
    """Picks a bucket for input shapes; remembers the choice per shape tuple."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.buckets = plan.buckets
        self.names = [s.name for s in plan.inputs if s.dtype is not None]
        self._memo: dict[tuple, tuple[int, int | None]] = {}

    def route(self, shapes: dict[str, tuple[int, ...]], profile: int | None) -> tuple[int, int | None]:
        """(bucket index, rows): ``rows`` is the batch to pad up from, None when the shapes are the
        bucket's own."""
        key = (profile, tuple(shapes.get(n) for n in self.names))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        best = None
        for i, b in enumerate(self.buckets):
            if profile is not None and profile not in b.profiles:
                continue
            if all(_fits(shapes[n], b.shapes[n], b.batch) for n in self.names if n in shapes):
                size = (b.batch or 0, sum(math.prod(s) for s in b.shapes.values()))
                if best is None or size < best[0]:
                    best = (size, i)
        if best is None:
            self._refuse(shapes, profile)
        i = best[1]
        b = self.buckets[i]
        rows = None
        if b.batch is not None and self.names:
            n = shapes[self.names[0]][0]
            rows = n if n != b.batch else None
        if len(self._memo) < 4096:
            self._memo[key] = (i, rows)
        return i, rows

    def _refuse(self, shapes: dict, profile: int | None):
        """Inside the range, but no bucket has these dims: name the first dim whose value was not built."""
        mine = [b for b in self.buckets if profile is None or profile in b.profiles]
        specs = {s.name: s for s in self.plan.inputs}
        for name in self.names:
            shape = shapes.get(name)
            if shape is None:
                continue
            for axis, d in enumerate(shape):
                padded = all(b.batch is not None for b in mine) and axis == 0
                built = sorted({b.shapes[name][axis] for b in mine if len(b.shapes[name]) == len(shape)})
                if padded and built and d <= built[-1]:
                    continue
                if d not in built:
                    dim = specs[name].shape[axis] if specs[name].shape and axis < len(specs[name].shape) else None
                    label = f"{dim} (axis {axis})" if isinstance(dim, str) else f"axis {axis}"
                    where = f" in profile {profile}" if profile is not None else ""
                    how = ("batches up to" if padded else "only") + " " + ", ".join(map(str, built))
                    why = ("dims other than the batch are specialised per value, not padded"
                           if all(b.batch is not None for b in mine) else
                           "this engine pads no dim (its inputs share no batch dim, or an output does not lead with it)")
                    raise ShapeRangeError(
                        f"input {name!r} has shape {_fmt(shape)}: this engine was built for {label} = {how}{where}; "
                        f"{why} -- rebuild with buckets={{{(dim if isinstance(dim, str) else 'dim')!r}: [..., {d}]}}")
        raise ShapeRangeError(f"no bucket of this engine holds input shapes "
                              f"{', '.join(f'{n} {_fmt(s)}' for n, s in shapes.items())}")


def _fits(shape, bucket_shape, batch) -> bool:
    if len(shape) != len(bucket_shape):
        return False
    if batch is not None and shape:
        return shape[0] <= bucket_shape[0] and tuple(shape[1:]) == tuple(bucket_shape[1:])
    return tuple(shape) == tuple(bucket_shape)


def pad_rows(value, rows: int, batch: int):
    """``value`` (``rows`` leading rows) padded to ``batch`` rows by repeating its last row (zeros for
    an empty batch); NumPy or CuPy, as given."""
    if rows == batch:
        return value
    if isinstance(value, np.ndarray):
        xp = np
    else:
        from ..kernels.cuda.device import cupy  # noqa: PLC0415 - only a GPU run pads CuPy arrays

        xp = cupy()
    if rows == 0:
        return xp.zeros((batch,) + tuple(value.shape[1:]), value.dtype)
    return xp.concatenate([value, xp.repeat(value[rows - 1:rows], batch - rows, axis=0)], axis=0)


def describe_ranges(engine) -> dict:
    """The profiles and buckets of an engine, for ``inspect`` and the notebook."""
    plan = engine.plan
    rows = {r.get("index"): r for r in engine.reports.get("buckets", []) if isinstance(r, dict)}
    buckets = []
    for i, b in enumerate(plan.buckets):
        row = {"index": i, "shapes": {k: list(v) for k, v in b.shapes.items()}, "batch": b.batch,
               "profiles": list(b.profiles), "layers": len(b.plan.layers), "arena_bytes": int(b.plan.arena.bytes)}
        row.update({k: v for k, v in rows.get(i, {}).items() if k not in row})
        buckets.append(row)
    profiles = [{"index": p, "ranges": {k: [list(s) for s in r] for k, r in prof.items()}}
                for p, prof in enumerate(plan.profiles)]
    for row in engine.reports.get("profiles", []):
        if isinstance(row, dict) and isinstance(row.get("index"), int) and row["index"] < len(profiles):
            profiles[row["index"]].update({k: v for k, v in row.items() if k not in ("index", "ranges")})
    return {"profiles": profiles, "buckets": buckets}


# --------------------------------------------------------------------------- the CPU context


class BucketedContext(ExecutionContext):
    """Runs an engine built as buckets on the CPU: each run goes to the smallest bucket that holds
    its shapes (``Router``), padded up to the bucket's batch on the host, outputs cut back."""

    device = "cpu"

    def __init__(self, engine, **options):
        super().__init__(engine)
        self.router = Router(engine.plan)
        self.memory_budget = options.get("memory_budget")
        self.subs = self._make_subs(options)
        self.profile_note = self.subs[0].profile_note

    def _make_subs(self, options: dict) -> list:
        """One context per bucket (here the CPU's; ``gpu/bucketed.py`` makes the GPU's)."""
        from .cpu import CpuExecutionContext  # noqa: PLC0415

        return [CpuExecutionContext(bucket_engine(self.engine, b), **options) for b in self.engine.plan.buckets]

    @property
    def buckets(self) -> list[dict]:
        """The buckets, in the engine's order: {"index", "shapes", "batch", "profiles"}."""
        return [{"index": i, "shapes": dict(b.shapes), "batch": b.batch, "profiles": list(b.profiles)}
                for i, b in enumerate(self.engine.plan.buckets)]

    def _checked(self, feeds: dict) -> tuple[dict, int, int | None]:
        """(feeds, bucket, rows): ranges first (so a wrong rank names the range), then the usual checks."""
        profile = check_ranges(self.engine.plan, feeds, self.active_profile)
        feeds = check_feeds(self.engine.inputs, feeds, array_types=self._array_types(),
                            memory_budget=self.memory_budget)
        i, rows = self.router.route(feed_shapes(self.engine.plan, feeds), profile)
        return feeds, i, rows

    def _array_types(self) -> tuple:
        return (np.ndarray,)

    def select(self, feeds_or_shapes: dict) -> int:
        """The index of the bucket that runs these feeds (or {input: shape}); a ShapeRangeError if none."""
        shapes = {k: tuple(getattr(v, "shape", v)) for k, v in feeds_or_shapes.items()}
        profile = select_profile(self.engine.plan, shapes, self.active_profile)
        return self.router.route(shapes, profile)[0]

    def bucket_context(self, index: int) -> ExecutionContext:
        """The context of bucket ``index`` (its own engine: profile it, inspect its layers)."""
        return self.subs[index]

    def _padded(self, feeds: dict, i: int, rows: int | None) -> dict:
        if rows is None:
            return feeds
        batch = self.engine.plan.buckets[i].batch
        return {k: pad_rows(v, rows, batch) for k, v in feeds.items()}

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        feeds, i, rows = self._checked(feeds)
        outs = self.subs[i].run(self._padded(feeds, i, rows))
        return outs if rows is None else {k: v[:rows] for k, v in outs.items()}

    def time_end_to_end(self, feeds: dict, runs: int) -> list[float]:
        """Milliseconds of ``runs`` runs of the bucket these feeds land in (padding not included)."""
        feeds, i, rows = self._checked(feeds)
        return self.subs[i].time_end_to_end(self._padded(feeds, i, rows), runs)

    def time_layers(self, feeds: dict, runs: int) -> list[list[float]]:
        """Per-layer samples of the bucket these feeds land in, one list per layer of *that bucket*
        (``bucket_context(select(feeds)).engine.layers``); ``profile`` tabulates them against it."""
        feeds, i, rows = self._checked(feeds)
        return self.subs[i].time_layers(self._padded(feeds, i, rows), runs)

    def profile(self, feeds: dict[str, Any] | None = None, runs: int = 10, warmup: int = 1, **options):
        """The profile of the bucket these feeds land in (default: random feeds at the opt shapes of
        the chosen profile, else profile 0), as that bucket's own context profiles it."""
        if feeds is None:
            from .feeds import random_feeds  # noqa: PLC0415

            feeds = random_feeds(opt_specs(self.engine.plan, self.active_profile or 0), memory_budget=self.memory_budget)
        feeds, i, rows = self._checked(feeds)
        df = self.subs[i].profile(self._padded(feeds, i, rows), runs=runs, warmup=warmup, **options)
        df.attrs["bucket"] = {"index": i, **{k: list(v) for k, v in self.engine.plan.buckets[i].shapes.items()}}
        df.attrs["padded_from"] = rows
        return df

    def profile_attrs(self) -> dict:
        return {"buckets": len(self.subs)}
