"""Reference kernels: the ai.onnx.preview.training optimizers Adagrad, Adam, Momentum.

Each takes R (learning rate), T (update count) and then, for n tensors, n X's, n G's and n of each
state tensor; outputs are all new X's followed by all new states, in the same grouping.
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError

DOMAIN = "ai.onnx.preview.training"


def _groups(inputs, n_groups):
    rest = inputs[2:]
    if len(rest) % n_groups:
        raise KernelError(f"optimizer expects {n_groups} groups of tensors, got {len(rest)} inputs")
    n = len(rest) // n_groups
    return [rest[i * n:(i + 1) * n] for i in range(n_groups)]


def _scalar(v):
    return float(np.asarray(v).reshape(-1)[0])


def _adagrad(ctx, inputs, attrs):
    r, t = _scalar(inputs[0]), _scalar(inputs[1])
    xs, gs, hs = _groups(inputs, 3)
    nc, eps, decay = attrs.get("norm_coefficient", 0.0), attrs.get("epsilon", 0.0), \
        attrs.get("decay_factor", 0.0)
    rate = r / (1 + t * decay)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        gr = nc * x + g
        h2 = h + gr * gr
        new_x.append((x - rate * gr / (np.sqrt(h2) + eps)).astype(x.dtype))
        new_h.append(h2.astype(h.dtype))
    return new_x + new_h


def _adam(ctx, inputs, attrs):
    r, t = _scalar(inputs[0]), _scalar(inputs[1])
    xs, gs, vs, hs = _groups(inputs, 4)
    nc, ncp = attrs.get("norm_coefficient", 0.0), attrs.get("norm_coefficient_post", 0.0)
    alpha, beta, eps = attrs.get("alpha", 0.9), attrs.get("beta", 0.999), attrs.get("epsilon", 0.0)
    # bias correction only after the first step (T counts completed updates)
    rate = r * np.sqrt(1 - beta ** t) / (1 - alpha ** t) if t > 0 else r
    out_x, out_v, out_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        gr = nc * x + g
        v2 = alpha * v + (1 - alpha) * gr
        h2 = beta * h + (1 - beta) * gr * gr
        xn = (1 - ncp) * (x - rate * (v2 / (np.sqrt(h2) + eps)))
        out_x.append(xn.astype(x.dtype))
        out_v.append(v2.astype(v.dtype))
        out_h.append(h2.astype(h.dtype))
    return out_x + out_v + out_h


def _momentum(ctx, inputs, attrs):
    r, t = _scalar(inputs[0]), _scalar(inputs[1])
    xs, gs, vs = _groups(inputs, 3)
    nc, alpha, beta = attrs.get("norm_coefficient", 0.0), attrs.get("alpha", 0.0), \
        attrs.get("beta", 0.0)
    mode = attrs.get("mode", "standard")
    if mode not in ("standard", "nesterov"):
        raise KernelError(f"Momentum mode must be standard or nesterov, got {mode!r}")
    b = beta if t > 0 else 1.0
    out_x, out_v = [], []
    for x, g, v in zip(xs, gs, vs):
        gr = nc * x + g
        v2 = alpha * v + b * gr
        step = gr + alpha * v2 if mode == "nesterov" else v2
        out_x.append((x - r * step).astype(x.dtype))
        out_v.append(v2.astype(v.dtype))
    return out_x + out_v


KERNELS = {
    "Adagrad": _adagrad,
    "Adam": _adam,
    "Momentum": _momentum,
}
