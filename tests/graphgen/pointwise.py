"""Random elementwise DAGs (with broadcasting constants, mixed dtypes through Cast, Where, Pow with
any exponent) and shape-op sequences.

Values are kept finite by construction: every op's domain is guarded inside the graph (Sqrt/Log/Pow
of ``Abs(a) + c``, Div by ``Abs(b) + c``, Exp of a Tanh) and a rough magnitude bound per value keeps
products from overflowing (a value whose bound grows past 1e4 is squashed with Tanh).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .core import GraphBuilder

UNARY = ["Neg", "Abs", "Tanh", "Erf", "Sigmoid", "Relu", "Exp", "Sqrt", "Log", "Reciprocal", "Softplus"]
BINARY = ["Add", "Mul", "Sub", "Div", "Max", "Min", "Pow", "PRelu"]
SPECIAL = ["Where", "Cast16", "Cast64", "CastInt", "CastBool", "Variadic", "Clip", "IntChain"]
OPS = BINARY + UNARY + SPECIAL
EXPONENTS = [2.0, 3.0, 0.5, -1.0, 1.5, "int2", "int3", -0.5, "tensor"]


def _bshape(g: GraphBuilder, shape, key, unidirectional=False):
    """A shape that broadcasts against ``shape`` (raising its rank only where ``unidirectional`` is false)."""
    kinds = ["scalar", "last", "same", "leading1", "first_only", "rank_lower"]
    kind = g.c.choose(key, kinds if unidirectional else kinds + ["size1_higher_rank"])
    r = len(shape)
    if kind == "size1_higher_rank":  # size 1 but one rank more: broadcasting raises the result's rank
        return (1,) * (r + 1) if r < 5 else ()
    if kind == "scalar" or r == 0:
        return ()
    if kind == "last":
        return (shape[-1],)
    if kind == "same":
        return tuple(shape)
    if kind == "leading1":
        return (1,) * (r - 1) + (shape[-1],)
    if kind == "first_only":
        return (shape[0],) + (1,) * (r - 1)
    return tuple(shape[1:])


# ops that numpy and onnxruntime both compute correctly rounded (IEEE): a value computed only with
# these is bitwise the same everywhere, so it may go through a float16 / integer Cast without a
# one-ulp difference upstream turning into a one-half-ulp-of-float16 (or 1.0) difference downstream
EXACT_OPS = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Relu", "Where", "Clip", "Sqrt", "Cast",
             "PRelu", "Greater", "Less", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Sum", "Reciprocal",
             "Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Concat", "Gather",
             "Expand", "Tile", "Split", "Dropout"}


def is_exact(g: GraphBuilder, name: str, _memo=None) -> bool:
    """Whether ``name`` is computed from inputs and constants with EXACT_OPS only."""
    if name in g.feeds or any(t.name == name for t in g.inits):
        return True
    producers = {o: n for n in g.nodes for o in n.output}
    memo = {} if _memo is None else _memo

    def walk(v):
        if v in memo:
            return memo[v]
        n = producers.get(v)
        ok = n is None or (n.op_type in EXACT_OPS and all(walk(i) for i in n.input if i))
        memo[v] = ok
        return ok

    return walk(name)


class Chain:
    def __init__(self, g: GraphBuilder, x: str, bound=5.0):
        self.g = g
        self.vals = [x]
        self.bound = {x: bound}

    def exact_operand(self, a):
        """``a`` if it is exact, else the latest exact value, else None."""
        for v in [a] + self.vals[::-1]:
            if is_exact(self.g, v):
                return v
        return None

    def add(self, name, bound):
        if bound > 1e4:
            name, bound = self.g.unary("Tanh", name), 1.0
        self.vals.append(name)
        self.bound[name] = bound
        return name

    def operand(self, key):
        # recent values are likelier: a chain, with some fan-in from earlier values
        idx = self.g.c.choose(key, [-1, -2, 0, -3])
        idx = max(-len(self.vals), idx) if idx < 0 else idx
        return self.vals[idx]

    def constant(self, shape_of, key, low=-1.5, high=1.5, positive=False):
        g = self.g
        shp = _bshape(g, g.shape(shape_of), key)
        v = g.rng.uniform(0.5 if positive else low, high, shp)
        if not positive:
            v = np.where(np.abs(v) < 0.1, 0.3, v)
        name = g.const(v.astype(np.float32))
        self.bound[name] = float(np.max(np.abs(v))) if v.size else 1.0
        return name

    def second(self, a, key):
        """Another operand for a binary op: an earlier value or a broadcasting constant."""
        g = self.g
        if g.c.choose(key + ".src", ["const", "value"]) == "value" and len(self.vals) > 1:
            b = self.operand(key + ".which")
            return b
        return self.constant(a, key + ".shape")

    def positive(self, a, c=0.5):
        g = self.g
        p = g.binary("Add", g.unary("Abs", a), g.const(np.float32(c)))
        self.bound[p] = self.bound[a] + c
        return p


def pointwise_block(g: GraphBuilder, x: str, n_ops=None) -> str:
    c = g.c
    ch = Chain(g, x)
    if c.flag("pw.second_input"):
        shp = _bshape(g, g.shape(x), "pw.second_shape")
        ch.vals.append(g.input(shp, prefix="y"))
        ch.bound[ch.vals[-1]] = 5.0
    n = n_ops or c.integer("pw.n_ops", 2, 8)
    extra_outputs = []
    for step in range(n):
        op = c.choose("pw.op", OPS)
        a = ch.operand("pw.a")
        if op in ("Cast16", "CastInt", "IntChain", "CastBool"):
            a = ch.exact_operand(a)
            if a is None:
                op, a = "Neg", ch.vals[-1]
        ba = ch.bound[a]
        if op in ("Add", "Sub", "Mul", "Max", "Min"):
            b = ch.second(a, "pw.b")
            y = g.binary(op, *((a, b) if c.flag("pw.order") else (b, a)))
            nb = ch.bound[b]
            ch.add(y, ba * nb if op == "Mul" else ba + nb)
        elif op == "Div":
            den = c.choose("pw.div_den", ["guarded_value", "const"])
            if den == "const":
                b = ch.constant(a, "pw.div_shape", positive=True)
                y = g.binary("Div", a, b)
                ch.add(y, ba / 0.5)
            else:
                b = ch.positive(ch.operand("pw.b.which"))
                y = g.binary("Div", a, b)
                ch.add(y, ba / 0.5)
        elif op == "Pow":
            e = c.choose("pw.exponent", EXPONENTS)
            if e in ("int2", "int3"):
                y = g.binary("Pow", a, g.const(np.int64(int(e[-1])), np.int64))
                ch.add(y, ba ** int(e[-1]))
            elif e == "tensor":  # per-element exponents in [0.5, 2] of a positive base
                base = ch.positive(a, 0.1)
                ex = g.const(g.rng.uniform(0.5, 2.0, _bshape(g, g.shape(a), "pw.exp_shape")).astype(np.float32))
                ch.add(g.binary("Pow", base, ex), (ba + 1) ** 2)
            elif float(e).is_integer() and e > 0:
                ch.add(g.binary("Pow", a, g.const(np.float32(e))), ba ** e)
            else:
                base = ch.positive(a, 0.25)
                ch.add(g.binary("Pow", base, g.const(np.float32(e))), (ba + 1) ** max(e, 0) + 4 ** max(-e, 0))
        elif op == "PRelu":
            slope = g.const(g.rng.uniform(-0.5, 0.5, _bshape(g, g.shape(a), "pw.prelu_shape", True)).astype(np.float32))
            ch.add(g.binary("PRelu", a, slope), ba)
        elif op in ("Sqrt", "Log"):
            ch.add(g.unary(op, ch.positive(a, 0.1)), np.sqrt(ba + 1) if op == "Sqrt" else np.log(ba + 1) + 3)
        elif op == "Reciprocal":
            ch.add(g.unary(op, ch.positive(a, 0.5)), 2.0)
        elif op == "Exp":
            t = g.unary("Tanh", a) if ba > 3 else a
            ch.add(g.unary("Exp", t), float(np.exp(min(ba, 3))))
        elif op in UNARY:
            bound = {"Neg": ba, "Abs": ba, "Relu": ba, "Softplus": ba + 1}.get(op, 1.0)
            ch.add(g.unary(op, a), bound)
        elif op == "Clip":
            lo, hi = sorted(g.rng.uniform(-2, 2, 2).round(2))
            ch.add(g.node("Clip", [a, g.const(np.float32(lo)), g.const(np.float32(hi + 0.1))], g.shape(a)), 2.2)
        elif op == "Where":
            b = ch.second(a, "pw.wb")
            cond_kind = c.choose("pw.cond", ["greater", "less_const", "const_bool", "not", "and", "or_xor"])
            if cond_kind == "const_bool":
                cond = g.const(g.rng.random(_bshape(g, g.shape(a), "pw.cond_shape")) < 0.5, np.bool_)
            else:
                other = ch.constant(a, "pw.cmp_shape") if cond_kind == "less_const" else ch.operand("pw.cmp")
                cond = g.binary("Less" if cond_kind == "less_const" else "Greater", a, other, np.bool_)
                if cond_kind == "not":
                    cond = g.unary("Not", cond)
                elif cond_kind in ("and", "or_xor"):
                    c2 = g.binary("GreaterOrEqual", ch.operand("pw.cmp2"), g.const(np.float32(0.2)), np.bool_)
                    cond = g.binary("And" if cond_kind == "and" else c.choose("pw.logic", ["Or", "Xor"]), cond, c2,
                                    np.bool_)
            shape = np.broadcast_shapes(g.shape(cond), g.shape(a), g.shape(b))
            y = g.node("Where", [cond, a, b] if c.flag("pw.where_order") else [cond, b, a], shape)
            ch.add(y, max(ba, ch.bound[b]))
            if c.flag("pw.bool_output"):
                extra_outputs.append(cond)
        elif op == "Cast16":  # float16 round trip, with arithmetic done in float16
            if ba > 1e3:
                a = g.unary("Tanh", a)
            h = g.node("Cast", [a], g.shape(a), np.float16, to=TensorProto.FLOAT16)
            # no float16 arithmetic here: onnxruntime's CPU provider runs float16 Mul/Add in float32
            # between inserted Casts that it then elides, so its results are not float16-rounded
            if c.flag("pw.half_output"):
                extra_outputs.append(h)
            ch.add(g.node("Cast", [h], g.shape(h), np.float32, to=TensorProto.FLOAT), 1.5 * min(ba, 1e3))
        elif op == "Cast64":
            d = g.node("Cast", [a], g.shape(a), np.float64, to=TensorProto.DOUBLE)
            d = g.binary("Mul", d, g.const(np.float64(0.75), np.float64))
            ch.add(g.node("Cast", [d], g.shape(d), np.float32, to=TensorProto.FLOAT), ba)
        elif op == "CastInt":  # truncation towards zero
            s = g.binary("Mul", a, g.const(np.float32(3.0)))
            t = g.node("Cast", [s], g.shape(s), np.int32, to=TensorProto.INT32)
            ch.add(g.node("Cast", [t], g.shape(t), np.float32, to=TensorProto.FLOAT), 3 * ba + 1)
        elif op == "CastBool":
            cond = g.binary("Greater", a, ch.constant(a, "pw.cb_shape"), np.bool_)
            f = g.node("Cast", [cond], g.shape(cond), np.float32, to=TensorProto.FLOAT)
            ch.add(g.binary("Mul", f, a), ba)
        elif op == "IntChain":  # int64 arithmetic between casts
            s = g.binary("Mul", a, g.const(np.float32(4.0)))
            t = g.node("Cast", [s], g.shape(s), np.int64, to=TensorProto.INT64)
            t = g.binary("Add", g.binary("Mul", t, g.const(np.int64(3), np.int64)), g.const(np.int64(-2), np.int64))
            if c.flag("pw.int_output"):
                extra_outputs.append(t)
            ch.add(g.binary("Mul", g.node("Cast", [t], g.shape(t), np.float32, to=TensorProto.FLOAT),
                            g.const(np.float32(0.1))), 1.2 * ba + 1)
        elif op == "Variadic":
            vop = c.choose("pw.variadic", ["Sum", "Max", "Min", "Mean"])
            ins = [a, ch.second(a, "pw.v1"), ch.second(a, "pw.v2")]
            shape = np.broadcast_shapes(*(g.shape(t) for t in ins))
            ch.add(g.node(vop, ins, shape), sum(ch.bound[t] for t in ins))
        if c.flag("pw.expose") and step < n - 1:  # an intermediate also read outside the chain
            extra_outputs.append(ch.vals[-1])
    y = ch.vals[-1]
    for e in extra_outputs:
        g.output(e)
    if ch.bound[y] > 100:
        y = g.unary("Tanh", y)
    return y


# ---------------------------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------------------------
SHAPE_KINDS = ["reshape_minus1", "reshape_chain", "transpose_cancel", "transpose_pair", "transpose_between_reshapes",
               "flatten", "concat", "slice", "squeeze_unsqueeze", "expand", "identity_dropout", "split", "shape_arith",
               "noop_cast_reshape", "gather", "tile"]


def shape_block(g: GraphBuilder, x: str) -> str:
    c = g.c
    s = tuple(g.shape(x))
    r = len(s)
    kind = c.choose("shape.kind", SHAPE_KINDS)
    if kind == "reshape_minus1" and r >= 2:
        if s[-1] % 2 == 0 and c.flag("shape.split_last"):
            return g.reshape(x, [*([0] * (r - 1)), 2, -1], (*s[:-1], 2, s[-1] // 2))
        return g.reshape(x, [*s[:-2], -1], (*s[:-2], s[-2] * s[-1]))
    if kind == "reshape_chain":
        flat = g.reshape(x, [-1], (int(np.prod(s)),))
        if c.flag("shape.chain_mid"):
            flat = g.unary("Relu", flat)
        return g.reshape(flat, list(s), s)
    if kind in ("transpose_cancel", "transpose_pair") and r >= 2:
        p = list(g.rng.permutation(r))
        t = g.transpose(x, p)
        if kind == "transpose_cancel":
            return g.transpose(t, list(np.argsort(p)))
        q = list(g.rng.permutation(r))
        if c.flag("shape.between_unary"):
            t = g.unary("Neg", t)
        return g.transpose(t, q)
    if kind == "transpose_between_reshapes" and r >= 2:
        n = int(np.prod(s))
        y = g.reshape(x, [s[0], -1], (s[0], n // s[0]))
        y = g.transpose(y, [1, 0])
        return g.reshape(y, [n // s[0], s[0]], (n // s[0], s[0]))
    if kind == "flatten":
        axis = c.integer("shape.flatten_axis", 0, r)
        out = (int(np.prod(s[:axis])), int(np.prod(s[axis:])))
        return g.node("Flatten", [x], out, axis=axis - r if 0 < axis < r and c.flag("shape.flatten_neg") else axis)
    if kind == "concat" and r >= 1:
        axis = c.integer("shape.concat_axis", 0, r - 1)
        other_kind = c.choose("shape.concat_other", ["neg", "const", "self"])
        other = {"neg": lambda: g.unary("Neg", x), "self": lambda: x,
                 "const": lambda: g.bias(s)}[other_kind]()
        out = list(s)
        out[axis] *= 2
        return g.node("Concat", [x, other], out, axis=axis if c.flag("shape.concat_pos") else axis - r)
    if kind == "slice" and r >= 1:
        axis = c.integer("shape.slice_axis", 0, r - 1)
        n = s[axis]
        step = c.choose("shape.slice_step", [1, 2, -1])
        if step > 0:
            start = c.integer("shape.slice_start", 0, max(0, n - 1))
            end = c.choose("shape.slice_end", ["max", "neg1", "n"])
            end_v = {"max": 2**62, "neg1": -1, "n": n}[end]
            stop = n if end != "neg1" else n - 1
            if stop <= start:
                end_v, stop = 2**62, n
            length = len(range(start, stop, step))
        else:
            start, end_v = -1, -(2**62)
            length = n
        out = list(s)
        out[axis] = length
        return g.node("Slice", [x, g.ints([start]), g.ints([end_v]), g.ints([axis - r if c.flag("shape.slice_neg") else axis]),
                                g.ints([step])], out)
    if kind == "squeeze_unsqueeze":
        u = g.unsqueeze(x, [0, -1] if c.flag("shape.unsq_two") else [0])
        if c.flag("shape.unsq_mid"):
            u = g.unary("Abs", u)
        axes = [0, -1] if len(g.shape(u)) == r + 2 else [0]
        return g.node("Squeeze", [u, g.ints(axes)], s)
    if kind == "expand":
        u = g.unsqueeze(x, [0])
        rep = c.choose("shape.expand", [2, 3])
        e = g.node("Expand", [u, g.ints([rep] + [1] * r)], (rep, *s))
        return g.reduce("ReduceSum", e, [0], keepdims=0)
    if kind == "tile" and r >= 1:
        reps = [1] * r
        reps[-1] = 2
        return g.node("Tile", [x, g.ints(reps)], (*s[:-1], 2 * s[-1]))
    if kind == "identity_dropout":
        y = g.unary("Identity", x)
        return g.node("Dropout", [y], s)
    if kind == "split" and r >= 1 and s[-1] >= 2:
        a = s[-1] // 2
        parts = [a, s[-1] - a]
        if g.opset >= 18 and s[-1] % 2 == 0 and c.flag("shape.split_num"):
            p0, p1 = g.node("Split", [x], outputs=2, shapes=[(*s[:-1], a)] * 2, axis=-1, num_outputs=2)
        else:
            p0, p1 = g.node("Split", [x, g.ints(parts)], outputs=2,
                            shapes=[(*s[:-1], parts[0]), (*s[:-1], parts[1])], axis=r - 1)
        return g.node("Concat", [p1, p0], s, axis=-1)
    if kind == "shape_arith" and r >= 2:  # Reshape(x, Concat(Shape(x)[:-2], [-1]))
        shp = g.node("Shape", [x], (r,), np.int64)
        head = g.node("Slice", [shp, g.ints([0]), g.ints([r - 2])], (r - 2,), np.int64)
        target = g.node("Concat", [head, g.ints([-1])], (r - 1,), np.int64, axis=0)
        return g.node("Reshape", [x, target], (*s[:-2], s[-2] * s[-1]))
    if kind == "noop_cast_reshape":
        y = g.node("Cast", [x], s, to=TensorProto.FLOAT)
        y = g.reshape(y, list(s), s)
        return g.node("Expand", [y, g.ints([1] * r if r else [])], s) if r else y
    if kind == "gather" and r >= 1:
        axis = c.integer("shape.gather_axis", 0, r - 1)
        n = s[axis]
        idx = g.rng.integers(-n, n, size=c.choose("shape.gather_n", [2, 1, 3]))
        out = list(s)
        out[axis:axis + 1] = [len(idx)]
        return g.node("Gather", [x, g.ints(idx)], out, axis=axis)
    return g.unary("Neg", x)
