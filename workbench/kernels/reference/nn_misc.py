"""Reference kernels: Dropout, NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, QLinearMatMul."""

from __future__ import annotations

import numpy as np

from ._base import KernelError
from .activation import log_softmax


def _dropout(ctx, inputs, attrs):
    x = inputs[0]
    if ctx.opset and ctx.opset < 12:
        ratio = attrs.get("ratio", 0.5)
        training = False  # before opset 12 Dropout only ever ran in inference form here
    else:
        ratio = float(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0.5
        training = bool(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else False
    if not training or ratio == 0:
        # the mask became bool at opset 10; before, it had the data's type
        mask_dt = np.bool_ if not ctx.opset or ctx.opset >= 10 else x.dtype
        return [x.copy(), np.ones(x.shape, dtype=mask_dt)]
    if not 0 <= ratio < 1:
        raise KernelError(f"Dropout ratio must be in [0, 1), got {ratio}")
    if "seed" in attrs:
        # the legacy Mersenne-Twister stream: what onnx's own reference draws for a given seed
        u = np.random.RandomState(int(attrs["seed"]) & 0xFFFFFFFF).uniform(0.0, 1.0, x.shape)
    else:
        u = (ctx.rng or np.random.default_rng()).uniform(0.0, 1.0, x.shape)
    mask = u >= ratio
    scale = np.asarray(1.0 / (1.0 - ratio), dtype=x.dtype)
    return [(x * mask * scale).astype(x.dtype), mask]


def _nll(log_prob, target, weight, reduction, ignore_index, out_dtype):
    """Shared by both loss ops: log_prob [N, C, ...] (already log-probabilities), target [N, ...]."""
    n, c = log_prob.shape[:2]
    t = target.astype(np.int64)
    valid = np.ones(t.shape, dtype=bool) if ignore_index is None else (t != ignore_index)
    safe_t = np.where(valid, t, 0)
    if np.any((safe_t < 0) | (safe_t >= c)):
        raise KernelError(f"loss target out of range [0, {c})")
    picked = np.take_along_axis(log_prob, safe_t[:, None], axis=1)[:, 0]
    w = np.ones(t.shape, dtype=log_prob.dtype) if weight is None else \
        weight.astype(log_prob.dtype)[safe_t]
    w = np.where(valid, w, 0).astype(log_prob.dtype)
    loss = -picked * w
    if reduction == "none":
        out = loss
    elif reduction == "sum":
        out = loss.sum()
    elif reduction == "mean":
        total = w.sum()
        out = loss.sum() / total if total != 0 else np.zeros((), log_prob.dtype)
    else:
        raise KernelError(f"unknown reduction {reduction!r}")
    return np.asarray(out).astype(out_dtype)


def _wide(x):
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _nll_loss(ctx, inputs, attrs):
    x, target = inputs[0], inputs[1]
    weight = inputs[2] if len(inputs) > 2 else None
    out = _nll(_wide(x), target, weight, attrs.get("reduction", "mean"),
               attrs.get("ignore_index"), x.dtype)
    return [out]


def _softmax_ce(ctx, inputs, attrs):
    scores, labels = inputs[0], inputs[1]
    weight = inputs[2] if len(inputs) > 2 else None
    lp = log_softmax(_wide(scores), 1)
    loss = _nll(lp, labels, weight, attrs.get("reduction", "mean"), attrs.get("ignore_index"),
                scores.dtype)
    return [loss, lp.astype(scores.dtype)]


def _qlinear_matmul(ctx, inputs, attrs):
    a, a_s, a_zp, b, b_s, b_zp, y_s, y_zp = inputs[:8]
    ai = a.astype(np.float64) - (0 if a_zp is None else a_zp.astype(np.float64))
    bi = b.astype(np.float64) - (0 if b_zp is None else b_zp.astype(np.float64))
    acc = np.rint(np.matmul(ai, bi))  # exact: int8 products summed in float64
    scale = (a_s.astype(np.float32) * b_s.astype(np.float32) / y_s.astype(np.float32))
    d = acc * scale.astype(np.float64)
    out_dtype = (y_zp if y_zp is not None else a).dtype
    if y_zp is not None:
        d = d + y_zp.astype(np.float64)
    info = np.iinfo(out_dtype)
    return [np.clip(np.rint(d), info.min, info.max).astype(out_dtype)]


KERNELS = {
    "Dropout": _dropout,
    "NegativeLogLikelihoodLoss": _nll_loss,
    "SoftmaxCrossEntropyLoss": _softmax_ce,
    "QLinearMatMul": _qlinear_matmul,
}
