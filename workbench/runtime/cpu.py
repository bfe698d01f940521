"""The CPU runtime: a context that runs an engine's plan layer by layer with the NumPy reference
kernels, each bound through the CPU tactic source by the tactic name the engine recorded.

Values are freed right after their last reader (the same liveness the memory plan uses), so peak
host memory follows the plan rather than the whole graph. Subgraphs (If / Loop / Scan bodies) run
through nested executors, bound at load like the top level, that read enclosing scopes by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import warnings
from typing import Any, Callable

import numpy as np

from ..core import quant
from ..core.liveness import last_uses_of, subgraphs_of
from ..core.plan import Layer, Plan, Subgraph, TensorSpec
from ..dtypes import from_numpy
from ..errors import EngineCompatibilityError, EngineFormatError, WorkbenchError
from ..kernels.cpu import BY_NAME
from ..kernels.cpu._common import blas_restore, blas_set
from ..kernels.reference import KernelContext, KernelError
from .context import ExecutionContext, LayerError, NonFiniteWarning
from .limits import RunLimits
from .profile import host_ms
from .buckets import check_ranges, opt_specs
from .feeds import random_feeds
from .validate import check_feeds


class CpuExecutionContext(ExecutionContext):
    device = "cpu"
    profile_note = ("per-layer times come from separate runs with a timer around every layer, which adds "
                    "overhead; end-to-end times come from plain runs")

    def __init__(self, engine, *, debug: bool = False, seed: int = 0, threads: int | None = None,
                 memory_budget: int | None = None, max_elements: int | None = None,
                 max_loop_iterations: int | None = None):
        super().__init__(engine)
        self.limits = RunLimits.make(engine, memory_budget, max_elements, max_loop_iterations)
        self.debug = debug
        self.threads = check_threads(threads)
        self._lock = threading.Lock()
        self._exec = PlanExecutor(engine.plan, rng=np.random.default_rng(seed))
        self.first_nonfinite: tuple[str, str] | None = None
        self._accepted: tuple | None = None  # the key (_feed_key) of the last feeds that passed

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run once; returns {output name: array}. Raises InputError naming a bad feed (shapes
        outside the engine's profiles: ``runtime/buckets.ShapeRangeError`` naming input, shape and range)."""
        feeds = self._checked(feeds)
        with self._lock:
            # inline, not context managers: this runs on every call
            tokens = self.limits.enter()
            state = enter_threads(self.threads)
            try:
                outs = self._exec.run(feeds, check_finite=self.debug)
            finally:
                exit_threads(state)
                self.limits.exit(tokens)
                self._exec.release()
            if self.debug:
                self.first_nonfinite = self._exec.first_nonfinite
                if self.first_nonfinite:
                    layer, tensor = self.first_nonfinite
                    warnings.warn(f"first non-finite value produced by layer {layer!r} (tensor {tensor!r})",
                                  NonFiniteWarning, stacklevel=2)
            # copied under the lock: kernels keep their output buffers, which the next run rewrites
            fed = {id(v) for v in feeds.values()}
            return {spec.name: _owned(v, fed) for spec, v in zip(self.engine.outputs, outs)}

    def _checked(self, feeds: dict[str, Any]) -> dict[str, Any]:
        # the same names, types and shapes as the last accepted feeds, all plain ndarrays: every
        # check below would pass again (a server calls with the same shapes run after run)
        key = _feed_key(feeds)
        if key is not None and key == self._accepted:
            return dict(feeds)
        if self.engine.plan.profiles:  # the range first: a wrong rank is named with the range it misses
            check_ranges(self.engine.plan, feeds, self.active_profile)
        checked = check_feeds(self.engine.inputs, feeds, memory_budget=self.limits.memory_budget)
        if not self.engine.plan.profiles:  # a profile's range can change between runs
            self._accepted = key
        return checked

    def tensor_specs(self, feeds: dict[str, Any]) -> dict[str, TensorSpec]:
        """Type and shape of every tensor the layers make in one run on ``feeds`` (the builder plans
        the memory a dynamic-shape plan needs at a profile's max this way)."""
        feeds = self._checked(feeds)
        specs: dict[str, TensorSpec] = {}

        def tap(name: str, value) -> None:
            if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":
                specs[name] = TensorSpec(name, from_numpy(value.dtype), list(value.shape))

        with self._lock, self.limits.apply(), cpu_threads(self.threads), self._exec.released():
            self._exec.run(feeds, tap=tap)
        return specs

    def time_layers(self, feeds: dict[str, Any], runs: int) -> list[list[float]]:
        """Runs with a host timer around every layer: one list of ``runs`` ms samples per layer."""
        feeds = self._checked(feeds)
        per: list[list[float]] = [[] for _ in self.engine.layers]
        with self._lock, self.limits.apply(), cpu_threads(self.threads), self._exec.released():
            for _ in range(runs):
                timings: list[float] = []
                self._exec.run(dict(feeds), timings=timings)
                for samples, ms in zip(per, timings):
                    samples.append(ms)
        return per

    def time_end_to_end(self, feeds: dict[str, Any], runs: int) -> list[float]:
        """Milliseconds of ``runs`` plain ``run`` calls (feed checks and output copies included)."""
        return [host_ms(lambda: self.run(feeds)) for _ in range(runs)]

    def profile(self, feeds: dict[str, Any] | None = None, runs: int = 10, warmup: int = 1, **options):
        """As ``ExecutionContext.profile``; an engine with shape ranges profiles random feeds at the
        opt shapes of its chosen profile (else profile 0) when none are given."""
        if feeds is None and self.engine.plan.profiles:
            feeds = random_feeds(opt_specs(self.engine.plan, self.active_profile or 0),
                                 memory_budget=self.limits.memory_budget)
        return super().profile(feeds, runs=runs, warmup=warmup, **options)


def _feed_key(feeds) -> tuple | None:
    """(name, dtype, shape) of every feed, or None unless ``feeds`` is a dict of plain,
    non-object ndarrays (anything else always goes through the full checks)."""
    if type(feeds) is not dict:
        return None
    key = []
    for name, v in feeds.items():
        if type(v) is not np.ndarray or v.dtype.hasobject:
            return None
        key.append((name, v.dtype, v.shape))
    return tuple(key)


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), the default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(threads) -> int:
    """``threads`` as a positive int (None: ``default_threads()``); anything else is a WorkbenchError."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise WorkbenchError(f"threads must be a positive integer, got {threads!r}")
    return threads


def enter_threads(n: int) -> list:
    """BLAS on ``n`` threads (threadpoolctl; set only where it differs); returns what
    ``exit_threads`` restores."""
    return blas_set(n)


def exit_threads(state: list) -> None:
    blas_restore(state)


@contextlib.contextmanager
def cpu_threads(n: int):
    """``enter_threads(n)`` for the duration of the block."""
    state = enter_threads(n)
    try:
        yield
    finally:
        exit_threads(state)


def _owned(v, fed: set[int]):
    """The caller's own array: weights (read-only, shared by every context), the caller's own
    inputs passed straight through (an Identity output) and views (among them the output buffers
    the fast CPU tactics keep between runs) are copied, so writing to an output never changes the
    engine or the feeds, and the next run never changes an output."""
    if isinstance(v, np.ndarray) and (not v.flags.writeable or id(v) in fed or not v.flags.owndata):
        return v.copy()
    return v


def bind_kernel(layer: Layer, constants: dict | None = None, reuse: bool = True) -> Callable:
    """The layer's kernel, built by the CPU tactic the engine recorded for it (with the plan's
    constants, so weight layouts are made once; ``reuse``: output buffers kept between runs)."""
    tactic = BY_NAME.get(layer.tactic)
    if tactic is None:
        raise EngineCompatibilityError(
            f"layer {layer.name!r} uses tactic {layer.tactic!r}, which this workbench's CPU runtime does not have "
            f"(it has {', '.join(BY_NAME)}) — rebuild the engine")
    try:
        kernel = tactic.build(layer, layer.precision, layer.tactic_config, constants, reuse)
        return kernel if layer.attrs.get("q_copy_scale") is None else _with_copy(kernel, layer)
    except KernelError as exc:
        raise LayerError(str(exc)) from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # the header schema checks the plan's shape, not what each tactic keeps in its config or
        # attributes: a tampered engine reaches here, and gets one line naming the layer
        raise EngineFormatError(f"layer {layer.name!r:.80} ({layer.op}, tactic {layer.tactic!r:.40}) cannot be "
                                f"set up from the engine: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
                                " — the engine is corrupt or was not written by this workbench") from None


def _with_copy(kernel: Callable, layer: Layer) -> Callable:
    """The kernel of a layer that also writes a copy of its first output as its last
    (``q_copy_scale``, ``core/quant.py``): the op's kernel, then that copy, as codes where the
    copy's spec holds codes (else the float values: a reference plan's widened copy)."""
    spec = layer.output_specs[-1]
    coded = quant.is_coded(spec)

    def run(ctx, inputs, attrs):
        own = dataclasses.replace(ctx, n_outputs=ctx.n_outputs - 1)
        outs = list(kernel(own, inputs, attrs))[:own.n_outputs]
        outs += [None] * (own.n_outputs - len(outs))
        return outs + [quant.encode(outs[0], spec) if coded else np.array(outs[0], copy=True)]

    return run


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

    def __init__(self, plan: Plan | Subgraph, *, rng: np.random.Generator | None = None, reuse: bool = True):
        self.plan = plan
        self.layers = plan.layers
        # subgraph bodies may run a layer many times per run and keep each result: fresh outputs there
        self.kernels = [bind_kernel(layer, plan.constants, reuse) for layer in self.layers]
        outputs = [s.name for s in plan.outputs]
        self.free_after = _free_lists(self.layers, outputs)
        self.rng = rng or np.random.default_rng(0)
        self.first_nonfinite: tuple[str, str] | None = None
        self._subexec = {id(sub): PlanExecutor(sub, rng=self.rng, reuse=False)
                         for layer in self.layers for sub in subgraphs_of(layer)}
        self.contexts = [
            KernelContext(opset=l.opset, n_outputs=len(l.outputs), run_subgraph=None,
                          output_dtypes=[s.dtype for s in l.output_specs], rng=self.rng, name=l.name)
            for l in self.layers
        ]
        # what the hot loop reads per layer, gathered once (per-layer dispatch cost stays small)
        self._steps = [(layer, self.kernels[i], self.contexts[i], tuple(layer.inputs), tuple(layer.outputs),
                        tuple(self.free_after[i]), bool(subgraphs_of(layer)))
                       for i, layer in enumerate(self.layers)]

    def run(self, feeds: dict[str, Any], parent: Scope | None = None,
            timings: list[float] | None = None, check_finite: bool = False,
            tap: Callable[[str, Any], None] | None = None) -> list:
        """The plan's outputs; ``timings`` (if given) receives every layer's host ms; ``tap`` (if
        given) is called as ``tap(name, value)`` with every output of every layer as it is made
        (calibration observes the plan this way; the value may be a buffer the next run reuses)."""
        values: dict[str, Any] = dict(self.plan.constants)
        values.update(feeds)
        scope = Scope(values, parent)
        lookup = values.__getitem__ if parent is None else scope.get
        first_bad = None
        for layer, kernel, ctx, in_names, out_names, free, has_sub in self._steps:
            try:
                args = [lookup(n) if n else None for n in in_names]
            except KeyError as exc:
                raise LayerError(f"layer {layer.name!r} reads {exc.args[0]!r}, which no layer produced") from None
            if has_sub:
                ctx.run_subgraph = lambda sub, ins, _s=scope: self.run_subgraph(sub, ins, _s)
            t0 = time.perf_counter() if timings is not None else 0.0
            try:
                outs = kernel(ctx, args, layer.attrs)
            except WorkbenchError:
                raise
            except Exception as exc:
                nodes = ", ".join(layer.onnx_nodes)
                raise LayerError(f"layer {layer.name!r} ({layer.op}; ONNX nodes: {nodes}) failed: {exc}") from exc
            if timings is not None:
                timings.append((time.perf_counter() - t0) * 1e3)
            for name, val in zip(out_names, outs):
                if name:
                    values[name] = val
            if tap is not None:
                for name, val in zip(out_names, outs):
                    if name:
                        tap(name, val)
            if check_finite and first_bad is None:
                for name, val in zip(out_names, outs):
                    if isinstance(val, np.ndarray) and val.dtype.kind in "fc" and not np.all(np.isfinite(val)):
                        first_bad = (layer.name, name)
                        break
            for name in free:
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

    @contextlib.contextmanager
    def released(self):
        """Run inside this block; afterwards no kernel context holds the run's subgraph runner.

        That runner closes over the run's scope (feeds, intermediates) and over this executor, which
        holds the kernel contexts: left in place it would keep the last run's tensors alive, in a
        reference cycle that only a garbage-collection pass frees."""
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """What ``released`` does after its block (nothing to do in a plan without subgraphs)."""
        if not self._subexec:
            return
        stack = [self]
        while stack:
            ex = stack.pop()
            for ctx in ex.contexts:
                ctx.run_subgraph = None
            stack.extend(ex._subexec.values())


def _free_lists(layers: list[Layer], outputs: list[str]) -> list[list[str]]:
    last = last_uses_of(layers, outputs)
    produced = {o for l in layers for o in l.outputs if o}
    free: list[list[str]] = [[] for _ in layers]
    for name, idx in last.items():
        if name in produced and idx < len(layers):
            free[idx].append(name)
    return free
