"""The accuracy report: running comparisons of tensors against their reference (``Diff``), what
each layer accumulates (``LayerStats``) and the report object ``measure`` returns
(``AccuracyReport``: text, dict and DataFrame forms). See ``runtime/accuracy.py`` for how the
numbers are taken."""

from __future__ import annotations

import math

import numpy as np

BLOCK = 1 << 16  # elements per block of Diff's float64 sums (a few hundred KiB: cache-sized)

# ---------------------------------------------------------------------------- statistics
class Diff:
    """Running comparison of arrays against reference arrays (pooled over every pair added)."""

    __slots__ = ("sq_diff", "sq_ref", "sq_got", "dot", "max_abs", "nonfinite", "ref_nonfinite", "mismatch", "pairs")

    def __init__(self):
        self.sq_diff = self.sq_ref = self.sq_got = self.dot = self.max_abs = 0.0
        self.nonfinite = self.ref_nonfinite = self.pairs = 0
        self.mismatch = False

    def add(self, got, want) -> bool:
        """Pool one pair in; whether ``got`` holds a NaN/Inf where ``want`` has a number. The sums
        run over blocks of ``BLOCK`` elements widened to float64 one at a time (a layer's output
        can be tens of millions of values: no float64 copy of the whole tensor)."""
        a, b = host_values(got), host_values(want)
        if a is None or b is None:
            return False
        self.pairs += 1
        if a.shape != b.shape:
            self.mismatch = True
            return False
        ra, rb = a.reshape(-1), b.reshape(-1)
        new_bad = False
        for s in range(0, ra.size, BLOCK):
            new_bad |= self._block(ra[s:s + BLOCK].astype(np.float64), rb[s:s + BLOCK].astype(np.float64))
        return new_bad

    def _block(self, a: np.ndarray, b: np.ndarray) -> bool:
        sq_a, sq_b = float(np.dot(a, a)), float(np.dot(b, b))
        if math.isfinite(sq_a) and math.isfinite(sq_b):  # every value finite: the usual case, fewer passes
            d = a - b
            self.sq_diff += float(np.dot(d, d))
            self.sq_ref += sq_b
            self.sq_got += sq_a
            self.dot += float(np.dot(a, b))
            if d.size:
                self.max_abs = max(self.max_abs, float(np.max(np.abs(d))))
            return False
        fa, fb = np.isfinite(a), np.isfinite(b)
        self.nonfinite += int(a.size - np.count_nonzero(fa))
        self.ref_nonfinite += int(b.size - np.count_nonzero(fb))
        if not np.array_equal(fa, fb) or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
            self.mismatch = True
        both = fa & fb
        x, y = (a, b) if both.all() else (a[both], b[both])
        d = x - y
        self.sq_diff += float(np.dot(d, d))
        self.sq_ref += float(np.dot(y, y))
        self.sq_got += float(np.dot(x, x))
        self.dot += float(np.dot(x, y))
        if d.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(d))))
        return bool(np.any(~fa & fb))

    @property
    def rel(self) -> float:
        if not self.pairs:
            return float("nan")
        if self.mismatch:
            return float("inf")
        diff = math.sqrt(self.sq_diff)
        return diff / math.sqrt(self.sq_ref) if self.sq_ref else diff

    @property
    def max_abs_err(self) -> float:
        if not self.pairs:
            return float("nan")
        return float("inf") if self.mismatch else self.max_abs

    @property
    def cosine(self) -> float:
        if not self.pairs:
            return float("nan")
        if self.sq_got == 0 and self.sq_ref == 0:
            return 1.0
        if self.sq_got == 0 or self.sq_ref == 0:
            return 0.0
        return self.dot / math.sqrt(self.sq_got * self.sq_ref)


def host_values(x) -> np.ndarray | None:
    """``x`` as a host array of a real numeric type (no copy where it already is one), or None."""
    if x is None or isinstance(x, (list, tuple)):
        return None
    a = np.asarray(x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x)
    if a.dtype.kind not in "biuf" and not a.dtype.name.startswith(("bfloat", "float")):
        return None
    return a


def amax(values) -> float:
    """The largest finite magnitude among the float arrays in ``values`` (0 if none)."""
    best = 0.0
    for v in values:
        a = v if isinstance(v, np.ndarray) else None
        if a is None or a.size == 0 or a.dtype.kind != "f" and not a.dtype.name.startswith("bfloat"):
            continue
        a = a.astype(np.float32, copy=False)
        top = max(float(np.max(a)), -float(np.min(a)))  # two reductions, no temporary: the usual case
        if not math.isfinite(top):
            finite = a[np.isfinite(a)]
            top = float(np.max(np.abs(finite))) if finite.size else 0.0
        best = max(best, top)
    return best


class LayerStats:
    """What one layer accumulates over the feeds: its output (``out``), the layer alone on the
    reference inputs (``local``), its inputs (``inp``), the graph outputs with only this layer at
    its precision (``impact``, one Diff per graph output), the reference range, where it first
    produced a non-finite value."""

    __slots__ = ("out", "local", "inp", "impact", "ref_amax", "first_bad")

    def __init__(self, outputs: list[str]):
        self.out, self.local, self.inp = Diff(), Diff(), Diff()
        self.impact = {name: Diff() for name in outputs}
        self.ref_amax = 0.0
        self.first_bad: tuple[int, str] | None = None  # (feed index, tensor)

    @property
    def impact_err(self) -> float:
        errs = [d.rel for d in self.impact.values() if d.pairs]
        return max(errs) if errs else float("nan")


# ---------------------------------------------------------------------------- the report
COLUMNS = ["index", "layer", "op", "precision", "tactic", "output_err", "added_err", "inherited_err", "rel_err",
           "max_abs_err", "cosine", "added_max_abs", "nonfinite", "local_nonfinite", "ref_nonfinite", "ref_amax",
           "onnx_nodes", "onnx_ops"]


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def err_text(x) -> str:
    """An error for people: 3 significant digits, "-" where there is none."""
    if _missing(x):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return "0" if x == 0 else f"{x:.2e}"


class AccuracyReport:
    """Per-layer accuracy of an engine against the fp32 reference of its plan (see
    ``runtime/accuracy.py``).

    ``layers``: one dict per layer in plan order (``COLUMNS``); ``outputs``: per graph output
    ``rel_err`` / ``max_abs_err`` / ``cosine`` / ``nonfinite``; ``first_nonfinite``: the first layer
    producing non-finite values (``layer``, ``tensor``, ``feed``, ``onnx_nodes``) or None; ``feeds``:
    how many feeds were compared; ``error``: the largest output ``rel_err``. ``ranked`` orders the
    layers by the error they add: at the outputs (``output_err``) where that was measured, else at
    their own output (``added_err``)."""

    def __init__(self, layers: list[dict], outputs: dict[str, dict], first_nonfinite: dict | None, feeds: int,
                 engine: dict):
        self.layers = layers
        self.outputs = outputs
        self.first_nonfinite = first_nonfinite
        self.feeds = feeds
        self.engine = engine

    @property
    def error(self) -> float:
        errs = [o["rel_err"] for o in self.outputs.values() if not _missing(o["rel_err"])]
        return max(errs) if errs else float("nan")

    @property
    def sort_column(self) -> str:
        return "output_err" if any(not _missing(r["output_err"]) for r in self.layers) else "added_err"

    def ranked(self) -> list[dict]:
        """Every layer, the one adding the most error first (infinite first of all, none last)."""
        col = self.sort_column

        def key(row):
            x = row[col]
            return (1, 0.0, 0.0, row["index"]) if _missing(x) else (0, -x, -(row["added_err"] or 0.0), row["index"])

        return sorted(self.layers, key=key)

    def top(self, n: int = 10) -> list[dict]:
        """The ``n`` layers that add the most error (see ``ranked``)."""
        return self.ranked()[:n]

    def layer(self, name: str) -> dict:
        for row in self.layers:
            if row["layer"] == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict:
        """Plain JSON data: NaN as null, infinities as "inf" / "-inf"."""
        def plain_row(row):
            return {k: (list(v) if isinstance(v, (list, tuple)) else _plain(v)) for k, v in row.items()}

        return {"engine": dict(self.engine), "feeds": self.feeds, "error": _plain(self.error),
                "sorted_by": self.sort_column, "outputs": {k: plain_row(v) for k, v in self.outputs.items()},
                "first_nonfinite": None if self.first_nonfinite is None else plain_row(self.first_nonfinite),
                "top": [r["layer"] for r in self.top(10)], "layers": [plain_row(r) for r in self.layers]}

    def to_dataframe(self):
        """The layers as a pandas DataFrame in plan order; the summary in ``df.attrs``."""
        import pandas as pd  # noqa: PLC0415 - pandas only for reports

        df = pd.DataFrame(self.layers, columns=COLUMNS)
        df.attrs.update({"feeds": self.feeds, "error": self.error, "outputs": self.outputs,
                         "first_nonfinite": self.first_nonfinite, "engine": self.engine})
        return df

    def to_text(self, top: int = 10) -> str:
        e = self.engine
        lines = [(f"accuracy of a {e.get('backend', '?')} engine ({e.get('layers', len(self.layers))} layers) over "
                  f"{self.feeds} feed{'s' if self.feeds != 1 else ''}, against an fp32 reference of the same plan")]
        for name, o in self.outputs.items():
            cos = "-" if _missing(o["cosine"]) else f"{o['cosine']:.6f}"
            lines.append(f"  output {name}: rel err {err_text(o['rel_err'])}, max |diff| {err_text(o['max_abs_err'])}, "
                         f"cosine {cos}" + (f", {o['nonfinite']} non-finite" if o["nonfinite"] else ""))
        bad = self.first_nonfinite
        lines.append("  first non-finite value: " + ("none" if bad is None else
                     f"layer {bad['layer']!r} (tensor {bad['tensor']!r}, feed {bad['feed']}; ONNX nodes: "
                     f"{', '.join(bad['onnx_nodes'][:4]) or '-'})"))
        if str(e.get("impact", "")).startswith("skipped"):
            lines.append(f"  error at the outputs per layer: {e['impact']}")
        rows = self.top(top)
        if not rows:
            return "\n".join(lines)
        where = "at the outputs" if self.sort_column == "output_err" else "at their own output"
        lines.append(f"layers by the error they add {where} (top {len(rows)} of {len(self.layers)}); at-output: the "
                     "outputs' error with only this layer at its precision, added: this layer alone on reference "
                     "inputs, inherited: its inputs, output: its output in the engine")
        lines.append(f"  {'#':>4}  {'at-output':>9}  {'added':>9}  {'inherited':>9}  {'output':>9}  {'max|d|':>9}  "
                     f"{'cosine':>9}  {'nonfin':>6}  {'prec':<5} {'op':<16} layer [ONNX nodes]")
        for r in rows:
            cos = "-" if _missing(r["cosine"]) else f"{r['cosine']:.6f}"
            nodes = ", ".join(r["onnx_nodes"][:3]) + (f", +{len(r['onnx_nodes']) - 3}" if len(r["onnx_nodes"]) > 3 else "")
            lines.append(f"  {r['index']:>4}  {err_text(r['output_err']):>9}  {err_text(r['added_err']):>9}  "
                         f"{err_text(r['inherited_err']):>9}  {err_text(r['rel_err']):>9}  {err_text(r['max_abs_err']):>9}  "
                         f"{cos:>9}  {r['nonfinite']:>6}  {r['precision']:<5} {r['op'][:16]:<16} {r['layer']}"
                         + (f"  [{nodes}]" if nodes and nodes != r["layer"] else ""))
        named = [r for r in rows[:3] if not _missing(r[self.sort_column])]
        if named:
            lines.append("top contributors: " + "; ".join(
                f"{r['layer']} ({err_text(r[self.sort_column])}; "
                + (f"ONNX: {', '.join(r['onnx_nodes'][:2])})" if r["onnx_nodes"] else
                   "no ONNX node: inserted by the build, steer the layer that feeds it)")
                for r in named))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<AccuracyReport {len(self.layers)} layers, {self.feeds} feeds, error {err_text(self.error)}>"
