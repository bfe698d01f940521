"""Reference kernels: string ops and TfIdfVectorizer.

String tensors are NumPy object arrays of Python ``str``. RegexFullMatch patterns are RE2 syntax
in ONNX and run on RE2 itself (the ``google-re2`` package): matching time is linear in the input
whatever the pattern, so a pattern written to backtrack catastrophically cannot hang a build or a
run, and what RE2 refuses (backreferences, lookaround) is refused here with RE2's reason.
"""

from __future__ import annotations

import functools

import numpy as np
import re2

from ._base import KernelError


def _strings(shape, values) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out.reshape(shape)


def string_concat(ctx, inputs, attrs):
    x, y = np.broadcast_arrays(np.asarray(inputs[0], dtype=object), np.asarray(inputs[1], dtype=object))
    return [_strings(x.shape, [a + b for a, b in zip(x.reshape(-1), y.reshape(-1))])]


def string_normalizer(ctx, inputs, attrs):
    x = inputs[0]
    if x.ndim == 2 and x.shape[0] != 1 or x.ndim > 2:
        raise KernelError(f"StringNormalizer: input must be [C] or [1, C], got {list(x.shape)}")
    action = attrs.get("case_change_action", "NONE")
    sensitive = int(attrs.get("is_case_sensitive", 0))
    stop = list(attrs.get("stopwords", []))
    words = list(x.reshape(-1))
    if stop:
        if sensitive:
            stopset = set(stop)
            words = [w for w in words if w not in stopset]
        else:
            stopset = {s.lower() for s in stop}
            words = [w for w in words if w.lower() not in stopset]
    if action == "LOWER":
        words = [w.lower() for w in words]
    elif action == "UPPER":
        words = [w.upper() for w in words]
    elif action != "NONE":
        raise KernelError(f"StringNormalizer: unknown case_change_action {action!r}")
    if not words:
        words = [""]  # the spec keeps one empty string rather than an empty output
    shape = (len(words),) if x.ndim == 1 else (1, len(words))
    return [_strings(shape, words)]


def string_split(ctx, inputs, attrs):
    x = inputs[0]
    delim = attrs.get("delimiter") or None  # empty or absent: split on runs of whitespace
    maxsplit = attrs.get("maxsplit")
    maxsplit = -1 if maxsplit is None else int(maxsplit)
    parts = [s.split(delim, maxsplit) for s in x.reshape(-1)]
    width = max((len(p) for p in parts), default=0)
    out = np.full((len(parts), width), "", dtype=object)
    for i, p in enumerate(parts):
        out[i, : len(p)] = p
    counts = np.array([len(p) for p in parts], dtype=np.int64)
    return [out.reshape(x.shape + (width,)), counts.reshape(x.shape)]


# RE2 refuses to compile a pattern whose program would need more than this; matching then needs
# memory bounded by it and time linear in the input.
REGEX_MAX_MEM = 8 << 20


@functools.lru_cache(maxsize=64)
def compile_regex(pattern: str):
    """An RE2 pattern object, or KernelError with RE2's reason (one line, pattern shortened)."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.max_mem = REGEX_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise KernelError(f"RegexFullMatch: pattern {pattern!r:.80} is not valid RE2: {reason.splitlines()[0] if reason else 'refused'}") from None


def regex_full_match(ctx, inputs, attrs):
    pattern = compile_regex(str(attrs["pattern"]))
    x = inputs[0]
    return [np.array([pattern.fullmatch(s) is not None for s in x.reshape(-1)], dtype=bool).reshape(x.shape)]


def tfidf_vectorizer(ctx, inputs, attrs):
    x = inputs[0]
    min_n, max_n = int(attrs["min_gram_length"]), int(attrs["max_gram_length"])
    max_skip = int(attrs["max_skip_count"])
    mode = attrs["mode"]
    starts = [int(v) for v in attrs["ngram_counts"]]
    indexes = [int(v) for v in attrs["ngram_indexes"]]
    pool = list(attrs["pool_strings"]) if "pool_strings" in attrs else [int(v) for v in attrs["pool_int64s"]]
    weights = attrs.get("weights")
    # pool: ngrams of length i+1 start at item starts[i]; the k-th ngram overall maps to indexes[k]
    table: dict[tuple, int] = {}
    k = 0
    for i, start in enumerate(starts):
        n = i + 1
        end = starts[i + 1] if i + 1 < len(starts) else len(pool)
        for j in range(start, end, n):
            table[tuple(pool[j: j + n])] = indexes[k]
            k += 1
    width = max(indexes) + 1 if indexes else 0
    rows = x.reshape(1, -1) if x.ndim <= 1 else x
    counts = np.zeros((rows.shape[0], width), dtype=np.float64)
    for r, row in enumerate(rows):
        items = [v if isinstance(v, str) else int(v) for v in row]
        for n in range(max(min_n, 1), max_n + 1):
            # unigrams do not depend on the skip, so count them once
            for skip in range(0, max_skip + 1 if n > 1 else 1):
                step = skip + 1
                for s in range(0, len(items) - (n - 1) * step):
                    hit = table.get(tuple(items[s: s + (n - 1) * step + 1: step]))
                    if hit is not None:
                        counts[r, hit] += 1
    w = np.ones(width) if weights is None else np.asarray(weights, dtype=np.float64)
    if mode == "TF":
        out = counts
    elif mode == "IDF":
        out = (counts > 0) * w
    elif mode == "TFIDF":
        out = counts * w
    else:
        raise KernelError(f"TfIdfVectorizer: unknown mode {mode!r}")
    out = out.astype(np.float32)
    return [out.reshape(-1) if x.ndim <= 1 else out]


KERNELS = {
    "StringConcat": string_concat,
    "StringNormalizer": string_normalizer,
    "StringSplit": string_split,
    "RegexFullMatch": regex_full_match,
    "TfIdfVectorizer": tfidf_vectorizer,
}
