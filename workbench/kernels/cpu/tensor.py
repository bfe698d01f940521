"""Fast CPU data-movement layers: what the reference kernels do with validation and general
paths, done with the shapes the build already knows.

* Reshape / Flatten / Squeeze / Unsqueeze: a view of the input in the output's static shape
  (Reshape's and Squeeze / Unsqueeze's shape or axes inputs must be constants).
* Split: views of the input along the axis, at the static output sizes.
* Transpose: a view in the permuted order.
* Slice with constant starts / ends / axes / steps: a view, its index made at build.
* Gather: ``np.take`` (ONNX's negative indices and out-of-range errors are NumPy's).
* Cast between NumPy's own numeric types: one ``astype`` (the reference's path for those types).

Views are safe outputs: no kernel writes into its inputs, and the runtime copies a view before it
hands it to the caller.
"""

from __future__ import annotations

import numpy as np

from ...dtypes import to_numpy

OPS = (("", "Reshape"), ("", "Flatten"), ("", "Squeeze"), ("", "Unsqueeze"), ("", "Split"), ("", "Gather"),
       ("", "Cast"), ("", "Transpose"), ("", "Slice"))

# canonical dtype names whose Cast the reference does as a plain astype
_PLAIN = {"float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
          "uint64", "bool"}


def _static(spec) -> bool:
    return spec is not None and spec.shape is not None and all(isinstance(d, int) and d >= 0 for d in spec.shape)


def supports(layer, constants) -> str | None:
    ins = layer.aligned_input_specs()
    outs = layer.output_specs
    if layer.op == "Gather":
        if ins[0] is None or ins[0].shape is None or ins[1] is None or ins[1].dtype not in ("int32", "int64"):
            return "needs a known data rank and int32 / int64 indices"
        return None
    if layer.op == "Cast":
        if ins[0] is None or ins[0].dtype not in _PLAIN or not outs or outs[0].dtype not in _PLAIN:
            return "casts between NumPy's own numeric types only"
        if ins[0].dtype == outs[0].dtype:
            return "a cast to the same type is left to the reference kernel (it copies)"
        return None
    if not _static(ins[0]) or not all(_static(o) for o in outs):
        return "needs static shapes"
    if layer.op == "Transpose":
        perm = layer.attrs.get("perm")
        if perm is not None and sorted(int(p) for p in perm) != list(range(len(ins[0].shape))):
            return "perm is not a permutation of the input's axes"
        return None
    if layer.op == "Slice":
        if not all(n in constants for n in layer.inputs[1:] if n):
            return "starts / ends / axes / steps are not constants"
        try:
            index = slice_index(layer, constants)
        except (ValueError, TypeError, IndexError) as exc:
            return f"cannot index at build: {exc}"
        if np.broadcast_to(np.float32(0), tuple(ins[0].shape))[index].shape != tuple(outs[0].shape):
            return "the static output shape differs from the slice"
        return None
    if layer.op == "Split":
        axis = int(layer.attrs.get("axis", 0))
        rank = len(ins[0].shape)
        if not -rank <= axis < rank:
            return "axis out of range"
        axis %= rank
        if sum(o.shape[axis] for o in outs) != ins[0].shape[axis]:
            return "output sizes do not add up to the input"
        return None
    if layer.op in ("Reshape", "Squeeze", "Unsqueeze") and len(layer.inputs) > 1 and layer.inputs[1] \
            and layer.inputs[1] not in constants:
        return "the shape / axes input is not a constant"
    if int(np.prod(ins[0].shape, dtype=np.int64)) != int(np.prod(outs[0].shape, dtype=np.int64)):
        return "output size differs from the input"
    return None


def slice_index(layer, constants) -> tuple:
    """The NumPy index of an ONNX Slice with constant inputs on the layer's static input shape
    (negative starts / ends count from the end; both clamped as ONNX clamps them)."""
    shape = layer.aligned_input_specs()[0].shape
    names = list(layer.inputs) + [""] * (5 - len(layer.inputs))
    starts = [int(v) for v in np.asarray(constants[names[1]]).reshape(-1)]
    ends = [int(v) for v in np.asarray(constants[names[2]]).reshape(-1)]
    axes = ([int(v) for v in np.asarray(constants[names[3]]).reshape(-1)] if names[3]
            else list(range(len(starts))))
    steps = [int(v) for v in np.asarray(constants[names[4]]).reshape(-1)] if names[4] else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("starts, ends, axes and steps differ in length")
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise ValueError("a step of 0")
        axis = axis + len(shape) if axis < 0 else axis
        dim = shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, end if end >= 0 else None, step)
    return tuple(index)


class SliceKernel:
    def __init__(self, layer, constants):
        self.index = slice_index(layer, constants)

    def __call__(self, ctx, inputs, attrs):
        return [inputs[0][self.index]]


class TransposeKernel:
    def __init__(self, layer):
        perm = layer.attrs.get("perm")
        self.perm = tuple(int(p) for p in perm) if perm is not None else None

    def __call__(self, ctx, inputs, attrs):
        return [inputs[0].transpose(self.perm)]


class ReshapeKernel:
    """Reshape, Flatten, Squeeze, Unsqueeze: a view in the static output shape."""

    def __init__(self, layer):
        self.shape = tuple(layer.output_specs[0].shape)

    def __call__(self, ctx, inputs, attrs):
        return [inputs[0].reshape(self.shape)]


class SplitKernel:
    def __init__(self, layer):
        rank = len(layer.aligned_input_specs()[0].shape)
        axis = int(layer.attrs.get("axis", 0)) % rank
        self.slices, start = [], 0
        for spec in layer.output_specs:
            n = spec.shape[axis]
            self.slices.append((slice(None),) * axis + (slice(start, start + n),))
            start += n
        self.in_shape = tuple(layer.aligned_input_specs()[0].shape)

    def __call__(self, ctx, inputs, attrs):
        x = inputs[0]
        if x.shape != self.in_shape:
            raise ValueError(f"input shape {x.shape} differs from the built {self.in_shape}")
        return [x[s] for s in self.slices]


class GatherKernel:
    def __init__(self, layer):
        self.axis = int(layer.attrs.get("axis", 0))

    def __call__(self, ctx, inputs, attrs):
        return [np.take(inputs[0], inputs[1], axis=self.axis)]


class CastKernel:
    def __init__(self, layer):
        src = to_numpy(layer.aligned_input_specs()[0].dtype)
        self.dtype = to_numpy(layer.output_specs[0].dtype)
        # float -> integer of NaN / inf / out of range: the reference's astype with warnings off
        self.quiet = src.kind == "f" and self.dtype.kind in "iub"

    def __call__(self, ctx, inputs, attrs):
        if self.quiet:
            with np.errstate(all="ignore"):
                return [inputs[0].astype(self.dtype)]
        return [inputs[0].astype(self.dtype)]


def build(layer, constants):
    if layer.op == "Slice":
        return SliceKernel(layer, constants)
    if layer.op == "Transpose":
        return TransposeKernel(layer)
    if layer.op == "Split":
        return SplitKernel(layer)
    if layer.op == "Gather":
        return GatherKernel(layer)
    if layer.op == "Cast":
        return CastKernel(layer)
    return ReshapeKernel(layer)
