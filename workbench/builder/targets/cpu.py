"""CpuTarget: the CPU tactic source (``kernels/cpu``: fast NumPy/BLAS tactics, then the reference
kernels), each layer's tactic chosen by timing like the GPU autotuner.

Stages: precision (``precision.assign``: fp16 / bf16 are emulated, tensors stay float32 and the
tactic rounds a layer's inputs and outputs, which is what half storage with fp32 accumulation costs
in accuracy, so precision choices can be studied on a machine without a GPU) -> tactics: every
candidate (tactic, config) that supports the layer is built with the plan's constants and timed on
random inputs (``core.numerics.random_array``; integer inputs are zeros, always in bounds) by the
host clock (``runtime.profile.host_ms``, the CPU context's timer), on the build's ``threads`` as the
runtime will run them (``runtime.cpu.cpu_threads``); the fastest wins, except that a reference
kernel must beat the fastest fast tactic by 15% (timing noise on a shared machine otherwise picks it
by chance, and its allocations cost more in a whole run than in one timed layer). The tactic table keeps every candidate's time or the reason it was
not used. Layers of subgraph bodies and layers with dynamic shapes take their first candidate.

Timings vary from build to build, so, as on the GPU, a byte-identical engine takes the same timing
cache (``BuilderConfig(timing_cache=PATH)``): a layer found in it keeps the recorded choice and table
untimed. The cache's environment is this machine's processor, NumPy, BLAS and thread count.
"""

from __future__ import annotations

import platform

import numpy as np

from ..._version import __version__
from ...core.liveness import subgraphs_of
from ...core.numerics import random_array
from ...core.plan import Layer, Plan
from ...core.precisions import supported_precisions
from ...errors import UnsupportedModelError
from ...kernels import cpu as tactics
from ...kernels.reference import KernelContext
from ...precision import all_layers, assign_precisions
from ...runtime.cpu import cpu_threads, default_threads
from ...runtime.engine import cpu_target
from ...runtime.profile import host_ms
from ..timing_cache import TimingCache, layer_signature

_FLOATS = ("float32", "float16", "bfloat16", "float64")
_TIMING_RUNS, _TIMING_BUDGET_MS = 7, 60.0
_REFERENCE_MARGIN = 1.15  # a reference kernel is chosen over a fast tactic only when 15% faster


def _supports(layer: Layer, precision: str) -> bool:
    return any(reason is None for _, reason in tactics.candidates(layer, precision))


class CpuTarget:
    name = "cpu"
    precisions = tuple(supported_precisions("cpu"))

    def __init__(self):
        self.precision_rows: list[dict] = []
        self.build_stats: dict = {}

    def target(self) -> dict:
        return cpu_target()

    def assign(self, plan: Plan, config, quant=None) -> None:
        self.precision_rows = assign_precisions(plan, config, "cpu", _supports, quant=quant)
        nested = {id(l) for layer in plan.layers for sub in subgraphs_of(layer) for l in all_layers(sub.layers)}
        timed = bool(getattr(config, "autotune", True))
        threads = getattr(config, "threads", None) or default_threads()
        cache = TimingCache(config.timing_cache, _environment(threads)) if config.timing_cache else None
        with cpu_threads(threads):
            for layer in all_layers(plan.layers):
                top = id(layer) not in nested
                _select(layer, plan.constants if top else {}, timed and top, cache)
        if cache is not None:
            cache.save()
        self.build_stats = {"timing_cache": cache.stats() if cache else None}

    def finish(self, engine, config) -> None:
        engine.reports["precision"] = self.precision_rows


def _environment(threads: int) -> dict:
    """What a CPU timing depends on besides the layer: the processor, NumPy, BLAS, thread count."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - only builds with a timing cache ask

        blas = sorted(f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        blas = []
    return {"cpu": platform.machine() or "cpu", "processor": platform.processor(), "numpy": np.__version__,
            "blas": blas, "threads": int(threads), "workbench": __version__}


def retime_at(plan: Plan, specs: dict, config) -> int:
    """Choose by timing, at the shapes one run gave (``specs``: tensor name -> TensorSpec, e.g. a
    run at a shape range's opt shapes), the tactics of top-level layers that took their first
    candidate because their shapes are symbolic. Only candidates that support the symbolic layer
    are timed, so the choice runs at every shape of the range. Returns how many layers were timed."""
    if not getattr(config, "autotune", True):
        return 0
    threads = getattr(config, "threads", None) or default_threads()
    count = 0
    with cpu_threads(threads):
        for layer in plan.layers:
            if all(s.is_static for s in layer.input_specs) or subgraphs_of(layer):
                continue
            _select(layer, plan.constants, True, None, shapes=specs)
            count += 1
    return count


def _select(layer: Layer, constants: dict, timed: bool, cache: TimingCache | None = None,
            shapes: dict | None = None) -> None:
    """The fastest CPU tactic for ``layer`` at its precision; the table keeps every candidate.
    ``shapes`` (name -> TensorSpec) stands in for symbolic input shapes when timing."""
    key = layer_signature(layer, constants) if (timed and cache is not None) else None
    hit = cache.get(key) if key is not None else None
    if hit is not None and hit["tactic"] in tactics.BY_NAME and isinstance(hit.get("table"), list):
        reason = tactics.BY_NAME[hit["tactic"]].supports(layer, layer.precision, constants)
        if reason is None:
            layer.tactic, layer.tactic_config = hit["tactic"], dict(hit.get("config") or {})
            layer.tactic_table = [dict(r) for r in hit["table"]]
            return
    table, cands = [], []
    for tactic, reason in tactics.candidates(layer, layer.precision, constants):
        if reason is not None:
            table.append({"tactic": tactic.name, "reason": reason})
            continue
        for config in tactic.configs(layer, layer.precision):
            cands.append((tactic, config))
    if not cands:
        dom = f"{layer.domain}." if layer.domain else ""
        raise UnsupportedModelError(f"node {layer.onnx_nodes[0] if layer.onnx_nodes else layer.name!r}: "
                                    f"operator {dom}{layer.op} (opset {layer.opset}) is not supported")
    inputs = _random_inputs(layer, constants, shapes) if timed and len(cands) > 1 else None
    if inputs is None:
        chosen = cands[0]
        table.append({"tactic": chosen[0].name, "config": chosen[1], "ms": None})
        why = ("not timed (autotune off, or a subgraph body)" if not timed else
               "not timed (single candidate)" if len(cands) == 1 else "not timed (dynamic shapes)")
        table += [{"tactic": t.name, "config": c, "reason": why} for t, c in cands[1:]]
    else:
        chosen = _fastest(layer, constants, inputs, cands, table)
    tactic, config = chosen
    for row in table:
        if row.get("tactic") == tactic.name and row.get("config") == config and "ms" in row:
            row["chosen"] = True
    layer.tactic, layer.tactic_config, layer.tactic_table = tactic.name, dict(config), table
    if key is not None:
        cache.put(key, tactic.name, dict(config), [dict(r) for r in table])


def _random_inputs(layer: Layer, constants: dict, shapes: dict | None = None) -> list | None:
    """The layer's constants and random activations, or None when a shape is not static (and
    ``shapes`` does not give it)."""
    rng = np.random.default_rng(0)
    out = []
    for name, spec in zip(layer.inputs, layer.aligned_input_specs()):
        if spec is not None and not spec.is_static and shapes and name in shapes:
            spec = shapes[name]
        if not name or spec is None:
            out.append(None)
        elif name in constants:
            out.append(constants[name])
        elif spec.shape is None or not all(isinstance(d, int) for d in spec.shape):
            return None
        elif spec.dtype in _FLOATS:
            out.append(random_array(spec.dtype, spec.shape, rng))
        else:
            try:
                out.append(np.zeros(tuple(spec.shape), dtype=random_array(spec.dtype, (), rng).dtype))
            except TypeError:
                return None
    return out


def _fastest(layer: Layer, constants: dict, inputs: list, cands: list, table: list) -> tuple:
    """Time the candidates round-robin (one call each per round, after a warm-up call), so a burst of
    other work on a shared machine slows every candidate alike; each keeps its fastest call (other
    work only ever adds time). Rows go into ``table``; returns the fastest (tactic, config)."""
    ctx = KernelContext(opset=layer.opset, n_outputs=len(layer.outputs), output_dtypes=[s.dtype for s in layer.output_specs],
                        rng=np.random.default_rng(0), name=layer.name)
    live, rows = [], []
    for tactic, config in cands:
        row = {"tactic": tactic.name, "config": config}
        rows.append(row)
        try:
            kernel = tactic.build(layer, layer.precision, config, constants)
            first = host_ms(lambda k=kernel: k(ctx, inputs, layer.attrs))
            live.append([first, row, tactic, config, kernel])
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run these inputs is reported, not chosen
            row["reason"] = f"run failed: {type(exc).__name__}: {exc}"
    if not live:
        raise UnsupportedModelError(f"layer {layer.name!r} ({layer.op}): every CPU candidate failed: "
                                    + "; ".join(f"{r['tactic']}: {r['reason']}" for r in rows))
    per_round = sum(c[0] for c in live)
    rounds = max(2, min(_TIMING_RUNS, int(_TIMING_BUDGET_MS / max(per_round, 1e-3))))
    for _ in range(rounds):
        for cand in live:
            kernel = cand[4]
            cand[0] = min(cand[0], host_ms(lambda k=kernel: k(ctx, inputs, layer.attrs)))
    for cand in live:
        cand[1]["ms"] = round(cand[0], 5)
    table.extend(rows)
    best = min(range(len(live)), key=lambda i: (live[i][0], i))
    fast = [i for i in range(len(live)) if live[i][2].source != "reference"]
    if fast and live[best][2].source == "reference":
        # the reference kernel allocates every result and keeps nothing between runs: its cost grows
        # with memory pressure that a single timed layer does not show, so it must win by a margin
        best_fast = min(fast, key=lambda i: (live[i][0], i))
        if live[best][0] * _REFERENCE_MARGIN > live[best_fast][0]:
            best = best_fast
    return live[best][2], live[best][3]
