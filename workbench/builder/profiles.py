"""Shape ranges: what ``BuilderConfig(profiles=..., buckets=...)`` and the CLI's ``--min-shapes /
--opt-shapes / --max-shapes / --buckets`` mean, checked against the model, and the static shapes a
bucketed build specialises to.

A *profile* (TensorRT's optimization profile) gives every dynamic input a min, opt and max shape;
an engine may have several. A *dim variable* is one dynamic dim of the model: a named symbol
(``batch``, ``sequence``: every input axis that carries the name is the same dim) or, for an unnamed
dynamic axis, that axis alone (``mask:1``). The *batch dim* is the leading dim when every input
leads with one and the same named symbol; a model without one is never padded.

Buckets (GPU engines; CPU engines when asked for): one static plan per combination of
* batch sizes -- a run's batch is padded up to the next bucket. Default: vLLM's capture sizes
  (1, 2, 4, then multiples of 8 up to 256, then of 16) inside the profile's range, plus its max;
* values of every other dynamic dim (sequence, image size, ...) -- *specialised, never padded*:
  padding a sequence changes what attention, pooling or position embeddings compute, so a run must
  match one of the values built exactly (default: the profile's min, opt and max), and any other
  value is refused with an error that names the values built.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ..core.plan import TensorSpec
from ..errors import ShapeError

Shape = tuple[int, ...]
Range = tuple[Shape, Shape, Shape]  # (min, opt, max)
Profile = dict[str, Range]

MAX_BUCKETS = 64  # static plans one engine may hold: each is built, tuned and captured


# --------------------------------------------------------------------------- config values


def normalize_profiles(profiles) -> list[Profile]:
    """``BuilderConfig.profiles`` as a list of {input: (min, opt, max)} with tuple shapes; a single
    dict is one profile. One-line ShapeError for anything malformed (the model is not needed)."""
    if profiles is None:
        return []
    if isinstance(profiles, dict):
        profiles = [profiles]
    if not isinstance(profiles, (list, tuple)):
        raise ShapeError(f"profiles must be a list of {{input: (min, opt, max)}} dicts, got {type(profiles).__name__}")
    out = []
    for i, profile in enumerate(profiles):
        if not isinstance(profile, dict) or not profile:
            raise ShapeError(f"profile {i} must be a non-empty dict of input name -> (min, opt, max) shapes, "
                             f"got {profile!r:.60}")
        ranges = {}
        for name, triple in profile.items():
            if not isinstance(name, str):
                raise ShapeError(f"profile {i}: input names must be str, got {name!r:.40}")
            ranges[name] = _range(i, name, triple)
        out.append(ranges)
    return out


def _range(i: int, name: str, triple) -> Range:
    if isinstance(triple, (str, bytes)) or not hasattr(triple, "__len__") or len(triple) != 3:
        raise ShapeError(f"profile {i}: input {name!r} needs (min, opt, max) shapes, got {triple!r:.60}")
    lo, opt, hi = (_shape(i, name, which, s) for which, s in zip(("min", "opt", "max"), triple))
    if not len(lo) == len(opt) == len(hi):
        raise ShapeError(f"profile {i}: input {name!r} has min {list(lo)}, opt {list(opt)} and max {list(hi)} "
                         "of different ranks")
    for axis, (a, b, c) in enumerate(zip(lo, opt, hi)):
        if not a <= b <= c:
            raise ShapeError(f"profile {i}: input {name!r} needs min <= opt <= max in every dim; axis {axis} has "
                             f"min {a}, opt {b}, max {c}")
    return lo, opt, hi


def _shape(i: int, name: str, which: str, shape) -> Shape:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ShapeError(f"profile {i}: {which} shape of input {name!r} must be a sequence of integers, got {shape!r:.60}")
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) and not (hasattr(d, "__index__") and not isinstance(d, float)):
            raise ShapeError(f"profile {i}: {which} shape of input {name!r} must hold integers, got {list(dims)!r:.60}")
        if int(d) < 0:
            raise ShapeError(f"profile {i}: {which} shape of input {name!r} has a negative dim: {list(dims)}")
    return tuple(int(d) for d in dims)


def normalize_buckets(buckets):
    """``BuilderConfig.buckets``: None (the default), batch sizes (a list of positive ints, or text
    "1,2,4"), or {dim name: [values]} (text "batch=1,2,4;sequence=128,256"); sorted, each once."""
    if buckets is None:
        return None
    if isinstance(buckets, str):
        return parse_buckets([buckets])
    if isinstance(buckets, dict):
        if not buckets:
            raise ShapeError("buckets is an empty dict; give {dim name: [sizes]} or leave it out")
        return {str(k): _sizes(v, f"buckets[{k!r}]") for k, v in buckets.items()}
    return _sizes(buckets, "buckets")


def _sizes(values, where: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ShapeError(f"{where} must be a list of positive integers, got {values!r:.60}")
    values = list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ShapeError(f"{where} must be a non-empty list of positive integers, got {values!r:.60}")
    return tuple(sorted(set(values)))


# --------------------------------------------------------------------------- the CLI's spelling


def profiles_from_text(mins: list[str] | None, opts: list[str] | None, maxs: list[str] | None) -> list[Profile]:
    """Profiles from trtexec-style ``--min-shapes / --opt-shapes / --max-shapes`` texts
    (``name:1x16,mask:1x16``); the i-th text of each option makes profile i."""
    from .config import parse_shapes  # noqa: PLC0415 - config imports this module

    given = {"--min-shapes": mins or [], "--opt-shapes": opts or [], "--max-shapes": maxs or []}
    counts = {k: len(v) for k, v in given.items()}
    if len(set(counts.values())) != 1:
        missing = [k for k, n in counts.items() if n < max(counts.values())]
        raise ShapeError(f"shape ranges need --min-shapes, --opt-shapes and --max-shapes together (one of each per "
                         f"profile); missing {', '.join(missing)}")
    profiles = []
    for i in range(counts["--min-shapes"]):
        parsed = {}
        for option, texts in given.items():
            try:
                parsed[option] = parse_shapes(texts[i])
            except ShapeError as exc:
                raise ShapeError(str(exc).replace("--shapes", option)) from None
        names = list(parsed["--min-shapes"])
        for option, shapes in parsed.items():
            for name in set(names) ^ set(shapes):
                where = option if name not in shapes else next(o for o, s in parsed.items() if name not in s)
                raise ShapeError(f"input {name!r} has no shape in {where}; give every input of a profile in "
                                 "--min-shapes, --opt-shapes and --max-shapes")
        profiles.append({n: (parsed["--min-shapes"][n], parsed["--opt-shapes"][n], parsed["--max-shapes"][n])
                         for n in names})
    return normalize_profiles(profiles)


def parse_buckets(texts: list[str]):
    """``--buckets`` (repeatable): "1,2,4,8" lists batch sizes; "NAME=v,v" the values of one dim."""
    named: dict[str, tuple[int, ...]] = {}
    plain: tuple[int, ...] | None = None
    for text in texts:
        for part in text.split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, values = part.rpartition("=")
            if sep and not name.strip():
                raise ShapeError(f"bad --buckets entry {part!r}: expected NAME=v,v (e.g. sequence=128,256)")
            try:
                sizes = tuple(int(v) for v in values.split(",") if v.strip())
            except ValueError:
                raise ShapeError(f"bad --buckets entry {part!r}: sizes must be positive integers separated by ','") from None
            where = f"--buckets {part!r}"
            sizes = _sizes(sizes, where)
            if sep:
                named[name.strip()] = sizes
            elif plain is not None:
                raise ShapeError("--buckets gives batch sizes twice; give one list (e.g. --buckets 1,2,4,8)")
            else:
                plain = sizes
    if plain is None and not named:
        raise ShapeError("--buckets is empty; give batch sizes (1,2,4,8) or DIM=values")
    if plain is not None and named:
        raise ShapeError("--buckets mixes plain batch sizes with NAME=values; name the batch dim too (e.g. batch=1,2,4)")
    return plain if plain is not None else named


# --------------------------------------------------------------------------- against the model


def fmt_shape(shape) -> str:
    return "x".join(str(d) if d is not None else "?" for d in shape) if shape else "scalar"


def fmt_range(r) -> str:
    lo, opt, hi = r
    return f"[{', '.join(map(str, lo))}]..[{', '.join(map(str, hi))}] (opt [{', '.join(map(str, opt))}])"


def _checked_inputs(inputs: list[TensorSpec]) -> list[TensorSpec]:
    return [s for s in inputs if s.dtype is not None]  # sequences / optionals take no shape


def variables(inputs: list[TensorSpec]) -> tuple[dict[str, list[tuple[str, int]]], str | None]:
    """The model's dim variables, name -> [(input, axis)], and the batch dim's name (or None)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for spec in _checked_inputs(inputs):
        for axis, d in enumerate(spec.shape or ()):
            if isinstance(d, int):
                continue
            found.setdefault(d if isinstance(d, str) and d else f"{spec.name}:{axis}", []).append((spec.name, axis))
    leads = {s.shape[0] if s.shape else None for s in _checked_inputs(inputs)}
    batch = next(iter(leads)) if len(leads) == 1 and isinstance(next(iter(leads)), str) else None
    return found, batch


def resolve_profiles(inputs: list[TensorSpec], profiles: list[Profile]) -> list[Profile]:
    """The profiles checked against the model's inputs (names, ranks, fixed dims, one range per
    named dim) and completed: every input gets a range (a static input its own shape; an input the
    profile leaves out the ranges of the named dims it shares with others)."""
    specs = {s.name: s for s in _checked_inputs(inputs)}
    out = []
    for i, profile in enumerate(profiles):
        for name in profile:
            if name not in specs:
                raise ShapeError(f"profile {i} names {name!r}, which is not an input; inputs are: "
                                 f"{', '.join(specs) or '(none)'}")
        dims: dict[str, tuple[tuple[int, int, int], str]] = {}  # symbol -> ((min, opt, max), input)
        for name, (lo, opt, hi) in profile.items():
            declared = specs[name].shape
            if declared is not None and len(declared) != len(lo):
                raise ShapeError(f"profile {i}: input {name!r} has rank {len(declared)} ({fmt_shape(declared)}); "
                                 f"the profile gives rank {len(lo)} (min {list(lo)})")
            for axis, (want, r) in enumerate(zip(declared or [None] * len(lo), zip(lo, opt, hi))):
                if isinstance(want, int) and r != (want, want, want):
                    raise ShapeError(f"profile {i}: input {name!r} axis {axis} is fixed at {want}; the profile gives "
                                     f"min {r[0]}, opt {r[1]}, max {r[2]}")
                if isinstance(want, str) and want:
                    seen = dims.get(want)
                    if seen is not None and seen[0] != r:
                        raise ShapeError(f"profile {i}: dim {want!r} is {_span(seen[0])} in input {seen[1]!r} but "
                                         f"{_span(r)} in input {name!r}; a named dim has one range")
                    dims.setdefault(want, (r, name))
        full = dict(profile)
        for name, spec in specs.items():
            if name in full:
                continue
            if spec.shape is None:
                raise ShapeError(f"profile {i} gives no shapes for input {name!r}, whose rank is unknown; add it")
            ranges = []
            for axis, d in enumerate(spec.shape):
                if isinstance(d, int):
                    ranges.append((d, d, d))
                elif isinstance(d, str) and d in dims:
                    ranges.append(dims[d][0])
                else:
                    raise ShapeError(f"profile {i} gives no range for input {name!r} axis {axis} "
                                     f"({d or 'unnamed'}, shape {fmt_shape(spec.shape)}); add the input to the profile")
            full[name] = tuple(tuple(r[k] for r in ranges) for k in range(3))
        out.append({name: full[name] for name in specs})  # the model's input order
    return out


def _span(r) -> str:
    return f"{r[0]}..{r[2]} (opt {r[1]})"


def fixed_shapes(inputs: list[TensorSpec], profiles: list[Profile]) -> dict[str, Shape]:
    """Inputs whose every dim has one value in every profile: built as static shapes."""
    out = {}
    for spec in _checked_inputs(inputs):
        shapes = {s for p in profiles for s in p[spec.name]}
        if len(shapes) == 1 and not (spec.shape is not None and all(isinstance(d, int) for d in spec.shape)):
            out[spec.name] = next(iter(shapes))
    return out


def fixed_dim_values(inputs: list[TensorSpec], profiles: list[Profile]) -> dict[str, int]:
    """Named symbolic dims that have one value wherever they appear, in every profile (e.g. a
    sequence length held at 128 while the batch varies): a symbolic build makes them static, so the
    positions and masks that depend on them fold as in a static build."""
    values: dict[str, int] = {}
    varying: set[str] = set()
    for spec in _checked_inputs(inputs):
        for i, dim in enumerate(spec.shape or []):
            if not isinstance(dim, str) or not dim:
                continue
            for p in profiles:
                lo, _, hi = p[spec.name]
                if lo[i] != hi[i] or values.setdefault(dim, lo[i]) != lo[i]:
                    varying.add(dim)
    return {k: v for k, v in values.items() if k not in varying}


def vllm_sizes(hi: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes up to ``hi``: 1, 2, 4, 8, 16, 24, ... (multiples of
    8 below 256, of 16 from there)."""
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, max(hi, 256) + 1, 16))
    return [s for s in sizes if s <= hi]


@dataclass
class BucketSpec:
    """The static input shapes of one bucket, the profiles it serves and its batch size."""

    shapes: dict[str, Shape]
    profiles: list[int] = field(default_factory=list)
    batch: int | None = None

    @property
    def elements(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())


def bucket_specs(inputs: list[TensorSpec], profiles: list[Profile], buckets=None) -> list[BucketSpec]:
    """Every bucket the profiles need, largest first (the order they are built and captured in);
    ``buckets``: ``BuilderConfig.buckets``."""
    found, batch = variables(inputs)
    if isinstance(buckets, tuple) and batch is None:
        raise ShapeError("buckets lists batch sizes, but the model's inputs share no batch dim (one named leading "
                         "dim on every input); give buckets={dim name: [values]} for its dynamic dims "
                         f"({', '.join(found) or 'none'})")
    if isinstance(buckets, dict):
        for name in buckets:
            if name not in found:
                raise ShapeError(f"buckets names dim {name!r}, which is not a dynamic dim of the model's inputs "
                                 f"(dynamic dims: {', '.join(found) or 'none'})")
    specs: dict[tuple, BucketSpec] = {}
    for p, profile in enumerate(profiles):
        values = {}
        for var, places in found.items():
            name, axis = places[0]
            lo, opt, hi = (profile[name][k][axis] for k in range(3))
            given = buckets.get(var) if isinstance(buckets, dict) else (buckets if var == batch else None)
            values[var] = _values(var, var == batch, (lo, opt, hi), given, p)
        for combo in itertools.product(*values.values()):
            at = dict(zip(values, combo))
            shapes = {}
            for spec in _checked_inputs(inputs):
                if spec.shape is None:  # unknown rank: only a profile that fixes its shape can be built
                    lo, _, hi = profile[spec.name]
                    if lo != hi:
                        raise ShapeError(f"input {spec.name!r} has an unknown rank; a static plan needs its shape "
                                         f"fixed (min = max) in profile {p}, which gives {fmt_range(profile[spec.name])}")
                    shapes[spec.name] = lo
                    continue
                shapes[spec.name] = tuple(d if isinstance(d, int) else at[d if isinstance(d, str) and d else
                                                                           f"{spec.name}:{axis}"]
                                          for axis, d in enumerate(spec.shape))
            key = tuple(sorted(shapes.items()))
            spec = specs.setdefault(key, BucketSpec(shapes, [], at.get(batch) if batch else None))
            spec.profiles.append(p)
    if len(specs) > MAX_BUCKETS:
        raise ShapeError(f"the profiles need {len(specs)} static plans (every batch size times every value of the "
                         f"other dynamic dims), over the limit of {MAX_BUCKETS}; give fewer with buckets=")
    return sorted(specs.values(), key=lambda s: (-s.elements, -(s.batch or 0), sorted(s.shapes.items())))


def _values(var: str, is_batch: bool, r: tuple[int, int, int], given, p: int) -> list[int]:
    lo, opt, hi = r
    if is_batch:
        sizes = list(given) if given is not None else vllm_sizes(hi) + [hi]
        chosen = sorted({s for s in sizes if lo <= s <= hi})
        if hi not in chosen:
            above = [s for s in sizes if s > hi]
            if not above:
                raise ShapeError(f"batch buckets {list(sizes)} end below profile {p}'s max batch {hi} (dim {var!r}); "
                                 f"add a size of at least {hi}")
            chosen.append(min(above))
        return chosen
    if given is None:
        return sorted({lo, opt, hi})
    chosen = sorted(v for v in given if lo <= v <= hi)
    if not chosen:
        raise ShapeError(f"buckets for dim {var!r} ({', '.join(map(str, given))}) has no value inside profile {p}'s "
                         f"range {lo}..{hi}")
    return chosen
