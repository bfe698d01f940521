"""Reference kernels of the ai.onnx.ml domain: LabelEncoder, Binarizer, ArrayFeatureExtractor,
TreeEnsemble, Normalizer, Scaler.
"""

from __future__ import annotations

import math

import numpy as np

from ._base import KernelError

DOMAIN = "ai.onnx.ml"


def _as_list(v) -> list:
    return list(np.asarray(v).reshape(-1)) if isinstance(v, np.ndarray) else list(v)


def label_encoder(ctx, inputs, attrs):
    x = inputs[0]
    if ctx.opset < 2:  # LabelEncoder-1: classes_strings, string <-> position
        classes = list(attrs.get("classes_strings", []))
        if x.dtype == object:
            lookup = {s: i for i, s in enumerate(classes)}
            return [np.array([lookup.get(s, int(attrs.get("default_int64", -1))) for s in x.reshape(-1)],
                             dtype=np.int64).reshape(x.shape)]
        default = attrs.get("default_string", "_Unused")
        vals = [classes[i] if 0 <= i < len(classes) else default for i in x.reshape(-1).astype(np.int64)]
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        return [out.reshape(x.shape)]
    keys = next((attrs[k] for k in ("keys_tensor", "keys_strings", "keys_int64s", "keys_floats") if k in attrs), None)
    vname = next((k for k in ("values_tensor", "values_strings", "values_int64s", "values_floats") if k in attrs), None)
    if keys is None or vname is None:
        raise KernelError("LabelEncoder: keys and values attributes are required")
    values = attrs[vname]
    if vname == "values_tensor":
        out_dt = np.asarray(values).dtype
    else:
        out_dt = {"values_strings": np.dtype(object), "values_int64s": np.dtype(np.int64),
                  "values_floats": np.dtype(np.float32)}[vname]
    keys, values = _as_list(keys), _as_list(values)
    if len(keys) != len(values):
        raise KernelError(f"LabelEncoder: {len(keys)} keys but {len(values)} values")
    if "default_tensor" in attrs:
        default = np.asarray(attrs["default_tensor"]).reshape(-1)[0]
    elif out_dt == object:
        default = attrs.get("default_string", "_Unused")
    elif out_dt.kind == "f":
        default = attrs.get("default_float", -0.0)
    else:
        default = attrs.get("default_int64", -1)
    # NaN never equals itself: give it its own slot so a NaN key still matches
    def key(v):
        return "__nan__" if isinstance(v, (float, np.floating)) and math.isnan(v) else v
    table = {key(k.item() if hasattr(k, "item") else k): v for k, v in zip(keys, values)}
    src = [v.item() if hasattr(v, "item") else v for v in x.reshape(-1)]
    res = [table.get(key(v), default) for v in src]
    out = np.empty(len(res), dtype=object) if out_dt == object else np.array(res, dtype=out_dt)
    if out_dt == object:
        out[:] = res
    return [out.reshape(x.shape)]


def binarizer(ctx, inputs, attrs):
    x = inputs[0]
    return [(x > x.dtype.type(attrs.get("threshold", 0.0))).astype(x.dtype)]


def array_feature_extractor(ctx, inputs, attrs):
    x, idx = inputs[0], np.asarray(inputs[1]).astype(np.int64).reshape(-1)
    last = x.shape[-1]
    if idx.size and (idx.min() < 0 or idx.max() >= last):
        raise KernelError(f"ArrayFeatureExtractor: index out of range for last dim {last}")
    out = np.take(x, idx, axis=-1)
    return [out.reshape(1, -1) if x.ndim == 1 else out]


def normalizer(ctx, inputs, attrs):
    x = inputs[0].astype(np.float32)
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    norm = attrs.get("norm", "MAX")
    if norm == "MAX":
        d = np.abs(x2).max(axis=1, keepdims=True)
    elif norm == "L1":
        d = np.abs(x2).sum(axis=1, keepdims=True)
    elif norm == "L2":
        d = np.sqrt((x2 * x2).sum(axis=1, keepdims=True))
    else:
        raise KernelError(f"Normalizer: unknown norm {norm!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(d == 0, x2, x2 / d)
    return [out.reshape(x.shape).astype(np.float32)]


def scaler(ctx, inputs, attrs):
    x = inputs[0].astype(np.float32)
    offset = np.asarray(attrs.get("offset", [0.0]), dtype=np.float32)
    scale = np.asarray(attrs.get("scale", [1.0]), dtype=np.float32)
    return [((x - offset) * scale).astype(np.float32)]


_MODES = {0: lambda v, s: v <= s, 1: lambda v, s: v < s, 2: lambda v, s: v >= s,
          3: lambda v, s: v > s, 4: lambda v, s: v == s, 5: lambda v, s: v != s}


def _post_transform(y: np.ndarray, kind: int) -> np.ndarray:
    if kind == 0:
        return y
    if kind == 1:
        e = np.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == 2:
        return 1 / (1 + np.exp(-y))
    if kind == 3:  # softmax over the non-zero scores only
        e = np.where(y != 0, np.exp(y - y.max(axis=1, keepdims=True)), 0.0)
        s = e.sum(axis=1, keepdims=True)
        return np.where(s > 0, e / np.where(s > 0, s, 1), 0.0)
    if kind == 4:  # probit: sqrt(2) * erfinv(2p - 1), erfinv by Newton on math.erf
        z = 2 * y - 1
        w = np.zeros_like(z)
        erf = np.vectorize(math.erf)
        for _ in range(60):
            w = w - (erf(w) - z) / (2 / math.sqrt(math.pi) * np.exp(-w * w))
        return math.sqrt(2) * w
    raise KernelError(f"TreeEnsemble: unknown post_transform {kind}")


def tree_ensemble(ctx, inputs, attrs):
    x = inputs[0]
    xs = x.reshape(x.shape[0], -1).astype(np.float64)
    feat = [int(v) for v in attrs["nodes_featureids"]]
    splits = np.asarray(attrs["nodes_splits"], dtype=np.float64).reshape(-1)
    modes = [int(v) for v in np.asarray(attrs["nodes_modes"]).reshape(-1)]
    t_ids, f_ids = [int(v) for v in attrs["nodes_truenodeids"]], [int(v) for v in attrs["nodes_falsenodeids"]]
    t_leaf, f_leaf = [int(v) for v in attrs["nodes_trueleafs"]], [int(v) for v in attrs["nodes_falseleafs"]]
    missing = [int(v) for v in attrs.get("nodes_missing_value_tracks_true", [0] * len(feat))]
    leaf_w = np.asarray(attrs["leaf_weights"], dtype=np.float64).reshape(-1)
    leaf_t = [int(v) for v in attrs["leaf_targetids"]]
    n_targets = int(attrs["n_targets"])
    agg = int(attrs.get("aggregate_function", 1))
    # BRANCH_MEMBER sets, in the order member nodes appear in nodes_modes, NaN-delimited
    members: dict[int, set] = {}
    if 6 in modes:
        flat = list(np.asarray(attrs.get("membership_values", []), dtype=np.float64).reshape(-1))
        groups, cur = [], set()
        for v in flat:
            if math.isnan(v):
                groups.append(cur)
                cur = set()
            else:
                cur.add(v)
        it = iter(groups)
        for i, m in enumerate(modes):
            if m == 6:
                members[i] = next(it, set())
    roots = [int(r) for r in attrs["tree_roots"]]
    init = {0: 0.0, 1: 0.0, 2: np.inf, 3: -np.inf}.get(agg)
    if init is None:
        raise KernelError(f"TreeEnsemble: unknown aggregate_function {agg}")
    out = np.full((xs.shape[0], n_targets), init)
    for r, row in enumerate(xs):
        for root in roots:
            node, is_leaf = root, bool(t_leaf[root] and f_leaf[root] and t_ids[root] == f_ids[root])
            for _ in range(len(feat) + 1):  # a well-formed tree ends within len(nodes) steps
                if is_leaf:
                    break
                v = row[feat[node]]
                if math.isnan(v) and missing[node]:
                    go = True
                elif modes[node] == 6:
                    go = v in members[node]
                else:
                    go = bool(_MODES[modes[node]](v, splits[node]))
                node, is_leaf = (t_ids[node], t_leaf[node]) if go else (f_ids[node], f_leaf[node])
            else:
                raise KernelError("TreeEnsemble: a tree has a cycle")
            t, w = leaf_t[node], leaf_w[node]
            if agg in (0, 1):
                out[r, t] += w / len(roots) if agg == 0 else w
            elif agg == 2:
                out[r, t] = min(out[r, t], w)
            else:
                out[r, t] = max(out[r, t], w)
    out = _post_transform(out, int(attrs.get("post_transform", 0)))
    return [out.astype(x.dtype)]


KERNELS = {
    "LabelEncoder": label_encoder,
    "Binarizer": binarizer,
    "ArrayFeatureExtractor": array_feature_extractor,
    "TreeEnsemble": tree_ensemble,
    "Normalizer": normalizer,
    "Scaler": scaler,
}
