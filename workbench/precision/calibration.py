"""Calibration: the range of every float32 tensor of a plan over representative inputs, which int8 /
fp8 quantization turns into scales.

    cal = Calibration(feeds, method="minmax" | "entropy" | "percentile", percentile=99.99,
                      num_bins=2048, cache=None)
    table = calibrate(plan, cal, progress=True)   # plan: the fp32 lowered plan
    table.amax("conv1_out"); table.range("conv1_out"); table.save("model.calib")

``calibrate`` runs the fp32 lowered plan (before precision assignment; a copy, every layer at fp32
on the first CPU tactic that runs it) over every batch and records, for each float32 tensor (the
graph inputs and every layer output, seen through the executor's ``tap``), what the method needs.
Tensors are observed as they are made and dropped by the executor as usual, so memory holds one
batch plus per-tensor statistics. Non-finite values are left out of every statistic.

Methods (onnxruntime's ``onnxruntime.quantization.calibrate`` is the reference; ``histograms.py``
has the algorithms):

* ``minmax``: global min / max over all batches (``MinMaxCalibrater`` with its defaults).
* ``entropy``: a histogram of ``num_bins`` bins over ``[-amax, amax]``; the clipping threshold
  that minimises the KL divergence to its 128-level (8-bit) quantization (``EntropyCalibrater``).
  ``num_bins`` defaults to 2048 for both histogram methods: onnxruntime's entropy default of 128
  bins leaves a single candidate window, the whole range, i.e. minmax.
* ``percentile``: a histogram of ``|x|``; the threshold where the cumulative share reaches
  ``percentile`` % (``PercentileCalibrater``, symmetric).

The histogram methods read the feeds twice when they can (a list, a path, any iterable that starts
again when iterated again): the first pass finds each tensor's global range, the second counts over
it, which gives the bins onnxruntime makes from all the data at once. A one-shot iterator (a
generator) is read once; each histogram then starts from the first batch's range and grows by
whole bins when a later batch reaches past it (onnxruntime's merge rules).

``CalibrationTable`` (``calibration_table.py``): ``amax(name)`` is the symmetric range
``max(|lo|, |hi|)`` of the method's ``range(name)``; ``observed(name)`` is the plain min / max seen
(for overflow checks). A table is saved as JSON (no pickle) with the plan's input signature and its
sha256; ``cache=PATH`` reuses a table that fits the plan and settings (TensorRT's calibration
cache), recalibrates one that is stale for this model (other settings, or tensors it lacks) and
refuses one made for a model with other inputs, or a file that is not a table (never overwritten).

Runs the runtime's CPU executor (``runtime.cpu.PlanExecutor``) and CPU tactics (``kernels.cpu``);
never the builder, the passes or the IR.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import zipfile
from typing import Iterator

import numpy as np

from ..core.budget import default_memory_budget
from ..core.files import NPY_MAGIC, ZIP_MAGIC, npz_members, npz_problem, open_regular, read_npz, regular_file
from ..core.plan import Layer, Plan, Subgraph, TensorSpec
from ..errors import InputError, InputTypeError, UnsupportedModelError, WorkbenchError
from ..kernels import cpu as cpu_tactics
from ..kernels.reference.limits import MAX_ELEMENTS, element_cap
from ..runtime.cpu import PlanExecutor
from ..runtime.validate import check_feeds
from .calibration_table import (
    METHODS,
    CalibrationError,
    CalibrationTable,
    _path,
    float_tensors,
    input_signature,
)
from .histograms import NUM_QUANTIZED_BINS, AbsHistogram, SignedHistogram, entropy_threshold, percentile_threshold



# --------------------------------------------------------------------------- what to calibrate with


class Calibration:
    """Calibration data and how to turn it into ranges.

    feeds:      an iterable of feed dicts (input name -> ndarray; a single dict is one batch), or a
                path to an ``.npz`` whose keys are input names (as ``workbench run --inputs``), or
                a folder of them (one batch per file, in name order).
    method:     "minmax", "entropy" or "percentile".
    percentile: the share of ``|x|`` kept by "percentile", in (0, 100].
    num_bins:   histogram bins of "entropy" and "percentile" (even, at least 128).
    cache:      a calibration table file: reused when it fits the plan and these settings, else
                written after calibrating.
    """

    def __init__(self, feeds, method: str = "minmax", percentile: float = 99.99, num_bins: int = 2048,
                 cache: str | os.PathLike | None = None):
        if not isinstance(method, str) or method not in METHODS:
            raise CalibrationError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) \
                or not 0 < percentile <= 100:
            raise CalibrationError(f"calibration percentile must be a number in (0, 100], got {percentile!r:.60}")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < NUM_QUANTIZED_BINS \
                or num_bins % 2:
            raise CalibrationError(f"calibration num_bins must be an even whole number of at least "
                                   f"{NUM_QUANTIZED_BINS}, got {num_bins!r:.60}")
        self.method = method
        self.percentile = float(percentile)
        self.num_bins = num_bins
        self.cache = None if cache is None else _path(cache, "calibration cache")
        if self.cache is not None and os.path.isdir(self.cache):
            raise CalibrationError(f"calibration cache {self.cache!r} is a directory; give a file path")
        self.files: list[str] | None = None
        if isinstance(feeds, (str, bytes, os.PathLike)):
            self.files = _feed_files(_path(feeds, "calibration data"))
        elif isinstance(feeds, collections.abc.Mapping):
            feeds = [feeds]
        elif isinstance(feeds, np.ndarray) or not isinstance(feeds, collections.abc.Iterable):
            raise InputTypeError(f"calibration feeds must be an iterable of feed dicts (input name -> array), an "
                                 f".npz path or a folder of .npz files; got {type(feeds).__name__}")
        self.feeds = feeds

    @property
    def one_shot(self) -> bool:
        """True when the feeds can be read only once (an iterator, e.g. a generator)."""
        return self.files is None and isinstance(self.feeds, collections.abc.Iterator)

    def count(self) -> int | None:
        """The number of batches, None when it is not known before they are read."""
        if self.files is not None:
            return len(self.files)
        if isinstance(self.feeds, collections.abc.Sized):
            return len(self.feeds)
        return None

    def settings(self) -> dict:
        """What the ranges depend on besides the data (recorded in a saved table; a cache made
        with other settings is recalibrated)."""
        if self.method == "minmax":
            return {"method": "minmax"}
        if self.method == "entropy":
            return {"method": "entropy", "num_bins": self.num_bins, "num_quantized_bins": NUM_QUANTIZED_BINS}
        return {"method": "percentile", "percentile": self.percentile, "num_bins": self.num_bins}

    def check_inputs(self, inputs: list[TensorSpec]) -> "Calibration":
        """Check every batch that can be checked without running (names, dtypes, ranks, fixed dims)
        against the model's ``inputs``: files from their headers only, in-memory lists as they are.
        One-shot iterators are checked as they are read. Returns self."""
        if self.files is not None:
            for path in self.files:
                arrays = {m.name: np.broadcast_to(np.zeros((), m.dtype), m.shape) for m in _npz_headers(path)}
                _checked(inputs, arrays, f"calibration file {path!r}", None)
        elif isinstance(self.feeds, collections.abc.Sequence):
            for i, feed in enumerate(self.feeds):
                _checked(inputs, feed, f"calibration batch {i}", None)
        return self

    def batches(self, inputs: list[TensorSpec] | None = None) -> Iterator[tuple[str, dict]]:
        """(label, feed dict) per batch, each read when it is reached; files are checked against
        ``inputs`` (names) before their arrays are decompressed."""
        if self.files is not None:
            budget = default_memory_budget()
            for path in self.files:
                yield f"calibration file {path!r}", _read_npz(path, inputs, budget)
            return
        for i, feed in enumerate(self.feeds):
            yield f"calibration batch {i}", feed

    def __repr__(self) -> str:
        src = (f"{len(self.files)} file(s)" if self.files is not None else type(self.feeds).__name__)
        return f"Calibration({src}, method={self.method!r}, percentile={self.percentile}, " \
               f"num_bins={self.num_bins}, cache={self.cache!r})"

def _feed_files(path: str) -> list[str]:
    if not os.path.lexists(path):
        raise InputError(f"calibration data {path!r} does not exist")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".npz") and not n.startswith("."))
        if not files:
            raise InputError(f"calibration folder {path!r} holds no .npz files (one feed dict per file, keys = "
                             "input names)")
        return files
    regular_file(path, "calibration data", error=InputError)  # a FIFO or device is refused unopened
    return [path]


def _sniff(path: str) -> bytes:
    with open_regular(path, "calibration data", error=InputError) as f:
        return f.read(8)


def _not_npz(path: str) -> InputError | None:
    problem = npz_problem(_sniff(path), f"calibration file {path!r}", "calibration data is .npz files")
    return InputError(problem) if problem else None


def _npz_headers(path: str):
    """The members of an .npz from its zip directory and .npy headers; nothing decompressed."""
    bad = _not_npz(path)
    if bad is not None:
        raise bad
    what = f"calibration file {path!r}"
    with open_regular(path, "calibration data", error=InputError) as raw:
        try:
            with zipfile.ZipFile(raw) as zf:
                return [e[0] for e in npz_members(zf, what).values()]
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, ValueError, OSError) as exc:
            if isinstance(exc, WorkbenchError):
                raise
            raise InputError(f"{what} is not a valid .npz file ({exc})") from None


def _read_npz(path: str, inputs: list[TensorSpec] | None, budget: int) -> dict[str, np.ndarray]:
    bad = _not_npz(path)
    if bad is not None:
        raise bad
    what = f"calibration file {path!r}"

    def names(members) -> None:
        if inputs is not None:
            dummies = {n: np.broadcast_to(np.zeros((), m.dtype), m.shape) for n, m in members.items()}
            _checked(inputs, dummies, what, None)

    return read_npz(path, max_bytes=budget, what=what, check=names)


def _checked(inputs: list[TensorSpec], feed, where: str, budget: int | None) -> dict:
    """``check_feeds`` with the batch named in its one-line error."""
    if not isinstance(feed, collections.abc.Mapping):
        raise InputTypeError(f"{where} is a {type(feed).__name__}; each calibration batch is a dict of input "
                             "name -> array")
    try:
        return check_feeds(inputs, dict(feed), memory_budget=budget)
    except InputError as exc:
        msg = str(exc).replace("the engine expects", "the model expects")
        raise type(exc)(f"{where}: {msg}") from None

# --------------------------------------------------------------------------- calibrate


def calibrate(plan: Plan, calibration, *, progress: bool = False) -> CalibrationTable:
    """Ranges for every float32 tensor of ``plan`` (the fp32 lowered plan).

    ``calibration``: a :class:`Calibration`; a :class:`CalibrationTable` (checked against the plan
    and returned); or a path: a calibration table file, or calibration data (an .npz or a folder of
    them, calibrated with minmax). ``progress``: a tqdm bar per pass over the feeds."""
    if isinstance(calibration, (str, bytes, os.PathLike)):
        calibration = from_path(calibration)
    if isinstance(calibration, CalibrationTable):
        why = calibration.misfit(plan)
        if why:
            raise CalibrationError(f"calibration table does not fit this model: {why}; recalibrate")
        return calibration
    if not isinstance(calibration, Calibration):
        raise CalibrationError(f"calibrate() takes a Calibration, a CalibrationTable or a path, got "
                               f"{type(calibration).__name__}")
    cache = calibration.cache
    if cache is not None and os.path.lexists(cache):
        table = CalibrationTable.load(cache)
        where = f"calibration cache {cache!r}"
        if table.misfit(plan, f"{where} (delete it or give another path)") is None \
                and table.settings == calibration.settings():
            return table
    table = _calibrate(plan, calibration, progress)
    if cache is not None:
        table.save(cache)
    return table


def from_path(path) -> Calibration | CalibrationTable:
    """A path as ``BuilderConfig.calibration`` takes it: a folder or .npz of calibration data, or a
    calibration table file (JSON)."""
    p = _path(path, "calibration")
    if not os.path.lexists(p):
        raise InputError(f"calibration data {p!r} does not exist")
    if os.path.isdir(p):
        return Calibration(p)
    head = _sniff(p)
    if head.startswith(ZIP_MAGIC) or head.startswith(NPY_MAGIC):
        return Calibration(p)
    return CalibrationTable.load(p)


def _calibrate(plan: Plan, cal: Calibration, progress: bool) -> CalibrationTable:
    executor = PlanExecutor(_fp32_plan(plan), rng=np.random.default_rng(0))
    stats = _Stats(abs_min=cal.method == "percentile")
    hists = None
    if cal.method == "minmax":
        batches = _run(executor, plan, cal, progress, "calibrate", stats.observe)
    elif cal.one_shot:  # read once: ranges and histograms together, histograms grow as needed
        hists = _Histograms(cal, None)
        batches = _run(executor, plan, cal, progress, "calibrate", _Both(stats, hists).observe)
    else:
        batches = _run(executor, plan, cal, progress, "calibrate: ranges", stats.observe)
        hists = _Histograms(cal, stats)
        _run(executor, plan, cal, progress, "calibrate: histograms", hists.observe)
    observed = stats.ranges()
    ranges = dict(observed) if hists is None else _thresholds(cal, hists, observed, progress)
    return CalibrationTable(cal.method, ranges, observed, inputs=input_signature(plan), covered=stats.covered,
                            settings=cal.settings(), batches=batches)


def _thresholds(cal: Calibration, hists: "_Histograms", observed: dict, progress: bool) -> dict:
    """Each tensor's range from its histogram (the KL search takes a few ms a tensor)."""
    bar = _bar(progress, len(hists.by_name), "calibrate: thresholds", "tensor")
    ranges = {}
    try:
        for name, h in hists.by_name.items():
            lo, hi = observed[name]
            if cal.method == "entropy":
                ranges[name] = entropy_threshold(h.hist, h.edges, lo, hi)
            else:
                ranges[name] = percentile_threshold(h.hist, h.edges, lo, hi, cal.percentile)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return ranges


def _bar(progress: bool, total: int | None, desc: str, unit: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def _run(executor: PlanExecutor, plan: Plan, cal: Calibration, progress: bool, desc: str, observe) -> int:
    """One pass over the feeds; ``observe(name, value)`` sees every input and layer output."""
    bar = _bar(progress, cal.count(), desc, "batch")
    count = 0
    budget = default_memory_budget()
    cap = plan.options.max_elements or MAX_ELEMENTS
    try:
        # non-finite values are calibration data too (they are left out of the ranges): no warnings
        with element_cap(cap, memory_budget=budget), executor.released(), \
                np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for where, feed in cal.batches(plan.inputs):
                feed = _checked(plan.inputs, feed, where, budget)
                for name, value in feed.items():
                    observe(name, value)
                executor.run(feed, tap=observe)
                count += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not count:
        raise InputError("no calibration batches: the feeds are empty" +
                         (" (an iterator can be read only once)" if cal.one_shot else ""))
    return count


def _finite(value) -> tuple[np.ndarray, np.float32, np.float32] | None:
    """A float32 tensor's finite values with their min and max; None for other tensors or none."""
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or not value.size:
        return None
    lo, hi = value.min(), value.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        value = value[np.isfinite(value)]
        if not value.size:
            return None
        lo, hi = value.min(), value.max()
    return value, lo, hi


class _Stats:
    """Running min / max of every float32 tensor (and its smallest magnitude, for percentile)."""

    def __init__(self, abs_min: bool):
        self.abs_min = abs_min
        self.lo: dict[str, np.float32] = {}
        self.hi: dict[str, np.float32] = {}
        self.amin: dict[str, np.float32] = {}
        self.covered: set[str] = set()

    def observe(self, name: str, value, seen: tuple | None = None) -> tuple | None:
        self.covered.add(name)
        seen = _finite(value) if seen is None else seen
        if seen is None:
            return None
        x, lo, hi = seen
        if name in self.lo:
            self.lo[name] = min(self.lo[name], lo)
            self.hi[name] = max(self.hi[name], hi)
        else:
            self.lo[name], self.hi[name] = lo, hi
        if self.abs_min:
            # the smallest |x|: an end of the range unless the range spans zero
            m = lo if lo >= 0 else -hi if hi <= 0 else np.abs(x).min()
            self.amin[name] = min(self.amin.get(name, m), m)
        return seen

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {n: (float(self.lo[n]), float(self.hi[n])) for n in self.lo}


class _Histograms:
    """One histogram per float32 tensor: over the global range ``stats`` found (second pass), or
    started from the first batch (one-shot feeds)."""

    def __init__(self, cal: Calibration, stats: _Stats | None):
        self.signed = cal.method == "entropy"
        self.num_bins = cal.num_bins
        self.stats = stats
        self.by_name: dict[str, SignedHistogram | AbsHistogram] = {}

    def observe(self, name: str, value, seen: tuple | None = None) -> None:
        seen = _finite(value) if seen is None else seen
        if seen is None:
            return
        x = seen[0]
        h = self.by_name.get(name)
        if h is None:
            if self.stats is None:
                first = SignedHistogram.first if self.signed else AbsHistogram.first
                self.by_name[name] = first(x.reshape(-1), self.num_bins)
                return
            if name not in self.stats.lo:
                return
            lo, hi = self.stats.lo[name], self.stats.hi[name]
            h = self.by_name[name] = (SignedHistogram(self.num_bins, max(abs(lo), abs(hi))) if self.signed
                                      else AbsHistogram(self.num_bins, self.stats.amin[name], max(abs(lo), abs(hi))))
        h.add(x.reshape(-1))


class _Both:
    """Ranges and histograms in one pass (one-shot feeds)."""

    def __init__(self, stats: _Stats, hists: _Histograms):
        self.stats, self.hists = stats, hists

    def observe(self, name: str, value) -> None:
        seen = self.stats.observe(name, value)
        if seen is not None:
            self.hists.observe(name, value, seen)


# --------------------------------------------------------------------------- the plan that runs


def _fp32_plan(plan: Plan) -> Plan:
    """A copy of ``plan`` whose layers run at fp32 on the first CPU tactic that supports each (no
    timing); the caller's plan and layers are left as they are."""
    if not isinstance(plan, Plan):
        raise CalibrationError(f"calibrate() runs a lowered Plan, got {type(plan).__name__}")
    return dataclasses.replace(plan, layers=_fp32_layers(plan.layers, plan.constants))


def _fp32_layers(layers: list[Layer], constants: dict) -> list[Layer]:
    out = []
    for layer in layers:
        attrs = {k: _fp32_attr(v) for k, v in layer.attrs.items()}
        new = dataclasses.replace(layer, attrs=attrs, precision="fp32", binaries={}, tactic_table=[])
        new.tactic, new.tactic_config = _first_tactic(new, constants)
        out.append(new)
    return out


def _fp32_attr(v):
    if isinstance(v, Subgraph):
        return dataclasses.replace(v, layers=_fp32_layers(v.layers, {}))
    if isinstance(v, list) and any(isinstance(x, Subgraph) for x in v):
        return [_fp32_attr(x) for x in v]
    return v


def _first_tactic(layer: Layer, constants: dict) -> tuple[str, dict]:
    for tactic, reason in cpu_tactics.candidates(layer, "fp32", constants):
        if reason is None:
            return tactic.name, dict(tactic.configs(layer, "fp32")[0])
    dom = f"{layer.domain}." if layer.domain else ""
    raise UnsupportedModelError(f"node {layer.onnx_nodes[0] if layer.onnx_nodes else layer.name!r}: operator "
                                f"{dom}{layer.op} (opset {layer.opset}) cannot run on the CPU for calibration")


__all__ = ["Calibration", "CalibrationError", "CalibrationTable", "METHODS", "calibrate", "float_tensors",
           "from_path", "input_signature"]
