"""Histograms of a tensor's values over calibration batches, and the clipping thresholds chosen from
them: KL divergence (entropy) and percentile.

The reference is onnxruntime's quantization tool (``onnxruntime/quantization/calibrate.py``,
``HistogramCollector``), so that ranges can be checked against it and a user moving from it gets
the same numbers:

* ``SignedHistogram`` (entropy): ``num_bins`` bins over ``[-t, t]``, ``t`` the largest magnitude
  seen; a batch reaching past ``t`` widens the histogram by whole bins on both sides
  (``collect_value`` / ``merge_histogram``).
* ``AbsHistogram`` (percentile): ``num_bins`` bins of ``|x|`` between the smallest and largest
  magnitude; a batch past the last edge appends bins of the same width (``collect_absolute_value``).
* ``entropy_threshold``: for every candidate window of ``2i+1`` bins around zero, the reference
  distribution ``p`` (the window, outliers added to its end bins) against ``q``, the window merged
  into ``num_quantized_bins`` levels and spread back; the window with the smallest KL(p||q) wins
  (``get_entropy_threshold``, after TensorRT's 8-bit calibration talk). onnxruntime's details are
  kept on purpose, because they move the chosen threshold: ``q`` is held in integers (each level's
  count divided by its non-empty bins, truncated), spread over the empty bins too, and the bins
  past ``num_quantized_bins * merged`` count in the last level but are left out of ``q``.
* ``percentile_threshold``: the edge where the cumulative share of ``|x|`` reaches the percentile
  (``compute_percentile``, symmetric).

Both thresholds are clipped to the observed ``[min, max]``, as onnxruntime does. Counts for fixed
edges add up, so a histogram built batch by batch over a range known beforehand holds exactly the
counts of one built over all the data at once.
"""

from __future__ import annotations

import numpy as np

NUM_QUANTIZED_BINS = 128  # 8-bit: the levels a clipped range is quantized to in the KL search
_SMOOTH_EPS = 1e-4
# a histogram started from a first batch's range may grow as later batches reach past it; past this
# many times its initial bins, neighbouring bins are merged instead (memory stays bounded)
MAX_GROWTH = 64


# float32 bins, as onnxruntime's, unless float32 cannot hold them: a range within reach of float32's
# largest value (attention masks often hold -3.4e38; widening would overflow) or one so small that
# its bins would be below float32's resolution; those histograms count in float64
_F32_REACH = float(np.finfo(np.float32).max) / 8


def _bins_dtype(lo, hi, num_bins: int):
    if max(abs(float(lo)), abs(float(hi))) > _F32_REACH:
        return np.float64
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            edges = np.histogram(np.empty(0, np.float32), num_bins, range=(np.float32(lo), np.float32(hi)))[1]
    except ValueError:  # numpy: "too many bins for data range"
        return np.float64
    return np.float32 if np.all(np.isfinite(edges)) else np.float64


class SignedHistogram:
    """Counts of ``x`` in ``num_bins`` equal bins over ``[-threshold, threshold]``."""

    def __init__(self, num_bins: int, threshold: float):
        self.num_bins = num_bins
        self.dtype = _bins_dtype(-threshold, threshold, num_bins)
        t = self.dtype(threshold)
        self.threshold = t
        self.hist = np.zeros(num_bins, np.int64)
        self.edges = np.histogram(np.empty(0, self.dtype), num_bins, range=(-t, t))[1]

    @classmethod
    def first(cls, x: np.ndarray, num_bins: int) -> "SignedHistogram":
        """A histogram whose range is the first batch's (the batch itself counted)."""
        h = cls(num_bins, _threshold(x))
        h.add(x)
        return h

    def add(self, x: np.ndarray) -> None:
        t_new = _threshold(x)
        if self.dtype is np.float32 and t_new > _F32_REACH:
            self._to_float64()
        x, t_new = x.astype(self.dtype, copy=False), self.dtype(t_new)
        n = self.hist.size
        if t_new <= self.threshold:
            self.hist += np.histogram(x, n, range=(-self.threshold, self.threshold))[0]
            return
        if self.threshold == 0:
            # onnxruntime: the old counts are added bin for bin to the new range's histogram
            if _bins_dtype(-t_new, t_new, n) is not self.dtype:
                self._to_float64()
                x, t_new = x.astype(np.float64), np.float64(t_new)
            hist, self.edges = np.histogram(x, n, range=(-t_new, t_new))
            self.hist = hist + self.hist
            self.threshold = t_new
            return
        stride = 2 * self.threshold / n
        half = int((t_new - self.threshold) // stride + 1)
        if n + 2 * half > MAX_GROWTH * self.num_bins:
            self._coarsen(t_new)
            self.add(x)
            return
        t_wide = half * stride + self.threshold
        hist, self.edges = np.histogram(x, n + 2 * half, range=(-t_wide, t_wide))
        hist[half: n + half] += self.hist
        self.hist, self.threshold = hist, self.dtype(t_wide)

    def _to_float64(self) -> None:
        self.dtype = np.float64
        self.threshold = np.float64(self.threshold)
        self.edges = self.edges.astype(np.float64)

    def _coarsen(self, reach) -> None:
        """Merge groups of ``k`` neighbouring bins (``k`` even, padding both sides alike, so the
        range stays centred on zero) until a range reaching ``reach`` fits in ``MAX_GROWTH`` times
        the initial bins. Needs an even bin count (``Calibration`` asks for one)."""
        n = self.hist.size
        stride = 2 * self.threshold / n
        cap = MAX_GROWTH * self.num_bins
        k = 2
        while True:
            pad = (-n) % (2 * k)  # the merged count stays even too
            t = self.threshold + (pad // 2) * stride
            if (n + pad) // k + 2 * (int((reach - t) // (k * stride)) + 1) <= cap:
                break
            k += 2
        side = np.zeros(pad // 2, np.int64)
        self.hist = np.concatenate([side, self.hist, side]).reshape(-1, k).sum(axis=1)
        self.threshold = self.dtype(t)
        self.edges = np.linspace(-self.threshold, self.threshold, self.hist.size + 1, dtype=self.dtype)


class AbsHistogram:
    """Counts of ``|x|`` in equal bins from ``lo`` (the smallest magnitude) up to the last edge."""

    def __init__(self, num_bins: int, lo: float, hi: float):
        self.num_bins = num_bins
        self.dtype = _bins_dtype(lo, hi, num_bins)
        self.hist = np.zeros(num_bins, np.int64)
        self.edges = np.histogram(np.empty(0, self.dtype), num_bins, range=(self.dtype(lo), self.dtype(hi)))[1]
        self._uniform = True  # edges from one linspace: np.histogram's fast equal-bin path applies

    @classmethod
    def first(cls, x: np.ndarray, num_bins: int) -> "AbsHistogram":
        a = np.abs(x)
        h = cls(num_bins, a.min() if a.size else 0.0, a.max() if a.size else 0.0)
        if a.size:
            # onnxruntime's first batch: bins over its own |x| range
            h.hist, h.edges = np.histogram(a.astype(h.dtype, copy=False), num_bins)
        return h

    def add(self, x: np.ndarray) -> None:
        a = np.abs(x)
        top = a.max() if a.size else 0.0
        if self.dtype is np.float32 and top > _F32_REACH:
            self.dtype = np.float64
            self.edges = self.edges.astype(np.float64)
        a = a.astype(self.dtype, copy=False)
        if top > self.edges[-1]:
            width = self.edges[1] - self.edges[0]
            # as onnxruntime (np.arange without dtype=, which would step differently): it may add
            # one bin past the one holding ``top``; in float32 it may also stop just short of
            # ``top``, which would drop it: one more bin then
            more = np.arange(self.edges[-1] + width, top + width, width).astype(self.dtype)
            if not more.size or more[-1] < top:
                more = np.append(more, (more[-1] if more.size else self.edges[-1]) + width).astype(self.dtype)
            if self.hist.size + more.size > MAX_GROWTH * self.num_bins:
                k = -(-(self.hist.size + more.size) // (MAX_GROWTH * self.num_bins)) + 1
                self._coarsen(k)
                self.add(x)
                return
            self.edges = np.hstack((self.edges, more)).astype(self.dtype)
            self._uniform = False
        if self._uniform:
            counts = np.histogram(a, self.hist.size, range=(self.edges[0], self.edges[-1]))[0]
        else:
            counts = np.histogram(a, bins=self.edges)[0]
        counts[: self.hist.size] += self.hist
        self.hist = counts

    def _coarsen(self, k: int) -> None:
        pad = (-self.hist.size) % k
        self.hist = np.concatenate([self.hist, np.zeros(pad, np.int64)]).reshape(-1, k).sum(axis=1)
        width = (self.edges[1] - self.edges[0]) * k
        self.edges = (self.edges[0] + width * np.arange(self.hist.size + 1)).astype(self.dtype)
        self._uniform = False


def _threshold(x: np.ndarray) -> np.float32:
    if not x.size:
        return np.float32(0)
    return np.float32(max(abs(x.min()), abs(x.max())))


# --------------------------------------------------------------------------- thresholds


def percentile_threshold(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float,
                         percentile: float) -> tuple[float, float]:
    """``(-e, e)`` clipped to ``[lo, hi]``, ``e`` the edge of ``|x|``'s histogram where the
    cumulative share first reaches ``percentile`` %."""
    total = hist.sum()
    cdf = np.cumsum(hist / total)
    e = edges[min(int(np.searchsorted(cdf, percentile / 100.0)), edges.size - 1)]
    return _clip(-e, e, lo, hi)


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float,
                      num_quantized_bins: int = NUM_QUANTIZED_BINS) -> tuple[float, float]:
    """The window around zero whose ``num_quantized_bins``-level quantization loses the least
    information (smallest KL divergence), as ``(edge_left, edge_right)`` clipped to ``[lo, hi]``."""
    hist = np.asarray(hist, np.int64)
    n = hist.size
    zero, half_q = n // 2, num_quantized_bins // 2
    if zero < half_q:
        raise ValueError(f"a histogram of {n} bins is too small for {num_quantized_bins} quantized bins")
    csum = np.concatenate(([0], np.cumsum(hist)))
    # every candidate at once in float64, then the near-best ones again in onnxruntime's float32
    # arithmetic, so that its choice among near-equal divergences (first minimum) is ours too
    coarse = _kl_all(hist, csum, num_quantized_bins)
    finite = coarse[np.isfinite(coarse)]
    best = half_q
    if finite.size:
        low = finite.min()
        near = np.flatnonzero(coarse <= low + _NEAR * abs(low) + 1e-12) + half_q
        levels = np.arange(num_quantized_bins + 1)
        best_div = np.inf
        for i in near:
            div = _kl(hist, csum, csum[-1], zero - i, min(zero + i + 1, n), num_quantized_bins, levels)
            if div < best_div:  # strict: the first of equal minima wins, as np.argmin picks it
                best, best_div = int(i), div
    start, end = zero - best, min(zero + best + 1, n)
    return _clip(edges[start], edges[end], lo, hi)


_NEAR = 1e-2  # relative: float32 divergences near the minimum are far closer than this to the exact ones
_SERIES_TERMS = 10  # of the expansion of (h - c) log(h - c) in c / h; c <= _SERIES_C, h >= 1
_SERIES_C = 0.25


def _kl_all(hist: np.ndarray, csum: np.ndarray, nq: int) -> np.ndarray:
    """KL(p || q) of every candidate window of ``get_entropy_threshold``'s loop, in float64 and
    without building p or q: both are piecewise (the window's bins, the quantized levels), so every
    sum the divergence needs comes from prefix sums over the histogram. inf where onnxruntime's
    would be inf (or fail its smoothing assertions).

    With ``S`` the total count (smoothing keeps it: ``eps1 * nonzeros == eps * zeros``):
    ``KL = A / S - log S - B / S + log Sq``, ``A = sum p' log p'`` over the smoothed window
    (nonzero bins ``h - c`` with ``c = eps1``, expanded in powers of ``c / h``; zero bins ``eps``),
    ``B = sum p' log q'`` = the sum over levels of ``log q'_k`` times the smoothed counts in level k."""
    n = hist.size
    zero, half_q = n // 2, nq // 2
    eps, log_eps = _SMOOTH_EPS, np.log(_SMOOTH_EPS)
    h = hist.astype(np.float64)
    filled = hist > 0
    hl = np.where(filled, h, 1.0)
    log_h = np.log(hl)

    def prefix(v):
        return np.concatenate(([0.0], np.cumsum(np.where(filled, v, 0.0))))

    nz = np.concatenate(([0], np.cumsum(filled)))
    f0, f1 = prefix(h * log_h), prefix(log_h + 1.0)
    inv = [prefix(hl ** -k) for k in range(1, _SERIES_TERMS)]  # sum of 1 / h^k

    i = np.arange(half_q, zero + 1)
    s, e = zero - i, np.minimum(zero + i + 1, n)
    size, merged = e - s, (e - s) // nq
    total = float(csum[-1])
    left, right = csum[s], csum[-1] - csum[e]
    v0, v1 = hist[s] + left, hist[e - 1] + right  # the end bins with the outliers
    end0 = (v0 > 0).astype(np.int64) - (hist[s] > 0)  # nonzero-count change at the ends
    end1 = (v1 > 0).astype(np.int64) - (hist[e - 1] > 0)
    nz_p = nz[e] - nz[s] + end0 + end1
    zeros_p = size - nz_p
    with np.errstate(divide="ignore", invalid="ignore"):
        c = eps * zeros_p / nz_p
        # A: interior bins by the series, the two end bins and the zero bins directly
        a, b = s + 1, e - 1
        cs = np.minimum(c, _SERIES_C)
        big = f0[b] - f0[a] - cs * (f1[b] - f1[a])
        for k in range(2, _SERIES_TERMS + 1):
            big += cs ** k / (k * (k - 1)) * (inv[k - 2][b] - inv[k - 2][a])
        for j in np.flatnonzero(c > _SERIES_C):  # rare (few filled bins): directly
            w = h[a[j]: b[j]]
            w = w[w > 0] - c[j]
            big[j] = np.sum(w * np.log(w))
        ends = np.where(v0 > 0, (v0 - c) * np.log(v0 - c), 0.0) + np.where(v1 > 0, (v1 - c) * np.log(v1 - c), 0.0)
        big += ends + zeros_p * eps * log_eps

        # levels: k * merged .. (k + 1) * merged of the window; the tail past nq * merged is its own
        k = np.arange(nq + 1)
        bounds = s[:, None] + k[None, :] * merged[:, None]
        lvl_sum = csum[bounds[:, 1:]] - csum[bounds[:, :-1]]  # int64 until the counts are split
        lvl_nz = nz[bounds[:, 1:]] - nz[bounds[:, :-1]]
        tail_sum = csum[e] - csum[bounds[:, -1]]
        tail_nz = nz[e] - nz[bounds[:, -1]]
        quantized = lvl_sum.copy()
        quantized[:, -1] += tail_sum  # onnxruntime: the tail counts in the last level, outliers not
        lvl_sum[:, 0] += left
        lvl_nz[:, 0] += end0
        last_in_tail = size > nq * merged
        rows = np.arange(i.size)
        lvl_sum[rows[~last_in_tail], -1] += right[~last_in_tail]
        lvl_nz[rows[~last_in_tail], -1] += end1[~last_in_tail]
        tail_sum += np.where(last_in_tail, right, 0)
        tail_nz += np.where(last_in_tail, end1, 0)
        tail_zeros = size - nq * merged - tail_nz

        per_bin = np.where(lvl_nz > 0, quantized // np.maximum(lvl_nz, 1), 0).astype(np.float64)
        nz_q = merged * (per_bin > 0).sum(axis=1)
        c_q = eps * (size - nz_q) / nz_q
        log_q = np.where(per_bin > 0, np.log(per_bin - c_q[:, None]), log_eps)
        p_lvl = lvl_sum - c[:, None] * lvl_nz + eps * (merged[:, None] - lvl_nz)
        p_tail = tail_sum - c * tail_nz + eps * tail_zeros
        cross = (log_q * p_lvl).sum(axis=1) + log_eps * p_tail
        kl = big / total - np.log(total) - cross / total + np.log(merged * per_bin.sum(axis=1))
    bad = (nz_p == 0) | (nz_q == 0) | (c >= 1) | (c_q >= 1) | ~np.isfinite(kl)
    return np.where(bad, np.inf, kl)


def _kl(hist, csum, total, start: int, end: int, nq: int, levels) -> float:
    """KL(p || q) for the window ``hist[start:end]`` in onnxruntime's float32 arithmetic (inf when
    either distribution is empty)."""
    size = end - start
    merged = size // nq
    p = hist[start:end].copy()
    p[0] += csum[start]
    p[-1] += total - csum[end]
    nonzero = p != 0
    bounds = start + levels * merged
    quantized = csum[bounds[1:]] - csum[bounds[:-1]]
    quantized[-1] += csum[end] - csum[bounds[-1]]
    nz_csum = np.concatenate(([0], np.cumsum(nonzero)))
    norm = nz_csum[levels[1:] * merged] - nz_csum[levels[:-1] * merged]
    per_bin = np.where(norm != 0, quantized // np.maximum(norm, 1), 0)
    q = np.zeros(size, np.int64)
    q[: nq * merged] = np.repeat(per_bin, merged)
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None:
        return np.inf
    ps = 1.0 * ps / np.sum(ps)
    qs = 1.0 * qs / np.sum(qs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = ps * np.log(ps / qs)
    terms[~((ps > 0) & (qs > 0))] = np.inf
    div = float(np.sum(terms, dtype=np.float32))
    return np.inf if np.isnan(div) else div  # NaN (a non-positive smoothed bin) never wins


def _smooth(p: np.ndarray) -> np.ndarray | None:
    """Zero bins get ``eps``, taken evenly from the others (float32); None if all are zero."""
    zeros = (p == 0).astype(np.float32)
    nonzeros = (p != 0).astype(np.float32)
    n_zeros = zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = _SMOOTH_EPS * float(n_zeros) / float(n_nonzeros)
    out = p.astype(np.float32)
    out += _SMOOTH_EPS * zeros + (-eps1) * nonzeros
    return out


def _clip(left, right, lo: float, hi: float) -> tuple[float, float]:
    left = lo if left < lo else left
    right = hi if right > hi else right
    return float(left), float(right)


__all__ = ["AbsHistogram", "MAX_GROWTH", "NUM_QUANTIZED_BINS", "SignedHistogram", "entropy_threshold",
           "percentile_threshold"]
