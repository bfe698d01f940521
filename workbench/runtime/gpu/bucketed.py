"""BucketedGpuContext: runs a GPU engine built as buckets (``plan.buckets``; what they are and how a
run picks one: ``runtime/buckets.py``).

Every bucket is a ``GpuExecutionContext`` over its own static plan, with its own kernels (tactics
tuned at its shapes), its own input buffers and its own CUDA graphs, and all of them share one
``SharedDevice``: one stream, one lock, the weights uploaded once, one workspace and one activation
arena as large as the largest bucket's (the buckets never run at the same time, so their
activations may use the same bytes).

Capture happens when the context is made, largest bucket first: each bucket's graph segments are
warmed up eagerly (``graphs.capture_segments``: libraries allocate their workspaces and load their
modules outside capture) on zeroed input buffers, then captured on the shared non-default stream.

A run with a batch smaller than its bucket's copies the rows it has into the bucket's input buffers,
fills the rest with copies of the last row and returns the first rows of the outputs
(``GpuExecutionContext._run`` with ``rows``). Feeds that are exactly a bucket's shapes take the
single-engine fast path (no host-side check beyond a shape lookup).

IO binding per bucket: ``select(shapes)`` gives the bucket index (and makes it current),
``input_buffer(name, bucket)`` / ``output_buffer(name, bucket)`` are that bucket's persistent
buffers (full bucket size: write the rows you have; rows past them keep what they held -- zeros or
earlier data, valid inputs whose outputs you ignore) and ``execute(stream, bucket)`` replays it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import OutOfMemoryError
from ...kernels.cuda.device import cupy
from ..buckets import BucketedContext, bucket_engine
from .context import GpuExecutionContext, SharedDevice


class BucketedGpuContext(BucketedContext):
    device = "gpu"

    def __init__(self, engine, *, debug: bool = False, seed: int = 0, cuda_graph: bool | None = None,
                 memory_budget: int | None = None):
        self.current = 0  # the bucket IO binding addresses when none is named
        self._routes: dict[tuple, tuple[int, int | None]] = {}  # (profile, shapes) -> (bucket, rows)
        super().__init__(engine, debug=debug, seed=seed, cuda_graph=cuda_graph, memory_budget=memory_budget)
        self.cuda_graph = self.subs[0].cuda_graph

    def _make_subs(self, options: dict) -> list:
        cp = cupy()
        buckets = self.engine.plan.buckets
        try:
            self.shared = SharedDevice(max(int(b.plan.arena.bytes) for b in buckets))
            subs = [GpuExecutionContext(bucket_engine(self.engine, b), shared=self.shared, **options) for b in buckets]
            for i in sorted(range(len(subs)), key=lambda i: -_elements(buckets[i])):
                subs[i].capture()  # largest first
        except cp.cuda.memory.OutOfMemoryError as exc:
            raise OutOfMemoryError(f"GPU out of memory while loading the engine's buckets: {exc}") from None
        return subs

    def _array_types(self) -> tuple:
        return (np.ndarray, cupy().ndarray)

    # ---- running -----------------------------------------------------------------------------
    def run(self, feeds: dict[str, Any], copy_outputs: bool = True) -> dict[str, Any]:
        """Run once on the bucket that holds the feeds' shapes; outputs have the feeds' batch.
        NumPy in, NumPy out; CuPy in, CuPy out (asynchronous, as ``GpuExecutionContext.run``)."""
        key = _key(feeds, self.router.names)
        if key is not None:  # shapes seen before: C-contiguous CuPy feeds of the right types skip the checks
            hit = self._routes.get((self.active_profile, key))
            if hit is not None and self.subs[hit[0]]._fast_feeds(feeds, hit[1]):
                self.current = hit[0]
                return self.subs[hit[0]]._run(feeds, True, hit[1], copy_outputs)
        feeds, i, rows = self._checked(feeds)
        if key is not None and len(self._routes) < 4096:
            self._routes[(self.active_profile, key)] = (i, rows)
        self.current = i
        return self.subs[i]._run(feeds, False, rows, copy_outputs)

    def run_eager(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run layer by layer without CUDA graphs, on the bucket the feeds land in."""
        feeds, i, rows = self._checked(feeds)
        return self.subs[i].run_eager(feeds, rows=rows)

    # ---- IO binding per bucket -----------------------------------------------------------------
    def select(self, feeds_or_shapes: dict) -> int:
        """The bucket that runs these feeds (or {input: shape}); it becomes the current one."""
        self.current = super().select(feeds_or_shapes)
        return self.current

    def _bucket(self, bucket: int | None) -> GpuExecutionContext:
        i = self.current if bucket is None else bucket
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.subs):
            raise IndexError(f"no bucket {bucket!r}; this engine has buckets 0..{len(self.subs) - 1}")
        return self.subs[i]

    def input_buffer(self, name: str, bucket: int | None = None):
        """Bucket ``bucket``'s (default: the current one's) persistent input buffer (full bucket shape)."""
        return self._bucket(bucket).input_buffer(name)

    def output_buffer(self, name: str, bucket: int | None = None):
        """Bucket ``bucket``'s (default: the current one's) persistent output buffer (full bucket shape)."""
        return self._bucket(bucket).output_buffer(name)

    def execute(self, stream=None, bucket: int | None = None) -> None:
        """Replay bucket ``bucket`` (default: the current one) on ``stream``; see
        ``GpuExecutionContext.execute``."""
        self._bucket(bucket).execute(stream)

    def profile_attrs(self) -> dict:
        return {"buckets": len(self.subs), "cuda_graph": bool(self.cuda_graph)}


def _elements(bucket) -> int:
    return sum(int(np.prod(s)) for s in bucket.shapes.values())


def _key(feeds, names: list[str]) -> tuple | None:
    """The feeds' shapes in input order when ``feeds`` is a dict of exactly the inputs, each with a
    shape; else None."""
    if type(feeds) is not dict or len(feeds) != len(names):
        return None
    out = []
    for n in names:
        shape = getattr(feeds.get(n), "shape", None)
        if type(shape) is not tuple:
            return None
        out.append(shape)
    return tuple(out)
