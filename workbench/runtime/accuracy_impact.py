"""Each layer's impact on the graph outputs, measured against an fp32 *engine* of the same model.

``engine_impact(engine, reference, feeds)`` gives, for every layer of ``engine`` (say a uniform
fp8 build) that ``reference`` (the fp32 build of the same model) also has: the graph outputs'
relative L2 error when only this layer runs at its precision. The layer runs alone on the
reference engine's values of its inputs (its "local" output, with its own weights, codes and
tactic), that output replaces the reference layer's, and the reference engine's own layers run
downstream; the outputs are compared with the reference engine's unperturbed ones. It is
``runtime.accuracy``'s ``output_err`` with the reference engine's kernels in place of the fp32
reference kernels -- on the GPU every run stays on the device: the reference engine runs again
from its inputs for every layer measured (one fp32 run each, per feed), and only the layer's inputs
and outputs and the graph outputs are copied to the host.
``runtime.accuracy`` runs its downstream passes on the CPU's reference kernels, minutes per feed
on a large model at a large batch, so there it skips them; the precision search (``builder/mixed.py``) measures a GPU
build's sensitivities here instead.

Layers are matched by name; a tensor the GPU builder renamed at a storage-type boundary (the Cast
layers it inserts, ``precision/casts.py``) is read under its name in the reference. A layer that
has no counterpart, or whose inputs or outputs the reference does not hold, is left out of the
result. The reference's downstream adds its own rounding to both sides alike: the difference
measures the layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..core.liveness import subgraphs_of
from ..errors import WorkbenchError
from .accuracy_report import Diff, amax
from .accuracy_sides import GPU_CAST_PREFIX, CpuSide, GpuSide, feed_list, read_device, write_device
from .validate import check_feeds


def engine_impact(engine, reference, feeds, *, layers: Iterable[str] | None = None,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """layer name -> {"output_err": largest relative L2 error over the graph outputs (pooled over
    the feeds) with only this layer at its precision, "ref_amax": the largest finite magnitude
    among the reference's values of its inputs and outputs}. ``layers``: only these (default:
    every layer that is not an inserted Cast). Both engines run on the same backend with the same
    inputs and outputs."""
    if engine.backend != reference.backend:
        raise WorkbenchError(f"a {engine.backend} engine is measured against a {engine.backend} reference, "
                             f"not a {reference.backend} one")
    if getattr(engine.plan, "buckets", None) or getattr(reference.plan, "buckets", None):
        raise WorkbenchError("engines built for shape ranges (buckets) are measured at fixed shapes only")
    outputs = [s.name for s in reference.plan.outputs]
    if sorted(outputs) != sorted(s.name for s in engine.plan.outputs):
        raise WorkbenchError("the engine and its reference have different graph outputs")
    logical = logical_names(engine.plan)
    ref_at = {layer.name: k for k, layer in enumerate(reference.plan.layers)}
    wanted = set(layers) if layers is not None else None
    held = {s.name for s in reference.plan.inputs} | set(reference.plan.constants)
    held |= {o for l in reference.plan.layers for o in l.outputs if o}
    jobs = []  # (engine layer index, reference layer index)
    for i, layer in enumerate(engine.plan.layers):
        k = ref_at.get(layer.name)
        if k is None or layer.name.startswith(GPU_CAST_PREFIX) or (wanted is not None and layer.name not in wanted):
            continue
        if not subgraphs_of(layer) and _matches(layer, reference.plan.layers[k], held, logical, engine.plan.constants):
            jobs.append((i, k))
    gpu = engine.backend == "gpu"
    ref = _GpuReference(reference) if gpu else _CpuReference(reference, seed)
    side = GpuSide(engine) if gpu else CpuSide(engine, seed)
    diffs = {i: {o: Diff() for o in outputs} for i, _ in jobs}
    amaxes = {i: 0.0 for i, _ in jobs}
    consts = engine.plan.constants
    count = 0
    for raw in feed_list(feeds):
        feed = check_feeds(reference.inputs, dict(raw))
        ref.start(feed)
        ref.steps(0, len(reference.plan.layers))
        clean = {o: ref.read(o) for o in outputs}
        for i, k in jobs:
            layer = engine.plan.layers[i]
            ref.start(feed)
            ref.steps(0, k)
            args = [None if not n else consts[n] if n in consts else ref.read(logical.get(n, n)) for n in layer.inputs]
            ref.steps(k, k + 1)  # (every output of the reference layer holds its value, then ours replace it)
            targets = [n for n in reference.plan.layers[k].outputs if n]
            seen = [a for a in args + [ref.read(n) for n in targets] if isinstance(a, np.ndarray)]
            amaxes[i] = max(amaxes[i], amax(seen))
            for n, value in zip(layer.outputs, side.run_on(i, args, {})):
                if n and logical.get(n, n) in targets:
                    ref.write(logical.get(n, n), value)
            ref.steps(k + 1, len(reference.plan.layers))
            for o in outputs:
                diffs[i][o].add(ref.read(o), clean[o])
        count += 1
    side.finish()
    if count == 0:
        raise WorkbenchError("no feeds given: pass a feed dict or an iterable of at least one")
    result = {}
    for i, _ in jobs:
        errs = [d.rel for d in diffs[i].values() if d.pairs]
        result[engine.plan.layers[i].name] = {"output_err": max(errs) if errs else float("nan"),
                                              "ref_amax": amaxes[i]}
    return result


def logical_names(plan) -> dict[str, str]:
    """Tensor name in ``plan`` -> its name before the GPU builder's storage-type casts: a cast's
    result ("t/float16") is ``t``; a graph output whose producer writes a renamed tensor
    ("y/float16", cast back to "y") is ``y``."""
    out: dict[str, str] = {}
    graph_outputs = {s.name for s in plan.outputs}
    for layer in plan.layers:
        if not layer.name.startswith(GPU_CAST_PREFIX) or not layer.inputs or not layer.outputs:
            continue
        src, dst = layer.inputs[0], layer.outputs[0]
        if dst in graph_outputs:
            out[src] = dst  # the renamed output of the producer
        else:
            out[dst] = out.get(src, src)
    return {k: out.get(v, v) for k, v in out.items()}


def _matches(layer, ref_layer, held: set, logical: dict[str, str], consts) -> bool:
    """Whether the reference holds what running ``layer`` in its place needs (``held``: its tensor
    names): every activation it reads, and a reference output for at least one of its outputs."""
    for n in layer.inputs:
        if n and n not in consts and logical.get(n, n) not in held:
            return False
    return any(n and logical.get(n, n) in set(ref_layer.outputs) for n in layer.outputs)


class _CpuReference:
    """The reference engine on the CPU: its own kernels over a value table."""

    def __init__(self, engine, seed: int):
        self.side = CpuSide(engine, seed)

    def start(self, feed: dict) -> None:
        self.side.start(feed)

    def steps(self, a: int, b: int) -> None:
        for j in range(a, b):
            self.side.run(j)

    def read(self, name: str):
        return self.side.values[name]

    def write(self, name: str, value) -> None:
        ref = self.side.values.get(name)
        self.side.values[name] = np.asarray(value).astype(ref.dtype, copy=False) if isinstance(ref, np.ndarray) \
            else value


class _GpuReference:
    """The reference engine on the GPU: an eager context run layer by layer on the device; only
    ``read`` / ``write`` copy a tensor (in its logical NCHW order and value) to or from the host."""

    def __init__(self, engine):
        self.plan = engine.plan
        self.ctx = engine.create_context(cuda_graph=False)
        self.specs = {s.name: (s, False) for s in self.plan.inputs}
        for layer in self.plan.layers:
            layouts = layer.attrs.get("out_layouts") or []
            for pos, spec in enumerate(layer.output_specs):
                if spec.name:
                    self.specs[spec.name] = (spec, pos < len(layouts) and layouts[pos] == "nhwc")

    def start(self, feed: dict) -> None:
        with self.ctx.stream:
            self.ctx._load_inputs(feed)

    def steps(self, a: int, b: int) -> None:
        with self.ctx.stream:
            for j in range(a, b):
                self.ctx._run_layer(j)

    def read(self, name: str):
        if name in self.plan.constants:
            return self.plan.constants[name]
        spec, nhwc = self.specs[name]
        return read_device(self.ctx.buffers[name], spec, nhwc, self.ctx.stream)

    def write(self, name: str, value) -> None:
        spec, nhwc = self.specs[name]
        write_device(self.ctx.buffers[name], value, spec, nhwc, self.ctx.stream)
