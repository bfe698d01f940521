"""Reference kernels: activations and the softmax family.

Half-precision inputs (float16, bfloat16) are computed in float32 and rounded once at the end, the
way GPU kernels do it; float32 and float64 are computed in their own precision.
"""

from __future__ import annotations

import math

import numpy as np

from .elementwise import erf_float64


def _wide(x: np.ndarray) -> np.ndarray:
    if x.dtype.itemsize < 4 and not np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32)
    return x


def _act(fn):
    """Wrap ``fn(x, attrs)`` computing in a wide float type and casting back to the input dtype."""
    def kernel(ctx, inputs, attrs):
        x = inputs[0]
        with np.errstate(all="ignore"):
            return [np.asarray(fn(_wide(x), attrs), dtype=x.dtype)]
    return kernel


def _c(v, x):
    """A Python float attribute as a scalar of ``x``'s dtype (stops promotion to float64)."""
    return np.asarray(v, dtype=x.dtype)


def _sigmoid(x):
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _relu(x, a):
    return np.maximum(x, _c(0, x))


def _leaky(x, a):
    return np.where(x >= 0, x, x * _c(a.get("alpha", 0.01), x))


def _elu(x, a):
    al = _c(a.get("alpha", 1.0), x)
    return np.where(x > 0, x, al * np.expm1(np.minimum(x, 0)))


def _selu(x, a):
    al = _c(a.get("alpha", 1.67326319217681884765625), x)
    ga = _c(a.get("gamma", 1.05070102214813232421875), x)
    return np.where(x > 0, ga * x, ga * al * np.expm1(np.minimum(x, 0)))


def _celu(x, a):
    al = _c(a.get("alpha", 1.0), x)
    return np.maximum(x, 0) + np.minimum(0, al * np.expm1(x / al))


def _hard_sigmoid(x, a):
    al, be = _c(a.get("alpha", 0.2), x), _c(a.get("beta", 0.5), x)
    return np.clip(al * x + be, 0, 1)


def _hard_swish(x, a):
    return x * np.clip(x * _c(1 / 6, x) + _c(0.5, x), 0, 1)


def _swish(x, a):
    return x * _sigmoid(x * _c(a.get("alpha", 1.0), x))


def _mish(x, a):
    return x * np.tanh(_softplus(x))


def _gelu(x, a):
    if a.get("approximate", "none") == "tanh":
        k = _c(math.sqrt(2 / math.pi), x)
        return _c(0.5, x) * x * (1 + np.tanh(k * (x + _c(0.044715, x) * x ** 3)))
    return _c(0.5, x) * x * (1 + erf_float64(x / math.sqrt(2)).astype(x.dtype))


def _thresholded(x, a):
    return np.where(x > _c(a.get("alpha", 1.0), x), x, _c(0, x))


def _shrink(x, a):
    lam, bias = a.get("lambd", 0.5), a.get("bias", 0.0)
    return np.where(x < -lam, x + _c(bias, x), np.where(x > lam, x - _c(bias, x), _c(0, x)))


def _prelu(ctx, inputs, attrs):
    x, slope = inputs
    xw = _wide(x)
    return [np.asarray(np.where(xw < 0, xw * _wide(slope).astype(xw.dtype), xw), dtype=x.dtype)]


# --- softmax family ---------------------------------------------------------------------------------

def _over_axis(fn, default_new: int):
    """Softmax-like ops: from opset 13 they act on one axis; before, the input is coerced to 2-D
    [prod(shape[:axis]), prod(shape[axis:])] and the op acts on the second dimension."""
    def kernel(ctx, inputs, attrs):
        x = inputs[0]
        xw = _wide(x)
        if ctx.opset and ctx.opset < 13:
            axis = attrs.get("axis", 1)
            axis = axis + x.ndim if axis < 0 else axis
            lead = int(np.prod(x.shape[:axis], dtype=np.int64))
            flat = xw.reshape(lead, -1)
            out = fn(flat, 1).reshape(x.shape)
        else:
            out = fn(xw, attrs.get("axis", default_new))
        return [np.asarray(out, dtype=x.dtype)]
    return kernel


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        s = x - m
        return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    out = np.zeros_like(x)
    np.put_along_axis(out, idx, 1, axis=axis)
    return out


KERNELS = {
    "Relu": _act(_relu),
    "LeakyRelu": _act(_leaky),
    "PRelu": _prelu,
    "Elu": _act(_elu),
    "Selu": _act(_selu),
    "Celu": _act(_celu),
    "Sigmoid": _act(lambda x, a: _sigmoid(x)),
    "HardSigmoid": _act(_hard_sigmoid),
    "HardSwish": _act(_hard_swish),
    "Softplus": _act(lambda x, a: _softplus(x)),
    "Softsign": _act(lambda x, a: x / (1 + np.abs(x))),
    "Swish": _act(_swish),
    "Mish": _act(_mish),
    "Gelu": _act(_gelu),
    "ThresholdedRelu": _act(_thresholded),
    "Shrink": _act(_shrink),
    "Softmax": _over_axis(softmax, -1),
    "LogSoftmax": _over_axis(log_softmax, -1),
    "Hardmax": _over_axis(_hardmax, -1),
}
