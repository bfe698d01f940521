"""PlanExecutor: runs a Plan (or a Subgraph) layer by layer with NumPy reference kernels.

Values are freed right after their last reader (the same liveness the memory plan uses), so peak
host memory follows the plan rather than the whole graph. Subgraphs (If / Loop / Scan bodies) run
through nested executors that read enclosing scopes by name.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..core.liveness import last_uses_of
from ..core.plan import Layer, Plan, Subgraph
from ..errors import WorkbenchError
from ..kernels.reference import KernelContext, get_kernel


class LayerError(WorkbenchError, RuntimeError):
    """A layer failed while running; the message names the layer and its ONNX nodes."""


class Scope:
    """Chained name -> value lookup (a subgraph sees its parents' values)."""

    __slots__ = ("values", "parent")

    def __init__(self, values: dict, parent: "Scope | None" = None):
        self.values = values
        self.parent = parent

    def get(self, name: str):
        scope = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            scope = scope.parent
        raise KeyError(name)


class PlanExecutor:
    def __init__(self, plan: Plan | Subgraph, *, kernel_for: Callable[[Layer], Callable] | None = None,
                 rng: np.random.Generator | None = None):
        self.plan = plan
        self.layers = plan.layers
        self.kernel_for = kernel_for or _reference_kernel
        self.kernels = [self.kernel_for(layer) for layer in self.layers]
        outputs = [s.name for s in plan.outputs]
        self.free_after = _free_lists(self.layers, outputs)
        self.rng = rng or np.random.default_rng(0)
        self._subexec: dict[int, PlanExecutor] = {}
        self.contexts = [
            KernelContext(opset=l.opset, n_outputs=len(l.outputs), run_subgraph=None,
                          output_dtypes=[s.dtype for s in l.output_specs], rng=self.rng, name=l.name)
            for l in self.layers
        ]

    def run(self, feeds: dict[str, Any], parent: Scope | None = None,
            timings: list[float] | None = None, check_finite: bool = False) -> list:
        values: dict[str, Any] = dict(self.plan.constants)
        values.update(feeds)
        scope = Scope(values, parent)
        first_bad = None
        for i, layer in enumerate(self.layers):
            try:
                args = [scope.get(n) if n else None for n in layer.inputs]
            except KeyError as exc:
                raise LayerError(f"layer {layer.name!r} reads {exc.args[0]!r}, which no layer produced") from None
            ctx = self.contexts[i]
            ctx.run_subgraph = lambda sub, ins, _s=scope: self.run_subgraph(sub, ins, _s)
            t0 = time.perf_counter() if timings is not None else 0.0
            try:
                outs = self.kernels[i](ctx, args, layer.attrs)
            except WorkbenchError:
                raise
            except Exception as exc:
                nodes = ", ".join(layer.onnx_nodes)
                raise LayerError(f"layer {layer.name!r} ({layer.op}; ONNX nodes: {nodes}) failed: {exc}") from exc
            if timings is not None:
                timings.append(time.perf_counter() - t0)
            for name, val in zip(layer.outputs, outs):
                if name:
                    values[name] = val
            if check_finite and first_bad is None:
                for name, val in zip(layer.outputs, outs):
                    if isinstance(val, np.ndarray) and val.dtype.kind in "fc" and not np.all(np.isfinite(val)):
                        first_bad = (layer.name, name)
                        break
            for name in self.free_after[i]:
                values.pop(name, None)
        self.first_nonfinite = first_bad
        result = []
        for spec in self.plan.outputs:
            try:
                result.append(scope.get(spec.name))
            except KeyError:
                raise LayerError(f"graph output {spec.name!r} was never produced") from None
        return result

    def run_subgraph(self, sub: Subgraph, inputs, scope: Scope) -> list:
        ex = self._subexec.get(id(sub))
        if ex is None:
            ex = PlanExecutor(sub, kernel_for=self.kernel_for, rng=self.rng)
            self._subexec[id(sub)] = ex
        feeds = {}
        for spec, val in zip(sub.inputs, inputs):
            if spec.name:
                feeds[spec.name] = val
        return ex.run(feeds, parent=scope)


def _reference_kernel(layer: Layer):
    fn = get_kernel(layer.domain, layer.op)
    if fn is None:
        dom = f"{layer.domain}." if layer.domain else ""
        raise LayerError(f"no kernel for {dom}{layer.op} (layer {layer.name!r})")
    if layer.precision in _EMULATED:
        return _emulated(fn, _EMULATED[layer.precision])
    return fn


_EMULATED = {"fp16": np.float16, "bf16": "bfloat16"}


def _emulated(fn, storage):
    """Run ``fn`` in fp32 on inputs rounded to ``storage`` and round its float32 outputs too."""
    if isinstance(storage, str):
        import ml_dtypes

        storage = getattr(ml_dtypes, storage)

    def _round(x):
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            return x.astype(storage).astype(np.float32)
        return x

    def kernel(ctx, inputs, attrs):
        return [_round(o) for o in fn(ctx, [_round(x) for x in inputs], attrs)]

    return kernel


def _free_lists(layers: list[Layer], outputs: list[str]) -> list[list[str]]:
    last = last_uses_of(layers, outputs)
    produced = {o for l in layers for o in l.outputs if o}
    free: list[list[str]] = [[] for _ in layers]
    for name, idx in last.items():
        if name in produced and idx < len(layers):
            free[idx].append(name)
    return free
