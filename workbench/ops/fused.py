"""The fused ops of the ``workbench`` domain: one table the optimizer, the precision assigner, the
reference kernels and the GPU tactics read (``passes/FUSED_OPS.md`` explains each op in prose).

Each ``OpSchema`` gives the op's inputs and outputs, its attributes with their defaults, whether
its math is matrix math (tensor cores change it) and safe in half precision, a shape function and
``semantics``: the module of ``kernels/reference`` whose kernel for the op defines what it computes
(named, not imported: this package sits below the kernels). ``ACTIVATIONS`` is the epilogue
activation vocabulary of FusedConv / FusedGemm with each activation's attributes.

Shape functions work on plain data: a tensor type is ``(dtype name | None, dims | None)`` and a
dim is an int, a symbolic name (str) or None (unknown). ``shape(inputs, attrs)`` takes one type per
node input (None for an absent optional input) and the attributes with defaults applied
(``OpSchema.with_defaults``), and returns one type per output the op declares (Pointwise: per name
in its ``outputs`` attribute).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..dtypes import ONNX_CODES
from .geometry import conv_geometry, window_attrs

DOMAIN = "workbench"
_REFERENCE = "workbench.kernels.reference.fused"


@dataclass(frozen=True)
class Activation:
    """An epilogue activation: ``attrs`` maps its ``act_*`` attributes to their defaults (None:
    absent means unbounded); ``onnx`` says which ONNX computation it equals."""

    name: str
    onnx: str
    attrs: dict[str, float | None] = field(default_factory=dict)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("", "identity (no activation)"),
    Activation("Relu", "Relu"),
    Activation("Clip", "Clip(act_min, act_max); ReLU6 is Clip 0..6", {"act_min": None, "act_max": None}),
    Activation("LeakyRelu", "LeakyRelu(alpha=act_alpha)", {"act_alpha": 0.01}),
    Activation("Sigmoid", "Sigmoid"),
    Activation("Tanh", "Tanh"),
    Activation("HardSwish", "HardSwish"),
    Activation("HardSigmoid", "HardSigmoid(alpha=act_alpha, beta=act_beta)", {"act_alpha": 0.2, "act_beta": 0.5}),
    Activation("Silu", "x * Sigmoid(x)"),
    Activation("Gelu", "Gelu (erf)"),
    Activation("GeluTanh", "Gelu(approximate='tanh')"),
    Activation("Softplus", "Softplus"),
)}
# the attributes that carry an epilogue activation on FusedConv / FusedGemm
ACTIVATION_ATTRS = ("activation", "act_min", "act_max", "act_alpha", "act_beta")


def activation_params(attrs: dict) -> tuple[str, dict]:
    """(activation name, its ``act_*`` parameters as floats with defaults applied; an unbounded
    Clip side is left out) of a FusedConv / FusedGemm's attributes. A name outside the vocabulary
    comes back with no parameters: check it against ``ACTIVATIONS``."""
    name = str(attrs.get("activation", "") or "")
    act = ACTIVATIONS.get(name)
    params = {}
    for key, default in (act.attrs.items() if act is not None else ()):
        value = attrs.get(key, default)
        if value is not None:
            params[key] = float(value)
    return name, params


Dims = tuple  # of int | str (symbolic) | None (unknown)
TensorType = tuple  # (dtype name | None, Dims | None)


@dataclass(frozen=True)
class OpSchema:
    name: str
    inputs: tuple[str, ...]  # required inputs, in order
    outputs: tuple[str, ...]
    shape: Callable[[list, dict], list]
    semantics: str  # the reference module whose KERNELS[name] defines the op
    optional: tuple[str, ...] = ()  # optional inputs after the required ones
    # any number of inputs and outputs (Pointwise: inputs in0.., outputs named by its attribute)
    variadic: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)  # attribute -> default (None: no default)
    activation: bool = False  # takes the epilogue activation attributes (ACTIVATION_ATTRS)
    matrix: bool = False  # tensor-core math (tf32 / fp16 / bf16) changes its result
    half_safe: bool = True  # safe to run with half-precision storage

    def with_defaults(self, attrs: dict) -> dict:
        """``attrs`` with every absent attribute that has a default set to it."""
        out = {k: v for k, v in self.attrs.items() if v is not None}
        if self.activation:
            out["activation"] = ""
        out.update(attrs)
        return out


def broadcast(*shapes: Dims | None, meet=None) -> Dims | None:
    """NumPy broadcasting over dims that may be symbolic (equal names match) or unknown.
    ``meet(a, b)``: the dim two symbolic dims (neither 1) broadcast to, or None when unknown
    (default: equal dims meet); the passes give one that compares dim expressions."""
    if any(s is None for s in shapes):
        return None
    r = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(r):
        ds = [s[len(s) - r + i] for s in shapes if len(s) - r + i >= 0]
        ds = [d for d in ds if d != 1]
        ints = {d for d in ds if isinstance(d, int)}
        if not ds:
            out.append(1)
        elif ints:  # a valid broadcast: every other dim is 1 or this one
            out.append(ints.pop() if len(ints) == 1 else None)
        elif meet is None:
            out.append(ds[0] if ds[0] is not None and all(d == ds[0] for d in ds) else None)
        else:
            met = ds[0]
            for d in ds[1:]:
                met = meet(met, d) if met is not None and d is not None else None
            out.append(met)
    return tuple(out)


def _type(ins: list, i: int) -> TensorType:
    return ins[i] if i < len(ins) and ins[i] is not None else (None, None)


def _fused_conv(ins, attrs):
    (dt, x), (_, w) = _type(ins, 0), _type(ins, 1)
    if x is None or w is None:
        return [(dt, None)]
    nd = len(x) - 2
    strides, dilations, pads = window_attrs(attrs, nd)
    kernel = list(attrs.get("kernel_shape") or w[2:])
    _, _, spatial = conv_geometry(x[2:], kernel, strides, dilations, pads)
    out = (x[0], w[0], *spatial)
    if len(ins) > 3 and ins[3] is not None:
        out = broadcast(out, ins[3][1]) or out
    return [(dt, out)]


def _fused_gemm(ins, attrs):
    (dt, a), (_, b) = _type(ins, 0), _type(ins, 1)
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return [(dt, None)]
    if attrs["transA"]:
        a = a[:-2] + (a[-1], a[-2])
    if attrs["transB"]:
        b = b[:-2] + (b[-1], b[-2])
    out = broadcast(a[:-2], b[:-2]) + (a[-2], b[-1])
    if len(ins) > 2 and ins[2] is not None:
        out = broadcast(out, ins[2][1]) or out
    return [(dt, out)]


def _like_first(ins, attrs):
    return [_type(ins, 0)]


def _skip_layer_norm(ins, attrs):
    (dt, x), (_, skip) = _type(ins, 0), _type(ins, 1)
    s = broadcast(x, skip)
    return [(dt, s), (dt, s)]


def _heads_view(s: Dims | None, layout: str, heads: int) -> Dims | None:
    """(batch, heads, seq, head_dim) of an Attention Q/K/V operand of dims ``s`` stored in ``layout``."""
    if s is None:
        return None
    if layout == "bhsd" and len(s) == 4:
        return s
    if layout == "bshd" and len(s) == 4:
        return (s[0], s[2], s[1], s[3])
    if layout == "bhds" and len(s) == 4:
        return (s[0], s[1], s[3], s[2])
    if layout == "bsd" and len(s) == 3:
        return (s[0], heads, s[1], s[2] // heads if isinstance(s[2], int) and heads else None)
    return None


def qkv_columns(attrs: dict) -> list[tuple[int, int]] | None:
    """The [start, stop) columns of the last axis that Q, K and V read when they are one packed
    tensor (the merged Q/K/V projection's output: attribute ``qkv_columns`` = [q0, q1, k0, k1, v0,
    v1]), or None when each operand is a tensor of its own."""
    cols = attrs.get("qkv_columns")
    if cols is None or len(cols) == 0:
        return None
    cols = [int(c) for c in cols]
    if len(cols) != 6 or any(c < 0 for c in cols) or any(cols[i] >= cols[i + 1] for i in (0, 2, 4)):
        raise ValueError(f"Attention qkv_columns {cols} is not [q0, q1, k0, k1, v0, v1] with start < stop")
    return [(cols[0], cols[1]), (cols[2], cols[3]), (cols[4], cols[5])]


def qkv_operands(inputs, attrs: dict) -> list:
    """Q, K and V of an Attention node as arrays (NumPy or CuPy views): each input, or its columns
    of the packed tensor."""
    cols = qkv_columns(attrs)
    if cols is None:
        return list(inputs[:3])
    return [x[..., a:b] for x, (a, b) in zip(inputs[:3], cols)]


def qkv_dims(dims: list, attrs: dict) -> list:
    """The dims of Q, K and V (``dims``: those of the first three inputs, None where unknown)."""
    cols = qkv_columns(attrs)
    if cols is None:
        return list(dims[:3])
    return [None if d is None else tuple(d[:-1]) + (b - a,) for d, (a, b) in zip(dims[:3], cols)]


def _attention(ins, attrs):
    heads = int(attrs.get("num_heads") or 0)
    kvh = int(attrs.get("kv_heads") or heads)
    dt = _type(ins, 0)[0]
    qd, _, vd = qkv_dims([_type(ins, i)[1] for i in range(3)], attrs)
    q = _heads_view(qd, attrs["q_layout"], heads)
    v = _heads_view(vd, attrs["v_layout"], kvh)
    if q is None or v is None:
        return [(dt, None)]
    b, h, sq, dv = q[0], q[1] if q[1] is not None else heads, q[2], v[3]
    layout = attrs["out_layout"]
    if layout == "bshd":
        return [(dt, (b, sq, h, dv))]
    if layout == "bsd":
        return [(dt, (b, sq, h * dv if isinstance(h, int) and isinstance(dv, int) else None))]
    return [(dt, (b, h, sq, dv))]


def program(attrs: dict) -> list[dict]:
    """A Pointwise node's instruction list (its ``program`` attribute, JSON text or parsed)."""
    prog = attrs["program"]
    return json.loads(prog) if isinstance(prog, (str, bytes)) else list(prog)


def _pointwise(ins, attrs):
    env = {f"in{k}": _type(ins, k) for k in range(len(ins))}
    for step in program(attrs):
        shapes = [() if a.startswith("c:") else env[a][1] for a in step["args"] if a != ""]
        name = step.get("dtype")
        env[step["out"]] = (name if name in ONNX_CODES else None, broadcast(*shapes))
    return [env[o] for o in attrs["outputs"]]


_LAYOUTS = {"q_layout": "bhsd", "k_layout": "bhsd", "v_layout": "bhsd", "out_layout": "bhsd"}

FUSED_OPS: dict[str, OpSchema] = {s.name: s for s in (
    OpSchema("FusedConv", ("X", "W", "B"), ("Y",), _fused_conv, _REFERENCE, optional=("Z",),
             attrs={"kernel_shape": None, "strides": None, "dilations": None, "pads": None, "group": 1,
                    "residual": 0},
             activation=True, matrix=True),
    OpSchema("FusedGemm", ("A", "B"), ("Y",), _fused_gemm, _REFERENCE, optional=("C",),
             attrs={"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0}, activation=True, matrix=True),
    OpSchema("LayerNorm", ("X", "scale"), ("Y",), _like_first, _REFERENCE, optional=("bias",),
             attrs={"axis": -1, "epsilon": 1e-5, "channels_first": 0}),
    OpSchema("SkipLayerNorm", ("X", "skip", "scale"), ("Y", "sum"), _skip_layer_norm,
             _REFERENCE, optional=("bias", "add_bias"), attrs={"epsilon": 1e-5}),
    OpSchema("RMSNorm", ("X", "scale"), ("Y",), _like_first, _REFERENCE,
             attrs={"epsilon": 1e-6, "axis": -1}),
    OpSchema("Attention", ("Q", "K", "V"), ("O",), _attention, _REFERENCE, optional=("mask",),
             attrs={"scale": 1.0, "num_heads": 0, "kv_heads": 0, **_LAYOUTS, "mask_kind": "", "causal": 0,
                    "causal_fill": None, "nan_to_zero": 0, "qkv_columns": None},
             matrix=True),
    OpSchema("Pointwise", (), (), _pointwise, _REFERENCE, variadic=True, attrs={"program": None, "outputs": None}),
)}


def schema(domain: str, op: str) -> OpSchema | None:
    """The schema of a fused op (None for ops of other domains)."""
    return FUSED_OPS.get(op) if domain == DOMAIN else None
