"""Typed layer helpers of :class:`workbench.frontends.network.NetworkDefinition`.

Each helper spells one common layer as the ONNX operator(s) the optimizer's fusion rules expect
(Conv + bias input, Gemm, LayerNormalization, ...), fills ONNX's parameter inputs (axes, shapes,
scales) with int64/float constants, and picks the spelling the network's opset needs (Reduce* axes
became inputs in opset 18; Gelu exists from opset 20 and is spelled with Erf/Tanh before that).
Arguments that are data (weights, biases) may be NumPy arrays; they become constants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...dtypes import ONNX_CODES
from .tensor import (
    DuplicateNameError,
    InvalidLayerError,
    NetworkDefinitionError,
    Tensor,
    canonical_dtype,
)

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


def _ints(value, n: int, what: str) -> list[int] | None:
    """An int or a sequence for ``n`` spatial axes -> a list of n ints (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    vals = [int(v) for v in value]
    if len(vals) != n:
        raise NetworkDefinitionError(f"{what} needs {n} values (one per spatial axis), got {len(vals)}")
    return vals


def _pads(value, n: int) -> tuple[list[int] | None, str | None]:
    """``pads`` as ONNX wants it: int, per-axis (symmetric), begin+end list, or "same"/"valid"."""
    if value is None:
        return None, None
    if isinstance(value, str):
        modes = {"same": "SAME_UPPER", "same_lower": "SAME_LOWER", "valid": "VALID"}
        if value.lower() not in modes:
            raise NetworkDefinitionError(f"pads={value!r}; use ints, 'same', 'same_lower' or 'valid'")
        return None, modes[value.lower()]
    if isinstance(value, (int, np.integer)):
        return [int(value)] * (2 * n), None
    vals = [int(v) for v in value]
    if len(vals) == n:
        return vals + vals, None
    return _ints(vals, 2 * n, "pads"), None


class Layers:
    """Mixin with the typed helpers; the host class provides ``_add``, ``tensor`` and ``constant``."""

    def _layer(self, op_type: str, inputs, base: str, name: str | None, **attrs) -> Tensor:
        return self._add(op_type, inputs, 1, "", name, base, attrs)

    def _spatial(self, x: Tensor, w: Tensor | None = None) -> int:
        rank = (w.rank if w is not None and w.rank is not None else None) or x.rank
        if rank is None or rank < 3:
            raise NetworkDefinitionError(f"{x.name!r} needs a known rank >= 3 (N, C, spatial...), has shape {x.shape}")
        return rank - 2

    def _composite_name(self, name: str | None, base: str) -> str:
        """The name of a layer spelled as several nodes: the last node gets it, inner nodes get
        ``{name}_{part}``. Checked up front so a clash raises before any node is added."""
        if name is not None:
            if name in self._names:
                raise DuplicateNameError(f"name {name!r} is already used in network {self.name!r}")
            return name
        fresh = self._fresh(base)
        self._names.discard(fresh)  # released so the last node can claim it; the counter moved on
        return fresh

    def _check_channels(self, x: Tensor, have, want, what: str, name: str | None) -> None:
        """ONNX's Conv inference does not compare channels; a mismatch would only surface at run time."""
        if isinstance(have, int) and isinstance(want, int) and have != want:
            raise InvalidLayerError(f"{what} {name or ''}: input {x.name!r} has {have} channels {x.shape}, "
                                    f"the weight expects {want}".replace("  ", " "))

    def _i64(self, values) -> Tensor:
        return self.constant(np.asarray(values, dtype=np.int64))

    def _pair(self, a, b):
        """Two operands of a binary layer; numbers take the dtype of the tensor operand."""
        like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
        return self.tensor(a, like), self.tensor(b, like)

    # ---- elementwise ---------------------------------------------------------------------------
    def add(self, a, b, name=None): return self._layer("Add", self._pair(a, b), "add", name)
    def sub(self, a, b, name=None): return self._layer("Sub", self._pair(a, b), "sub", name)
    def mul(self, a, b, name=None): return self._layer("Mul", self._pair(a, b), "mul", name)
    def div(self, a, b, name=None): return self._layer("Div", self._pair(a, b), "div", name)
    def pow(self, a, b, name=None): return self._layer("Pow", self._pair(a, b), "pow", name)
    def neg(self, x, name=None): return self._layer("Neg", [self.tensor(x)], "neg", name)
    def exp(self, x, name=None): return self._layer("Exp", [self.tensor(x)], "exp", name)
    def sqrt(self, x, name=None): return self._layer("Sqrt", [self.tensor(x)], "sqrt", name)
    def identity(self, x, name=None): return self._layer("Identity", [self.tensor(x)], "identity", name)

    # ---- activations ---------------------------------------------------------------------------
    def relu(self, x, name=None): return self._layer("Relu", [self.tensor(x)], "relu", name)
    def sigmoid(self, x, name=None): return self._layer("Sigmoid", [self.tensor(x)], "sigmoid", name)
    def tanh(self, x, name=None): return self._layer("Tanh", [self.tensor(x)], "tanh", name)

    def leaky_relu(self, x, alpha: float = 0.01, name=None):
        return self._layer("LeakyRelu", [self.tensor(x)], "leaky_relu", name, alpha=float(alpha))

    def clip(self, x, min: float | None = None, max: float | None = None, name=None):
        x = self.tensor(x)
        lo = None if min is None else self.constant(min, dtype=x.dtype)
        hi = None if max is None else self.constant(max, dtype=x.dtype)
        return self._layer("Clip", [x, lo, hi], "clip", name)

    def silu(self, x, name=None):
        """x * sigmoid(x): ONNX has no SiLU before Swish (opset 24); the fusion rules match this form."""
        x = self.tensor(x)
        base = self._composite_name(name, "silu")
        return self._layer("Mul", [x, self._layer("Sigmoid", [x], "", f"{base}_sigmoid")], "", base)

    def gelu(self, x, approximate: str = "none", name=None):
        """Gelu (opset >= 20), or its Erf / Tanh formula on older opsets."""
        x = self.tensor(x)
        if approximate not in ("none", "tanh"):
            raise NetworkDefinitionError(f"gelu approximate={approximate!r}; use 'none' or 'tanh'")
        if self.opset >= 20:
            return self._layer("Gelu", [x], "gelu", name, approximate=approximate)
        base = self._composite_name(name, "gelu")
        if approximate == "none":
            inner = self._layer("Erf", [self._layer("Mul", [x, self.tensor(1 / math.sqrt(2), x)], "", f"{base}_scale")],
                                "", f"{base}_erf")
        else:
            cube = self._layer("Mul", [self._layer("Pow", [x, self.tensor(3.0, x)], "", f"{base}_cube"),
                                       self.tensor(0.044715, x)], "", f"{base}_cubic")
            arg = self._layer("Mul", [self._layer("Add", [x, cube], "", f"{base}_sum"),
                                      self.tensor(math.sqrt(2 / math.pi), x)], "", f"{base}_scale")
            inner = self._layer("Tanh", [arg], "", f"{base}_tanh")
        half = self._layer("Mul", [x, self.tensor(0.5, x)], "", f"{base}_half")
        return self._layer("Mul", [half, self._layer("Add", [inner, self.tensor(1.0, x)], "", f"{base}_one")], "", base)

    def softmax(self, x, axis: int = -1, name=None):
        return self._layer("Softmax", [self.tensor(x)], "softmax", name, axis=int(axis))

    # ---- linear algebra and convolution --------------------------------------------------------
    def matmul(self, a, b, name=None): return self._layer("MatMul", self._pair(a, b), "matmul", name)

    def gemm(self, a, b, c=None, alpha: float = 1.0, beta: float = 1.0, trans_a: bool = False,
             trans_b: bool = False, name=None):
        """alpha * a' @ b' + beta * c on 2-D ``a`` (a fully connected layer; ``b`` is (in, out)
        unless ``trans_b``)."""
        a = self.tensor(a)
        ins = [a, self.tensor(b, a)] + ([] if c is None else [self.tensor(c, a)])
        return self._layer("Gemm", ins, "gemm", name, alpha=float(alpha), beta=float(beta),
                           transA=int(trans_a), transB=int(trans_b))

    def conv(self, x, w, b=None, strides=1, pads=0, dilations=1, group: int = 1, name=None):
        """Convolution; ``w`` is (out_channels, in_channels / group, *kernel). ``pads``: an int,
        one per spatial axis, begin+end per axis, or 'same' / 'valid'."""
        x = self.tensor(x)
        w = self.tensor(w, x)
        n = self._spatial(x, w)
        pad_list, auto_pad = _pads(pads, n)
        if x.shape and w.shape:
            self._check_channels(x, x.shape[1], w.shape[1] * int(group) if isinstance(w.shape[1], int) else None,
                                 "Conv", name)
        ins = [x, w] + ([] if b is None else [self.tensor(b, x)])
        kernel = list(w.shape[2:]) if w.shape and all(isinstance(d, int) for d in w.shape[2:]) else None
        return self._layer("Conv", ins, "conv", name, strides=_ints(strides, n, "strides"), pads=pad_list,
                           auto_pad=auto_pad, dilations=_ints(dilations, n, "dilations"), group=int(group),
                           kernel_shape=kernel)

    def conv_transpose(self, x, w, b=None, strides=1, pads=0, dilations=1, group: int = 1,
                       output_padding=None, name=None):
        """Transposed convolution; ``w`` is (in_channels, out_channels / group, *kernel)."""
        x = self.tensor(x)
        w = self.tensor(w, x)
        n = self._spatial(x, w)
        pad_list, auto_pad = _pads(pads, n)
        if x.shape and w.shape:
            self._check_channels(x, x.shape[1], w.shape[0], "ConvTranspose", name)
        ins = [x, w] + ([] if b is None else [self.tensor(b, x)])
        return self._layer("ConvTranspose", ins, "conv_transpose", name, strides=_ints(strides, n, "strides"),
                           pads=pad_list, auto_pad=auto_pad, dilations=_ints(dilations, n, "dilations"),
                           group=int(group), output_padding=_ints(output_padding, n, "output_padding"))

    # ---- normalization ---------------------------------------------------------------------------
    def batch_norm(self, x, scale, bias, mean, var, epsilon: float = 1e-5, name=None):
        x = self.tensor(x)
        ins = [x] + [self.tensor(p, x) for p in (scale, bias, mean, var)]
        return self._layer("BatchNormalization", ins, "batch_norm", name, epsilon=float(epsilon))

    def layer_norm(self, x, scale, bias=None, axis: int = -1, epsilon: float = 1e-5, name=None):
        """LayerNormalization over ``axis`` .. last (opset >= 17)."""
        x = self.tensor(x)
        ins = [x, self.tensor(scale, x)] + ([] if bias is None else [self.tensor(bias, x)])
        return self._layer("LayerNormalization", ins, "layer_norm", name, axis=int(axis), epsilon=float(epsilon))

    # ---- pooling ---------------------------------------------------------------------------------
    def max_pool(self, x, kernel, strides=None, pads=0, dilations=None, ceil_mode: bool = False, name=None):
        """Max pooling. As in PyTorch, ``strides`` defaults to the kernel size (ONNX's default is 1)."""
        x = self.tensor(x)
        n = self._spatial(x)
        k = _ints(kernel, n, "kernel")
        pad_list, auto_pad = _pads(pads, n)
        return self._layer("MaxPool", [x], "max_pool", name, kernel_shape=k, strides=_ints(strides, n, "strides") or k,
                           pads=pad_list, auto_pad=auto_pad, dilations=_ints(dilations, n, "dilations"),
                           ceil_mode=int(ceil_mode))

    def avg_pool(self, x, kernel, strides=None, pads=0, ceil_mode: bool = False, count_include_pad: bool = False,
                 name=None):
        """Average pooling; ``strides`` defaults to the kernel size, as in PyTorch."""
        x = self.tensor(x)
        n = self._spatial(x)
        k = _ints(kernel, n, "kernel")
        pad_list, auto_pad = _pads(pads, n)
        return self._layer("AveragePool", [x], "avg_pool", name, kernel_shape=k,
                           strides=_ints(strides, n, "strides") or k, pads=pad_list, auto_pad=auto_pad,
                           ceil_mode=int(ceil_mode), count_include_pad=int(count_include_pad))

    def global_avg_pool(self, x, name=None):
        return self._layer("GlobalAveragePool", [self.tensor(x)], "global_avg_pool", name)

    def global_max_pool(self, x, name=None):
        return self._layer("GlobalMaxPool", [self.tensor(x)], "global_max_pool", name)

    # ---- shape and data movement -----------------------------------------------------------------
    def reshape(self, x, shape, name=None):
        """Reshape; ``shape`` may hold -1 (inferred) and 0 (copy that dim), or be an int64 Tensor."""
        shape_t = shape if isinstance(shape, Tensor) else self._i64(list(shape))
        return self._layer("Reshape", [self.tensor(x), self.tensor(shape_t)], "reshape", name)

    def transpose(self, x, perm: Sequence[int] | None = None, name=None):
        return self._layer("Transpose", [self.tensor(x)], "transpose", name,
                           perm=None if perm is None else [int(p) for p in perm])

    def flatten(self, x, axis: int = 1, name=None):
        return self._layer("Flatten", [self.tensor(x)], "flatten", name, axis=int(axis))

    def concat(self, tensors: Sequence, axis: int, name=None):
        like = next((t for t in tensors if isinstance(t, Tensor)), None)
        return self._layer("Concat", [self.tensor(t, like) for t in tensors], "concat", name, axis=int(axis))

    def squeeze(self, x, axes: Sequence[int], name=None):
        return self._layer("Squeeze", [self.tensor(x), self._i64(list(axes))], "squeeze", name)

    def unsqueeze(self, x, axes: Sequence[int], name=None):
        return self._layer("Unsqueeze", [self.tensor(x), self._i64(list(axes))], "unsqueeze", name)

    def slice(self, x, starts, ends, axes=None, steps=None, name=None):
        ins = [self.tensor(x), self._i64(list(starts)), self._i64(list(ends)),
               None if axes is None else self._i64(list(axes)), None if steps is None else self._i64(list(steps))]
        while ins[-1] is None:  # trailing optional inputs are left out rather than passed empty
            ins.pop()
        return self._layer("Slice", ins, "slice", name)

    def gather(self, x, indices, axis: int = 0, name=None):
        """Gather along ``axis``; ``indices`` may be an int (drops the axis), a list or a Tensor."""
        idx = indices if isinstance(indices, Tensor) else self._i64(indices)
        return self._layer("Gather", [self.tensor(x), self.tensor(idx)], "gather", name, axis=int(axis))

    def cast(self, x, dtype, name=None):
        return self._layer("Cast", [self.tensor(x)], "cast", name, to=ONNX_CODES[canonical_dtype(dtype)])

    def getitem(self, x, index) -> Tensor:
        """``t[1:3, :, 0]``: ints and slices (with steps) per leading axis -> Slice, then Squeeze
        for the int-indexed axes."""
        index = index if isinstance(index, tuple) else (index,)
        starts, ends, axes, steps, drop = [], [], [], [], []
        for axis, item in enumerate(index):
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                i = int(item)
                starts.append(i)
                ends.append(i + 1 if i != -1 else _INT64_MAX)
                steps.append(1)
                drop.append(axis)
            elif isinstance(item, slice):
                step = 1 if item.step is None else int(item.step)
                if step == 0:
                    raise NetworkDefinitionError("slice step cannot be zero")
                if item == slice(None):
                    continue
                starts.append(int(item.start) if item.start is not None else (0 if step > 0 else _INT64_MAX))
                ends.append(int(item.stop) if item.stop is not None else (_INT64_MAX if step > 0 else _INT64_MIN))
                steps.append(step)
            else:
                raise NetworkDefinitionError(f"index {item!r}: only ints and slices are supported; use net.gather")
            axes.append(axis)
        y = self.tensor(x)
        if starts:
            y = self.slice(y, starts, ends, axes, steps)
        return self.squeeze(y, drop) if drop else y

    # ---- reductions ------------------------------------------------------------------------------
    def _reduce(self, op_type: str, base: str, x, axes, keepdims: bool, name, axes_input_since: int):
        x = self.tensor(x)
        axes = None if axes is None else [int(axes)] if isinstance(axes, (int, np.integer)) else [int(a) for a in axes]
        if self.opset >= axes_input_since:
            ins = [x] if axes is None else [x, self._i64(axes)]
            return self._layer(op_type, ins, base, name, keepdims=int(keepdims))
        return self._layer(op_type, [x], base, name, axes=axes, keepdims=int(keepdims))

    def reduce_mean(self, x, axes=None, keepdims: bool = True, name=None):
        return self._reduce("ReduceMean", "reduce_mean", x, axes, keepdims, name, 18)

    def reduce_sum(self, x, axes=None, keepdims: bool = True, name=None):
        return self._reduce("ReduceSum", "reduce_sum", x, axes, keepdims, name, 13)

    def reduce_max(self, x, axes=None, keepdims: bool = True, name=None):
        return self._reduce("ReduceMax", "reduce_max", x, axes, keepdims, name, 18)

    # ---- image -----------------------------------------------------------------------------------
    def resize(self, x, scales=None, sizes=None, mode: str = "nearest",
               coordinate_transformation_mode: str | None = None, nearest_mode: str | None = None, name=None):
        """Resize by ``scales`` (floats) or to ``sizes`` (ints), either for every axis or for the
        spatial axes only (N and C kept). ``mode``: 'nearest', 'linear' or 'cubic'."""
        x = self.tensor(x)
        if (scales is None) == (sizes is None):
            raise NetworkDefinitionError("resize needs exactly one of scales= or sizes=")
        if mode not in ("nearest", "linear", "cubic"):
            raise NetworkDefinitionError(f"resize mode={mode!r}; use 'nearest', 'linear' or 'cubic'")
        spec = list(scales if scales is not None else sizes)
        if x.rank is not None and len(spec) == x.rank - 2:
            if scales is not None:
                spec = [1.0, 1.0] + spec
            elif x.shape[:2] and all(isinstance(d, int) for d in x.shape[:2]):
                spec = list(x.shape[:2]) + spec
            else:
                raise NetworkDefinitionError("resize sizes= for spatial axes needs static N and C dims; give every dim")
        if scales is not None:
            ins = [x, None, self.constant(np.asarray(spec, dtype=np.float32))]
        else:
            ins = [x, None, None, self._i64(spec)]
        return self._layer("Resize", ins, "resize", name, mode=mode,
                           coordinate_transformation_mode=coordinate_transformation_mode, nearest_mode=nearest_mode)

    # ---- attention -------------------------------------------------------------------------------
    def attention(self, q, k, v, mask=None, scale: float | None = None, name=None):
        """softmax(q @ k^T * scale + mask) @ v over the last two axes (..., seq, head_dim), spelled
        as MatMul / Mul / Add / Softmax / MatMul, the form the attention fusion matches."""
        q = self.tensor(q)
        k, v = self.tensor(k, q), self.tensor(v, q)
        if k.rank is None:
            raise NetworkDefinitionError(f"attention needs k of known rank, got {k.shape}")
        if scale is None:
            d = q.shape[-1] if q.shape else None
            if not isinstance(d, int):
                raise NetworkDefinitionError("attention needs scale= when q's last dim is not static")
            scale = 1.0 / math.sqrt(d)
        base = self._composite_name(name, "attention")
        perm = list(range(k.rank - 2)) + [k.rank - 1, k.rank - 2]
        kt = self._layer("Transpose", [k], "", f"{base}_kt", perm=perm)
        scores = self._layer("Mul", [self._layer("MatMul", [q, kt], "", f"{base}_qk"), self.tensor(scale, q)],
                             "", f"{base}_scale")
        if mask is not None:
            scores = self._layer("Add", [scores, self.tensor(mask, q)], "", f"{base}_mask")
        probs = self._layer("Softmax", [scores], "", f"{base}_softmax", axis=-1)
        return self._layer("MatMul", [probs, v], "", base)
