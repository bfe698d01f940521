"""Building for shape ranges (``BuilderConfig(profiles=...)``; what the ranges mean: ``profiles.py``).

* CPU (no ``buckets``): one plan with the model's symbolic dims, built by the usual stages with the
  dims that every profile fixes made static; the engine records the profiles and its memory report
  says what the arena needs at each profile's max (one measured run at the max shapes: the plan
  allocates per run, so this is the memory a run at max takes, planned as one arena).
* GPU (and CPU with ``buckets``): one *static* plan per bucket, largest first, each a complete
  static build at the bucket's shapes -- the passes, tactics tuned at those shapes, its own memory
  plan -- so a bucket is exactly the engine a static build of its size gives. Buckets are built
  eagerly (the build reports each one's time in ``engine.build_stats["buckets"]``); the runtime
  captures their CUDA graphs when a context is made. Weights are stored once (buckets read the
  plan's constants; a folded constant that differs between buckets is kept per bucket under its own
  name). The engine's own layers, tensors and arena are the largest bucket's (what ``inspect`` and
  the reports show); each bucket's are in ``plan.buckets``.

Batch padding is allowed only when the model has a batch dim (``profiles.variables``) and every
output of every bucket leads with the bucket's batch; with one batch size built, a second shape
inference at another batch decides. Otherwise runs must match a bucket's shapes exactly.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import onnx_ir as ir

from ..dtypes import from_numpy
from ..core.liveness import subgraphs_of
from ..core.plan import Bucket, Plan, TensorSpec
from ..errors import BuildError, WorkbenchError
from ..ir.network import Network
from ..runtime.buckets import opt_specs
from ..runtime.cpu import CpuExecutionContext
from ..runtime.engine import Engine
from ..runtime.feeds import random_feeds
from .memory import plan_memory
from .profiles import BucketSpec, Profile, bucket_specs, fixed_dim_values, fixed_shapes, resolve_profiles
from .shapes import apply_dim_values
from .progress import STAGES, BuildProgress
from .targets import resolve_device


def build_with_profiles(network: Network, cfg) -> Engine:
    """The engine for ``cfg.profiles`` (see the module docstring)."""
    device = resolve_device(cfg.device)
    profiles = resolve_profiles(network.inputs, cfg.profiles)
    if device == "cpu" and cfg.buckets is None:
        return _symbolic(network, cfg, profiles, device)
    specs = bucket_specs(network.inputs, profiles, cfg.buckets)
    return _bucketed(network, cfg, profiles, specs, device)


def _inner(cfg, **changes):
    # every bucket as placed: an int8 / fp8 comparison with fp16 per bucket (builder/fallback.py)
    # could give the buckets different precisions, and costs each of them several builds
    return dataclasses.replace(cfg, profiles=[], buckets=None, strict_precision=True, **changes)


def _stored(profiles: list[Profile]) -> list[dict[str, list[list[int]]]]:
    return [{name: [list(s) for s in r] for name, r in p.items()} for p in profiles]


def _info(engine: Engine, network: Network, cfg, device: str, profiles: list[Profile]) -> None:
    from .builder import _build_info  # noqa: PLC0415 - builder.py imports this module

    # (every bucket is built as placed: see _inner)
    engine.build_info = {**_build_info(network, dataclasses.replace(cfg, strict_precision=True), device),
                         "profiles": _stored(profiles)}
    if cfg.buckets is not None:
        engine.build_info["buckets"] = (list(cfg.buckets) if isinstance(cfg.buckets, tuple)
                                        else {k: list(v) for k, v in cfg.buckets.items()})


# --------------------------------------------------------------------------- CPU: one symbolic plan


def _symbolic(network: Network, cfg, profiles: list[Profile], device: str) -> Engine:
    from .builder import Builder  # noqa: PLC0415

    t0 = time.perf_counter()
    source = network
    dims = fixed_dim_values(network.inputs, profiles)
    if dims:  # a copy with those dims static (the builder never changes the network it is given)
        source = Network(ir.from_proto(ir.to_proto(network.model)), network.source, dict(network.meta))
        apply_dim_values(source.model, dims)
    engine = Builder(_inner(cfg, shapes=fixed_shapes(network.inputs, profiles))).build(source)
    engine.plan.profiles = _stored(profiles)
    _info(engine, network, cfg, device, profiles)
    engine.build_stats["retimed_at_opt"] = _retime_at_opt(engine, cfg)
    rows = [_memory_at_max(engine, p, cfg) for p in range(len(profiles))]
    engine.reports["profiles"] = rows
    sizes = [r["arena_bytes_at_max"] for r in rows if r["arena_bytes_at_max"] is not None]
    memory = engine.reports.setdefault("memory", {})
    memory["arena_bytes_at_max"] = max(sizes) if len(sizes) == len(rows) else None
    memory["peak_live_bytes_at_max"] = max((r["peak_live_bytes_at_max"] or 0) for r in rows) if sizes else None
    engine.build_stats["build_ms"] = (time.perf_counter() - t0) * 1e3
    return engine


def _retime_at_opt(engine: Engine, cfg) -> int:
    """Layers with symbolic shapes took their first CPU tactic; time their candidates at the first
    profile's opt shapes (one run gives every tensor's shape there). Returns how many were timed."""
    from .targets.cpu import retime_at  # noqa: PLC0415 - only CPU builds with ranges need it

    try:
        feeds = random_feeds(opt_specs(engine.plan, 0, which=1), memory_budget=cfg.memory_budget)
        ctx = CpuExecutionContext(engine, threads=cfg.threads, memory_budget=cfg.memory_budget,
                                  max_elements=cfg.max_elements)
        ctx.set_profile(0)
        specs = ctx.tensor_specs(feeds)
    except (WorkbenchError, MemoryError):
        return 0  # the plan keeps its first candidates; runs are unaffected
    specs.update({k: TensorSpec(k, from_numpy(np.asarray(v).dtype), list(np.shape(v))) for k, v in feeds.items()})
    return retime_at(engine.plan, specs, cfg)


def _memory_at_max(engine: Engine, p: int, cfg) -> dict:
    """The arena a run at profile ``p``'s max shapes needs: the run's tensors, placed by the memory planner."""
    ranges = {k: [list(s) for s in r] for k, r in engine.plan.profiles[p].items()}
    row = {"index": p, "ranges": ranges, "arena_bytes_at_max": None, "peak_live_bytes_at_max": None, "note": ""}
    try:
        feeds = random_feeds(opt_specs(engine.plan, p, which=2), memory_budget=cfg.memory_budget)
        ctx = CpuExecutionContext(engine, threads=cfg.threads, memory_budget=cfg.memory_budget,
                                  max_elements=cfg.max_elements)
        ctx.set_profile(p)
        specs = ctx.tensor_specs(feeds)
    except (WorkbenchError, MemoryError) as exc:
        row["note"] = f"not measured: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        return row
    plan = engine.plan
    view = Plan(inputs=plan.inputs, outputs=plan.outputs, layers=plan.layers, constants=plan.constants,
                tensors={**plan.tensors, **specs})
    report = plan_memory(view)  # places the measured tensors in an arena of the view, not of the engine
    row.update(arena_bytes_at_max=int(report["arena_bytes"]), peak_live_bytes_at_max=int(report["peak_live_bytes"]),
               note="planned from one run at the max shapes")
    return row


# --------------------------------------------------------------------------- buckets


def _bucketed(network: Network, cfg, profiles: list[Profile], specs: list[BucketSpec], device: str) -> Engine:
    from .builder import Builder  # noqa: PLC0415

    t0 = time.perf_counter()
    progress = BuildProgress(cfg.progress if callable(cfg.progress) else False)
    bar = None
    if cfg.progress is True:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(specs), desc="buckets", unit="bucket", leave=False)
    engines, stats = [], []
    try:
        progress.stage("prepare")
        progress.stage("optimize")  # each bucket runs every stage of a static build, in this one
        for spec in specs:
            t1 = time.perf_counter()
            e = Builder(_inner(cfg, shapes=spec.shapes, progress=False)).build(network)
            engines.append(e)
            stats.append({"shapes": {k: list(v) for k, v in spec.shapes.items()}, "batch": spec.batch,
                          "build_ms": (time.perf_counter() - t1) * 1e3,
                          "tactics_ms": e.build_stats.get("tactics_ms")})
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_label(spec))
        for name in STAGES[2:]:
            progress.stage(name)
        padded = _batch_major(network, specs, engines, profiles)
        engine = _merge(network, engines, specs, profiles, padded)
    finally:
        if bar is not None:
            bar.close()
        progress.close()
    _info(engine, network, cfg, device, profiles)
    engine.build_stats = {"build_ms": (time.perf_counter() - t0) * 1e3, "buckets": stats,
                          **{k: v for k, v in engines[0].build_stats.items() if k not in ("build_ms", "passes")}}
    return engine


def _label(spec: BucketSpec) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in spec.shapes.items())


def _batch_major(network: Network, specs: list[BucketSpec], engines: list[Engine], profiles) -> bool:
    """Whether runs may pad the batch: the model has a batch dim and every output of every bucket
    leads with the bucket's batch (checked at a second batch size by shape inference when only one
    was built)."""
    if any(s.batch is None for s in specs):
        return False
    for spec, e in zip(specs, engines):
        if any(not o.shape or o.shape[0] != spec.batch for o in e.plan.outputs):
            return False
    batches = {s.batch for s in specs}
    if len(batches) > 1:
        return True
    b = next(iter(batches))
    if all(p[next(iter(p))][0][0] >= b for p in profiles if p):  # every range starts at b: never padded
        return True
    other = b + 1
    shapes = {k: (other,) + tuple(v[1:]) for k, v in specs[0].shapes.items()}
    return _outputs_lead_with(network, shapes, other)


def _outputs_lead_with(network: Network, shapes: dict, batch: int) -> bool:
    from ..passes.cleanup import infer_shapes  # noqa: PLC0415
    from .shapes import apply_input_shapes  # noqa: PLC0415

    model = ir.from_proto(ir.to_proto(network.model))
    try:
        apply_input_shapes(model, shapes)
    except WorkbenchError:
        return False
    infer_shapes(model)
    for v in model.graph.outputs:
        if v.shape is None or not len(v.shape) or v.shape[0] != batch:
            return False
    return True


def _merge(network: Network, engines: list[Engine], specs: list[BucketSpec], profiles, padded: bool) -> Engine:
    """One engine of the buckets' engines: constants and blobs once, the largest bucket's layers on top."""
    pool: dict[str, np.ndarray] = {}
    buckets = []
    for i, (spec, e) in enumerate(zip(specs, engines)):
        plan = e.plan
        _share_constants(plan, pool, i)
        plan.constants = pool
        buckets.append(Bucket(shapes={k: list(v) for k, v in spec.shapes.items()}, plan=plan,
                              profiles=list(spec.profiles), batch=spec.batch if padded else None))
    largest = engines[0]
    outputs = {s.name: s for s in largest.plan.outputs}
    declared = {s.name: s for s in network.outputs}
    top_outputs = []
    for name, s in outputs.items():
        d = declared.get(name)
        shape = d.shape if d is not None and d.shape is not None and len(d.shape) == len(s.shape or ()) else None
        top_outputs.append(TensorSpec(name, s.dtype, shape))
    top_inputs = [TensorSpec(s.name, s.dtype, s.shape) for s in network.inputs]
    plan = Plan(inputs=top_inputs, outputs=top_outputs, layers=largest.plan.layers, constants=pool,
                tensors=largest.plan.tensors, arena=largest.plan.arena, options=largest.plan.options,
                profiles=_stored(profiles), buckets=buckets)
    blobs = {}
    for e in engines:
        blobs.update(e.blobs)
    reports = dict(largest.reports)
    reports["memory"] = dict(reports.get("memory", {}))
    reports["memory"]["shared_arena_bytes"] = max(int(e.plan.arena.bytes) for e in engines)
    reports["buckets"] = [
        {"index": i, "shapes": dict(b.shapes), "profiles": list(b.profiles), "batch": b.batch,
         "layers": len(e.plan.layers), "fusions_fired": sum(1 for f in e.reports.get("fusions", []) if f.get("status") == "fired"),
         "arena_bytes": int(e.plan.arena.bytes)}
        for i, (b, e) in enumerate(zip(buckets, engines))]
    return Engine(plan, largest.target, {}, reports, blobs)


def _share_constants(plan: Plan, pool: dict, index: int) -> None:
    """Move ``plan``'s constants into ``pool``: an equal one already there is shared; a different
    one under the same name gets a name of its own in this bucket."""
    renames = {}
    outputs = {s.name for s in plan.outputs}
    for name, arr in plan.constants.items():
        have = pool.get(name)
        if have is None:
            pool[name] = arr
        elif not _same(have, arr):
            if name in outputs:
                raise BuildError(f"graph output {name!r} is a constant whose value differs between buckets; "
                                 "build the sizes as separate engines")
            new = f"{name}@bucket{index}"
            while new in pool:
                new += "_"
            pool[new] = arr
            renames[name] = new
    if renames:
        _rename(plan.layers, renames)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a is b:
        return True
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _rename(layers, renames: dict) -> None:
    for layer in layers:
        layer.inputs = [renames.get(n, n) for n in layer.inputs]
        layer.input_specs = [dataclasses.replace(s, name=renames[s.name]) if s.name in renames else s
                             for s in layer.input_specs]
        for sub in subgraphs_of(layer):  # a body's own constant of the same name hides the outer one
            _rename(sub.layers, {k: v for k, v in renames.items() if k not in sub.constants})
