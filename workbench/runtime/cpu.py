"""The CPU runtime: a context that runs an engine's plan layer by layer with the NumPy reference
kernels, each bound through the CPU tactic source by the tactic name the engine recorded.

Values are freed right after their last reader (the same liveness the memory plan uses), so peak
host memory follows the plan rather than the whole graph. Subgraphs (If / Loop / Scan bodies) run
through nested executors, bound at load like the top level, that read enclosing scopes by name.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Callable

import numpy as np

from ..core.liveness import last_uses_of, subgraphs_of
from ..core.plan import Layer, Plan, Subgraph
from ..errors import EngineCompatibilityError, WorkbenchError
from ..kernels.reference import KernelContext, KernelError
from ..kernels.reference.limits import element_cap
from ..kernels.reference.tactics import BY_NAME
from .context import ExecutionContext, LayerError, NonFiniteWarning
from .profile import host_ms
from .validate import check_feeds


class CpuExecutionContext(ExecutionContext):
    device = "cpu"
    profile_note = ("per-layer times come from separate runs with a timer around every layer, which adds "
                    "overhead; end-to-end times come from plain runs")

    def __init__(self, engine, *, debug: bool = False, seed: int = 0):
        super().__init__(engine)
        self.debug = debug
        self._lock = threading.Lock()
        self._exec = PlanExecutor(engine.plan, rng=np.random.default_rng(seed))
        self.first_nonfinite: tuple[str, str] | None = None
        self._max_elements = engine.plan.options.max_elements

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run once; returns {output name: array}. Raises InputError naming a bad feed."""
        check_feeds(self.engine.inputs, feeds)
        with self._lock, element_cap(self._max_elements):
            outs = self._exec.run(dict(feeds), check_finite=self.debug)
            if self.debug:
                self.first_nonfinite = self._exec.first_nonfinite
                if self.first_nonfinite:
                    layer, tensor = self.first_nonfinite
                    warnings.warn(f"first non-finite value produced by layer {layer!r} (tensor {tensor!r})",
                                  NonFiniteWarning, stacklevel=2)
        fed = {id(v) for v in feeds.values()}
        return {spec.name: _owned(v, fed) for spec, v in zip(self.engine.outputs, outs)}

    def time_layers(self, feeds: dict[str, Any], runs: int) -> list[list[float]]:
        """Runs with a host timer around every layer: one list of ``runs`` ms samples per layer."""
        check_feeds(self.engine.inputs, feeds)
        per: list[list[float]] = [[] for _ in self.engine.layers]
        with self._lock, element_cap(self._max_elements):
            for _ in range(runs):
                timings: list[float] = []
                self._exec.run(dict(feeds), timings=timings)
                for samples, ms in zip(per, timings):
                    samples.append(ms)
        return per

    def time_end_to_end(self, feeds: dict[str, Any], runs: int) -> list[float]:
        """Milliseconds of ``runs`` plain ``run`` calls (feed checks and output copies included)."""
        return [host_ms(lambda: self.run(feeds)) for _ in range(runs)]


def _owned(v, fed: set[int]):
    """The caller's own array: weights (read-only, shared by every context) and the caller's own
    inputs passed straight through (an Identity output) are copied, so writing to an output never
    changes the engine or the feeds."""
    if isinstance(v, np.ndarray) and (not v.flags.writeable or id(v) in fed or not v.flags.owndata):
        return v.copy()
    return v


def bind_kernel(layer: Layer) -> Callable:
    """The layer's kernel, built by the CPU tactic the engine recorded for it."""
    tactic = BY_NAME.get(layer.tactic)
    if tactic is None:
        raise EngineCompatibilityError(
            f"layer {layer.name!r} uses tactic {layer.tactic!r}, which this workbench's CPU runtime does not have "
            f"(it has {', '.join(BY_NAME)}) — rebuild the engine")
    try:
        return tactic.build(layer, layer.precision, layer.tactic_config)
    except KernelError as exc:
        raise LayerError(str(exc)) from None


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
    """Runs a Plan (or a Subgraph) layer by layer; every kernel, nested ones included, is bound
    when the executor is made, so an engine the runtime cannot run is refused at load."""

    def __init__(self, plan: Plan | Subgraph, *, rng: np.random.Generator | None = None):
        self.plan = plan
        self.layers = plan.layers
        self.kernels = [bind_kernel(layer) for layer in self.layers]
        outputs = [s.name for s in plan.outputs]
        self.free_after = _free_lists(self.layers, outputs)
        self.rng = rng or np.random.default_rng(0)
        self.first_nonfinite: tuple[str, str] | None = None
        self._subexec = {id(sub): PlanExecutor(sub, rng=self.rng)
                         for layer in self.layers for sub in subgraphs_of(layer)}
        self.contexts = [
            KernelContext(opset=l.opset, n_outputs=len(l.outputs), run_subgraph=None,
                          output_dtypes=[s.dtype for s in l.output_specs], rng=self.rng, name=l.name)
            for l in self.layers
        ]

    def run(self, feeds: dict[str, Any], parent: Scope | None = None,
            timings: list[float] | None = None, check_finite: bool = False) -> list:
        """The plan's outputs; ``timings`` (if given) receives every layer's host ms."""
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
                timings.append((time.perf_counter() - t0) * 1e3)
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
        ex = self._subexec[id(sub)]  # kernels only run the Subgraphs of their own attributes
        feeds = {}
        for spec, val in zip(sub.inputs, inputs):
            if spec.name:
                feeds[spec.name] = val
        return ex.run(feeds, parent=scope)


def _free_lists(layers: list[Layer], outputs: list[str]) -> list[list[str]]:
    last = last_uses_of(layers, outputs)
    produced = {o for l in layers for o in l.outputs if o}
    free: list[list[str]] = [[] for _ in layers]
    for name, idx in last.items():
        if name in produced and idx < len(layers):
            free[idx].append(name)
    return free
