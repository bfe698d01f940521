"""Reference kernels: MatMul, Gemm, Einsum, MatMulInteger, Det.

float32 products stay in float32 (BLAS sgemm, as a GPU would do them); float16/bfloat16 are
accumulated in float32 and rounded once, the way tensor cores accumulate.
"""

from __future__ import annotations

import numpy as np

from ._base import KernelError


def acc_dtype(dt: np.dtype) -> np.dtype:
    """The dtype a product of ``dt`` values is accumulated in."""
    dt = np.dtype(dt)
    if np.issubdtype(dt, np.integer):
        return np.dtype(np.int64) if dt.itemsize == 8 else dt
    if dt in (np.float32, np.float64):
        return dt
    return np.dtype(np.float32)  # float16, bfloat16, float8


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul (numpy.matmul semantics incl. 1-D promotion) in the accumulate dtype."""
    acc = acc_dtype(a.dtype)
    return np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False)).astype(a.dtype, copy=False)


def _matmul(ctx, inputs, attrs):
    a, b = inputs
    if a.ndim == 0 or b.ndim == 0:
        raise KernelError("MatMul inputs must have rank >= 1")
    return [np.asarray(matmul(a, b))]


def _gemm(ctx, inputs, attrs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    acc = acc_dtype(a.dtype)
    a = a.astype(acc, copy=False)
    b = b.astype(acc, copy=False)
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = y * np.asarray(alpha, dtype=acc)
    if c is not None:
        cc = c.astype(acc, copy=False)
        y = y + (cc * np.asarray(beta, dtype=acc) if beta != 1.0 else cc)
    return [np.asarray(y).astype(inputs[0].dtype, copy=False)]


def _einsum(ctx, inputs, attrs):
    eq = attrs.get("equation", "").replace(" ", "")
    ops = [x for x in inputs if x is not None]
    if not ops:
        raise KernelError("Einsum needs at least one input")
    acc = acc_dtype(ops[0].dtype)
    out = np.einsum(eq, *[x.astype(acc, copy=False) for x in ops], optimize=len(ops) > 2)
    return [np.asarray(out).astype(ops[0].dtype, copy=False)]


def _zero_point(zp, along_rows: bool):
    """A MatMulInteger zero point: scalar, or one per row of A / per column of B."""
    if zp is None:
        return np.int32(0)
    z = np.asarray(zp).astype(np.int32)
    if z.ndim == 0 or z.size == 1:
        return z.reshape(())
    return z.reshape(-1, 1) if along_rows else z.reshape(1, -1) if z.ndim == 1 else z


def _matmul_integer(ctx, inputs, attrs):
    a, b = inputs[0], inputs[1]
    a_zp = inputs[2] if len(inputs) > 2 else None
    b_zp = inputs[3] if len(inputs) > 3 else None
    ai = a.astype(np.int32) - _zero_point(a_zp, True)
    bi = b.astype(np.int32) - _zero_point(b_zp, False)
    return [np.asarray(np.matmul(ai, bi), dtype=np.int32)]


def _det(ctx, inputs, attrs):
    x = inputs[0]
    acc = acc_dtype(x.dtype)
    return [np.asarray(np.linalg.det(x.astype(acc, copy=False))).astype(x.dtype)]


KERNELS = {
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Einsum": _einsum,
    "MatMulInteger": _matmul_integer,
    "Det": _det,
}
