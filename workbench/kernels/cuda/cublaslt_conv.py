"""1x1 convolutions as cuBLASLt GEMMs: ``cublaslt.conv1x1`` (fp16 / bf16) and
``cublaslt.conv1x1_fp8``.

A convolution with a 1x1 kernel, stride 1, no padding and one group, on channels-last tensors, is
a GEMM over the pixels: X [N*H*W, C] times W^T [C, K] is Y [N*H*W, K]. The channels-last buffers
are the GEMM's row-major operands as they are (no im2col, no copy), and a FusedConv's residual Z
[N*H*W, K] is cuBLASLt's C (beta 1), its bias and ReLU / GELU cuBLASLt's epilogue:

    Y = act(alpha * X W^T + Z + bias)

Why a second way to run them: cuDNN plans a convolution whose graph adds a residual through its
runtime-fusion engines, which run ResNet-50's block-last 1x1 convolutions well below the plain
convolution's speed (``bench/probe_conv_epilogue.py`` on an H100, batch 32, 64x56x56 -> 256: 27.7
us without the residual, 52.6 us with it at fp16; 84 to 102 us for the fp8 graph with a copy of
codes). cuBLASLt adds C in the GEMM's own epilogue. The autotuner times both sources and keeps
the faster per layer.

* fp16 / bf16 (``cublaslt.conv1x1``): A, B, C, D and the bias in the layer's type, float32 compute
  and scale, the bias rounded once to the layer's type (as the fp16 layer's own constants are).
* fp8 (``cublaslt.conv1x1_fp8``, ``cublaslt_quant._Gemm``'s direct form): X as e4m3 codes, read as
  they are or quantized first by the NVRTC quantize launch, the weight's per-tensor e4m3 codes,
  alpha = q_input_scale * q_weight_scale as one float32, FAST_ACCUM off and on (both timed, as
  for ``cublaslt_quant.fp8``'s direct form), the bias float16. The residual is float16: a
  residual of codes (``q_residual_scale``) stays cuDNN's, since cuBLASLt's C is float16 for an
  FP8 GEMM. The output is float16, or codes (``q_output_scale``; D scale 1 / q_output_scale,
  saturating), or float16 plus a copy of codes (``q_copy_scale``) written by one quantize launch
  over the float16 output: codes of the float16-rounded value where the emulation quantizes the
  float32 one, which differ only where that rounding crosses an e4m3 rounding boundary.

The numbers match the CPU emulation as ``cublaslt_quant``'s direct form does (the same scales and
rounding, float32 sums in another order, the bias rounded to float16 once).
"""

from __future__ import annotations

import numpy as np

from ...core import quant
from ...core.plan import Layer
from ..reference.quantized import check_layer
from .common import CONV_OPS, activation_of, as_device, check_io, conv_geometry, has_input, ptr, require_activation, \
    require_op, stream_ptr
from .cublaslt import _require_nvmath
from .cudnn_conv import _layouts
from .cublaslt_quant import _ALIGN, _DIRECT_ACTS, QuantizeLaunch, _coded_io, _Gemm
from .tactic import BuiltKernel, GpuInfo, TacticBase

_CODE = quant.ELEMENT["fp8"]
_ALGOS: dict = {}  # problem signature -> heuristic records (hex)
_HALF = {"fp16": "float16", "bf16": "bfloat16"}


def _geometry(layer: Layer) -> dict | str:
    """{m, n, k, bias, residual, epilogue} of a 1x1 convolution as a GEMM, or why it is not one."""
    why = require_op(layer, CONV_OPS, "a convolution") or require_activation(layer)
    if why:
        return why
    g = conv_geometry(layer)
    if isinstance(g, str):
        return g
    if g["group"] != 1:
        return f"a grouped convolution ({g['group']} groups)"
    if any(v != 1 for v in g["k"] + g["strides"]) or any(g["begin"] + g["end"]):
        return (f"a GEMM only for 1x1 kernels with stride 1 and no padding (kernel {g['k']}, strides "
                f"{g['strides']}, pads {g['begin'] + g['end']})")
    a = layer.attrs
    ins, outs = a.get("in_layouts"), a.get("out_layouts")
    xl, zl, yl = _layouts(layer, {})
    lays = {"X": xl, "Y": yl} | ({"the residual": zl} if has_input(layer, 3) else {})
    # before the layout pass (precision assignment asks first) a 2-D convolution is taken
    # channels-last, the layout the pass gives its tensors, as ``cudnn.conv_fp8`` takes it
    if not ins and not outs and len(g["sp"]) == 2:
        lays = dict.fromkeys(lays, "nhwc")
    if any(v != "nhwc" for v in lays.values()):
        return f"channels-last tensors only ({', '.join(f'{k} {v}' for k, v in lays.items())})"
    act, _ = activation_of(layer)
    if act not in _DIRECT_ACTS:
        return f"no cuBLASLt epilogue for activation {act!r}"
    bias = has_input(layer, 2)
    if bias:
        b = layer.aligned_input_specs()[2]
        if b is None or b.shape is None or int(np.prod(b.shape)) != g["m"]:
            return f"a bias of shape {None if b is None else b.shape}, not one value per output channel"
    base = _DIRECT_ACTS[act]
    epilogue = (f"{base}_BIAS" if base else "BIAS") if bias else (base or "DEFAULT")
    m = int(g["n"] * np.prod(g["sp"]))
    return {"m": m, "n": g["m"], "k": g["c"], "bias": bias, "residual": has_input(layer, 3), "epilogue": epilogue}


def _fp8_problem(layer: Layer) -> dict | str:
    """The geometry plus what the fp8 form reads and writes, or why it cannot run the layer."""
    why = check_layer(layer, "fp8")
    if why:
        return why
    g = _geometry(layer)
    if isinstance(g, str):
        return g
    a = layer.attrs
    if not int(a.get("q_weight_const", 1)):
        return "the weight is an activation: quantized constant weights only"
    if int(a.get("q_input_zero_point", 0)):
        return "fp8 has no zero point"
    if np.asarray(a["q_weight_scale"]).size != 1:
        return "per-channel weight scales: cuBLASLt's FP8 GEMM takes one weight scale"
    if a.get("q_residual_scale") is not None:
        return "a quantized residual (q_residual_scale): cuBLASLt's C is float16 for an FP8 GEMM"
    odd = [f"{d}={g[k]}" for d, k in (("M", "m"), ("N", "n"), ("K", "k")) if g[k] % 16]
    if odd:
        return f"cuBLASLt's fp8 GEMM needs M, N, K multiples of 16 ({', '.join(odd)})"
    specs = layer.aligned_input_specs()
    x, y = specs[0], layer.output_specs[0]
    why = _coded_io(layer, x, y, _CODE)  # codes in / out with the layer's own scales
    if why:
        return why
    if x.dtype not in ("float16", "float32", _CODE):
        return f"the input is {x.dtype}: float16, float32 or {_CODE} codes"
    if g["residual"] and specs[3].dtype != "float16":
        return f"the residual is {specs[3].dtype}: cuBLASLt's C is float16 for an FP8 GEMM"
    if g["bias"] and specs[2].dtype != "float32":
        return "float32 bias only"
    if y.dtype not in ("float16", _CODE):
        return f"the output is {y.dtype}: the GEMM writes float16 or {_CODE} codes"
    codes = quant.coded_outputs(layer)
    if isinstance(codes, str):
        return codes
    if codes["copy"] not in (None, "fp8"):
        return f"a copy of {codes['copy']} codes"
    return dict(g, x_coded=x.dtype == _CODE, x_dt=x.dtype, y_coded=y.dtype == _CODE, copy=codes["copy"] is not None)


def _records(precision: str, p: dict, fast: bool) -> list[str]:
    sig = (precision, p["m"], p["n"], p["k"], p["epilogue"], p.get("y_coded", False), p["residual"], fast)
    if sig not in _ALGOS:
        try:
            plan = _Gemm(precision, p["m"], p["n"], p["k"], direct=p["epilogue"], coded=p.get("y_coded", False),
                         fast=fast, residual=p["residual"])
            _ALGOS[sig] = [r.tobytes().hex() for r in plan.records]
        except Exception:  # noqa: BLE001 - no algorithm for this form: the other configs stand
            _ALGOS[sig] = []
    return _ALGOS[sig]


class _Conv1x1(TacticBase):
    """What both tactics share: configs (cuBLASLt's heuristic algorithms), the launch."""

    supports_cost = 1  # asks cuBLASLt's heuristic

    def _problem(self, layer: Layer, precision: str) -> dict | str:
        raise NotImplementedError

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        p = self._problem(layer, precision)
        out = []
        for fast in ((False, True) if precision == "fp8" else (False,)):
            out += [{"algo": i, "record": rec} | ({"fast_accum": 1} if fast else {})
                    for i, rec in enumerate(_records(precision, p, fast))]
        return out

    def _launch(self, layer, precision, config, p, w, alpha, bias, quantize, copy) -> BuiltKernel:
        """The GEMM (after ``quantize``, the input's quantize launch, if any; before ``copy``, the
        copy of codes' quantize launch, if any) as one capturable closure."""
        m, n = p["m"], p["n"]
        coded = p.get("y_coded", False)
        gemm = _Gemm(precision, m, n, p["k"], record_hex=config["record"], direct=p["epilogue"], coded=coded,
                     fast=bool(config.get("fast_accum")), residual=p["residual"])
        gemm.alpha = np.array([alpha], np.float32)
        if bias is not None:
            gemm.set_bias(bias.data.ptr)
        if coded:
            gemm.set_output_scale(layer.attrs["q_output_scale"])
        qa_bytes = quantize.bytes if quantize is not None else 0
        # an e4m3 D without a residual: C (float16, never read: beta 0) in the workspace
        c_bytes = -(-m * n * 2 // _ALIGN) * _ALIGN if coded and not p["residual"] else 0
        lt_ws = int(gemm.records[0]["workspace_size"])
        lt, handle, desc = gemm.lt, gemm.handle, gemm.desc
        alpha_p, beta_p, algo_p, w_p = gemm.alpha.ctypes.data, gemm.beta.ctypes.data, gemm.records.ctypes.data, ptr(w)
        residual = p["residual"]

        def run(inputs, outputs, workspace, stream):
            base = -(-ptr(workspace) // _ALIGN) * _ALIGN
            x = ptr(inputs[0])
            if quantize is not None:
                quantize(inputs[0], base, stream)
                x = base
            y = ptr(outputs[0])
            c = ptr(inputs[3]) if residual else (base + qa_bytes if c_bytes else y)
            lt.matmul(handle, desc, alpha_p, w_p, gemm.a_l, x, gemm.b_l, beta_p, c, gemm.c_l, y, gemm.d_l, algo_p,
                      base + qa_bytes + c_bytes if lt_ws else 0, lt_ws, stream_ptr(stream))
            if copy is not None:
                copy(outputs[0], ptr(outputs[-1]), stream)

        out_dt = layer.output_specs[0].dtype
        info = {"algorithm": int(config.get("algo", 0)), "workspace_bytes": lt_ws,
                "epilogue": f"cuBLASLt {p['epilogue']}{' + residual (C)' if residual else ''}, {out_dt} out"
                            + (" + a copy of codes" if copy is not None else "")
                            + (", fast accumulation" if config.get("fast_accum") else ""),
                "gemm": f"M={m} (pixels) N={n} K={p['k']}"}
        return BuiltKernel(run=run, workspace_bytes=_ALIGN + qa_bytes + c_bytes + lt_ws, info=info,
                           keepalive=(gemm, w, bias))


class CublasLtConv1x1(_Conv1x1):
    """``cublaslt.conv1x1``: fp16 / bf16 (see the module doc)."""

    name = "cublaslt.conv1x1"

    def _problem(self, layer: Layer, precision: str) -> dict | str:
        if precision not in _HALF:
            return f"runs fp16 / bf16 layers only, not {precision}"
        return check_io(layer, precision, inputs=[0, 3]) or _geometry(layer)

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        why = _require_nvmath()
        if why:
            return why
        p = self._problem(layer, precision)
        if isinstance(p, str):
            return p
        return None if _records(precision, p, False) else "cuBLASLt offers no algorithm for this GEMM"

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        p = self._problem(layer, precision)
        if isinstance(p, str):
            raise ValueError(p)
        dt = _HALF[precision]
        w = as_device(weights[layer.inputs[1]], dt).reshape(p["n"], p["k"])  # [K, C, 1, 1]: the TN GEMM's A
        bias = None
        if p["bias"]:
            if layer.inputs[2] not in weights:
                raise ValueError("the bias must be a constant (cuBLASLt's epilogue reads it at build's address)")
            bias = as_device(weights[layer.inputs[2]], dt).reshape(-1)
        return self._launch(layer, precision, config, p, w.copy(), 1.0, bias, None, None)


class CublasLtConv1x1Fp8(_Conv1x1):
    """``cublaslt.conv1x1_fp8`` (see the module doc)."""

    name = "cublaslt.conv1x1_fp8"
    formats = ("fp8",)
    writes_codes = ("output", "copy")

    def _problem(self, layer: Layer, precision: str) -> dict | str:
        return "runs fp8 layers only" if precision != "fp8" else _fp8_problem(layer)

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if precision != "fp8":
            return "runs fp8 layers only"
        if gpu is not None and gpu.sm < 89:
            return f"FP8 tensor cores need sm_89 or newer ({gpu.arch})"
        why = _require_nvmath()
        if why:
            return why
        p = _fp8_problem(layer)
        if isinstance(p, str):
            return p
        return None if _records("fp8", p, False) else "cuBLASLt offers no fp8 algorithm for this GEMM"

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415

        p = _fp8_problem(layer)
        if isinstance(p, str):
            raise ValueError(p)
        a = layer.attrs
        w = weights[layer.inputs[1]]
        w = cp.ascontiguousarray((w.view(cp.uint8) if w.dtype != cp.uint8 else w).reshape(p["n"], p["k"]))
        alpha = np.float32(quant.output_scale(a["q_input_scale"], np.asarray(a["q_weight_scale"], np.float32))
                           .reshape(-1)[0])
        bias = None
        if p["bias"]:
            if layer.inputs[2] not in weights:
                raise ValueError("the bias must be a constant (cuBLASLt's epilogue reads it at build's address)")
            b32 = np.asarray(cp.asnumpy(cp.asarray(weights[layer.inputs[2]])), np.float32).reshape(-1)
            bias = cp.asarray(b32.astype(np.float16))
        out: dict[str, bytes] = {}
        quantize = None
        if not p["x_coded"]:
            quantize = QuantizeLaunch("fp8", p["x_dt"], p["m"] * p["k"], a["q_input_scale"], 0, gpu, binaries, out,
                                      name=f"wb_quant_fp8_{p['x_dt']}")
        copy = None
        if p["copy"]:
            copy = QuantizeLaunch("fp8", "float16", p["m"] * p["n"], a["q_copy_scale"], 0, gpu, binaries, out,
                                  name="wb_quant_fp8_float16")
        kern = self._launch(layer, precision, config, p, w, float(alpha), bias, quantize, copy)
        kern.binaries = out
        kern.info["quantize_launches"] = int(quantize is not None) + int(copy is not None)
        return kern


TACTICS = [CublasLtConv1x1(), CublasLtConv1x1Fp8()]
