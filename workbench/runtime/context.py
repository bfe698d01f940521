"""ExecutionContext (CPU): validated runs, profiling, and safe use from several threads.

One context serializes its own runs with a lock (sharing one context between threads is safe but
not parallel); for parallel inference make one context per thread.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import numpy as np

from ..kernels.reference.limits import element_cap
from .executor import PlanExecutor
from .validate import check_feeds


class NonFiniteWarning(RuntimeWarning):
    """Debug mode found NaN/Inf; the message names the first layer that produced it."""


class ExecutionContext:
    device = "cpu"

    def __init__(self, engine, *, debug: bool = False, seed: int = 0):
        self.engine = engine
        self.debug = debug
        self._lock = threading.Lock()
        self._exec = PlanExecutor(engine.plan, rng=np.random.default_rng(seed))
        self.first_nonfinite: tuple[str, str] | None = None
        self._max_elements = engine.build_info.get("max_elements")

    @property
    def inputs(self):
        return self.engine.inputs

    @property
    def outputs(self):
        return self.engine.outputs

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

    def time_layers(self, feeds: dict[str, Any]) -> tuple[list[float], float]:
        """One run with host timers around every layer: (per-layer seconds, end-to-end seconds)."""
        check_feeds(self.engine.inputs, feeds)
        timings: list[float] = []
        with self._lock, element_cap(self._max_elements):
            t0 = time.perf_counter()
            self._exec.run(dict(feeds), timings=timings)
            total = time.perf_counter() - t0
        return timings, total

    def profile(self, feeds: dict[str, Any] | None = None, runs: int = 10, warmup: int = 1):
        """Per-layer profile as a pandas DataFrame (see workbench.runtime.profile)."""
        from .profile import profile_context

        return profile_context(self, feeds, runs=runs, warmup=warmup)


def _owned(v, fed: set[int]):
    """The caller's own array: weights (read-only, shared by every context) and the caller's own
    inputs passed straight through (an Identity output) are copied, so writing to an output never
    changes the engine or the feeds."""
    if isinstance(v, np.ndarray) and (not v.flags.writeable or id(v) in fed or not v.flags.owndata):
        return v.copy()
    return v
