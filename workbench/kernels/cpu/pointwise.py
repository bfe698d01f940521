"""Fast CPU Pointwise: the fused chain's program parsed once at build, each float32 instruction a
NumPy ufunc writing into a buffer kept between runs (no temporaries, no JSON per run); a step
whose argument is a buffer of this chain that nothing reads later writes over it in place.

An instruction with a non-float32 operand, or an op without a ufunc here, runs its ONNX reference
kernel, so every program the reference runs also runs here with the same values.
"""

from __future__ import annotations

import json

import numpy as np

from ...dtypes import ONNX_CODES
from ..reference import KernelContext, get_kernel
from ._common import F32, Buffers, erf_into, sigmoid_into

_UFUNCS = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Neg": np.negative,
    "Exp": np.exp, "Tanh": np.tanh, "Sqrt": np.sqrt, "Abs": np.abs, "Max": np.maximum, "Min": np.minimum,
    "Reciprocal": np.reciprocal,
}


class _Step:
    __slots__ = ("args", "attrs", "ctx", "kernel", "out", "relu", "special", "ufunc")

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

    def __call__(self, ctx, inputs, attrs):
        rnd = self.round
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
