"""cuBLASLt through nvmath-python: GEMM / batched GEMM with bias and activation epilogues.

Row-major trick: cuBLAS is column-major, and its BIAS epilogue adds a vector along the rows of
the (column-major) result. Our row-major ``Y[M, N] = A[M, K] @ B[K, N] + bias[N]`` is, read as
column-major memory, ``Y^T[N, M] = B^T[N, K] @ A^T[K, M] + bias[N]`` with the bias along rows. So
nvmath is given operand a = B^T (the weight, a view), operand b = A^T (the activations, a view) and
C = D = Y^T (in-place into the caller's output buffer): no copies, and the bias lands on N.

A of any rank >= 2 with 2-D weights is flattened to one GEMM (M = prod(A.shape[:-1])); batched
B (rank >= 3) needs the same batch shape in A (one strided-batched GEMM, e.g. attention scores).

Plans: ``Matmul(...).plan()`` runs once per layer at build with the layer's real weights and
scratch activations (16-byte aligned on purpose, so the chosen kernels accept any 16-byte-aligned
arena view). The configurations are the algorithms cuBLASLt's heuristic offers (up to
``MAX_ALGOS``); each config carries the serialized algorithm (``Algorithm.as_numpy``), so loading
an engine re-plans with exactly that algorithm and no heuristic or autotuning.

Launch: the hot path calls ``nvmath.bindings.cublasLt.matmul`` with the planned descriptors, the
runtime's workspace and stream (one C call, nothing allocated, capturable in a CUDA graph).
Those descriptors are attributes of nvmath's Matmul (1.0.0); if a future nvmath renames them we
fall back to the public ``reset_operands_unchecked`` + ``execute`` path (slower on the host, uses
nvmath's own workspace, allocated at build).

cuBLASLt epilogues: none, BIAS, RELU(_BIAS), GELU(_BIAS). cuBLASLt's GELU is the tanh
approximation: exact for "GeluTanh"; for "Gelu" (erf) it is used only at fp16/bf16 where the
approximation (|err| < 5e-4 absolute) is below the storage rounding. Other activations have no
epilogue: ``supports`` says so, and ``cublaslt.gemm_act`` (below) runs them as this GEMM with its
BIAS epilogue plus one NVRTC activation kernel in place (capturable, unlike ``cublas.gemm``).
"""

from __future__ import annotations

import copy

import numpy as np

from ...core.plan import Layer
from ...ops.fused import ACTIVATION_ATTRS
from . import cuda_prelude as P
from .common import (GEMM_OPS, IO_DTYPE, activation_of, as_device, check_io, gemm_geometry, has_input, nbytes, np_dtype,
                     ptr, require_activation, require_op, static_shape, stream_ctx, stream_ptr)
from .nvrtc import get_function
from .tactic import BuiltKernel, GpuInfo, TacticBase

MAX_ALGOS = 8  # how many of the heuristic's algorithms the builder times
_NALGOS: dict = {}  # problem signature -> [(algo_id, blob hex)] from the heuristic (planning costs ~1 ms)


def _require_nvmath() -> str | None:
    try:
        import nvmath  # noqa: F401, PLC0415
        from nvmath.linalg.advanced import Matmul  # noqa: F401, PLC0415

        return None
    except Exception as e:
        return f"nvmath-python is not available ({type(e).__name__}: {e})"


def _problem(layer: Layer, precision: str):
    """Everything build needs, or a reason: shapes of the transposed problem and the epilogue."""
    g = gemm_geometry(layer)
    if isinstance(g, str):
        return g
    a_shape, b_shape, ta, tb, alpha, beta = g
    out_shape = tuple(layer.output_specs[0].shape)
    if len(a_shape) < 2 or len(b_shape) < 2:
        return "1-D operands are left to cublas.gemm"
    if len(b_shape) == 2:
        if ta and len(a_shape) != 2:
            return "transA with A of rank > 2"
        k = a_shape[0] if ta else a_shape[-1]
        m = a_shape[1] if ta else int(np.prod(a_shape[:-1]))
        n = b_shape[0] if tb else b_shape[1]
        if (b_shape[1] if tb else b_shape[0]) != k:
            return f"K mismatch: A {a_shape}, B {b_shape}"
        batch = ()
    else:
        if ta or tb:
            return "transA/transB with batched operands"
        if tuple(a_shape[:-2]) != tuple(b_shape[:-2]):
            return f"batch shapes differ (A {a_shape}, B {b_shape}): broadcast batches go to cublas.gemm"
        batch, m, k, n = tuple(a_shape[:-2]), a_shape[-2], a_shape[-1], b_shape[-1]
    act, _ = activation_of(layer)
    epi = {"": "", "Relu": "RELU", "GeluTanh": "GELU"}.get(act)
    if act == "Gelu" and precision in ("fp16", "bf16"):
        epi = "GELU"
    if epi is None:
        return f"cuBLASLt has no epilogue for activation {act!r}" + (
            " at fp32/tf32 (its GELU is the tanh approximation)" if act == "Gelu" else "")
    # C: a vector over N becomes the BIAS epilogue; any other C is copied into Y and added by beta
    c_mode = ""
    if has_input(layer, 2):
        c_shape = static_shape(layer, 2) or ()
        if not batch and c_shape and c_shape[-1] == n and all(d == 1 for d in c_shape[:-1]):
            c_mode, epi = "bias", (epi + "_BIAS" if epi else "BIAS")
        else:
            c_mode = "full"
    return dict(batch=batch, m=m, k=k, n=n, ta=ta, tb=tb, alpha=alpha, beta=beta, epilog=epi or "DEFAULT",
                c_mode=c_mode, out_shape=out_shape, b_const=layer.inputs[1])


def _options(precision: str):
    from nvmath.linalg import ComputeType  # noqa: PLC0415

    ct = ComputeType.COMPUTE_32F_FAST_TF32 if precision == "tf32" else ComputeType.COMPUTE_32F
    return {"inplace": True, "compute_type": ct}


def _scratch(shape, dtype, offset=16):
    """An uninitialised device array whose pointer is 16 (not 256) bytes aligned, see module doc."""
    import cupy as cp  # noqa: PLC0415

    nb = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = cp.empty(nb + 256, dtype=cp.uint8)
    return buf[offset:offset + nb].view(dtype).reshape(shape)


def _operands(p: dict, a, b, y):
    """nvmath's (a, b, c) views of the transposed problem for activations ``a``, second operand
    ``b`` (weight or runtime array, in the layer's own layout) and output ``y``."""
    bt, m, k, n = p["batch"], p["m"], p["k"], p["n"]
    if bt:
        return b.swapaxes(-1, -2), a.swapaxes(-1, -2), y.swapaxes(-1, -2)
    a_op = b if p["tb"] else b.T  # B^T [N, K]
    b_op = a.reshape(k, m) if p["ta"] else a.reshape(m, k).T  # op(A)^T [K, M]
    return a_op, b_op, y.reshape(m, n).T


class _Plan:
    """One planned nvmath Matmul for a layer: the weight bound, activations/output as scratch."""

    def __init__(self, p: dict, precision: str, weights: dict, algorithms=None):
        import cupy as cp  # noqa: PLC0415
        from nvmath.linalg.advanced import Matmul, MatmulEpilog  # noqa: PLC0415

        io = IO_DTYPE[precision]
        dt = np_dtype(io)
        bt, m, k, n = p["batch"], p["m"], p["k"], p["n"]
        w = weights.get(p["b_const"]) if not bt and p["b_const"] else None
        b_shape = bt + (k, n) if bt or not p["tb"] else (n, k)
        self.w = as_device(w, io).reshape(b_shape) if w is not None else None
        b = self.w if self.w is not None else _scratch(b_shape, dt)
        a = _scratch(bt + ((k, m) if p["ta"] else (m, k)), dt)
        y = _scratch(bt + (m, n), dt)
        y.fill(0)
        a_op, b_op, c_op = _operands(p, a, b, y)
        self.keep = (a, b, y)
        beta = p["beta"] if p["c_mode"] == "full" else 0.0  # beta = 0: C (= the output) is not read
        self.mm = Matmul(a_op, b_op, c=c_op, alpha=p["alpha"], beta=beta, options=_options(precision))
        epilog_inputs, self.bias = None, None
        if p["epilog"].endswith("BIAS"):
            c = weights.get(p.get("c_name") or "")
            bias = as_device(c if c is not None else np.zeros(n), io).reshape(-1)
            if p["beta"] != 1.0:
                bias *= p["beta"]
            self.bias = cp.ascontiguousarray(bias.reshape(n, 1))
            epilog_inputs = {"bias": self.bias}
        self.algorithms = self.mm.plan(preferences={"limit": MAX_ALGOS}, algorithms=algorithms,
                                       epilog=None if p["epilog"] == "DEFAULT" else getattr(MatmulEpilog, p["epilog"]),
                                       epilog_inputs=epilog_inputs)


def _signature(p: dict, precision: str) -> tuple:
    return (p["batch"], p["m"], p["k"], p["n"], p["ta"], p["tb"], p["epilog"], p["c_mode"], precision)


class CublasLtGemm(TacticBase):
    name = "cublaslt.gemm"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        why = require_op(layer, GEMM_OPS, "a GEMM") or _require_nvmath()
        if why:
            return why
        if precision == "bf16":
            return "nvmath plans on CuPy arrays, and CuPy has no bfloat16 type (bf16 is stored as uint16)"
        p = _problem(layer, precision)
        if isinstance(p, str):
            return p
        return check_io(layer, precision, inputs=[0] if len(p["batch"]) == 0 else [0, 1])

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        p = _problem(layer, precision)
        sig = _signature(p, precision)
        if sig not in _NALGOS:
            # plan on scratch operands: the heuristic depends on shapes, types, epilogue, alignment
            plan = _Plan(p, precision, {})  # scratch weight in the layer's layout
            _NALGOS[sig] = [(a.algorithm_id, a.as_numpy().tobytes().hex()) for a in plan.algorithms]
        return [{"algo": i, "algo_id": aid, "blob": blob} for i, (aid, blob) in enumerate(_NALGOS[sig])]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415

        p = _problem(layer, precision)
        p["c_name"] = layer.inputs[2] if has_input(layer, 2) else ""
        if p["b_const"] not in weights and layer.aligned_input_specs()[1].dtype not in (None, IO_DTYPE[precision]):
            raise ValueError(f"runtime operand B is {layer.input_specs[1].dtype}, precision {precision}")
        algos = None
        if config.get("blob"):  # the recorded algorithm, exactly (no heuristic at engine load)
            from nvmath.bindings.cublasLt import matmul_heuristic_result_dtype  # noqa: PLC0415
            from nvmath.linalg.advanced import Algorithm  # noqa: PLC0415

            arr = np.frombuffer(bytes.fromhex(config["blob"]), dtype=matmul_heuristic_result_dtype)
            algos = [Algorithm.from_numpy(arr)]
        plan = _Plan(p, precision, weights, algorithms=algos)
        algo = plan.algorithms[0 if algos else min(int(config.get("algo", 0)), len(plan.algorithms) - 1)]
        runtime_bias = p["epilog"].endswith("BIAS") and p["c_name"] not in weights
        c_const = None
        if p["c_mode"] == "full" and p["c_name"] in weights:
            c_const = cp.ascontiguousarray(cp.broadcast_to(as_device(weights[p["c_name"]], IO_DTYPE[precision]),
                                                           p["out_shape"]))
        launch, ws_bytes, launch_keep, slow_why = _fast_launcher(plan, algo)
        mm = plan.mm
        if launch is None:  # public path: nvmath allocates its workspace now, not inside a capture
            mm.execute(algorithm=algo)
            cp.cuda.get_current_stream().synchronize()

        def run(inputs, outputs, workspace, stream):
            a, y = inputs[0], outputs[0]
            b = plan.w if plan.w is not None else inputs[1]
            if (ptr(a) | ptr(y) | ptr(b)) & 15:
                raise ValueError("cublaslt.gemm needs 16-byte aligned buffers")
            if p["c_mode"] == "full":  # Y <- C, then D = alpha*A@B + beta*Y in place
                src = c_const if c_const is not None else inputs[2]
                with stream_ctx(stream):
                    cp.copyto(y, cp.broadcast_to(src, y.shape))
            if runtime_bias:  # a bias computed at run time: its pointer goes into the descriptor
                mm.reset_operands_unchecked(epilog_inputs={"bias": inputs[2].reshape(-1, 1)})
            if launch is not None:
                launch(ptr(b), ptr(a), ptr(y), ptr(workspace), nbytes(workspace), stream_ptr(stream))
            else:
                a_op, b_op, c_op = _operands(p, a, b, y)
                mm.reset_operands_unchecked(a=a_op, b=b_op, c=c_op)
                mm.execute(algorithm=algo, stream=stream_ptr(stream))

        # the plan keeps descriptors, weight and bias alive as long as the kernel; fast_launch: True,
        # or why nvmath's descriptors could not be read (then execute() runs it)
        return BuiltKernel(run=run, workspace_bytes=ws_bytes,
                           info={"algorithm_id": algo.algorithm_id, "fast_launch": launch is not None or slow_why},
                           keepalive=(plan, *launch_keep))


def _scalar(v) -> int:
    return int(np.asarray(v).reshape(-1)[0])  # NumPy 2.5 refuses int() of a 1-element array


def _fast_launcher(plan: _Plan, algo):
    """(launch(a_ptr, b_ptr, d_ptr, ws_ptr, ws_size, stream), workspace bytes, objects the launch
    reads through raw pointers, "") over nvmath's planned descriptors, or (None, 0, (), why) when
    this nvmath has no such attributes (then execute() is used)."""
    try:
        from nvmath.bindings import cublasLt as lt  # noqa: PLC0415

        mm = plan.mm
        rec = mm.algorithm_object_to_buffer[algo]
        algo_struct = rec["algo"]
        need = _scalar(rec["workspace_size"])
        ws = need + (16 if need > 0 and mm.epilog else 0)  # nvmath's own margin for epilogues
        handle, desc = int(mm.handle), int(mm.mm_desc)
        alpha, beta = int(mm.alpha.ctypes.data), int(mm.beta.ctypes.data)
        la, lb, lc, ld = (int(x) for x in (mm.a_layout_ptr, mm.b_layout_ptr, mm.c_layout_ptr, mm.d_layout_ptr))
        algo_ptr = int(algo_struct.ctypes.data)
    except Exception as e:
        return None, 0, (), f"{type(e).__name__}: {e}"

    def launch(a_ptr, b_ptr, d_ptr, ws_ptr, ws_size, stream):
        lt.matmul(handle, desc, alpha, a_ptr, la, b_ptr, lb, beta, d_ptr, lc, d_ptr, ld,
                  algo_ptr, ws_ptr, ws_size, stream)

    return launch, ws, (rec, algo_struct), ""


# --------------------------------------------------------------------------- cublaslt.gemm_act
def _without_activation(layer: Layer) -> Layer:
    """A shallow copy of ``layer`` whose GEMM has no activation (the epilogue cuBLASLt can do)."""
    bare = copy.copy(layer)
    bare.attrs = {k: v for k, v in layer.attrs.items() if k not in ACTIVATION_ATTRS}
    return bare


def _act_source(act: str, params: dict, dtype: str, name: str) -> str:
    st = P.storage(dtype)
    return (P.PRELUDE + f'extern "C" __global__ void {name}({st}* __restrict__ y, long long n) {{\n'
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {\n"
            f"    float v = {P.load(dtype, 'y[i]')};\n"
            f"    y[i] = {P.store(dtype, P.act_expr(act, params))};\n  }}\n}}\n")


class CublasLtGemmAct(TacticBase):
    """A GEMM whose activation cuBLASLt has no epilogue for (erf GELU at fp32/tf32, Sigmoid, Silu,
    Tanh, HardSwish, Clip, LeakyRelu, HardSigmoid): cuBLASLt's GEMM with its BIAS epilogue (or none),
    then one NVRTC kernel applying the activation in place. Two launches, both capturable, so such
    a layer stays inside the engine's CUDA graph (``cublas.gemm`` runs it eagerly through CuPy)."""

    name = "cublaslt.gemm_act"
    _lt = CublasLtGemm()

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        why = require_op(layer, GEMM_OPS, "a GEMM")
        if why:
            return why
        if not activation_of(layer)[0]:
            return "no activation: cublaslt.gemm runs it"
        why = require_activation(layer)
        if why:
            return why
        if self._lt.supports(layer, precision, gpu) is None:
            return "cublaslt.gemm fuses this activation as its epilogue"
        return self._lt.supports(_without_activation(layer), precision, gpu)

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        return self._lt.configs(_without_activation(layer), precision, gpu)

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        gemm = self._lt.build(_without_activation(layer), precision, config, weights, gpu)
        act, params = activation_of(layer)
        dtype = layer.output_specs[0].dtype
        out: dict[str, bytes] = {}
        fn = get_function(_act_source(act, params, dtype, "wb_gemm_act"), "wb_gemm_act", gpu.arch, binaries, out)
        n = int(np.prod(layer.output_specs[0].shape))
        block = 256
        grid = max(1, min(-(-n // block), gpu.sm_count * 8))
        nn = np.int64(n)

        def run(inputs, outputs, workspace, stream):
            gemm.run(inputs, outputs, workspace, stream)
            fn((grid,), (block,), (outputs[0], nn), stream=stream)

        return BuiltKernel(run=run, workspace_bytes=gemm.workspace_bytes, binaries=out, info=dict(gemm.info),
                           keepalive=(gemm,))


TACTICS = [CublasLtGemm(), CublasLtGemmAct()]
