"""The calibration table: per-tensor ranges from a calibration, and its file (JSON, no pickle).

A table records, for each float32 tensor of the plan it was made from, the range the method chose
(``range``), the plain min / max seen (``observed``) and their symmetric ``amax``; and the plan's
input signature with its sha256, so that a table made for another model is refused by name. Tensors
seen without a finite value (or not float32) are ``covered`` without a range, so that a table is
known to cover a plan even where nothing could be measured.

File: ``{"format": "workbench.calibration", "version": 1, "method", "settings", "batches",
"inputs": [{"name", "dtype", "shape"}], "fingerprint": sha256 of the inputs, "tensors": {name:
{"min", "max", "range": [lo, hi]} | null}}``, written atomically and read strictly (duplicate keys,
NaN, unknown or missing keys, wrong types, a fingerprint that does not match: one-line errors).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Iterable

from ..core.files import atomic_write, open_regular
from ..core.plan import Plan
from ..errors import InputTypeError, WorkbenchError

METHODS = ("minmax", "entropy", "percentile")
FORMAT = "workbench.calibration"
VERSION = 1
MAX_TABLE_BYTES = 256 << 20  # a table holds a few numbers per tensor; anything this big is not one


class CalibrationError(WorkbenchError, ValueError):
    """Calibration settings, a calibration table or cache file, or their fit to a model are wrong."""


def _path(p, what: str) -> str:
    try:
        s = os.fspath(p)
    except TypeError:
        raise InputTypeError(f"{what} path must be a str or os.PathLike, got {type(p).__name__}") from None
    return os.fsdecode(s) if isinstance(s, bytes) else s


def input_signature(plan: Plan) -> list[dict]:
    """The plan's inputs as name, dtype and shape (symbolic dims by name)."""
    return [s.to_dict() for s in plan.inputs]


def fingerprint(signature: list[dict]) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def float_tensors(plan: Plan) -> set[str]:
    """The float32 tensors a calibration of ``plan`` covers: float inputs and layer outputs."""
    names = {s.name for s in plan.inputs if s.dtype == "float32"}
    for layer in plan.layers:
        names.update(n for n, s in zip(layer.outputs, layer.output_specs) if n and s.dtype == "float32")
    return names


class CalibrationTable:
    """Per-tensor ranges from a calibration. ``range`` is what the method chose, ``observed`` the
    min / max seen, ``amax`` the symmetric range of ``range``. Tensors seen without a finite value
    (or not float32) are ``covered`` but have no range."""

    def __init__(self, method: str, ranges: dict[str, tuple[float, float]], observed: dict[str, tuple[float, float]],
                 *, inputs: list[dict], covered: Iterable[str] = (), settings: dict | None = None, batches: int = 0):
        self.method = method
        self._ranges = {k: (float(a), float(b)) for k, a_b in ranges.items() for a, b in [a_b]}
        self._observed = {k: (float(a), float(b)) for k, a_b in observed.items() for a, b in [a_b]}
        self.inputs = [dict(d) for d in inputs]
        self.fingerprint = fingerprint(self.inputs)
        self.covered = frozenset(covered) | frozenset(self._ranges)
        self.settings = dict(settings or {"method": method})
        self.batches = int(batches)

    def amax(self, name: str) -> float | None:
        r = self._ranges.get(name)
        return None if r is None else max(abs(r[0]), abs(r[1]))

    def range(self, name: str) -> tuple[float, float] | None:
        return self._ranges.get(name)

    def observed(self, name: str) -> tuple[float, float] | None:
        return self._observed.get(name)

    def names(self) -> list[str]:
        """The tensors with a range, in name order."""
        return sorted(self._ranges)

    def __contains__(self, name) -> bool:
        return name in self._ranges

    def __len__(self) -> int:
        return len(self._ranges)

    def __repr__(self) -> str:
        return f"<CalibrationTable {self.method}: {len(self)} tensors from {self.batches} batch(es)>"

    # ---- fit to a plan

    def misfit(self, plan: Plan, where: str = "calibration table") -> str | None:
        """Why this table does not cover ``plan`` (None when it does); a table made for a model
        with other inputs is a CalibrationError naming ``where`` it came from."""
        sig = input_signature(plan)
        if fingerprint(sig) != self.fingerprint:
            raise CalibrationError(f"{where} was made for another model: its inputs are {_fmt_inputs(self.inputs)}, "
                                   f"this model's are {_fmt_inputs(sig)}")
        missing = sorted(float_tensors(plan) - self.covered)
        if missing:
            return (f"it has no entry for {len(missing)} of this plan's float tensors (e.g. {missing[0]!r}): it was "
                    "made from another build of the model (other passes, rules or shapes)")
        return None

    # ---- files

    def to_dict(self) -> dict:
        tensors: dict[str, Any] = {n: None for n in sorted(self.covered - set(self._ranges))}
        for n in self.names():
            lo, hi = self._ranges[n]
            omin, omax = self._observed.get(n, (lo, hi))
            tensors[n] = {"min": omin, "max": omax, "range": [lo, hi]}
        return {"format": FORMAT, "version": VERSION, "method": self.method, "settings": self.settings,
                "batches": self.batches, "inputs": self.inputs, "fingerprint": self.fingerprint,
                "tensors": dict(sorted(tensors.items()))}

    def save(self, path: str | os.PathLike) -> str:
        """Write the table as JSON, atomically (a reader sees the old file or the whole new one)."""
        data = json.dumps(self.to_dict(), indent=1, allow_nan=False).encode("utf-8")
        return atomic_write(_path(path, "calibration table"), lambda f: f.write(data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationTable":
        """Read a table written by ``save``; anything else is a one-line CalibrationError."""
        p = _path(path, "calibration table")
        if not os.path.lexists(p):
            raise CalibrationError(f"calibration table {p!r} does not exist")
        with open_regular(p, "calibration table", error=CalibrationError) as f:
            data = f.read(MAX_TABLE_BYTES + 1)
        if len(data) > MAX_TABLE_BYTES:
            raise CalibrationError(f"calibration table {p!r} is over {MAX_TABLE_BYTES} bytes; not a calibration table")
        try:
            obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise CalibrationError(f"calibration table {p!r} is not valid JSON ({first})") from None
        return cls.from_dict(obj, where=f"calibration table {p!r}")

    @classmethod
    def from_dict(cls, obj, *, where: str = "calibration table") -> "CalibrationTable":
        """The table a ``to_dict`` describes, every field checked (strict: unknown keys refused)."""
        def bad(why: str) -> CalibrationError:
            return CalibrationError(f"{where} {why}")

        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise bad(f"is not a workbench calibration table (no \"format\": \"{FORMAT}\")")
        if obj.get("version") != VERSION:
            raise bad(f"has version {obj.get('version')!r:.20}; this workbench reads version {VERSION} — recalibrate")
        keys = {"format", "version", "method", "settings", "batches", "inputs", "fingerprint", "tensors"}
        if set(obj) != keys:
            extra, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
            raise bad(f"has {'unknown key ' + repr(extra[0]) if extra else 'no key ' + repr(missing[0])}")
        method, settings, batches = obj["method"], obj["settings"], obj["batches"]
        if method not in METHODS:
            raise bad(f"has an unknown method {method!r:.40}")
        if not isinstance(settings, dict) or settings.get("method") != method \
                or not all(isinstance(k, str) and _number(v) or k == "method" for k, v in settings.items()):
            raise bad("has malformed settings")
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 0:
            raise bad("has a malformed batch count")
        inputs = obj["inputs"]
        if not isinstance(inputs, list) or not all(_input_ok(d) for d in inputs):
            raise bad("has malformed inputs (each needs name, dtype and shape)")
        if obj["fingerprint"] != fingerprint(inputs):
            raise bad("has a fingerprint that does not match its inputs (edited or corrupt)")
        tensors = obj["tensors"]
        if not isinstance(tensors, dict):
            raise bad("has malformed tensors")
        ranges, observed = {}, {}
        for name, entry in tensors.items():
            if entry is None:
                continue
            if not (isinstance(entry, dict) and set(entry) == {"min", "max", "range"}
                    and _number(entry["min"]) and _number(entry["max"])
                    and isinstance(entry["range"], list) and len(entry["range"]) == 2
                    and all(_number(v) for v in entry["range"])
                    and entry["min"] <= entry["max"] and entry["range"][0] <= entry["range"][1]):
                raise bad(f"has a malformed entry for tensor {name!r:.80} (needs min <= max and range [lo, hi])")
            ranges[name] = tuple(entry["range"])
            observed[name] = (entry["min"], entry["max"])
        return cls(method, ranges, observed, inputs=inputs, covered=tensors, settings=settings, batches=batches)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _input_ok(d) -> bool:
    if not (isinstance(d, dict) and set(d) == {"name", "dtype", "shape"} and isinstance(d["name"], str)
            and (d["dtype"] is None or isinstance(d["dtype"], str))):
        return False
    shape = d["shape"]
    return shape is None or (isinstance(shape, list) and all(
        x is None or isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool)) for x in shape))


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r:.40}")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _fmt_inputs(sig: list[dict]) -> str:
    def one(d):
        shape = "?" if d.get("shape") is None else ", ".join("?" if x is None else str(x) for x in d["shape"])
        return f"{d.get('name')} {d.get('dtype')}[{shape}]"
    text = ", ".join(one(d) for d in sig[:4]) + (f", +{len(sig) - 4} more" if len(sig) > 4 else "")
    return text or "(none)"



__all__ = ["CalibrationError", "CalibrationTable", "FORMAT", "METHODS", "VERSION", "float_tensors", "fingerprint",
           "input_signature"]
