"""Tensor handles and the errors of the network-definition API (see :mod:`workbench.frontends.network`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from ...dtypes import ONNX_CODES, from_numpy, from_onnx_code
from ...errors import ShapeError, UnsupportedModelError, WorkbenchError

if TYPE_CHECKING:
    from .definition import NetworkDefinition


class NetworkDefinitionError(WorkbenchError, ValueError):
    """A network definition is used wrongly (base of the errors below)."""


class ForeignTensorError(NetworkDefinitionError):
    """A tensor from another NetworkDefinition was passed to this one."""


class DuplicateNameError(NetworkDefinitionError):
    """A tensor or layer name is already used in this network."""


class UnknownDTypeError(NetworkDefinitionError, TypeError):
    """An element type is not one workbench knows."""


class InvalidLayerError(NetworkDefinitionError, ShapeError):
    """ONNX's checker or shape inference rejected a layer (rank/shape/dtype mismatch, bad attribute)."""


class UnsupportedOpError(NetworkDefinitionError, UnsupportedModelError):
    """The operator does not exist in the network's opset (or needs a newer one)."""


class MissingOutputError(NetworkDefinitionError):
    """``finish()`` / ``to_onnx()`` was called before any ``output()``."""


def canonical_dtype(dtype) -> str:
    """'float32', np.float32, np.dtype('float32') or an ONNX enum value -> 'float32'."""
    if isinstance(dtype, str) and dtype in ONNX_CODES:
        return dtype
    if isinstance(dtype, ir.DataType):
        dtype = int(dtype)
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        try:
            return from_onnx_code(int(dtype))
        except TypeError:
            raise UnknownDTypeError(f"unknown ONNX element type {int(dtype)}") from None
    try:
        return from_numpy(np.dtype(dtype))
    except TypeError:
        raise UnknownDTypeError(f"unknown dtype {dtype!r}; use one of: {', '.join(ONNX_CODES)}") from None


def _ir_dims(shape) -> ir.Shape:
    if isinstance(shape, (str, int)) or not hasattr(shape, "__iter__"):
        raise ShapeError(f"shape must be a sequence of dims, got {shape!r}")
    dims = []
    for d in shape:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            if d < 0:
                raise ShapeError(f"shape {tuple(shape)!r} has a negative dim")
            dims.append(int(d))
        elif d is None or (isinstance(d, str) and d):
            dims.append(d)  # a named (or anonymous) symbolic dim
        else:
            raise ShapeError(f"a dim must be an int >= 0, a non-empty name or None, got {d!r}")
    return ir.Shape(dims)


class Tensor:
    """A handle to one value of a :class:`NetworkDefinition`; operators add layers to that network.

    ``dtype`` is a canonical name ("float32") or None; ``shape`` a tuple of ints (static dims),
    strings (named symbolic dims) and None (unknown dims), or None when even the rank is unknown."""

    __slots__ = ("_net", "_value")
    # NumPy must not broadcast over a Tensor as an object array: ``ndarray + t`` defers to __radd__
    __array_ufunc__ = None

    def __init__(self, net: NetworkDefinition, value: ir.Value):
        self._net = net
        self._value = value

    @property
    def name(self) -> str:
        return self._value.name

    @property
    def dtype(self) -> str | None:
        t = self._value.type
        return from_onnx_code(int(t.dtype)) if isinstance(t, ir.TensorType) else None

    @property
    def shape(self) -> tuple | None:
        if self._value.shape is None:
            return None
        return tuple(d if isinstance(d, int) else d.value for d in self._value.shape)

    @property
    def rank(self) -> int | None:
        return None if self._value.shape is None else len(self._value.shape)

    @property
    def network(self) -> NetworkDefinition:
        return self._net

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.dtype}, {self.shape})"

    def __bool__(self):
        raise TypeError("a Tensor is symbolic; it has no truth value (did you mean to compare shapes?)")

    def __add__(self, o): return self._net.add(self, o)
    def __radd__(self, o): return self._net.add(o, self)
    def __sub__(self, o): return self._net.sub(self, o)
    def __rsub__(self, o): return self._net.sub(o, self)
    def __mul__(self, o): return self._net.mul(self, o)
    def __rmul__(self, o): return self._net.mul(o, self)
    def __truediv__(self, o): return self._net.div(self, o)
    def __rtruediv__(self, o): return self._net.div(o, self)
    def __matmul__(self, o): return self._net.matmul(self, o)
    def __rmatmul__(self, o): return self._net.matmul(o, self)
    def __pow__(self, o): return self._net.pow(self, o)
    def __neg__(self): return self._net.neg(self)

    def reshape(self, *shape):
        return self._net.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def transpose(self, *perm):
        return self._net.transpose(self, (perm[0] if len(perm) == 1 and not isinstance(perm[0], int) else perm) or None)

    def flatten(self, axis: int = 1):
        return self._net.flatten(self, axis)

    def astype(self, dtype):
        return self._net.cast(self, dtype)

    def __getitem__(self, index):
        return self._net.getitem(self, index)
