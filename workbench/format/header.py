"""The schema of an engine header's sections other than the plan (``serialize.decode_plan`` checks
that one field by field): every section and field's JSON type and range, checked before anything
reads it.

The container has already parsed the header strictly (no duplicate keys, no NaN, bounded depth and
size); this module gives the values a shape. ``producer``, ``target`` and ``kernels`` are required;
``build`` and ``reports`` are for people and may be missing or stripped, but what is there is
typed: ``describe`` and ``report`` read them without further checks. Sections and fields a newer
writer adds are kept when they are plain JSON (they are shown, never acted on); a known field of the
wrong type or out of range is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.format import strict

MAX_COUNT = 1 << 62  # sizes, offsets and counts: far above any real engine, far below overflow
MAX_STR = 1 << 20  # one string field in a report


# --------------------------------------------------------------------------- the schema language


@dataclass(frozen=True)
class Int:
    lo: int = 0
    hi: int = MAX_COUNT

    def check(self, v, where: str):
        if type(v) is not int:
            raise strict.fail(where, f"expected an int, got {strict.type_name(v)}")
        if not self.lo <= v <= self.hi:
            raise strict.fail(where, f"{v} is out of range [{self.lo}, {self.hi}]")
        return v


@dataclass(frozen=True)
class Num:
    """An int or a finite float (the parser already refused NaN / Infinity)."""

    def check(self, v, where: str):
        if type(v) not in (int, float):
            raise strict.fail(where, f"expected a number, got {strict.type_name(v)}")
        return v


@dataclass(frozen=True)
class Str:
    choices: tuple[str, ...] = ()

    def check(self, v, where: str):
        if not isinstance(v, str):
            raise strict.fail(where, f"expected a str, got {strict.type_name(v)}")
        if len(v) > MAX_STR:
            raise strict.fail(where, f"string of {len(v)} characters is over the limit of {MAX_STR}")
        if self.choices and v not in self.choices:
            raise strict.fail(where, f"{v!r:.80} is not one of {', '.join(self.choices)}")
        return v


@dataclass(frozen=True)
class Bool:
    def check(self, v, where: str):
        return strict.boolean(v, where)


@dataclass(frozen=True)
class Opt:
    """``inner`` or null."""

    inner: Any

    def check(self, v, where: str):
        return None if v is None else self.inner.check(v, where)


@dataclass(frozen=True)
class OneOf:
    options: tuple

    def check(self, v, where: str):
        errors = []
        for option in self.options:
            try:
                return option.check(v, where)
            except strict.EngineFormatError as exc:
                errors.append(exc)
        raise errors[0]


@dataclass(frozen=True)
class Json:
    """Any JSON value (already bounded by the container's parser); shown, never acted on."""

    def check(self, v, where: str):
        return v


@dataclass(frozen=True)
class Scalar:
    """A JSON scalar: what a report table cell may hold."""

    def check(self, v, where: str):
        if v is not None and type(v) not in (bool, int, float, str):
            raise strict.fail(where, f"expected a number, str, bool or null, got {strict.type_name(v)}")
        return v


@dataclass(frozen=True)
class List:
    item: Any

    def check(self, v, where: str):
        strict.array(v, where)
        for i, x in enumerate(v):
            self.item.check(x, f"{where}[{i}]")
        return v


@dataclass(frozen=True)
class Map:
    """An object with any keys and values of one schema."""

    value: Any

    def check(self, v, where: str):
        strict.obj(v, where)
        for k, x in v.items():
            self.value.check(x, f"{where}.{k}")
        return v


@dataclass(frozen=True)
class Obj:
    """An object with known fields (``required`` ones must be there) and, for the rest, ``extra``
    (None: unknown fields are refused)."""

    fields: dict
    required: tuple[str, ...] = ()
    extra: Any = Json()

    def check(self, v, where: str):
        strict.obj(v, where)
        for name in self.required:
            if name not in v:
                raise strict.fail(where, f"missing field {name!r}")
        for k, x in v.items():
            schema = self.fields.get(k, self.extra)
            if schema is None:
                raise strict.fail(where, f"unknown field {k!r:.80}")
            schema.check(x, f"{where}.{k}")
        return v


# --------------------------------------------------------------------------- the header's sections

COUNT = Int()
NAMES = List(Str())
PRODUCER = Obj({"name": Str(), "version": Str()}, required=("name", "version"))
PEAKS = Obj({"gflops": Num(), "gbps": Num(), "source": Str()})
TARGET = Obj({"backend": Str(), "device": Str(), "arch": Opt(Str()), "sm_count": Opt(COUNT), "numpy": Str(),
              "peaks": PEAKS}, required=("backend",))
BUILD = Obj({
    "producer": PRODUCER, "source": Str(), "device": Str(), "precision": Str(),
    "shapes": Map(List(COUNT)), "disabled": NAMES, "layer_precisions": Map(Str()),
    "max_elements": Int(1), "memory_budget": Opt(Int(1)), "strict_precision": Bool(),
    "profiles": List(Map(List(List(COUNT)))), "buckets": Opt(OneOf((List(Int(1)), Map(List(Int(1)))))),
})
FUSION = Obj({"rule": Str(), "status": Str(), "reason": Str(), "nodes": NAMES, "root": Opt(Str())},
             extra=Scalar())
MEMORY = Obj({"arena_bytes": COUNT, "naive_bytes": COUNT, "peak_live_bytes": COUNT, "weights_bytes": COUNT,
              "weights_device_bytes": COUNT, "reuse_saving": Num(), "tensors_planned": COUNT,
              "tensors_dynamic": NAMES, "offsets": Map(COUNT), "alignment": Int(1)}, extra=Scalar())
NODES = Obj({"before": COUNT, "after": COUNT, "layers": COUNT}, extra=Scalar())
# shape ranges (builder/profiles.py): one row per bucket, one per profile
BUCKET_ROW = Obj({"index": COUNT, "shapes": Map(List(COUNT)), "profiles": List(COUNT), "batch": Opt(COUNT),
                  "layers": COUNT, "fusions_fired": COUNT, "arena_bytes": COUNT}, extra=Scalar())
PROFILE_ROW = Obj({"index": COUNT, "ranges": Map(List(List(COUNT))), "arena_bytes_at_max": Opt(COUNT),
                   "peak_live_bytes_at_max": Opt(COUNT), "note": Str()}, extra=Scalar())
# int8 / fp8 against fp16 (builder/fallback.py)
FALLBACK = Obj({"precision": Str(), "margin": Num(), "compared": COUNT, "layers": List(Map(Scalar())),
                "kept": Str(), "tries": List(Map(Scalar())), "total_ms": Map(Num()), "measure": Str(), "moved": NAMES,
                "error": Str()}, required=("precision", "kept", "layers"), extra=None)
REPORTS = Obj({
    "fusions": List(FUSION), "counters": Map(COUNT), "nodes": NODES, "memory": MEMORY,
    "precision": List(Map(Scalar())), "layouts": List(Map(Json())),
    "buckets": List(BUCKET_ROW), "profiles": List(PROFILE_ROW), "precision_fallback": FALLBACK,
})
HEADER = Obj({
    "producer": PRODUCER, "target": TARGET, "build": Opt(BUILD), "reports": Opt(REPORTS),
    "kernels": List(Str()), "plan": Json(), "blobs": Json(),
}, required=("producer", "target", "plan", "kernels"), extra=None)


def check_header(header: dict) -> dict:
    """``header`` if every section matches the schema above; else EngineFormatError naming the field.

    The plan is left to ``decode_plan`` and the blob table to the container."""
    try:
        HEADER.check(header, "header")
    except strict.EngineFormatError as exc:
        raise strict.EngineFormatError(str(exc).replace("engine plan, header.", "engine header, ", 1)
                                       .replace("engine plan, header:", "engine header:", 1)) from None
    return header
