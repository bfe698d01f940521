"""cuBLAS through CuPy: the always-available fallback for GEMMs and convolutions.

* ``cublas.gemm``: FusedGemm / Gemm / MatMul as ``cupy.matmul(..., out=)`` followed, when needed,
  by one generated elementwise step ``y = act(alpha * y + beta * C)`` in place. It runs every
  activation of the vocabulary (``ops.fused.ACTIVATIONS``), any rank and broadcast; it is the
  tactic of last resort, so it is written for coverage, not speed.
* ``cublas.im2col_conv``: FusedConv / Conv (1-D/2-D/3-D, grouped) as im2col into the workspace plus
  one batched cuBLAS GEMM per image, and the same elementwise epilogue (bias, residual, activation).

CuPy is imported inside functions: importing this module on a CPU-only machine costs nothing.
"""

from __future__ import annotations

from math import prod

from ...core.plan import Layer
from .common import (CONV_OPS, GEMM_OPS, IO_DTYPE, activation_of, as_device, check_io, conv_geometry, gemm_geometry,
                     has_input, make_epilogue, np_dtype, require_activation, require_cupy, require_cupy_dtype,
                     require_nchw, require_op, stream_ctx)
from .tactic import BuiltKernel, GpuInfo, TacticBase


class CublasGemm(TacticBase):
    name = "cublas.gemm"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        g = require_op(layer, GEMM_OPS, "a GEMM") or require_cupy() or gemm_geometry(layer)
        if isinstance(g, str):
            return g
        a_shape, b_shape, ta, tb, _, _ = g
        if (ta and len(a_shape) != 2) or (tb and len(b_shape) != 2):
            return "transA/transB are defined for 2-D operands only"
        return require_activation(layer) or require_cupy_dtype(precision) or check_io(layer, precision, inputs=[0])

    def configs(self, layer: Layer, precision: str, gpu: GpuInfo) -> list[dict]:
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415

        _, b_shape, ta, tb, alpha, beta = gemm_geometry(layer)
        io = IO_DTYPE[precision]
        act, p = activation_of(layer)
        b_const = weights.get(layer.inputs[1]) if has_input(layer, 1) else None
        if b_const is not None:  # transposes are folded into the packed weight, once
            b_const = as_device(b_const, io)
            if tb:
                b_const = cp.ascontiguousarray(b_const.T)
        c_name = layer.inputs[2] if has_input(layer, 2) else ""
        c_const = weights.get(c_name) if c_name else None
        if c_const is not None:  # beta folded into the constant C
            c_const = as_device(c_const, io)
            if beta != 1.0:
                c_const *= beta
        n_extra = 1 if c_name else 0
        epi = make_epilogue(act, p, n_extra, alpha)

        def run(inputs, outputs, workspace, stream):
            a, y = inputs[0], outputs[0]
            b = b_const if b_const is not None else (inputs[1].T if tb else inputs[1])
            with stream_ctx(stream):
                cp.matmul(a.T if ta else a, b, out=y)
            if epi is not None:
                extras = []
                if c_name:
                    c = c_const if c_const is not None else inputs[2]
                    extras.append(c if (c_const is not None or beta == 1.0) else c * beta)
                epi(y, extras, stream)

        # CuPy refuses cuBLAS calls during stream capture ("calling cuBLAS API during stream capture
        # is currently unsupported", CuPy 14.2): this fallback always runs outside CUDA graphs
        return BuiltKernel(run=run, workspace_bytes=0, capturable=False)


class Im2colConv(TacticBase):
    name = "cublas.im2col_conv"
    MAX_COLS_BYTES = 1 << 31  # beyond this the fallback's workspace is not worth it

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        g = require_op(layer, CONV_OPS, "a convolution") or require_cupy() or conv_geometry(layer)
        if isinstance(g, str):
            return g
        why = (require_activation(layer) or require_nchw(layer, "im2col indexes NCHW")
               or require_cupy_dtype(precision))
        if why:
            return why
        if self._ws(g, 4)[2] > self.MAX_COLS_BYTES:
            return "im2col matrix would exceed 2 GiB"
        return check_io(layer, precision, inputs=[0, 3])

    @staticmethod
    def _ws(g, itemsize):
        """(padded-input bytes, cols bytes, total) of the workspace, 256-byte aligned regions."""
        padded = any(g["begin"]) or any(g["end"])
        psz = g["n"] * g["c"] * prod(s + b + e for s, b, e in zip(g["sp"], g["begin"], g["end"])) * itemsize
        csz = g["n"] * g["c"] * prod(g["k"]) * prod(g["out"]) * itemsize
        psz = -(-psz // 256) * 256 if padded else 0
        return psz, csz, psz + csz

    def configs(self, layer, precision, gpu) -> list[dict]:
        return [{}]

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        import cupy as cp  # noqa: PLC0415
        from cupy.lib.stride_tricks import as_strided  # noqa: PLC0415

        g = conv_geometry(layer)
        io = IO_DTYPE[precision]
        dt = np_dtype(io)
        n, c, m, grp, nd = g["n"], g["c"], g["m"], g["group"], len(g["k"])
        kk, outp = prod(g["k"]), prod(g["out"])
        cg, mg = c // grp, m // grp
        w3 = as_device(weights[layer.inputs[1]], io).reshape(grp, mg, cg * kk)
        psz, csz, total = self._ws(g, dt.itemsize)
        padded_shape = (n, c) + tuple(s + b + e for s, b, e in zip(g["sp"], g["begin"], g["end"]))
        bias = weights.get(layer.inputs[2]) if has_input(layer, 2) else None
        bias = None if bias is None else as_device(bias, io).reshape((1, m) + (1,) * nd)
        has_z = has_input(layer, 3)
        act, p = activation_of(layer)
        epi = make_epilogue(act, p, int(bias is not None) + int(has_z))

        def run(inputs, outputs, workspace, stream):
            x, y = inputs[0], outputs[0]
            base = workspace.data.ptr if hasattr(workspace, "data") else int(workspace)
            mem = cp.cuda.UnownedMemory(base, total, workspace)
            with stream_ctx(stream):
                if psz:
                    xp = cp.ndarray(padded_shape, dt, cp.cuda.MemoryPointer(mem, 0))
                    xp.fill(0)
                    inner = (slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(g["begin"], g["sp"]))
                    xp[inner] = x
                else:
                    xp = x
                cols = cp.ndarray((n, c) + tuple(g["k"]) + tuple(g["out"]), dt, cp.cuda.MemoryPointer(mem, psz))
                st = xp.strides
                view = as_strided(xp, cols.shape, st[:2]
                                  + tuple(st[2 + i] * g["dilations"][i] for i in range(nd))
                                  + tuple(st[2 + i] * g["strides"][i] for i in range(nd)))
                cp.copyto(cols, view)
                cols4 = cols.reshape(n, grp, cg * kk, outp)
                y4 = y.reshape(n, grp, mg, outp)
                for i in range(n):  # one batched (over groups) GEMM per image: no broadcast copies
                    cp.matmul(w3, cols4[i], out=y4[i])
            if epi is not None:
                epi(y, ([bias] if bias is not None else []) + ([inputs[3]] if has_z else []), stream)

        return BuiltKernel(run=run, workspace_bytes=total, capturable=False)  # CuPy cuBLAS: no capture


TACTICS = [CublasGemm(), Im2colConv()]
