"""What the fast CPU tactics share: output buffers kept between runs, in-place epilogues and the
rounding of emulated half precisions.

A fast tactic's ``build`` returns a kernel with the reference-kernel signature ``(ctx, inputs,
attrs) -> outputs`` that writes into buffers it keeps from one run to the next (``Buffers``). A
buffer is handed out as a view of its allocation (``owndata`` False), which the CPU runtime copies
before it returns an output to the caller, so reusing it in the next run never changes a result
the caller holds. Kernels built with ``reuse=False`` (subgraph bodies, which may run a layer many
times in one run and keep each result) allocate fresh outputs instead.
"""

from __future__ import annotations

import numpy as np

from ..reference.fused import activate

try:  # the native kernels (built at install; absent without a C compiler)
    from . import _native
except ImportError:  # pragma: no cover - depends on the install
    _native = None

F32 = np.dtype(np.float32)
# activation -> the native kernel's code (workbench/kernels/cpu/_native.c: activate)
NATIVE_ACTS = {"Relu": 1, "Clip": 2, "Gelu": 3, "GeluTanh": 4, "Sigmoid": 5, "Silu": 6, "Tanh": 7}


class Buffers:
    """Named float32 buffers, reallocated only when a shape changes (dynamic-shape plans)."""

    __slots__ = ("_bufs", "reuse")

    def __init__(self, reuse: bool = True):
        self.reuse = reuse
        self._bufs: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple, zero: bool = False) -> np.ndarray:
        buf = self._bufs.get(key)
        if buf is not None and buf.shape == shape and self.reuse:
            return buf
        size = int(np.prod(shape, dtype=np.int64))
        # a view of a flat allocation: the runtime copies views before returning them to a caller
        flat = np.zeros(size, F32) if zero else np.empty(size, F32)
        buf = flat.reshape(shape)
        if self.reuse:
            self._bufs[key] = buf
        return buf


# erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, below float32 rounding of GELU's
# output), evaluated in float32 in place: the reference evaluates erf in float64 through a series,
# many times slower
_ERF_P = F32.type(0.3275911)
_ERF_A = [F32.type(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]
_RSQRT2 = F32.type(0.7071067811865476)
_HALF, _ONE = F32.type(0.5), F32.type(1.0)


def erf_into(x: np.ndarray, out: np.ndarray, t: np.ndarray) -> np.ndarray:
    """erf(x) into ``out`` (``t``: scratch like ``x``; neither may be ``x``)."""
    np.abs(x, out=t)
    t *= _ERF_P
    t += _ONE
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = _ERF_A
    np.multiply(t, a5, out=out)
    for a in (a4, a3, a2, a1):
        out += a
        out *= t
    np.multiply(x, x, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    out *= t
    np.subtract(_ONE, out, out=out)
    np.copysign(out, x, out=out)
    return out


def _scratch(bufs, key, shape):
    return bufs.get(key, shape) if bufs is not None else np.empty(shape, F32)


def activate_inplace(y: np.ndarray, attrs: dict, bufs: Buffers | None = None) -> None:
    """Apply the epilogue activation of ``attrs`` (``ops.fused.ACTIVATIONS``) to ``y`` in place
    (scratch buffers from ``bufs``, kept between runs), with the reference's values: Relu / Clip
    exactly, GELU / SiLU / Sigmoid / Tanh to float32 round-off. One native call where the
    extension is built and ``y`` is contiguous; NumPy ufuncs otherwise."""
    act = attrs.get("activation", "")
    if not act:
        return
    code = NATIVE_ACTS.get(act)
    if code is not None and _native is not None and y.flags.c_contiguous and y.dtype == F32:
        lo, hi = attrs.get("act_min"), attrs.get("act_max")
        _native.activate(y, code, -np.inf if lo is None else float(lo), np.inf if hi is None else float(hi))
        return
    with np.errstate(all="ignore"):
        if act == "Relu":
            np.maximum(y, F32.type(0), out=y)
        elif act == "Clip":
            lo, hi = attrs.get("act_min"), attrs.get("act_max")
            if lo is not None:
                np.maximum(y, F32.type(lo), out=y)
            if hi is not None:
                np.minimum(y, F32.type(hi), out=y)
        elif act == "Gelu":
            z, e, t = (_scratch(bufs, k, y.shape) for k in ("act_z", "act_e", "act_t"))
            np.multiply(y, _RSQRT2, out=z)
            erf_into(z, e, t)
            e += _ONE
            y *= e
            y *= _HALF
        elif act == "GeluTanh":
            t = _scratch(bufs, "act_t", y.shape)
            np.multiply(y, y, out=t)
            t *= F32.type(0.044715)
            t += _ONE
            t *= y
            t *= F32.type(0.7978845608028654)
            np.tanh(t, out=t)
            t += _ONE
            y *= t
            y *= _HALF
        elif act in ("Sigmoid", "Silu"):
            t = _scratch(bufs, "act_t", y.shape)
            sigmoid_into(y, t)
            if act == "Silu":
                y *= t
            else:
                np.copyto(y, t)
        elif act == "Tanh":
            np.tanh(y, out=y)
        else:
            # rarer activations: the reference formula, its result written back into the buffer
            y[...] = activate(y, attrs)


def sigmoid_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) as 0.5 * tanh(x / 2) + 0.5 (never overflows), into ``out``."""
    np.multiply(x, _HALF, out=out)
    np.tanh(out, out=out)
    out *= _HALF
    out += _HALF
    return out


def is_f32(spec) -> bool:
    return spec is not None and spec.dtype == "float32"


def static_shape(spec) -> bool:
    return spec is not None and spec.shape is not None and all(isinstance(d, int) for d in spec.shape)


def rounder(storage):
    """A function rounding float32 arrays through ``storage``; None for plain fp32 (no call)."""
    if storage is None:
        return None

    def _round(x):
        if isinstance(x, np.ndarray) and x.dtype == F32:
            return x.astype(storage).astype(F32)
        return x

    return _round


_BLAS: list | None = None


def blas_libs() -> list:
    """The BLAS libraries NumPy loaded, as threadpoolctl controllers (found once; empty without
    threadpoolctl)."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except ImportError:
            _BLAS = []
    return _BLAS


def blas_set(n: int) -> list:
    """Limit BLAS to ``n`` threads; returns what ``blas_restore`` needs to undo it (only the
    libraries whose count changed, so a call costs ~1 µs when nothing changes)."""
    changed = []
    for lib in blas_libs():
        before = lib.get_num_threads()
        if before != n:
            lib.set_num_threads(n)
            changed.append((lib, before))
    return changed


def blas_restore(changed: list) -> None:
    for lib, before in changed:
        lib.set_num_threads(before)
