"""Recognising an activation function after a value, whatever ops the exporter spelled it with.

GELU arrives as Gelu, as Div/Erf/Add/Mul/Mul (either operand order, 0.5 applied first or last,
Mul by 1/sqrt(2) instead of Div), or as the tanh form with Pow or Mul-Mul-Mul; SiLU as Mul(x,
Sigmoid(x)); ReLU6 as Clip or Max/Min; HardSwish as x * Relu6(x + 3) / 6. The subgraph of
scalar-only elementwise ops that reads nothing but the value is read back as an expression tree
and recognised structurally:

* clamps — Relu, Clip, Max/Min with constants, nested, and -clamp(-x) — compose into one
  Clip(lo, hi) whose bounds are the constants themselves (±inf where a bound is absent);
* products are flattened to coefficient × factors and the arguments of Erf / Tanh / the HardSwish
  clamp to polynomials in x, so every exporter spelling of GELU, SiLU and HardSwish is one check
  of its factors and constants (to ``RTOL``, float32 round-off of the exporters' literals).

Only a function provably equal to the fused activation for every input is accepted: evaluation
on a wide grid (to ±1e30 and ±inf) is a sanity check after a structural match, never the
recogniser. Anything else stays unfused for the pointwise pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from ..ir.attrs import node_attrs
from ..kernels.reference import KernelContext, get_kernel
from ..kernels.reference.fused import activate
from ..ir.values import const, is_graph_output, rank, users

UNARY_OK = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Tanh",
                      "Sigmoid", "Relu", "Neg", "Abs", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish",
                      "Softplus", "Gelu", "Min", "Max", "Elu", "Selu", "Softsign", "Mish"})
MAX_NODES = 12
RTOL = 1e-6  # exporters write float32-rounded constants (relative error <= 6e-8)
INF = float("inf")
_WIDE = [0.0, 1e-3, 0.3, 1.0, 2.5, 3.0, 3.5, 6.0, 12.0, 20.0, 25.0, 30.0, 60.0, 100.0, 1e3, 1e4, 1e6, 1e30, np.inf]
SANITY = np.unique(np.concatenate([np.linspace(-8, 8, 161), _WIDE, np.negative(_WIDE)])).astype(np.float32)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


@dataclass(frozen=True)
class Expr:
    """A node of the candidate's expression tree: an ONNX op over ``args``, the input ``x``, a
    scalar ``const`` or an ``absent`` optional input."""

    op: str
    args: tuple = ()
    attrs: tuple = ()
    value: float = 0.0

    def attr(self, name, default=None):
        return dict(self.attrs).get(name, default)


X = Expr("x")
ABSENT = Expr("absent")


# ---- the candidate subgraph ----------------------------------------------------------------
def _qualifies(node: ir.Node, known: set[int]) -> bool:
    if node.op_type not in UNARY_OK or node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return False
    for x in node.inputs:
        if x is None or id(x) in known:
            continue
        c = const(x)
        if c is None or c.size != 1:
            return False
    return True


def region(v: ir.Value) -> list[ir.Node]:
    """Elementwise nodes reachable from ``v`` that read only ``v``, each other and scalars."""
    known, nodes, frontier = {id(v)}, [], [v]
    while frontier and len(nodes) < MAX_NODES:
        value = frontier.pop(0)
        for u in users(value):
            if any(u is n for n in nodes) or not _qualifies(u, known):
                continue
            nodes.append(u)
            known.add(id(u.outputs[0]))
            frontier.append(u.outputs[0])
    return nodes


def _ancestors(sink: ir.Node, nodes: list[ir.Node]) -> list[ir.Node]:
    inside = {id(n.outputs[0]): n for n in nodes}
    out, stack = {}, [sink]
    while stack:
        n = stack.pop()
        if id(n) in out:
            continue
        out[id(n)] = n
        stack += [inside[id(x)] for x in n.inputs if x is not None and id(x) in inside]
    return [n for n in nodes if id(n) in out]


def _closed(v: ir.Value, sub: list[ir.Node], sink: ir.Node) -> bool:
    """Only ``sink``'s output leaves ``sub``, and every reader of ``v`` is inside it."""
    ids = {id(n) for n in sub}
    if any(id(u) not in ids for u in users(v)) or is_graph_output(v):
        return False
    for n in sub:
        if n is sink:
            continue
        if is_graph_output(n.outputs[0]) or any(id(u) not in ids for u in users(n.outputs[0])):
            return False
    return True


def _broadcasts(v: ir.Value, sub: list[ir.Node]) -> bool:
    """Whether a size-1 constant of higher rank than ``v`` would change the output's shape."""
    r = rank(v)
    inside = {id(v)} | {id(n.outputs[0]) for n in sub}
    return any(c is not None and c.ndim > (r if r is not None else 0)
               for n in sub for c in (const(i) for i in n.inputs if i is not None and id(i) not in inside))


def expression(v: ir.Value, sub: list[ir.Node], sink: ir.Node) -> Expr:
    inside = {id(n.outputs[0]): n for n in sub}

    def build(val: ir.Value | None) -> Expr:
        if val is v:
            return X
        if val is None:
            return ABSENT
        n = inside.get(id(val))
        if n is None:
            return Expr("const", value=float(np.asarray(const(val), np.float64).reshape(())))
        attrs = tuple(sorted((k, tuple(a) if isinstance(a, list) else a) for k, a in node_attrs(n).items()))
        return Expr(n.op_type, tuple(build(i) for i in n.inputs), attrs)

    return build(sink.outputs[0])


def evaluate(v: ir.Value, sub: list[ir.Node], x: np.ndarray) -> np.ndarray | None:
    env = {id(v): x}
    g = sub[0].graph
    opset = int(g.opset_imports.get("", 21)) if g is not None else 21
    try:
        with np.errstate(all="ignore"):
            for n in sub:
                args = [env.get(id(i)) if id(i) in env else const(i) for i in n.inputs]
                args = [a.astype(x.dtype) if a is not None and a.dtype.kind == "f" and a.dtype != x.dtype else a for a in args]
                kernel = get_kernel("", n.op_type)
                env[id(n.outputs[0])] = np.asarray(kernel(KernelContext(opset=opset), args, node_attrs(n))[0])
        return env[id(sub[-1].outputs[0])]
    except Exception:
        return None


# ---- structural recognition ----------------------------------------------------------------
def _close(a: float, b: float) -> bool:
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


def _clamp_step(e: Expr) -> tuple[float, float, Expr] | None:
    """One clamp op: (lo, hi, argument)."""
    if e.op == "Relu":
        return 0.0, INF, e.args[0]
    if e.op == "Clip":
        if len(e.args) == 1:  # opset < 11: bounds are attributes
            lo, hi = e.attr("min", -INF), e.attr("max", INF)
        else:
            b = list(e.args[1:3]) + [ABSENT] * (3 - len(e.args))
            if any(x.op not in ("const", "absent") for x in b):
                return None
            lo, hi = (x.value if x.op == "const" else d for x, d in zip(b, (-INF, INF)))
        return (float(lo), float(hi), e.args[0]) if not (math.isnan(lo) or math.isnan(hi)) else None
    if e.op in ("Max", "Min"):
        var = [a for a in e.args if a.op != "const"]
        cs = [a.value for a in e.args if a.op == "const"]
        if len(var) != 1 or var[0].op == "absent" or any(math.isnan(c) for c in cs):
            return None
        if e.op == "Max":
            return max(cs, default=-INF), INF, var[0]
        return -INF, min(cs, default=INF), var[0]
    if e.op == "Neg":  # -clamp(-y, lo, hi) = clamp(y, -hi, -lo)
        inner = clamp(e.args[0])
        if inner is not None and inner[2].op == "Neg":
            return -inner[1], -inner[0], inner[2].args[0]
    return None


def clamp(e: Expr) -> tuple[float, float, Expr] | None:
    """(lo, hi, y) when ``e`` = clamp(y, lo, hi) spelled with one or more clamp ops. Clamps with
    overlapping ranges compose to the intersection; otherwise the result is a constant: None."""
    lo, hi, seen = -INF, INF, False
    while (step := _clamp_step(e)) is not None:
        l, h, e = step
        lo, hi, seen = max(lo, l), min(hi, h), True
        if not (l <= h and lo <= hi):
            return None
    return (lo, hi, e) if seen else None


def product(e: Expr) -> tuple[float, list[Expr]]:
    """``e`` as coefficient × factors (Mul, Neg and Div by a constant flattened)."""
    if e.op == "Mul":
        (c1, f1), (c2, f2) = product(e.args[0]), product(e.args[1])
        return c1 * c2, f1 + f2
    if e.op == "Div" and e.args[1].op == "const" and e.args[1].value != 0:
        c, f = product(e.args[0])
        return c / e.args[1].value, f
    if e.op == "Neg":
        c, f = product(e.args[0])
        return -c, f
    if e.op == "const":
        return e.value, []
    return 1.0, [e]


def _times(p: dict[int, float], q: dict[int, float], max_degree: int) -> dict[int, float] | None:
    out: dict[int, float] = {}
    for i, a in p.items():
        for j, b in q.items():
            out[i + j] = out.get(i + j, 0.0) + a * b
    return out if max(out, default=0) <= max_degree else None


def poly(e: Expr, max_degree: int = 4) -> dict[int, float] | None:
    """``e`` as a polynomial in x ({power: coefficient}), or None."""
    if e == X:
        return {1: 1.0}
    if e.op == "const":
        return {0: e.value}
    if e.op == "Neg":
        p = poly(e.args[0], max_degree)
        return None if p is None else {k: -c for k, c in p.items()}
    if e.op in ("Add", "Sub", "Mul") and len(e.args) == 2:
        p, q = poly(e.args[0], max_degree), poly(e.args[1], max_degree)
        if p is None or q is None:
            return None
        if e.op == "Mul":
            return _times(p, q, max_degree)
        sign = 1.0 if e.op == "Add" else -1.0
        return {k: p.get(k, 0.0) + sign * q.get(k, 0.0) for k in set(p) | set(q)}
    if e.op == "Div" and e.args[1].op == "const" and e.args[1].value != 0:
        p = poly(e.args[0], max_degree)
        return None if p is None else {k: c / e.args[1].value for k, c in p.items()}
    if e.op == "Pow" and e.args[1].op == "const" and e.args[1].value in (1.0, 2.0, 3.0, 4.0):
        base, out = poly(e.args[0], max_degree), {0: 1.0}
        for _ in range(int(e.args[1].value)):
            out = _times(out, base, max_degree) if base is not None and out is not None else None
        return out
    return None


def poly_is(e: Expr, want: dict[int, float]) -> bool:
    p = poly(e)
    if p is None:
        return False
    p = {k: c for k, c in p.items() if c != 0.0}
    return set(p) == set(want) and all(_close(p[k], want[k]) for k in want)


def _one_plus(e: Expr, op: str) -> Expr | None:
    """For e = 1 + op(u) (either operand order), u."""
    if e.op != "Add" or len(e.args) != 2:
        return None
    for one, f in (e.args, e.args[::-1]):
        if one.op == "const" and one.value == 1.0 and f.op == op and len(f.args) == 1:
            return f.args[0]
    return None


def _clip_attrs(lo: float, hi: float) -> dict | None:
    if lo == 0.0 and hi == INF:
        return {"activation": "Relu"}
    if lo == -INF and hi == INF:
        return None  # the identity: nothing to fuse
    attrs = {"activation": "Clip"}
    if lo != -INF:
        attrs["act_min"] = lo
    if hi != INF:
        attrs["act_max"] = hi
    return attrs


def _single_op(e: Expr) -> dict | None:
    if len(e.args) != 1 or e.args[0] != X:
        return None
    if e.op in ("Sigmoid", "Tanh", "Softplus", "HardSwish"):
        return {"activation": e.op}
    if e.op == "LeakyRelu":
        return {"activation": "LeakyRelu", "act_alpha": float(e.attr("alpha", 0.01))}
    if e.op == "HardSigmoid":
        return {"activation": "HardSigmoid", "act_alpha": float(e.attr("alpha", 0.2)),
                "act_beta": float(e.attr("beta", 0.5))}
    if e.op == "Gelu":
        kind = {"none": "Gelu", "tanh": "GeluTanh"}.get(e.attr("approximate", "none"))
        return {"activation": kind} if kind else None
    return None


def _x_times(coef: float, other: Expr) -> dict | None:
    """coef · x · other: SiLU, HardSwish, GELU (erf and tanh forms)."""
    if _close(coef, 1.0) and other == Expr("Sigmoid", (X,)):
        return {"activation": "Silu"}
    if _close(coef, 1.0) and other.op == "HardSigmoid" and other.args == (X,) \
            and _close(float(other.attr("alpha", 0.2)), 1 / 6) and _close(float(other.attr("beta", 0.5)), 0.5):
        return {"activation": "HardSwish"}
    c = clamp(other)
    if _close(coef, 1 / 6) and c is not None and c[:2] == (0.0, 6.0) and poly_is(c[2], {0: 3.0, 1: 1.0}):
        return {"activation": "HardSwish"}  # x * Relu6(x + 3) / 6
    if not _close(coef, 0.5):
        return None
    u = _one_plus(other, "Erf")
    if u is not None and poly_is(u, {1: 1 / math.sqrt(2)}):
        return {"activation": "Gelu"}
    u = _one_plus(other, "Tanh")
    if u is not None and poly_is(u, {1: SQRT_2_OVER_PI, 3: SQRT_2_OVER_PI * 0.044715}):
        return {"activation": "GeluTanh"}
    return None


def recognise(e: Expr) -> dict | None:
    """The fused activation attrs equal to ``e`` (a function of x) for every input, or None."""
    act = _single_op(e)
    if act is not None:
        return act
    c = clamp(e)
    if c is not None:
        return _clip_attrs(c[0], c[1]) if c[2] == X else None
    coef, factors = product(e)
    if len(factors) == 2 and X in factors:
        return _x_times(coef, factors[1] if factors[0] == X else factors[0])
    return None


def _agrees(y: np.ndarray, act: dict) -> bool:
    """Sanity check on ``SANITY``: equal to float32 round-off; at ±inf inputs a NaN on either side
    (inf · 0 in one spelling) is tolerated."""
    with np.errstate(all="ignore"):
        try:
            ref = activate(SANITY.copy(), act)
        except Exception:
            return False
        if ref.shape != y.shape:
            return False
        ok = (np.abs(ref - y) <= 1e-5 * np.maximum(1.0, np.abs(ref))) | (ref == y) | (np.isnan(ref) & np.isnan(y))
    ok |= np.isinf(SANITY) & (np.isnan(ref) | np.isnan(y))
    return bool(np.all(ok))


def find_activation(v: ir.Value) -> tuple[list[ir.Node], ir.Value, dict] | None:
    """(nodes, output, activation attrs) of the largest known activation applied to ``v``."""
    nodes = region(v)
    for sink in reversed(nodes):
        sub = _ancestors(sink, nodes)
        if not _closed(v, sub, sink) or _broadcasts(v, sub):
            continue
        act = recognise(expression(v, sub, sink))
        if act is None:
            continue
        y = evaluate(v, sub, SANITY)
        if y is not None and _agrees(y, act):
            return sub, sink.outputs[0], act
    return None
