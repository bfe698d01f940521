"""Fast CPU Pointwise: the fused chain's program parsed once at build, each float32 instruction a
NumPy ufunc writing into a buffer kept between runs (no temporaries, no JSON per run); a step
whose argument is a buffer of this chain that nothing reads later writes over it in place.

An instruction with a non-float32 operand, or an op without a ufunc here, runs its ONNX reference
kernel, so every program the reference runs also runs here with the same values.

Where the native kernels are built and a chain is all float32 arithmetic / max / min / ReLU /
exp / tanh / sigmoid / erf over float32 inputs whose outputs have the full broadcast shape, the
whole chain runs as one native call (``_native.pointwise``) that reads the inputs and writes the
outputs once, row by row; its arithmetic rounds step by step as the ufuncs do.
"""

from __future__ import annotations

import json

import numpy as np

from ...dtypes import ONNX_CODES
from ..reference import KernelContext, get_kernel
from ._common import F32, Buffers, erf_into, sigmoid_into

try:
    from . import _native
except ImportError:  # pragma: no cover - depends on the install
    _native = None

# op -> _native.pointwise op code (binary ops first: codes 0-5)
_NATIVE_OPS = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3, "Max": 4, "Min": 5, "Relu": 6, "Neg": 7, "Exp": 8,
               "Tanh": 9, "Sigmoid": 10, "Abs": 11, "Sqrt": 12, "Reciprocal": 13, "Erf": 14}
_ARG_INPUT, _ARG_STEP, _ARG_CONST, _ARG_NONE = 0, 1, 2, 3

_UFUNCS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Neg": np.negative,
    "Exp": np.exp, "Tanh": np.tanh, "Sqrt": np.sqrt, "Abs": np.abs, "Max": np.maximum, "Min": np.minimum,
    "Reciprocal": np.reciprocal,
}


class _Step:
    __slots__ = ("args", "attrs", "ctx", "kernel", "op", "out", "relu", "special", "ufunc")

    def __init__(self, ins: dict, name: str):
        self.out = ins["out"]
        self.args = []
        for a in ins["args"]:
            if a.startswith("c:"):
                self.args.append(("c", np.asarray(float(a[2:]), dtype=F32)))  # inlined fp32 scalars
            elif a == "":
                self.args.append(("c", None))
            else:
                self.args.append(("v", a))
        op = ins["op"]
        self.op = op
        n_args = len([a for a in ins["args"] if a != ""])
        self.relu = op == "Relu"
        # float32 in-place forms of ops whose reference kernel computes in float64 or with temporaries
        self.special = op if op in ("Erf", "Sigmoid") else None
        self.ufunc = _UFUNCS.get(op) if op != "Max" and op != "Min" or n_args == 2 else None
        attrs = dict(ins.get("attrs", {}))
        if op == "Cast" and isinstance(attrs.get("to"), str):
            attrs["to"] = ONNX_CODES[attrs["to"]]
        self.attrs = attrs
        self.kernel = get_kernel("", op)
        self.ctx = KernelContext(opset=ins.get("opset", 21), n_outputs=1, name=name)


class PointwiseKernel:
    def __init__(self, layer, round_, reuse: bool):
        prog = layer.attrs["program"]
        prog = json.loads(prog) if isinstance(prog, (str, bytes)) else list(prog)
        self.steps = [_Step(ins, layer.name) for ins in prog]
        self.outputs = list(layer.attrs["outputs"])
        self.round = round_
        self.bufs = Buffers(reuse)
        # a step may write into the buffer of an argument that nothing reads later (and that is no
        # output): a chain then runs in one or two buffers that stay in cache
        uses: dict[str, int] = {}
        for st in self.steps:
            for kind, v in st.args:
                if kind == "v":
                    uses[v] = uses.get(v, 0) + 1
        self.dead_after = [[v for kind, v in st.args if kind == "v" and uses.get(v) == 1
                            and v not in self.outputs and not v.startswith("in")] for st in self.steps]
        self.plan_key = None
        self.plan: list = []
        self.native_key = None
        self.native = None

    def __call__(self, ctx, inputs, attrs):
        rnd = self.round
        if _native is not None:
            xs = [rnd(x) if rnd else x for x in inputs]
            key = tuple((x.shape, x.dtype, x.strides) if isinstance(x, np.ndarray) else None for x in xs)
            if key != self.native_key or not self.bufs.reuse:
                self.native = self._native_plan(xs)
                self.native_key = key
            if self.native is not None:
                shape, strides, consts, prog, outs, pairs = self.native
                _native.pointwise(shape, strides, tuple(xs), consts, prog, pairs)
                return [rnd(o) for o in outs] if rnd else list(outs)
        env = {f"in{i}": (rnd(x) if rnd else x) for i, x in enumerate(inputs)}
        key = tuple((x.shape, x.dtype) if isinstance(x, np.ndarray) else None for x in inputs)
        if key != self.plan_key or not self.bufs.reuse:
            self.plan = [None] * len(self.steps)
            self.plan_key = key
            planning = True
        else:
            planning = False
        with np.errstate(all="ignore"):
            for i, st in enumerate(self.steps):
                args = [v if k == "c" else env[v] for k, v in st.args]
                if planning:
                    self.plan[i] = self._out_for(i, st, args, env)
                out = self.plan[i]
                if out is None:
                    env[st.out] = np.asarray(st.kernel(st.ctx, args, st.attrs)[0])
                elif st.relu:
                    env[st.out] = np.maximum(args[0], F32.type(0), out=out)
                elif st.special == "Erf":
                    env[st.out] = erf_into(args[0], out, self.bufs.get(f"t{i}", out.shape))
                elif st.special == "Sigmoid":
                    env[st.out] = sigmoid_into(args[0], out)
                else:
                    env[st.out] = st.ufunc(*args, out=out)
        outs = [env[o] for o in self.outputs]
        return [rnd(o) for o in outs] if rnd else outs

    def _native_plan(self, xs):
        """The tables ``_native.pointwise`` runs this chain from, for inputs like ``xs``; None if
        the chain has a step it does not do, a non-float32 input, or an output smaller than the
        broadcast shape."""
        if not all(isinstance(x, np.ndarray) and x.dtype == F32 for x in xs):
            return None
        step_of, shapes, consts, prog = {}, {}, [], []
        in_shapes = {f"in{i}": x.shape for i, x in enumerate(xs)}
        for k, st in enumerate(self.steps):
            code = _NATIVE_OPS.get(st.op)
            live = [a for a in st.args if not (a[0] == "c" and a[1] is None)]
            if code is None or len(live) != (2 if code < 6 else 1) or len(live) != len(st.args):
                return None
            row, arg_shapes = [code], []
            for kind, v in live:
                if kind == "c":
                    row += [_ARG_CONST, len(consts)]
                    consts.append(float(v))
                    arg_shapes.append(())
                elif v in step_of:
                    row += [_ARG_STEP, step_of[v]]
                    arg_shapes.append(shapes[v])
                elif v in in_shapes:
                    row += [_ARG_INPUT, int(v[2:])]
                    arg_shapes.append(in_shapes[v])
                else:
                    return None
            if len(row) == 3:
                row += [_ARG_NONE, 0]
            prog.append(row)
            step_of[st.out] = k
            shapes[st.out] = np.broadcast_shapes(*arg_shapes)
        full = np.broadcast_shapes(*(x.shape for x in xs)) if xs else ()
        if any(o not in step_of or shapes[o] != full for o in self.outputs) or 0 in full:
            return None
        dims = list(full) or [1]
        table = [[s // 4 for s in np.broadcast_to(x, full).strides] or [0] for x in xs]
        # coalesce: drop unit dims, then merge a dim into the next where every input steps evenly
        keep = [d for d in range(len(dims)) if dims[d] != 1] or [len(dims) - 1]
        dims = [dims[d] for d in keep]
        table = [[row[d] for d in keep] for row in table]
        d = len(dims) - 2
        while d >= 0:
            if all(row[d] == row[d + 1] * dims[d + 1] for row in table):
                dims[d + 1] *= dims[d]
                del dims[d]
                for row in table:
                    del row[d]
            d -= 1
        if len(dims) > 8 or any(row[-1] not in (0, 1) for row in table):
            return None
        outs = [self.bufs.get(f"n{i}", full) for i in range(len(self.outputs))]
        pairs = tuple((step_of[o], buf) for o, buf in zip(self.outputs, outs))
        return (np.asarray(dims, np.int64), np.asarray(table, np.int64).reshape(len(xs), len(dims)),
                np.asarray(consts, F32), np.asarray(prog, np.int64).reshape(-1, 5), outs, pairs)

    def _out_for(self, i, st, args, env):
        """The buffer step ``i`` writes into (None: run its reference kernel), chosen on the first
        run of an input shape; later runs of that shape write into the same buffers."""
        if not ((st.ufunc is not None or st.relu or st.special) and
                all(isinstance(a, np.ndarray) and a.dtype == F32 for a in args)):
            return None
        shape = np.broadcast_shapes(*(a.shape for a in args))
        for name in self.dead_after[i] if st.special != "Erf" else ():  # erf reads x after writing out
            buf = env[name]
            if self._owned(buf) and buf.shape == shape:
                return buf
        return self.bufs.get(f"s{i}", shape)

    def _owned(self, buf) -> bool:
        return any(p is not None and p is buf for p in self.plan)
