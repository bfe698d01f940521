"""nvrtc.pointwise: one generated kernel per elementwise program.

Covers the optimizer's fused ``workbench.Pointwise`` programs (FUSED_OPS.md) and every plain ONNX
elementwise op, which becomes a one-instruction program, so there is a single code generator for
both. Inputs broadcast by index math (output shape and per-input strides are kernel arguments, so
one compiled kernel serves every shape with the same rank and broadcast pattern); inputs with the
output's shape are read at the flat index and scalars at 0. Math is fp32 for fp16/bf16/fp32.
"""

from __future__ import annotations

import math

import numpy as np

from ...core.plan import Layer
from ...dtypes import from_onnx_code
from ...ops.fused import program
from . import cuda_prelude as P
from .device import cupy
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

# op -> (float expression, generic expression or None if float-only); None as the float expression:
# the op is an activation of the fused vocabulary, written by cuda_prelude.act_expr (_activation)
UNARY = {
    "Abs": ("fabsf({0})", "({0} < 0 ? -{0} : {0})"), "Neg": ("-{0}", "-{0}"), "Exp": ("__expf({0})", None),
    "Log": ("__logf({0})", None), "Sqrt": ("sqrtf({0})", None), "Reciprocal": ("1.0f / {0}", None),
    "Erf": ("erff({0})", None), "Tanh": (None, None), "Sigmoid": (None, None),
    "Relu": (None, "({0} > 0 ? {0} : 0)"), "Ceil": ("ceilf({0})", None),
    "Floor": ("floorf({0})", None), "Round": ("rintf({0})", None), "Sin": ("sinf({0})", None),
    "Cos": ("cosf({0})", None), "Tan": ("tanf({0})", None), "Asin": ("asinf({0})", None),
    "Acos": ("acosf({0})", None), "Atan": ("atanf({0})", None), "Sinh": ("sinhf({0})", None),
    "Cosh": ("coshf({0})", None), "Asinh": ("asinhf({0})", None), "Acosh": ("acoshf({0})", None),
    "Atanh": ("atanhf({0})", None), "Sign": ("(float)(({0} > 0) - ({0} < 0))", "(({0} > 0) - ({0} < 0))"),
    "Not": (None, "!{0}"), "Softplus": (None, None), "Softsign": ("{0} / (1.0f + fabsf({0}))", None),
    "Identity": ("{0}", "{0}"), "IsNaN": ("({0} != {0})", None), "Mish": (None, None), "HardSwish": (None, None),
}
BINARY = {
    "Add": "({0} + {1})", "Sub": ("({0} - {1})"), "Mul": "({0} * {1})", "Div": "({0} / {1})",
    "Equal": "({0} == {1})", "Less": "({0} < {1})", "LessOrEqual": "({0} <= {1})", "Greater": "({0} > {1})",
    "GreaterOrEqual": "({0} >= {1})", "And": "({0} && {1})", "Or": "({0} || {1})", "Xor": "({0} != {1})",
    "BitwiseAnd": "({0} & {1})", "BitwiseOr": "({0} | {1})", "BitwiseXor": "({0} ^ {1})",
    "PRelu": "({0} < 0 ? {0} * {1} : {0})",
}
VARIADIC = ("Max", "Min", "Sum", "Mean")
ATTR_OPS = ("LeakyRelu", "Elu", "Selu", "Celu", "HardSigmoid", "Gelu", "ThresholdedRelu", "Clip", "Cast", "Pow",
            "Where", "Swish", "Mod")
OPS = set(UNARY) | set(BINARY) | set(VARIADIC) | set(ATTR_OPS)


def program_of(layer: Layer, in_dtypes: list, out_dtypes: list) -> tuple[list[dict], list[str]] | None:
    """The program a layer runs: its own for Pointwise, one instruction for an ONNX elementwise op."""
    if layer.domain == "workbench" and layer.op == "Pointwise":
        prog = program(layer.attrs)
        return prog, list(layer.attrs.get("outputs") or [prog[-1]["out"]])
    if layer.domain or layer.op not in OPS:
        return None
    args = [f"in{i}" if n else None for i, n in enumerate(layer.inputs)]
    attrs = dict(layer.attrs)
    dt = out_dtypes[0]
    if layer.op == "Clip":
        x = args[0]
        lo, hi = (args + [None, None])[1:3]
        prog, cur = [], x
        if lo is None and "min" in attrs:
            lo = f"c:{attrs['min']}"
        if hi is None and "max" in attrs:
            hi = f"c:{attrs['max']}"
        for op, bound in (("Max", lo), ("Min", hi)):
            if bound is not None:
                prog.append({"op": op, "args": [cur, bound], "out": f"t{len(prog)}", "dtype": dt})
                cur = prog[-1]["out"]
        if not prog:
            prog = [{"op": "Identity", "args": [x], "out": "t0", "dtype": dt}]
        return prog, [prog[-1]["out"]]
    if layer.op == "Cast":
        attrs = {"to": from_onnx_code(attrs["to"]) if isinstance(attrs.get("to"), int) else attrs.get("to")}
    present = [a for a in args if a is not None]
    if layer.op in ("Max", "Min", "Sum", "Mean") and len(present) == 1:
        return [{"op": "Identity", "args": present, "out": "t0", "dtype": dt}], ["t0"]
    return [{"op": layer.op, "args": present, "attrs": attrs, "out": "t0", "dtype": dt}], ["t0"]


def _activation(op: str, attrs: dict, x: str) -> str | None:
    """``op`` of ``x`` when it is an activation of the fused vocabulary (Mish and Swish: built of
    them), written by the one table of ``cuda_prelude.act_expr`` as the fused epilogues are."""
    alpha, beta = attrs.get("alpha"), attrs.get("beta")
    if op in ("Relu", "Sigmoid", "Tanh", "HardSwish", "Softplus"):
        return P.act_expr(op, {}, x)
    if op == "LeakyRelu":
        return P.act_expr(op, {} if alpha is None else {"act_alpha": alpha}, x)
    if op == "HardSigmoid":
        return P.act_expr(op, {k: v for k, v in (("act_alpha", alpha), ("act_beta", beta)) if v is not None}, x)
    if op == "Gelu":
        return P.act_expr("GeluTanh" if attrs.get("approximate", "none") == "tanh" else "Gelu", {}, x)
    if op == "Mish":
        return f"({x} * tanhf({P.act_expr('Softplus', {}, x)}))"
    if op == "Swish":
        return f"({x} * {P.act_expr('Sigmoid', {}, f'{P.literal(1.0 if alpha is None else alpha)} * {x}')})"
    return None


def _expr(ins: dict, types: dict, out_dtype: str) -> str:
    op, args, attrs = ins["op"], ins["args"], ins.get("attrs") or {}
    a = [types[x][0] for x in args]
    fl = P.compute(types[args[0]][1]) in ("float", "double") if args else True
    if op == "Cast":
        return P.round_to(attrs.get("to", out_dtype), a[0])
    act = _activation(op, attrs, a[0]) if a and (fl or op in ATTR_OPS) else None
    if act is not None:
        return act
    if op in UNARY:
        f, g = UNARY[op]
        tmpl = f if fl else g
        if tmpl is None:
            raise NotImplementedError(f"{op} on integer/bool tensors")
        return tmpl.format(a[0])
    if op in BINARY:
        return BINARY[op].format(*a[:2])
    if op in ("Max", "Min"):
        fn = ("wb_fmax" if op == "Max" else "wb_fmin") if fl else None
        acc = a[0]
        for b in a[1:]:
            acc = f"{fn}({acc}, {b})" if fn else f"(({acc}) {'>' if op == 'Max' else '<'} ({b}) ? ({acc}) : ({b}))"
        return acc
    if op in ("Sum", "Mean"):
        s = "(" + " + ".join(a) + ")"
        return f"({s} / {len(a)}.0f)" if op == "Mean" else s
    if op == "Where":
        return f"({a[0]} ? {a[1]} : {a[2]})"
    if op == "Pow":
        return f"(({a[1]}) == 2.0f ? ({a[0]}) * ({a[0]}) : powf({a[0]}, {a[1]}))" if fl else f"(decltype({a[0]}))powf((float){a[0]}, (float){a[1]})"
    if op == "Mod":
        return f"fmodf({a[0]}, {a[1]})" if fl or attrs.get("fmod") else f"(({a[0]}) % ({a[1]}) + (({a[0]}) % ({a[1]}) != 0 && ((({a[0]}) < 0) != (({a[1]}) < 0))) * ({a[1]}))"
    x = a[0]
    alpha = attrs.get("alpha")
    if op == "Elu":
        return f"({x} < 0.0f ? {P.literal(1.0 if alpha is None else alpha)} * (__expf({x}) - 1.0f) : {x})"
    if op == "Celu":
        al = P.literal(1.0 if alpha is None else alpha)
        return f"(fmaxf(0.0f, {x}) + fminf(0.0f, {al} * (__expf({x} / {al}) - 1.0f)))"
    if op == "Selu":
        al = P.literal(attrs.get("alpha", 1.67326319217681884765625))
        ga = P.literal(attrs.get("gamma", 1.05070102214813232421875))
        return f"({ga} * ({x} <= 0.0f ? {al} * (__expf({x}) - 1.0f) : {x}))"
    if op == "ThresholdedRelu":
        return f"({x} > {P.literal(1.0 if alpha is None else alpha)} ? {x} : 0.0f)"
    raise NotImplementedError(op)


def generate(prog: list[dict], outs: list[str], in_kinds: list[str], in_dtypes: list[str], out_dtypes: list[str],
             rank: int, name: str) -> str:
    """CUDA source of one program. ``in_kinds[k]``: "full" (same shape as the output), "scalar" or "bcast"."""
    params = [f"{P.storage(d)}* __restrict__ y{j}" for j, d in enumerate(out_dtypes)]
    params += [f"const {P.storage(d)}* __restrict__ x{k}" for k, d in enumerate(in_dtypes)]
    params += ["const int* __restrict__ meta", "int n"]
    body = []
    bslots = [k for k, kind in enumerate(in_kinds) if kind == "bcast"]
    for s, k in enumerate(bslots):
        body.append(f"    int o{k} = 0;")
    if bslots:
        body.append("    int rem = i;")
        body.append(f"    #pragma unroll\n    for (int d = {rank - 1}; d >= 0; --d) {{ int c = rem % meta[d]; rem /= meta[d];")
        for s, k in enumerate(bslots):
            body.append(f"      o{k} += c * meta[{rank} + {s * rank} + d];")
        body.append("    }")
    types: dict[str, tuple[str, str]] = {}
    for k, (kind, d) in enumerate(zip(in_kinds, in_dtypes)):
        if kind.startswith("nchw:"):  # NCHW operand of an NHWC output: i walks N, H, W, C
            c_, h_, w_ = (int(v) for v in kind[5:].split(","))
            body.append(f"    int q{k} = i / {c_}; int qc{k} = i - q{k} * {c_}; int qw{k} = q{k} % {w_}; q{k} /= {w_};"
                        f" int qh{k} = q{k} % {h_}; int qn{k} = q{k} / {h_};")
            body.append(f"    int o{k} = ((qn{k} * {c_} + qc{k}) * {h_} + qh{k}) * {w_} + qw{k};")
            kind = "bcast"
        idx = {"full": "i", "scalar": "0", "bcast": f"o{k}"}[kind]
        body.append(f"    {P.compute(d)} v{k} = {P.load(d, f'x{k}[{idx}]')};")
        types[f"in{k}"] = (f"v{k}", d)
    for ins in prog:
        for arg in ins["args"]:
            if arg.startswith("c:"):
                types[arg] = (P.literal(float(arg[2:])), "float32")
        d = ins.get("dtype") or types[ins["args"][0]][1]
        ct = P.compute(d) if P.supported(d) else "float"
        body.append(f"    {ct} {ins['out']} = ({ct})({_expr(ins, types, d)});")
        types[ins["out"]] = (ins["out"], d)
    for j, (t, d) in enumerate(zip(outs, out_dtypes)):
        body.append(f"    y{j}[i] = {P.store(d, types[t][0])};")
    return (P.PRELUDE + f'extern "C" __global__ void {name}({", ".join(params)}) {{\n'
            f"  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {{\n"
            + "\n".join(body) + "\n  }\n}\n")


def _strides(shape, out_shape) -> list[int]:
    """Element strides of ``shape`` broadcast to ``out_shape`` (0 on broadcast axes)."""
    shape = [1] * (len(out_shape) - len(shape)) + list(shape)
    st, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        st[d] = 0 if shape[d] == 1 and out_shape[d] != 1 else acc
        acc *= shape[d]
    return st


class PointwiseTactic(TacticBase):
    name = "nvrtc.pointwise"

    def _io(self, layer: Layer):
        return list(layer.input_specs), list(layer.output_specs)

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        ins, outs = self._io(layer)
        if any(not s.is_static or not P.supported(s.dtype) for s in ins + outs):
            return "needs static shapes and numeric dtypes"
        prog = program_of(layer, [s.dtype for s in ins], [s.dtype for s in outs])
        if prog is None:
            return f"{layer.op} is not an elementwise op"
        out_shape = outs[0].shape
        if any(len(s.shape) > len(out_shape) for s in ins) or math.prod(out_shape) >= 2**31:
            return "shape outside the kernel's indexing range"
        if layer.attrs.get("channels_last") and any(math.prod(s.shape) != 1 and list(s.shape) != list(out_shape)
                                                    for s in ins):
            return "channels-last (NHWC) tensors with a broadcast operand"
        try:
            self._source(layer, "probe")
        except NotImplementedError as exc:
            return f"unsupported instruction {exc}"
        return None

    def configs(self, layer, precision, gpu):
        return [{"block": 256}]

    def _source(self, layer: Layer, name: str):
        ins, outs = self._io(layer)
        prog, out_names = program_of(layer, [s.dtype for s in ins], [s.dtype for s in outs])
        out_shape = list(outs[0].shape)
        kinds = ["scalar" if math.prod(s.shape) == 1 else "full" if list(s.shape) == out_shape else "bcast" for s in ins]
        in_l, out_l = layer.attrs.get("in_layouts") or [], layer.attrs.get("out_layouts") or []
        # inputs stored NCHW are read transposed (the converters of builder/layout.py)
        if out_l and out_l[0] == "nhwc":
            for k, lay in enumerate(in_l[:len(kinds)]):
                if lay == "nchw" and kinds[k] == "full":
                    kinds[k] = "nchw:" + ",".join(str(v) for v in out_shape[1:4])
        src = generate(prog, out_names, kinds, [s.dtype for s in ins], [s.dtype for s in outs], max(len(out_shape), 1), name)
        meta = list(out_shape) or [1]
        for s, k in zip(ins, kinds):
            if k == "bcast":
                meta += _strides(s.shape, out_shape)
        return src, meta

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        cp = cupy()
        src, meta = self._source(layer, "wb_pointwise")
        out: dict[str, bytes] = {}
        fn = get_function(src, "wb_pointwise", gpu.arch, binaries, out)
        meta_d = cp.asarray(np.asarray(meta, dtype=np.int32))
        n = int(math.prod(layer.output_specs[0].shape))
        block = int(config.get("block", 256))
        grid = max(1, min((n + block - 1) // block, gpu.sm_count * 16))

        def run(inputs, outputs, workspace, stream):
            args = [o for o in outputs] + [x for x in inputs if x is not None] + [meta_d, np.int32(n)]
            fn((grid,), (block,), tuple(args), stream=stream)

        # elementwise over flat indices: the runtime may hand it a graph input straight from the caller
        return BuiltKernel(run=run, binaries=out, reads_inputs_directly=True)


TACTICS = [PointwiseTactic()]
