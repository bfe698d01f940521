"""Reference kernels: Resize / Upsample, GridSample, AffineGrid, RoiAlign, NonMaxSuppression.

Resize is separable: each resized axis is one gather of ``n`` neighbours per output position and
a weighted sum (weights in float64). The neighbour / weight choice follows the ONNX reference
exactly, including its convention that an integral source coordinate counts as ratio 1 of the
pixel to its left, so linear, cubic, antialias and exclude_outside agree bit-for-bit in layout.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ._base import KernelError
from .limits import check_elements
from .tensor import norm_axis


def _source_coords(ctm: str, out_len: int, in_len: int, scale: float, roi):
    """Source coordinate of every output position along one axis (float64)."""
    o = np.arange(out_len, dtype=np.float64)
    out_w = scale * in_len  # the reference uses the real-valued output length here
    if ctm == "align_corners":
        return np.zeros_like(o) if out_w == 1 else o * (in_len - 1) / (out_w - 1)
    if ctm == "asymmetric":
        return o / scale
    if ctm == "tf_crop_and_resize":
        start, end = roi
        if out_len == 1:
            return np.full_like(o, (end - start) * (in_len - 1) / 2 + start * (in_len - 1))
        return o * (end - start) * (in_len - 1) / (out_len - 1) + start * (in_len - 1)
    if ctm == "pytorch_half_pixel":
        return np.full_like(o, -0.5) if out_w == 1 else (o + 0.5) / scale - 0.5
    if ctm == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if ctm == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if ctm == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / out_w)
        return offset + (o + 0.5) / scale - 0.5
    raise KernelError(f"Resize: unknown coordinate_transformation_mode {ctm!r}")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _taps(mode: str, ratio: np.ndarray, scale: float, a: float, antialias: bool):
    """(offsets from the left pixel, weights[out, n]) of the interpolation filter."""
    s = min(scale, 1.0) if antialias else 1.0
    if mode == "linear":
        start = int(math.floor(-1 / s) + 1)
        offs = np.arange(start, 2 - start)
        w = np.clip(1 - np.abs((offs[None, :] - ratio[:, None]) * s), 0, 1)
    else:
        start = int(math.floor(-2 / s) + 1)
        offs = np.arange(start, 2 - start)
        w = _cubic((offs[None, :] - ratio[:, None]) * s, a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    return offs, w


def _resize_axis(x, axis, scale, out_len, roi, p):
    in_len = x.shape[axis]
    src = _source_coords(p["ctm"], out_len, in_len, scale, roi)
    if p["mode"] == "nearest":
        rule = p["nearest_mode"]
        if rule == "simple":  # Resize-10 / Upsample: floor when enlarging, ceil when shrinking
            rule = "ceil" if scale < 1 else "floor"
        idx = {"round_prefer_floor": np.ceil(src - 0.5), "round_prefer_ceil": np.floor(src + 0.5),
               "floor": np.floor(src), "ceil": np.ceil(src)}.get(rule)
        if idx is None:
            raise KernelError(f"Resize: unknown nearest_mode {rule!r}")
        y = np.take(x, np.clip(idx, 0, in_len - 1).astype(np.int64), axis=axis)
    else:
        left = np.floor(src)
        ratio = src - left
        whole = ratio == 0  # integral coordinate: ratio 1 of the left neighbour (reference layout)
        left, ratio = np.where(whole, left - 1, left), np.where(whole, 1.0, ratio)
        offs, w = _taps(p["mode"], ratio, scale, p["cubic_coeff_a"], p["antialias"])
        idx = left[:, None].astype(np.int64) + offs[None, :]
        if p["exclude_outside"]:
            w = np.where((idx < 0) | (idx >= in_len), 0.0, w)
            w = w / w.sum(axis=1, keepdims=True)
        idx = np.clip(idx, 0, in_len - 1)
        shape = [1] * x.ndim
        shape[axis] = out_len
        y = sum(np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape) for k in range(len(offs)))
    if p["ctm"] == "tf_crop_and_resize":
        outside = (src < 0) | (src > in_len - 1)
        sel = [slice(None)] * x.ndim
        sel[axis] = outside
        y[tuple(sel)] = p["extrapolation_value"]
    return y


def _resize(x, scales, sizes, roi, axes, p):
    """Shared by Resize (all opsets) and Upsample; scales/sizes/roi are given per entry of axes."""
    r = x.ndim
    axes = list(range(r)) if axes is None else [norm_axis(a, r, "Resize") for a in axes]
    full_scale = [1.0] * r
    out = list(x.shape)
    if sizes is not None:
        if len(sizes) != len(axes):
            raise KernelError(f"Resize: {len(sizes)} sizes for {len(axes)} axes")
        ratios = [sizes[i] / x.shape[a] for i, a in enumerate(axes)]
        policy = p["keep_aspect_ratio_policy"]
        if policy == "stretch":
            for i, a in enumerate(axes):
                full_scale[a], out[a] = ratios[i], int(sizes[i])
        elif policy in ("not_larger", "not_smaller"):
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                full_scale[a], out[a] = common, int(math.floor(common * x.shape[a] + 0.5))
        else:
            raise KernelError(f"Resize: unknown keep_aspect_ratio_policy {policy!r}")
    elif scales is not None:
        if len(scales) != len(axes) or any(s <= 0 for s in scales):
            raise KernelError(f"Resize: scales {list(scales)} invalid for {len(axes)} axes")
        for i, a in enumerate(axes):
            full_scale[a], out[a] = float(scales[i]), int(float(scales[i]) * x.shape[a])
    else:
        raise KernelError("Resize: neither scales nor sizes given")
    check_elements(out, "Resize")
    rois = {a: (0.0, 1.0) for a in range(r)}
    if roi is not None and np.size(roi):
        roi = np.asarray(roi, dtype=np.float64).reshape(-1)
        n = len(axes) if roi.size == 2 * len(axes) else r
        for i, a in enumerate(axes if n == len(axes) else range(r)):
            rois[a] = (float(roi[i]), float(roi[i + n]))
    y = x.astype(np.float64)
    for a in axes:
        if (math.isclose(full_scale[a], 1.0) and out[a] == y.shape[a]
                and np.allclose(rois[a], (0.0, 1.0))):
            continue  # identity along this axis
        y = _resize_axis(y, a, full_scale[a], out[a], rois[a], p)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        return np.clip(np.round(y), info.min, info.max).astype(x.dtype)
    return y.astype(x.dtype)


def _opt(inputs, i):
    v = inputs[i] if len(inputs) > i else None
    return None if v is None or np.size(v) == 0 else v


def resize(ctx, inputs, attrs):
    x = inputs[0]
    mode = attrs.get("mode", "nearest")
    legacy = ctx.opset < 11  # Resize-10 = Upsample: asymmetric coordinates, "simple" nearest
    p = {
        "mode": mode,
        "ctm": "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel"),
        "nearest_mode": "simple" if legacy else attrs.get("nearest_mode", "round_prefer_floor"),
        "cubic_coeff_a": float(attrs.get("cubic_coeff_a", -0.75)),
        "exclude_outside": int(attrs.get("exclude_outside", 0)),
        "extrapolation_value": float(attrs.get("extrapolation_value", 0.0)),
        "antialias": bool(attrs.get("antialias", 0)) and mode != "nearest",
        "keep_aspect_ratio_policy": attrs.get("keep_aspect_ratio_policy", "stretch"),
    }
    if mode not in ("nearest", "linear", "cubic"):
        raise KernelError(f"Resize: unknown mode {mode!r}")
    if legacy:
        roi, scales, sizes = None, _opt(inputs, 1), None
    else:
        roi, scales, sizes = _opt(inputs, 1), _opt(inputs, 2), _opt(inputs, 3)
    scales = None if scales is None else [float(s) for s in np.asarray(scales).reshape(-1)]
    sizes = None if sizes is None else [int(s) for s in np.asarray(sizes).reshape(-1)]
    return [_resize(x, scales, sizes, roi, attrs.get("axes"), p)]


def upsample(ctx, inputs, attrs):
    scales = attrs.get("scales") if ctx.opset < 9 else np.asarray(inputs[1]).reshape(-1)
    mode = attrs.get("mode", "nearest")
    mode = "linear" if mode in ("bilinear", "linear") else mode
    p = {"mode": mode, "ctm": "asymmetric", "nearest_mode": "simple", "cubic_coeff_a": -0.75,
         "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": False,
         "keep_aspect_ratio_policy": "stretch"}
    return [_resize(inputs[0], [float(s) for s in scales], None, None, None, p)]


def _reflect(x, lo, hi):
    """Fold coordinates into [lo, hi] by mirroring at the borders (GridSample reflection)."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    d_lo = lo - x
    n = np.floor(d_lo / rng)
    r = d_lo - n * rng
    below = np.where(n % 2 == 0, lo + r, hi - r)
    d_hi = x - hi
    n = np.floor(d_hi / rng)
    r = d_hi - n * rng
    above = np.where(n % 2 == 0, hi - r, lo + r)
    return np.where(x < lo, below, np.where(x > hi, above, x))


def grid_sample(ctx, inputs, attrs):
    x, grid = inputs
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(attrs.get("mode", "linear"), attrs.get("mode", "linear"))
    if ctx.opset < 20 and "mode" not in attrs:
        mode = "linear"
    pad = attrs.get("padding_mode", "zeros")
    align = bool(attrs.get("align_corners", 0))
    n, c, dims = x.shape[0], x.shape[1], x.shape[2:]
    r = len(dims)
    out_sp = grid.shape[1:-1]
    out = np.zeros((n, c) + tuple(out_sp), dtype=np.float64)
    for b in range(n):
        g = grid[b].reshape(-1, r).astype(np.float64)[:, ::-1]  # grid's last dim is (x, y, z)
        tap_idx, tap_w = [], []
        for d, length in enumerate(dims):
            lo, hi = (0.0, length - 1.0) if align else (-0.5, length - 0.5)
            s = (g[:, d] + 1) / 2 * (length - 1) if align else ((g[:, d] + 1) * length - 1) / 2
            if mode == "nearest":
                s = np.rint(s)
            if pad == "border":
                s = np.where((s < lo) | (s > hi), np.clip(s, 0, length - 1), s)
            elif pad == "reflection":
                s = _reflect(s, lo, hi)
            if mode == "nearest":
                idx, w = np.trunc(s)[:, None], np.ones((s.size, 1))
            else:
                base = np.floor(s)
                t = s - base
                if mode == "linear":
                    idx, w = base[:, None] + np.arange(2), np.stack([1 - t, t], axis=1)
                else:
                    idx = base[:, None] + np.arange(-1, 3)
                    w = _cubic(t[:, None] - np.arange(-1, 3)[None, :], -0.75)
            if pad == "zeros":
                w = np.where((idx < 0) | (idx >= length), 0.0, w)
                idx = np.clip(idx, 0, length - 1)
            elif pad == "border":
                idx = np.clip(idx, 0, length - 1)
            else:
                idx = np.trunc(_reflect(idx, lo, hi))
            tap_idx.append(np.clip(idx, 0, length - 1).astype(np.int64))
            tap_w.append(w)
        acc = np.zeros((c, g.shape[0]))
        for combo in itertools.product(*[range(t.shape[1]) for t in tap_idx]):
            w = np.prod([tap_w[d][:, k] for d, k in enumerate(combo)], axis=0)
            sel = (slice(None),) + tuple(tap_idx[d][:, k] for d, k in enumerate(combo))
            acc += x[b].astype(np.float64)[sel] * w
        out[b] = acc.reshape((c,) + tuple(out_sp))
    return [out.astype(x.dtype)]


def affine_grid(ctx, inputs, attrs):
    theta, size = inputs[0], [int(v) for v in np.asarray(inputs[1]).reshape(-1)]
    align = bool(attrs.get("align_corners", 0))
    spatial = size[2:]
    check_elements([size[0]] + spatial + [len(spatial)], "AffineGrid")

    def base(length):
        if align:
            return np.linspace(-1.0, 1.0, length) if length > 1 else np.zeros(1)
        return (np.arange(length, dtype=np.float64) * 2 + 1) / length - 1

    # coordinates are listed fastest-first (x over W, then y over H, then z over D)
    axes = [base(L) for L in spatial[::-1]]
    mesh = np.meshgrid(*axes[::-1], indexing="ij")[::-1]
    pts = np.stack(list(mesh) + [np.ones_like(mesh[0])], axis=-1)  # (*spatial, r+1)
    out = np.einsum("...k,njk->n...j", pts, theta.astype(np.float64))
    return [out.astype(theta.dtype)]


def roi_align(ctx, inputs, attrs):
    x, rois, batch = inputs
    mode = attrs.get("mode", "avg")
    oh, ow = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    ratio = int(attrs.get("sampling_ratio", 0))
    scale = float(attrs.get("spatial_scale", 1.0))
    half = attrs.get("coordinate_transformation_mode", "half_pixel" if ctx.opset >= 16 else "output_half_pixel") == "half_pixel"
    n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
    out = np.zeros((rois.shape[0], n_c, oh, ow), dtype=np.float64)

    def samples(start, length, bins, grid, size):
        """Per (bin, sample): low/high index and weights (zero weight outside the map)."""
        pos = start + np.arange(bins)[:, None] * (length / bins) + (np.arange(grid)[None, :] + 0.5) * length / bins / grid
        bad = (pos < -1.0) | (pos > size)
        pos = np.maximum(pos, 0)
        low = np.floor(pos).astype(np.int64)
        at_end = low >= size - 1
        low = np.where(at_end, size - 1, low)
        high = np.where(at_end, size - 1, low + 1)
        pos = np.where(at_end, low, pos)
        frac = pos - low
        return low, high, np.where(bad, 0, 1 - frac), np.where(bad, 0, frac)

    for i in range(rois.shape[0]):
        off = 0.5 if half else 0.0
        x0, y0, x1, y1 = (float(v) * scale - off for v in rois[i])
        rw, rh = x1 - x0, y1 - y0
        if not half:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = ratio if ratio > 0 else int(np.ceil(rh / oh))
        gw = ratio if ratio > 0 else int(np.ceil(rw / ow))
        yl, yh, wyl, wyh = samples(y0, rh, oh, gh, h)
        xl, xh, wxl, wxh = samples(x0, rw, ow, gw, w)
        fmap = x[int(batch[i])].astype(np.float64)
        terms = []
        for yi, wy in ((yl, wyl), (yh, wyh)):
            for xi, wx in ((xl, wxl), (xh, wxh)):
                v = fmap[:, yi[:, :, None, None], xi[None, None, :, :]]  # (C, oh, gh, ow, gw)
                terms.append(v * (wy[:, :, None, None] * wx[None, None, :, :]))
        if mode == "avg":
            out[i] = sum(terms).sum(axis=(2, 4)) / max(gh * gw, 1)
        elif mode == "max":
            out[i] = np.max(np.maximum.reduce(terms), axis=(2, 4))
        else:
            raise KernelError(f"RoiAlign: unknown mode {mode!r}")
    return [out.astype(x.dtype)]


def non_max_suppression(ctx, inputs, attrs):
    boxes, scores = inputs[0], inputs[1]
    max_out = int(np.asarray(inputs[2]).reshape(-1)[0]) if _opt(inputs, 2) is not None else 0
    iou_t = float(np.asarray(inputs[3]).reshape(-1)[0]) if _opt(inputs, 3) is not None else 0.0
    score_t = _opt(inputs, 4)
    b = boxes.astype(np.float64)
    if int(attrs.get("center_point_box", 0)):
        xc, yc, bw, bh = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        y1, x1, y2, x2 = yc - bh / 2, xc - bw / 2, yc + bh / 2, xc + bw / 2
    else:  # [y1, x1, y2, x2], corners possibly flipped
        y1, y2 = np.minimum(b[..., 0], b[..., 2]), np.maximum(b[..., 0], b[..., 2])
        x1, x2 = np.minimum(b[..., 1], b[..., 3]), np.maximum(b[..., 1], b[..., 3])
    area = (y2 - y1) * (x2 - x1)
    picked = []
    for bi in range(scores.shape[0]):
        for ci in range(scores.shape[1]):
            s = scores[bi, ci].astype(np.float64)
            cand = np.arange(s.size) if score_t is None else np.nonzero(s > float(np.asarray(score_t).reshape(-1)[0]))[0]
            order = cand[np.lexsort((cand, -s[cand]))]  # best score first, lower index on ties
            keep = []
            for j in order:
                if len(keep) >= max_out:
                    break
                ok = True
                for k in keep:
                    ih = min(y2[bi, j], y2[bi, k]) - max(y1[bi, j], y1[bi, k])
                    iw = min(x2[bi, j], x2[bi, k]) - max(x1[bi, j], x1[bi, k])
                    inter = ih * iw if ih > 0 and iw > 0 else 0.0
                    union = area[bi, j] + area[bi, k] - inter
                    if inter > 0 and area[bi, j] > 0 and area[bi, k] > 0 and union > 0 and inter / union > iou_t:
                        ok = False
                        break
                if ok:
                    keep.append(j)
            picked += [(bi, ci, j) for j in keep]
    return [np.array(picked, dtype=np.int64).reshape(-1, 3)]


def image_decoder(ctx, inputs, attrs):
    """Decode with Pillow (optional dependency); the pixel cap is checked before decoding."""
    try:
        import PIL.Image
    except ImportError:
        raise KernelError("ImageDecoder: the Pillow package is required to decode images") from None
    import io

    fmt = attrs.get("pixel_format", "RGB")
    if fmt not in ("RGB", "BGR", "Grayscale"):
        raise KernelError(f"ImageDecoder: unknown pixel_format {fmt!r}")
    bad = (OSError, ValueError, PIL.Image.DecompressionBombError)
    try:
        img = PIL.Image.open(io.BytesIO(np.asarray(inputs[0], dtype=np.uint8).tobytes()))
    except bad as e:
        raise KernelError(f"ImageDecoder: cannot decode image: {e}") from None
    check_elements([img.size[0], img.size[1], 3], "ImageDecoder")  # header only, no pixels yet
    try:
        img = img.convert("L" if fmt == "Grayscale" else "RGB")
    except bad as e:
        raise KernelError(f"ImageDecoder: cannot decode image: {e}") from None
    out = np.asarray(img, dtype=np.uint8)
    if fmt == "Grayscale":
        return [out[:, :, None].copy()]
    return [np.ascontiguousarray(out[:, :, ::-1]) if fmt == "BGR" else out.copy()]


KERNELS = {
    "ImageDecoder": image_decoder,
    "Resize": resize,
    "Upsample": upsample,
    "GridSample": grid_sample,
    "AffineGrid": affine_grid,
    "RoiAlign": roi_align,
    "NonMaxSuppression": non_max_suppression,
}
