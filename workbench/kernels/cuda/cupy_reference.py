"""cupy.reference: the long tail. Runs the op's reference kernel on CuPy arrays, two ways, first
that validates wins: the CuPy twin of the reference kernels (below: the same code with ``np``
bound to CuPy), then the NumPy kernel itself on CuPy arrays (NumPy dispatches ``np.*`` calls to
CuPy through ``__array_function__`` / ``__array_ufunc__``).

Not every kernel survives either (host-only calls raise), so each layer is validated at build: the
kernel runs on random inputs of the layer's shapes on the device and on the host, and must agree
within the dtype's tolerance (``core.numerics``), or the tactic declines with both reasons. The
kernel allocates its results, so it runs outside CUDA graph capture.

The twin: the reference modules are imported a second time, under ``workbench.kernels._cupy_twin``,
through the ordinary source loader; after each module runs, its global ``np`` is rebound to a
namespace that resolves names in CuPy first (NumPy for what CuPy lacks: dtype helpers,
``errstate``...). The kernels look ``np`` up when they run, so the same code then computes on the
device, helpers and cross-module imports included.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

import numpy as np

from ...core.liveness import subgraphs_of
from ...core.numerics import random_array, rel_err, tolerance
from ...core.plan import Layer
from ..reference import KernelContext, get_kernel
from .common import require_nchw
from .device import cupy
from .tactic import BuiltKernel, GpuInfo, TacticBase

_TWIN = "workbench.kernels._cupy_twin"
_SOURCE = "workbench.kernels.reference"


class _CupyFirst(types.ModuleType):
    """``np`` for the twin: CuPy's name where it has one, else NumPy's."""

    def __init__(self, cp):
        super().__init__("cupy_first")
        self._cupy = cp

    def __getattr__(self, name):
        try:
            return getattr(self._cupy, name)
        except AttributeError:
            return getattr(np, name)


class _TwinLoader(importlib.machinery.SourceFileLoader):
    np_namespace: types.ModuleType | None = None

    def exec_module(self, module):
        super().exec_module(module)
        if "np" in module.__dict__:
            module.np = self.np_namespace


class _TwinFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TWIN and not name.startswith(_TWIN + "."):
            return None
        source = importlib.util.find_spec(_SOURCE + name[len(_TWIN):])
        if source is None or not source.origin or not source.origin.endswith(".py"):
            return None
        package = source.submodule_search_locations is not None
        return importlib.util.spec_from_file_location(
            name, source.origin, loader=_TwinLoader(name, source.origin),
            submodule_search_locations=list(source.submodule_search_locations) if package else None)


def twin_kernels(cp) -> dict:
    """The twin's (domain, op) -> kernel table (imported once per process)."""
    module = sys.modules.get(_TWIN)
    if module is None:
        _TwinLoader.np_namespace = _CupyFirst(cp)
        if not any(isinstance(f, _TwinFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _TwinFinder())
        module = importlib.import_module(_TWIN)
    return module.KERNELS


def twin_kernel(cp, domain: str, op: str):
    return twin_kernels(cp).get(("" if domain == "ai.onnx" else domain, op))


class ReferenceOnCupy(TacticBase):
    name = "cupy.reference"

    def supports(self, layer: Layer, precision: str, gpu: GpuInfo) -> str | None:
        if get_kernel(layer.domain, layer.op) is None:
            return "no reference kernel"
        why = require_nchw(layer, "the reference kernels index NCHW")
        if why:
            return why
        specs = [s for s in list(layer.input_specs) + list(layer.output_specs) if s.name]
        if any(s.dtype in (None, "string") or not s.is_static for s in specs):
            return "needs static tensors of numeric type"
        if any(s.dtype == "bfloat16" for s in specs):
            return "CuPy has no bfloat16 arithmetic"
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
        for name, spec in zip(layer.inputs, layer.aligned_input_specs()):
            if spec is None:
                host.append(None)
                dev.append(None)
                continue
            w = weights.get(name)
            h = w.get() if w is not None else random_array(spec.dtype, spec.shape, rng)
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
            tol = tolerance(spec.dtype)
            err = rel_err(g, r) if np.asarray(r).dtype.kind in "fc" else (0.0 if np.array_equal(g, r) else 1.0)
            if err > tol:
                raise ValueError(f"device result differs from the NumPy reference (relative error {err:.2e} > {tol})")


TACTICS = [ReferenceOnCupy()]
