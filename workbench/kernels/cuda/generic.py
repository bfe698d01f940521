"""cupy.reference: the long tail. Runs the op's reference kernel on CuPy arrays, two ways, first
that validates wins: the CuPy twin of the reference kernels (``cupy_twin.py``: the same code with
``np`` bound to CuPy), then the NumPy kernel itself on CuPy arrays (NumPy dispatches ``np.*`` calls
to CuPy through ``__array_function__`` / ``__array_ufunc__``).

Not every kernel survives either (host-only calls raise), so each layer is validated at build: the
kernel runs on random inputs of the layer's shapes on the device and on the host, and must agree
within the dtype's tolerance, or the tactic declines with both reasons. The kernel allocates its
results, so it runs outside CUDA graph capture.
"""

from __future__ import annotations

import numpy as np

from ...dtypes import to_numpy
from ...core.plan import Layer
from ...kernels.reference import KernelContext, get_kernel
from .device import cupy
from .tactic import BuiltKernel, GpuInfo

TOL = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 1e-4, "float64": 1e-9}


def _random(spec, rng) -> np.ndarray:
    dt = to_numpy(spec.dtype)
    shape = tuple(spec.shape)
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(dt)
    return rng.standard_normal(shape).astype(np.float32).astype(dt)


def _rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    m = np.isfinite(a)
    den = np.linalg.norm(b[m])
    return float(np.linalg.norm(a[m] - b[m]) / den) if den else float(np.linalg.norm(a[m] - b[m]))


class ReferenceOnCupy:
    name = "cupy.reference"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if get_kernel(layer.domain, layer.op) is None:
            return "no reference kernel"
        if layer.attrs.get("channels_last"):
            return "channels-last (NHWC) tensors: the reference kernels index NCHW"
        specs = [s for s in list(layer.input_specs) + list(layer.output_specs) if s.name]
        if any(s.dtype in (None, "string") or not s.is_static for s in specs):
            return "needs static tensors of numeric type"
        if any(s.dtype == "bfloat16" for s in specs):
            return "CuPy has no bfloat16 arithmetic"
        from ...core.liveness import subgraphs_of

        if subgraphs_of(layer):
            return "control flow (subgraphs) is not run on the GPU"
        return None

    def configs(self, layer, precision, gpu):
        return [{}]

    def _ctx(self, layer: Layer, rng) -> KernelContext:
        return KernelContext(opset=layer.opset, n_outputs=len(layer.outputs),
                             output_dtypes=[s.dtype for s in layer.output_specs], rng=rng, name=layer.name)

    def build(self, layer, precision, config, weights, gpu, binaries=None) -> BuiltKernel:
        cp = cupy()
        reference = get_kernel(layer.domain, layer.op)
        reasons = []
        for label, kernel, attrs in self._variants(layer, reference):
            try:
                self._validate(layer, kernel, attrs, reference, weights)
                break
            except Exception as exc:  # noqa: BLE001 - each variant's failure is the reason it is not used
                reasons.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            raise ValueError("; ".join(reasons))
        ctx = self._ctx(layer, np.random.default_rng(0))

        def run(inputs, outputs, workspace, stream):
            outs = kernel(ctx, list(inputs), attrs)
            for o, v in zip(outputs, outs):
                if o is not None:
                    cp.copyto(o, cp.asarray(v).reshape(o.shape).astype(o.dtype, copy=False))

        return BuiltKernel(run=run, capturable=False)

    def _variants(self, layer: Layer, reference):
        cp = cupy()
        try:
            from .cupy_twin import twin_kernel  # noqa: PLC0415

            twin = twin_kernel(cp, layer.domain, layer.op)
        except Exception:  # noqa: BLE001 - no twin: only the dispatch variant remains
            twin = None
        if twin is not None:  # tensor attributes move to the device with the twin
            attrs = {k: cp.asarray(v) if isinstance(v, np.ndarray) and v.dtype != object else v
                     for k, v in layer.attrs.items()}
            yield "cupy twin", twin, attrs
        yield "numpy dispatch", reference, layer.attrs

    def _validate(self, layer: Layer, kernel, attrs: dict, reference, weights: dict) -> None:
        cp = cupy()
        rng = np.random.default_rng(1)
        host, dev = [], []
        specs = iter(layer.input_specs)
        for name in layer.inputs:
            if not name:
                host.append(None)
                dev.append(None)
                continue
            spec = next(specs)
            w = weights.get(name)
            h = w.get() if w is not None else _random(spec, rng)
            host.append(h)
            dev.append(cp.asarray(h))
        try:
            ref = reference(self._ctx(layer, np.random.default_rng(0)), host, layer.attrs)
        except Exception:
            return  # random data is not valid for this op; the device run is checked at first use
        got = kernel(self._ctx(layer, np.random.default_rng(0)), dev, attrs)
        for spec, r, g in zip(layer.output_specs, ref, got):
            if r is None or not spec.name:
                continue
            g = cp.asnumpy(g) if isinstance(g, cp.ndarray) else np.asarray(g)
            tol = TOL.get(spec.dtype, 0.0)
            err = _rel(g, r) if np.asarray(r).dtype.kind in "fc" else (0.0 if np.array_equal(g, r) else 1.0)
            if err > tol:
                raise ValueError(f"device result differs from the NumPy reference (relative error {err:.2e} > {tol})")


TACTICS = [ReferenceOnCupy()]
