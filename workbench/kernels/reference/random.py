"""Reference kernels: random generators.

A ``seed`` attribute gives a reproducible generator per call; without one the runtime's seeded
``ctx.rng`` is used so a whole run is reproducible from one seed. Outputs match ONNX in shape and
dtype; the values cannot match other implementations bit for bit (no generator is specified).
"""

from __future__ import annotations

import numpy as np

from workbench.dtypes import from_onnx_code, to_numpy

from ._base import KernelError
from .limits import check_elements


def _rng(ctx, attrs) -> np.random.Generator:
    if "seed" in attrs:
        # the seed is a float attribute; its bit pattern keeps distinct seeds distinct
        return np.random.default_rng(int(np.float64(attrs["seed"]).view(np.uint64)))
    return ctx.rng if ctx.rng is not None else np.random.default_rng()


def _dtype(attrs, default) -> np.dtype:
    return to_numpy(from_onnx_code(attrs["dtype"])) if "dtype" in attrs else np.dtype(default)


def _shape(attrs, what) -> list[int]:
    shape = [int(d) for d in attrs["shape"]]
    check_elements(shape, what)
    return shape


def random_normal(ctx, inputs, attrs):
    shape = _shape(attrs, "RandomNormal")
    v = _rng(ctx, attrs).normal(float(attrs.get("mean", 0.0)), float(attrs.get("scale", 1.0)), shape)
    return [v.astype(_dtype(attrs, np.float32))]


def random_uniform(ctx, inputs, attrs):
    shape = _shape(attrs, "RandomUniform")
    v = _rng(ctx, attrs).uniform(float(attrs.get("low", 0.0)), float(attrs.get("high", 1.0)), shape)
    return [v.astype(_dtype(attrs, np.float32))]


def random_normal_like(ctx, inputs, attrs):
    x = inputs[0]
    v = _rng(ctx, attrs).normal(float(attrs.get("mean", 0.0)), float(attrs.get("scale", 1.0)), x.shape)
    return [v.astype(_dtype(attrs, x.dtype))]


def random_uniform_like(ctx, inputs, attrs):
    x = inputs[0]
    v = _rng(ctx, attrs).uniform(float(attrs.get("low", 0.0)), float(attrs.get("high", 1.0)), x.shape)
    return [v.astype(_dtype(attrs, x.dtype))]


def multinomial(ctx, inputs, attrs):
    logits = inputs[0].astype(np.float64)
    if logits.ndim != 2:
        raise KernelError(f"Multinomial: input must be [batch, classes], got {list(logits.shape)}")
    n = int(attrs.get("sample_size", 1))
    check_elements([logits.shape[0], n], "Multinomial")
    # input holds unnormalized log-probabilities
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rng = _rng(ctx, attrs)
    cdf = np.cumsum(p, axis=1)
    u = rng.random((logits.shape[0], n))
    out = np.stack([np.searchsorted(cdf[b], u[b], side="right") for b in range(logits.shape[0])])
    out = np.minimum(out, logits.shape[1] - 1)
    return [out.astype(_dtype(attrs, np.int32))]


def bernoulli(ctx, inputs, attrs):
    x = inputs[0]
    draw = _rng(ctx, attrs).random(x.shape) < x.astype(np.float64)
    return [draw.astype(_dtype(attrs, x.dtype))]


KERNELS = {
    "RandomNormal": random_normal,
    "RandomUniform": random_uniform,
    "RandomNormalLike": random_normal_like,
    "RandomUniformLike": random_uniform_like,
    "Multinomial": multinomial,
    "Bernoulli": bernoulli,
}
