"""int8 and fp8 GEMM on the GPU: cuBLASLt's integer and FP8 tensor-core GEMMs through nvmath-python's
low-level bindings (``nvmath.bindings.cublasLt``; its high-level Matmul takes no FP8 CuPy arrays and
has no int8 path), computing what the CPU emulation computes (``core/quant.py``, the reference
kernels of ``kernels/reference/quantized.py``).

A quantized Gemm / FusedGemm / MatMul layer reads float16 or float32 activations (float16 where its
neighbours run at fp16: no Cast layers around it), holds its weight as an int8 or e4m3 plan
constant, and writes float16 or float32. One run is three launches on the layer's stream, all
capturable:

1. **quantize** (NVRTC, four elements per thread): ``x / scale`` in float32 (``__fdiv_rn``: correctly rounded, as NumPy's
   division), then int8: round half to even, plus the zero point, NaN to the zero point, saturated
   to [-128, 127]; fp8: clipped to +-448 and rounded to nearest even by ``cvt.rn.satfinite.e4m3x2``
   (NaN stays NaN), into the layer's workspace;
2. **GEMM** (cuBLASLt, the "TN" form Hopper's int8 and FP8 kernels take: the weight as [N, K], the
   quantized activations as [M, K], both K-contiguous): int8 x int8 -> int32 with int32 compute
   (exact, as the CPU's float64 products; the precision step keeps layers whose accumulator could
   overflow in float), e4m3 x e4m3 -> float32 with float32 compute and FAST_ACCUM off, alpha 1;
3. **epilogue** (NVRTC, four elements of a row per thread): for an int8 activation with a zero point, ``acc - zp * sum_k w[n, k]``
   (the integer-domain correction, in 64 bits), then ``float32(acc) * alpha_n`` (``alpha_n =
   float32(scale_in) * float32(scale_w_n)``, rounded once at build), the Gemm's own alpha, the bias
   (times beta), the activation, each step rounded as the CPU rounds it (``__fmul_rn`` /
   ``__fadd_rn``: no contraction into FMAs), stored in the output's type (float16: rounded once,
   as the storage of the fp16 layer reading it rounds it in the CPU emulation).

Quantized tensors between layers (``core/quant.py``): an input of codes (int8 / e4m3, its spec's
scale the layer's input scale) is the GEMM's operand as it is, with no quantize launch; an output
of codes (``q_output_scale``) is quantized by the epilogue as step 1 quantizes, four codes to a
word. The direct fp8 form writes e4m3 codes itself: cuBLASLt's D scale is ``1 / q_output_scale``
(one float32 rounding more than the division), its conversion saturating. The direct form is
also timed with FAST_ACCUM on (the partial sums stay in the FP8 MMA's own precision: on an H100 it
saves about 15% of a BERT GEMM with a bias epilogue), which moves it further from the float32 sums
of the emulation (``tests/kernels/test_gpu_quant_gemm.py`` bounds both).

So int8 layers match the CPU emulation bit for bit up to the activation function's last bits. fp8
layers match to about 1e-4 relative: Hopper's FP8 MMA adds the products inside one instruction with
fewer bits than float32 (FAST_ACCUM off promotes the partial sums to float32 between instructions),
where the CPU sums them in float32. cuBLASLt's alignment rules are checked in ``supports``: int8
needs K and N multiples of 4, fp8 M, N and K multiples of 16 (nvmath's own FP8 rule).

Configs are the algorithms cuBLASLt's heuristic offers (up to ``MAX_ALGOS``), each with its
serialized heuristic record, so an engine re-plans with exactly the recorded algorithm.
"""

from __future__ import annotations

import numpy as np

from ...core import quant
from ...core.plan import Layer
from ..reference.quantized import check_layer, kind_of
from . import cuda_prelude as P
from .common import activation_of, has_input, ptr, require_activation, static_shape, stream_ptr
from .cublaslt import _require_nvmath
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

MAX_ALGOS = 8
IO_FLOATS = ("float32", "float16")  # the activations a quantized layer reads and writes
_WS_LIMIT = 32 << 20  # the most workspace cuBLASLt's heuristic may ask for
_ALIGN = 256  # offsets of the pieces of the layer's workspace
_BLOCK = 256  # threads per block of the quantize and epilogue launches
_HANDLE: list[int] = []  # one cuBLASLt handle per process (nvmath keeps one per thread the same way)
_ALGOS: dict = {}  # problem signature -> heuristic records (hex), planning costs ~1 ms


def _lt():
    from nvmath.bindings import cublasLt as lt  # noqa: PLC0415

    if not _HANDLE:
        _HANDLE.append(lt.create())
    return lt, _HANDLE[0]


def _problem(layer: Layer, precision: str) -> dict | str:
    """What build needs, or why this tactic cannot run the layer."""
    if kind_of(layer) != "gemm":
        return f"does not run {layer.op} (quantized Gemm / FusedGemm / MatMul only)"
    why = check_layer(layer, precision)
    if why:
        return why
    a = layer.attrs
    if not int(a.get("q_weight_const", 1)):
        return "the second operand is an activation: quantized weights only"
    if int(a.get("q_weight_zero_point", 0)):
        return "weights with a zero point"
    if precision == "fp8" and int(a.get("q_input_zero_point", 0)):
        return "fp8 has no zero point"
    if layer.op != "MatMul" and int(a.get("transA", 0)):
        return "transA"
    x_shape, w_shape, y_shape = static_shape(layer, 0), static_shape(layer, 1), static_shape(layer, 0, out=True)
    if x_shape is None or w_shape is None or y_shape is None:
        return "needs static shapes"
    specs = layer.aligned_input_specs()
    in_dt, out_dt = specs[0].dtype, layer.output_specs[0].dtype
    code = quant.ELEMENT[precision]
    if in_dt not in IO_FLOATS + (code,) or out_dt not in IO_FLOATS + (code,):
        return (f"quantized layers read and write {' or '.join(IO_FLOATS)}, or {code} codes "
                f"(input {in_dt}, output {out_dt})")
    why = _coded_io(layer, specs[0], layer.output_specs[0], code)
    if why:
        return why
    if len(x_shape) < 2 or len(w_shape) != 2:
        return "A of rank >= 2 and a 2-D weight only"
    trans_b = layer.op != "MatMul" and bool(int(a.get("transB", 0)))
    n, k = (w_shape if trans_b else w_shape[::-1])
    m = int(np.prod(x_shape[:-1]))
    if x_shape[-1] != k or tuple(y_shape) != tuple(x_shape[:-1]) + (n,):
        return f"shapes do not make a GEMM (A {list(x_shape)}, B {list(w_shape)}, Y {list(y_shape)})"
    step = 16 if precision == "fp8" else 4
    dims = {"M": m, "N": n, "K": k} if precision == "fp8" else {"N": n, "K": k}
    odd = [f"{d}={v}" for d, v in dims.items() if v % step]
    if odd:
        return f"cuBLASLt's {precision} GEMM needs {', '.join(dims)} multiples of {step} ({', '.join(odd)})"
    bias = None
    if has_input(layer, 2):
        bias = static_shape(layer, 2)
        if bias is None or int(np.prod(bias)) not in (1, n) or (bias and int(np.prod(bias)) == n and bias[-1] != n):
            return f"a bias of shape {bias} (a vector over N or one value only)"
        if specs[2].dtype != "float32":
            return "float32 bias only"
    why = require_activation(layer)
    if why:
        return why
    return {"m": m, "n": n, "k": k, "trans_b": trans_b, "bias": bias is not None,
            "bias_n": int(np.prod(bias)) if bias is not None else 0, "in_dt": in_dt, "out_dt": out_dt,
            "in_coded": in_dt == code, "out_coded": out_dt == code}


def _coded_io(layer: Layer, x_spec, y_spec, code: str) -> str | None:
    """Why the layer's codes in / out (``core/quant.py``, "Quantized tensors between layers") do
    not fit it, or None: an input of codes must have the layer's own input scale (and no zero
    point), an output of codes the layer's ``q_output_scale``."""
    a = layer.attrs
    if x_spec.dtype == code:
        if not quant.is_coded(x_spec):
            return f"a {code} input without a scale"
        if np.float32(x_spec.scale) != np.float32(a["q_input_scale"]) or int(a.get("q_input_zero_point", 0)):
            return f"an input of codes with scale {x_spec.scale}, not the layer's input scale {a['q_input_scale']}"
    out_scale = a.get("q_output_scale")
    if y_spec.dtype == code:
        if out_scale is None or not quant.is_coded(y_spec) or np.float32(y_spec.scale) != np.float32(out_scale):
            return f"an output of codes whose scale ({y_spec.scale}) is not the layer's q_output_scale ({out_scale})"
    elif out_scale is not None:
        return f"q_output_scale on a {y_spec.dtype} output"
    return None


def _encode_lines(precision: str, x: str, scale: str, zp: str) -> str:
    """C lines putting the code of the float ``x`` (``quant.quantize`` with ``scale`` and ``zp``)
    into byte ``j`` of ``word``."""
    return f"      word |= ((unsigned int){P.encode(precision, x, scale, zp)}) << (8 * j);\n"


def quantize_source(precision: str, in_dt: str, name: str, wide: bool = False) -> str:
    """x (float32 / float16) -> the 8-bit operand, four elements per thread (K is a multiple of 4);
    ``wide``: eight per thread, read as 16-byte vectors and written as 8 bytes (n a multiple of 8,
    x 16-byte aligned, as arena tensors and workspace pieces are), the same operations per element."""
    if wide:
        vecs = {"float16": 1, "bfloat16": 1, "float32": 2}[in_dt]  # uint4 loads per eight elements
        words = []
        for half in range(2):
            words.append("    word = 0;\n#pragma unroll\n    for (int j = 0; j < 4; ++j) {\n"
                         f"      float xv = {P.load(in_dt, f'v[{4 * half} + j]')};\n"
                         + _encode_lines(precision, "xv", "scale", "zp") + f"    }}\n    w{half} = word;\n")
        return (P.PRELUDE + P.codes(precision) + f'extern "C" __global__ void {name}(const uint4* __restrict__ x, '
                "uint2* __restrict__ q, float scale, int zp, long long n8) {\n"
                "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n8; "
                "i += (long long)gridDim.x * blockDim.x) {\n"
                f"    uint4 raw[{vecs}];\n"
                "#pragma unroll\n"
                f"    for (int r = 0; r < {vecs}; ++r) raw[r] = x[{vecs} * i + r];\n"
                f"    const {P.storage(in_dt)}* v = reinterpret_cast<const {P.storage(in_dt)}*>(raw);\n"
                "    unsigned int word, w0, w1;\n" + "".join(words) + "    q[i] = make_uint2(w0, w1);\n  }\n}\n")
    body = _encode_lines(precision, "xv", "scale", "zp")
    return (P.PRELUDE + P.codes(precision) + f'extern "C" __global__ void {name}(const {P.storage(in_dt)}* __restrict__ x, '
            "unsigned int* __restrict__ q, float scale, int zp, long long n4) {\n"
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4; "
            "i += (long long)gridDim.x * blockDim.x) {\n"
            "    unsigned int word = 0;\n"
            "#pragma unroll\n"
            "    for (int j = 0; j < 4; ++j) {\n"
            f"      float xv = {P.load(in_dt, 'x[4 * i + j]')};\n" + body + "    }\n    q[i] = word;\n  }\n}\n")


def _epilogue_source(precision: str, out_dt: str, act: str, params: dict, gemm_alpha: float, beta: float,
                     name: str) -> str:
    """acc -> y (float32 / float16), four elements of one row per thread (N is a multiple of 4)."""
    acc, vec = ("const int4*", "int4") if precision == "int8" else ("const float4*", "float4")
    lines = ["      const int col = col0 + j;",
             "      const float a = j == 0 ? (float)q.x : j == 1 ? (float)q.y : j == 2 ? (float)q.z : (float)q.w;"]
    if precision == "int8":
        lines = ["      const int col = col0 + j;",
                 "      const long long qa = j == 0 ? q.x : j == 1 ? q.y : j == 2 ? q.z : q.w;",
                 "      float v = (float)(qa - (corr ? corr[col] : 0LL));"]
    else:
        lines.append("      float v = a;")
    lines.append("      v = __fmul_rn(v, alpha[nalpha == 1 ? 0 : col]);")
    if gemm_alpha != 1.0:
        lines.append(f"      v = __fmul_rn(v, {_c_float(gemm_alpha)});")
    lines.append("      if (bias) {")
    lines.append("        float c = bias[nbias == 1 ? 0 : col];")
    if beta != 1.0:
        lines.append(f"        c = __fmul_rn(c, {_c_float(beta)});")
    lines.append("        v = __fadd_rn(v, c);")
    lines.append("      }")
    if act:
        lines.append(f"      v = {P.act_expr(act, params)};")
    coded = out_dt == quant.ELEMENT[precision]
    if coded:  # the output's codes, four to a word (q_output_scale: oscale)
        body = "\n".join(lines) + "\n" + _encode_lines(precision, "v", "oscale", "0")
        y_type, done = "unsigned int", "    y[i] = word;\n"
    else:
        body = "\n".join(lines + [f"      y[4 * i + j] = {P.store(out_dt, 'v')};"]) + "\n"
        y_type, done = P.storage(out_dt), ""
    return (P.PRELUDE + (P.codes(precision) if coded else "")
            + f'extern "C" __global__ void {name}({acc} __restrict__ acc, const long long* __restrict__ corr, '
            "const float* __restrict__ alpha, int nalpha, const float* __restrict__ bias, int nbias, "
            f"{y_type}* __restrict__ y, float oscale, long long total4, long long n) {{\n"
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total4; "
            "i += (long long)gridDim.x * blockDim.x) {\n"
            f"    const {vec} q = acc[i];\n"
            "    const int col0 = (int)((4 * i) % n);\n"
            + ("    unsigned int word = 0;\n" if coded else "") +
            "#pragma unroll\n"
            "    for (int j = 0; j < 4; ++j) {\n" + body + "    }\n" + done + "  }\n}\n")


def _c_float(v: float) -> str:
    """A float32 constant as C source that compiles to exactly that float32."""
    return f"{float(np.float32(v))!r}f"


class _Gemm:
    """The planned cuBLASLt GEMM of one problem: descriptor, layouts, the chosen algorithm."""

    def __init__(self, precision: str, m: int, n: int, k: int, record_hex: str | None = None,
                 direct: str | None = None, coded: bool = False, fast: bool = False, residual: bool = False):
        """``precision``: "int8", "fp8", or "fp16" / "bf16" (direct form only: A, B, C, D and the
        bias in that type, float32 compute). ``direct``: the cuBLASLt epilogue ("DEFAULT", "BIAS",
        "RELU_BIAS", ...) of a GEMM that writes its output itself (D = alpha * acc [+ bias] [act]);
        None: the accumulator. ``coded``: the direct fp8 form writes e4m3 codes, D = d_scale *
        (...) with ``d_scale`` (a device float32, ``self.d_scale``) 1 / q_output_scale, saturated;
        else float16. ``fast`` (direct form only): FAST_ACCUM on, the partial sums kept in the
        tensor cores' own precision. ``residual`` (direct form only): C (float16 for fp8, else the
        D type) is an operand, added before the epilogue's bias and activation (beta 1):
        D = act(alpha * acc + C + bias)."""
        import cupy as cp  # noqa: PLC0415
        from nvmath import CudaDataType as DT  # noqa: PLC0415
        from nvmath.bindings import cublas  # noqa: PLC0415

        lt, self.handle = _lt()
        self.lt = lt
        half = {"fp16": DT.CUDA_R_16F, "bf16": DT.CUDA_R_16BF}.get(precision)
        if precision == "int8":
            ab, d, compute, scale, sdt = DT.CUDA_R_8I, DT.CUDA_R_32I, cublas.ComputeType.COMPUTE_32I, DT.CUDA_R_32I, np.int32
        elif half is not None:  # the float GEMM, direct form only (``cublaslt_conv``)
            if not direct or coded:
                raise ValueError(f"a {precision} GEMM writes its output itself ({precision} D)")
            ab, d, compute, scale, sdt = half, half, cublas.ComputeType.COMPUTE_32F, DT.CUDA_R_32F, np.float32
        else:
            ab, d, compute, scale, sdt = (DT.CUDA_R_8F_E4M3, DT.CUDA_R_32F, cublas.ComputeType.COMPUTE_32F,
                                          DT.CUDA_R_32F, np.float32)
        c = d
        if direct and half is None:
            c = DT.CUDA_R_16F  # float16 for an e4m3 D; read only with ``residual`` (beta 1)
            d = DT.CUDA_R_8F_E4M3 if coded else DT.CUDA_R_16F
        self.desc = lt.matmul_desc_create(compute, scale)
        self.layouts = []
        self._set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
                  lt.MatmulDescAttribute.TRANSA, cublas.Operation.T)
        self._set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
                  lt.MatmulDescAttribute.TRANSB, cublas.Operation.N)
        if fast:
            self._set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
                      lt.MatmulDescAttribute.FAST_ACCUM, 1)
        if direct:
            self._set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
                      lt.MatmulDescAttribute.EPILOGUE, getattr(lt.Epilogue, direct))
            if "BIAS" in direct:
                self._set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
                          lt.MatmulDescAttribute.BIAS_DATA_TYPE, half or DT.CUDA_R_16F)
        self.d_scale = None
        if coded and direct:
            self.d_scale = cp.ones(1, cp.float32)
            self._set(lt.matmul_desc_set_attribute, lt.get_matmul_desc_attribute_dtype, self.desc,
                      lt.MatmulDescAttribute.D_SCALE_POINTER, self.d_scale.data.ptr)
        # column-major: A = W stored K x N (ld K) used transposed, B = Xq stored K x M (ld K), D = N x M (ld N)
        self.a_l = self._layout(ab, k, n, k)
        self.b_l = self._layout(ab, k, m, k)
        self.d_l = self._layout(d, n, m, n)
        self.c_l = self._layout(c, n, m, n) if c != d else self.d_l
        self.alpha = np.ones(1, sdt)
        self.beta = np.ones(1, sdt) if (residual and direct) else np.zeros(1, sdt)
        if record_hex is None:
            self.records = self._heuristic()
        else:
            self.records = np.frombuffer(bytes.fromhex(record_hex), dtype=lt.matmul_heuristic_result_dtype).copy()

    def set_output_scale(self, q_output_scale) -> None:
        """An e4m3 D's scale: ``d_scale`` = 1 / q_output_scale (float32), in place on the device
        before any stream of the engine reads it."""
        import cupy as cp  # noqa: PLC0415

        self.d_scale.set(np.array([np.float32(1.0) / np.float32(q_output_scale)], np.float32))
        cp.cuda.Device().synchronize()

    def set_bias(self, device_ptr: int) -> None:
        self._set(self.lt.matmul_desc_set_attribute, self.lt.get_matmul_desc_attribute_dtype, self.desc,
                  self.lt.MatmulDescAttribute.BIAS_POINTER, device_ptr)

    @staticmethod
    def _set(setter, dtype_of, obj, attr, value):
        buf = np.array(value, dtype=dtype_of(attr))  # the attribute's exact C type
        setter(obj, attr, buf.ctypes.data, buf.itemsize)

    def _layout(self, dtype, rows, cols, ld):
        h = self.lt.matrix_layout_create(dtype, rows, cols, ld)
        self.layouts.append(h)
        return h

    def _heuristic(self):
        lt = self.lt
        pref = lt.matmul_preference_create()
        try:
            self._set(lt.matmul_preference_set_attribute, lt.get_matmul_preference_attribute_dtype, pref,
                      lt.MatmulPreferenceAttribute.MAX_WORKSPACE_BYTES, _WS_LIMIT)
            heur = np.zeros(MAX_ALGOS, dtype=lt.matmul_heuristic_result_dtype)  # cublasLtMatmulHeuristicResult_t[]
            count = np.zeros(1, np.int32)
            lt.matmul_algo_get_heuristic(self.handle, self.desc, self.a_l, self.b_l, self.c_l, self.d_l, pref,
                                         MAX_ALGOS, heur.ctypes.data, count.ctypes.data)
            n = int(count[0])
            if n == 0:
                raise RuntimeError("cuBLASLt offers no algorithm for this problem")
            return heur[:n].copy()
        finally:
            lt.matmul_preference_destroy(pref)

    def __del__(self):
        try:
            for h in self.layouts:
                self.lt.matrix_layout_destroy(h)
            self.lt.matmul_desc_destroy(self.desc)
        except Exception:
            pass


def _signature(p: dict, precision: str, direct: str | None = None, fast: bool = False) -> tuple:
    return (precision, p["m"], p["n"], p["k"], direct, bool(direct) and p["out_coded"], fast)


# activations cuBLASLt's fp16 epilogue computes (GELU: its tanh approximation, below fp16 rounding
# for "Gelu" as in ``cublaslt.py``)
_DIRECT_ACTS = {"": "", "Relu": "RELU", "Gelu": "GELU", "GeluTanh": "GELU"}


def _direct_epilogue(layer: Layer, precision: str, p: dict) -> str | None:
    """The cuBLASLt epilogue of the direct form (fp8 GEMM writing float16 or e4m3 codes itself, no
    NVRTC epilogue: alpha = scale_in * scale_w * Gemm alpha as one float32, the bias times beta as
    float16), or None where it does not apply: int8 (cuBLASLt's int8 GEMM has no float output),
    a float32 output, per-channel weight scales, an activation cuBLASLt lacks, a runtime bias."""
    if precision != "fp8" or p["out_dt"] not in ("float16", quant.ELEMENT["fp8"]):
        return None
    if np.asarray(layer.attrs["q_weight_scale"]).size != 1:
        return None
    act, _ = activation_of(layer)
    if act not in _DIRECT_ACTS:
        return None
    base = _DIRECT_ACTS[act]
    if p["bias"]:
        return f"{base}_BIAS" if base else "BIAS"
    return base or "DEFAULT"


class CublasLtQuantGemm(TacticBase):
    """``cublaslt_quant.int8`` / ``cublaslt_quant.fp8``: see the module doc."""

    writes_codes = ("output",)

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.name = f"cublaslt_quant.{fmt}"
        self.formats = (fmt,)

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if precision != self.fmt:
            return f"runs {self.fmt} layers only"
        if self.fmt == "fp8" and gpu is not None and gpu.sm < 89:
            return f"FP8 tensor cores need sm_89 or newer ({gpu.arch})"
        why = _require_nvmath()
        if why:
            return why
        p = _problem(layer, precision)
        return p if isinstance(p, str) else None

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        """The heuristic's algorithms for the accumulator form, then (where it applies) for the
        direct form, which the autotuner times against them."""
        p = _problem(layer, precision)
        direct = _direct_epilogue(layer, precision, p)
        out = []
        for form, fast in [(None, False)] + ([(direct, False), (direct, True)] if direct else []):
            sig = _signature(p, precision, form, fast)
            if sig not in _ALGOS:
                try:
                    plan = _Gemm(precision, p["m"], p["n"], p["k"], direct=form, coded=p["out_coded"], fast=fast)
                    _ALGOS[sig] = [r.tobytes().hex() for r in plan.records]
                except Exception:  # noqa: BLE001 - cuBLASLt offers no such GEMM: the other form stands
                    if form is None:
                        raise
                    _ALGOS[sig] = []
            extra = ({"direct": form} if form else {}) | ({"fast_accum": 1} if fast else {})
            out += [{"algo": i, "record": rec, **extra} for i, rec in enumerate(_ALGOS[sig])]
        return out

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415

        p = _problem(layer, precision)
        if isinstance(p, str):
            raise ValueError(p)
        m, n, k = p["m"], p["n"], p["k"]
        direct = config.get("direct") or None
        fast = bool(config.get("fast_accum"))
        if (direct and direct != _direct_epilogue(layer, precision, p)) or (fast and not direct):
            raise ValueError(f"config {config} does not fit this layer (its direct form is "
                             f"{_direct_epilogue(layer, precision, p)}; fast accumulation is the direct form's)")
        rec = config.get("record")
        if not rec:
            rec = next(c for c in self.configs(layer, precision, gpu)
                       if c["algo"] == int(config.get("algo", 0)) and c.get("direct") == direct
                       and bool(c.get("fast_accum")) == fast)["record"]
        gemm = _Gemm(precision, m, n, k, record_hex=rec, direct=direct, coded=p["out_coded"], fast=fast)
        out: dict[str, bytes] = {}
        ops = _Operands(layer, precision, p, weights, gpu, binaries, out)
        if direct:
            return self._build_direct(layer, config, p, gemm, ops, out)

        a = layer.attrs
        wt = ops.wt
        alpha = cp.asarray(quant.output_scale(a["q_input_scale"], ops.s_w).reshape(-1))
        zp = int(a.get("q_input_zero_point", 0))
        corr = None
        if precision == "int8" and zp:
            colsum = wt.view(cp.int8).astype(cp.int64).sum(axis=1)
            corr = cp.ascontiguousarray(colsum * zp)
        bias = None
        if p["bias"] and layer.inputs[2] in weights:
            bias = cp.ascontiguousarray(cp.asarray(weights[layer.inputs[2]], dtype=cp.float32).reshape(-1))
        act, params = activation_of(layer)
        ename = f"wb_qgemm_epi_{precision}" + ("_coded" if p["out_coded"] else "")
        efn = get_function(_epilogue_source(precision, p["out_dt"], act, params, ops.gemm_alpha, ops.beta, ename),
                           ename, gpu.arch, binaries, out)
        oscale = np.float32(a.get("q_output_scale", 1.0))
        qa_bytes, lt_ws = ops.qa_bytes, int(gemm.records[0]["workspace_size"])
        acc_bytes = -(-m * n * 4 // _ALIGN) * _ALIGN
        grid_e = max(1, min(-(-(m * n // 4) // _BLOCK), gpu.sm_count * 16))
        mn, n64 = np.int64(m * n // 4), np.int64(n)
        nalpha = np.int32(alpha.size)
        nbias = np.int32(p["bias_n"])
        lt, handle = gemm.lt, gemm.handle
        alpha_p, beta_p = gemm.alpha.ctypes.data, gemm.beta.ctypes.data
        algo_p = gemm.records.ctypes.data  # the record's first field is its cublasLtMatmulAlgo_t
        wt_p = wt.data.ptr
        null = np.uint64(0)

        def run(inputs, outputs, workspace, stream):
            x, y = inputs[0], outputs[0]
            base = -(-ptr(workspace) // _ALIGN) * _ALIGN  # the pieces start 256-byte aligned
            acc = base + qa_bytes
            qa = ops.operand(x, base, stream)
            lt.matmul(handle, gemm.desc, alpha_p, wt_p, gemm.a_l, qa, gemm.b_l, beta_p, acc, gemm.d_l, acc,
                      gemm.d_l, algo_p, base + qa_bytes + acc_bytes if lt_ws else 0, lt_ws, stream_ptr(stream))
            b = bias if bias is not None else (inputs[2] if p["bias"] else None)
            efn((grid_e,), (_BLOCK,), (np.uint64(acc), corr if corr is not None else null, alpha, nalpha,
                                       b if b is not None else null, nbias, y, oscale, mn, n64), stream=stream)

        return BuiltKernel(run=run, workspace_bytes=_ALIGN + qa_bytes + acc_bytes + lt_ws, binaries=out,
                           info={"algorithm": int(config.get("algo", 0)), "workspace_bytes": lt_ws},
                           keepalive=(gemm, wt, alpha, corr, bias))

    def _build_direct(self, layer, config, p, gemm, ops, out) -> BuiltKernel:
        """quantize (NVRTC) -> cuBLASLt FP8 GEMM writing float16 or e4m3 codes with its own epilogue."""
        import cupy as cp  # noqa: PLC0415

        m, n = p["m"], p["n"]
        a = layer.attrs
        # one float32 alpha: the CPU's two roundings (scale product, then the Gemm's alpha) become one
        gemm.alpha = np.array([np.float32(quant.output_scale(a["q_input_scale"], ops.s_w).reshape(-1)[0])
                               * np.float32(ops.gemm_alpha)], np.float32)
        bias = None
        if p["bias"]:
            if layer.inputs[2] not in ops.weights:
                raise ValueError("the direct form takes a constant bias only")
            b32 = np.asarray(cp.asnumpy(cp.asarray(ops.weights[layer.inputs[2]])), np.float32).reshape(-1)
            bias = cp.asarray(np.broadcast_to(b32 * np.float32(ops.beta), (n,)).astype(np.float16))
            gemm.set_bias(bias.data.ptr)
        if gemm.d_scale is not None:  # e4m3 codes out: D = (1 / q_output_scale) * (...)
            gemm.set_output_scale(a["q_output_scale"])
        qa_bytes, lt_ws = ops.qa_bytes, int(gemm.records[0]["workspace_size"])
        # C (float16, never read: beta is 0) apart from an e4m3 D: a place in the workspace
        c_bytes = -(-m * n * 2 // _ALIGN) * _ALIGN if gemm.c_l is not gemm.d_l else 0
        lt, handle = gemm.lt, gemm.handle
        alpha_p, beta_p, algo_p, wt_p = gemm.alpha.ctypes.data, gemm.beta.ctypes.data, gemm.records.ctypes.data, ops.wt.data.ptr

        def run(inputs, outputs, workspace, stream):
            y = ptr(outputs[0])
            base = -(-ptr(workspace) // _ALIGN) * _ALIGN
            c = base + qa_bytes if c_bytes else y
            qa = ops.operand(inputs[0], base, stream)
            lt.matmul(handle, gemm.desc, alpha_p, wt_p, gemm.a_l, qa, gemm.b_l, beta_p, c, gemm.c_l, y, gemm.d_l,
                      algo_p, base + qa_bytes + c_bytes if lt_ws else 0, lt_ws, stream_ptr(stream))

        return BuiltKernel(run=run, workspace_bytes=_ALIGN + qa_bytes + c_bytes + lt_ws, binaries=out,
                           info={"algorithm": int(config.get("algo", 0)), "workspace_bytes": lt_ws,
                                 "epilogue": f"cuBLASLt {config['direct']}, {p['out_dt']} out"
                                             + (", fast accumulation" if config.get("fast_accum") else "")},
                           keepalive=(gemm, ops.wt, bias))


class _Operands:
    """What both forms of a layer share: the weight as [N, K] (K contiguous, as the TN GEMM takes
    it), the weight scales, the Gemm's alpha / beta, and the GEMM's activation operand -- the
    input itself when it holds codes, else the quantize launch's codes at the workspace's start
    (``qa_bytes`` of it)."""

    def __init__(self, layer: Layer, precision: str, p: dict, weights, gpu: GpuInfo, binaries, out: dict):
        import cupy as cp  # noqa: PLC0415

        a = layer.attrs
        self.weights = weights
        w = weights[layer.inputs[1]]
        w_bytes = w.view(cp.uint8) if w.dtype != cp.uint8 else w
        self.wt = cp.ascontiguousarray(w_bytes if p["trans_b"] else w_bytes.T)
        self.s_w = np.asarray(a["q_weight_scale"], np.float32).reshape(-1)
        gemm_op = layer.op in ("Gemm", "FusedGemm")
        self.gemm_alpha = float(a.get("alpha", 1.0)) if gemm_op else 1.0
        self.beta = float(a.get("beta", 1.0)) if gemm_op else 1.0
        self._quantize = None
        if not p["in_coded"]:
            self._quantize = QuantizeLaunch(precision, p["in_dt"], p["m"] * p["k"], a["q_input_scale"],
                                            int(a.get("q_input_zero_point", 0)), gpu, binaries, out)
        self.qa_bytes = self._quantize.bytes if self._quantize else 0

    def operand(self, x, qa: int, stream) -> int:
        """The device address of the GEMM's activation operand (quantizing ``x`` to ``qa`` first)."""
        if self._quantize is None:  # the input holds the codes already
            return ptr(x)
        self._quantize(x, qa, stream)
        return qa


class QuantizeLaunch:
    """One layer's quantize launch (``quantize_source``): ``n`` float16 / float32 elements (a
    multiple of four; of eight: the wide kernel) to codes with one scale and zero point, written at
    a device address (a piece of the layer's workspace, ``bytes`` long)."""

    def __init__(self, precision: str, in_dt: str, n: int, scale, zp: int, gpu: GpuInfo, binaries, out: dict,
                 name: str | None = None):
        name = name or f"wb_quant_{precision}"
        per = 8 if n % 8 == 0 else 4
        if per == 8:
            name += "_x8"
        self.fn = get_function(quantize_source(precision, in_dt, name, wide=per == 8), name, gpu.arch, binaries, out)
        self.grid = max(1, min(-(-(n // per) // _BLOCK), gpu.sm_count * 16))
        self.args = (np.float32(scale), np.int32(zp), np.int64(n // per))
        self.bytes = -(-n // _ALIGN) * _ALIGN
        self.wide = per == 8

    def __call__(self, x, dst: int, stream) -> None:
        if self.wide and ptr(x) % 16:  # arena tensors and workspace pieces are 256-byte aligned
            raise RuntimeError(f"the quantize launch reads 16-byte vectors; its input at {ptr(x):#x} is not aligned")
        self.fn((self.grid,), (_BLOCK,), (x, np.uint64(dst)) + self.args, stream=stream)


TACTICS = [CublasLtQuantGemm("int8"), CublasLtQuantGemm("fp8")]
